"""Run a region-level twin: inputs -> assimilation store -> re-simulation -> metrics.

:func:`assimilate_subject` cleans and scales the subject's BOLD (recorded), builds the twin's
network from its neuron counts and connectome, and runs Vw-dHMDA into a twin run store
(docs/formats.md).  :func:`resimulate_store` rebuilds the same network from the store, runs one
brain with fresh gains driven by the assimilated h track, and writes ``/resimulation`` and
``/metrics``.  Both are resumable/idempotent and write nothing partial that a reader would trust:
the store's root attribute ``complete`` (assimilation) and the ``/metrics`` group (re-simulation)
appear last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from dtb import __version__
from dtb.assembly.forward import drive_h_track, make_simulation
from dtb.assembly.region import RegionModel
from dtb.assembly.region import region_model as model_of_layout
from dtb.assim.hmda import HMDA
from dtb.assim.metrics import compute_fidelity, haemodynamic_warning
from dtb.assim.observation import clean_bold, get_scaling
from dtb.errors import AssimilationError
from dtb.io import twin_store
from dtb.io.faults import fault_point
from dtb.io.locks import output_lock
from dtb.io.region_inputs import RegionSubject
from dtb.io.store import json_safe, verify_store
from dtb.network.build import build_network
from dtb.seeds import SEED_SCHEME, derive_seed, derived_seeds
from dtb.sim.backends import resolve_backend_name
from dtb.twin.calibration import calibrate_h_bounds
from dtb.twin.config import TwinConfig, fit_warnings, load_twin_config, resolve_input_regions
from dtb.twin.network import (
    expected_identity,
    load_twin_network,
    network_digest,
    scaled_counts,
    twin_layout,
    twin_network_inputs,
    twin_region_model,
    wired_connectome,
)

__all__ = [
    "FittedTwin",
    "assimilate_subject",
    "fitted_region_model",
    "load_fitted",
    "resimulate_store",
    "scaled_counts",
    "wired_connectome",
]

log = logging.getLogger("dtb")


def _observation(subject: RegionSubject, config: TwinConfig):
    bold = np.asarray(subject.bold, dtype=np.float64)
    if config.n_frames is not None and config.n_frames < bold.shape[0]:
        log.info(
            "sub-%s: using the first %d of %d frames (assimilation.n_frames)",
            subject.label,
            config.n_frames,
            bold.shape[0],
        )
        bold = bold[: config.n_frames]
    clean = clean_bold(bold, subject.tr_s, low_hz=config.low_hz, high_hz=config.high_hz, detrend=config.detrend)
    scaling = get_scaling(config.scaling, **config.scaling_params).fit(clean)
    return clean, scaling.apply(clean), scaling.describe()


def assimilate_subject(
    subject: RegionSubject,
    config: TwinConfig | dict | str | Path | None,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: str | None = None,
    network: str | Path | None = None,
    observation: tuple | None = None,
    lead_forecasts: int = 0,
    lead_from: int = 0,
    lead_every: int = 1,
    comm=None,
    layout: str = "members",
) -> Path:
    """Assimilate a region-level subject's BOLD into a twin run store ``out``.

    ``network``: a network store written by ``dtb network build`` for this subject and config
    (:func:`dtb.twin.network.write_twin_network`); it is checked against the subject and the config
    before anything runs, and the run simulates it. Without it the same network is built here.
    ``observation`` = (clean, observed, scaling description), each array (time, region) over the
    subject's regions, replaces the default cleaning and scaling (the held-out protocol of
    :mod:`dtb.twin.heldout` fits them on the assimilated frames only). ``lead_forecasts`` and
    ``lead_from``, ``lead_every`` are passed to :meth:`dtb.assim.hmda.HMDA.run` (k-step forecasts).
    ``comm``: an MPI communicator (every rank calls this with the same arguments); the ensemble
    is spread over its ranks by ``layout`` (``members`` or ``neurons``), every rank runs the filter
    on the gathered observations and rank 0 writes: the store is bitwise that of one process
    (docs/twin.md, "Distributed twin").
    """
    config = config if isinstance(config, TwinConfig) else load_twin_config(config)
    torch.set_num_threads(config.threads)
    tr_ms = subject.tr_s * 1000.0
    if abs(tr_ms - round(tr_ms)) > 1e-6:
        raise AssimilationError(
            f"sub-{subject.label}: TR {subject.tr_s} s is not a whole number of milliseconds; the engine "
            "integrates BOLD every 1 ms"
        )
    clean, observed, scaling = _observation(subject, config) if observation is None else observation
    n_frames = observed.shape[0]
    until = n_frames - int(round(config.heldout_fraction * n_frames))
    if n_frames - until == 1:  # the held-out score needs 2 frames; say so now, not after the whole run
        raise AssimilationError(
            f"assimilation.heldout_fraction {config.heldout_fraction:g} holds out 1 of {n_frames} frames; the held-out "
            "forecast is scored on >= 2 frames: raise heldout_fraction, or set it to 0.0 to hold out nothing"
        )
    net_inputs = twin_network_inputs(subject, config)
    wired = net_inputs.connectome
    region_model = twin_region_model(net_inputs, config, network)
    kept = region_model.kept_regions
    labels = list(region_model.region_labels)
    observed, clean = observed[:, kept], clean[:, kept]
    inputs = resolve_input_regions(config, labels, subject.atlas)
    backend = resolve_backend_name(config.backend)
    calibration, driver_settings = None, config.hmda
    if config.h_bounds == "calibrated":  # the filter's bounds, measured on this network (dtb.twin.calibration)
        calibration = calibrate_h_bounds(region_model, inputs, config, backend=backend, comm=comm)
        driver_settings = dataclasses.replace(config.hmda, lower=calibration.lower, upper=calibration.upper)
    regional = make_simulation(
        region_model,
        n_members=config.members,
        seed=config.seed,
        gain_seed=derive_seed(config.seed, "gains"),
        backend=backend,
        device=config.device,
        comm=comm,
        layout=layout,
    )
    driver = HMDA(regional, inputs, labels, tr_ms, driver_settings)
    distributed = comm is not None and comm.Get_size() > 1
    writer = not distributed or comm.Get_rank() == 0
    out = Path(out)
    fresh = overwrite or not out.exists()
    warnings = fit_warnings(config)
    for warning in warnings if writer else ():
        log.warning("%s: %s", out, warning)
    if resume and not overwrite and out.exists():
        _check_same_seed(out, config.seed)
    attrs = {
        "subject": subject.label,
        "seed": config.seed,
        "seeds": derived_seeds(config.seed, config.members),
        "config": config.describe(),
        "backend": backend,
        "device": config.device,
        "n_neurons": region_model.network.n_neurons,
        "n_synapses": region_model.network.n_synapses,
        "network": {"digest": network_digest(region_model.network), "store": None if network is None else str(network)},
        "atlas": subject.atlas,
        "sources": subject.sources,
        "warnings": warnings,
    }
    if calibration is not None:
        attrs["h_calibration"] = calibration.describe()

    def static_groups(path) -> None:
        if fresh or not twin_store.has_group(path, "observation"):
            _write_static_groups(path, region_model, wired, clean, observed, scaling, subject.tr_s, labels)

    if distributed:
        attrs["distributed"] = {"n_ranks": comm.Get_size(), "layout": layout}
    with output_lock(out, what="run store") if writer else contextlib.nullcontext():
        # the static groups are written before the store is marked complete: a failure (a full disk)
        # leaves an incomplete store that --resume finishes, never a complete one without them
        driver.run(
            observed,
            out,
            assimilate_frames=until,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            attrs=attrs,
            before_complete=static_groups,
            lead_forecasts=lead_forecasts,
            lead_from=lead_from,
            lead_every=lead_every,
            comm=comm if distributed else None,
        )
        if writer and not twin_store.has_group(out, "observation"):  # completed by an older dtb
            _write_static_groups(out, region_model, wired, clean, observed, scaling, subject.tr_s, labels)
    return out


def _check_same_seed(store: Path, seed: int) -> None:
    """Refuse to resume a store that another run seed (or an older seed scheme) started."""
    try:
        attrs = twin_store.root_attrs(store)
    except Exception:  # not a zarr store: HMDA.run decides what to do with it
        return
    stored = attrs.get("seeds", {}) if isinstance(attrs.get("seeds"), dict) else {}
    if attrs.get("seed") != seed or stored.get("scheme") != SEED_SCHEME:
        raise AssimilationError(
            f"{store} was started with seed {attrs.get('seed')!r} (seed scheme {stored.get('scheme', 'absent')!r}); "
            f"this run has seed {seed} (scheme {SEED_SCHEME}), so resuming would splice two runs. Use the same "
            "--seed, or start over (dtb assimilate --overwrite)."
        )


def _write_static_groups(out, region_model, wired, clean, observed, scaling, tr_s, labels) -> None:
    time_s = np.arange(observed.shape[0]) * tr_s
    coords = {"time": ("time", time_s, {"units": "s"}), "region": np.asarray(labels, dtype=str)}
    twin_store.write_group_data(
        out, "observation", {"bold": observed, "bold_clean": clean}, coords, {"scaling": scaling, "tr_s": tr_s}
    )
    net = region_model.network
    kept = region_model.kept_regions
    sc = np.asarray(wired, dtype=np.float64)[np.ix_(kept, kept)]
    pops = net.populations
    twin_store.write_group_data(
        out,
        "network",
        {
            "neuron_count": region_model.neuron_count(),
            "connectome": sc,
            "population_size": np.array([p.size for p in pops]),
            "population_region": np.array([labels[r] for r in region_model.population_region], dtype=str),
            "population_kind": np.array([p.kind for p in pops], dtype=str),
        },
        {
            "region": np.asarray(labels, dtype=str),
            "region_source": np.asarray(labels, dtype=str),
            "population": np.array([p.name for p in pops], dtype=str),
        },
        json_safe({**dict(net.metadata), "kept_regions": kept.tolist()}),
    )


@dataclass(frozen=True, eq=False)
class FittedTwin:
    """What a re-simulation of a fitted twin needs, read from its run store (:func:`load_fitted`).

    Attributes
    ----------
    store : the run store.
    config : the run's settings.
    labels : region labels (the kept regions, store order).
    connectome : (region, region_source) streamline counts the twin was built from, row = source.
    neuron_count : neurons per region.
    inputs : indices of the input regions (the h track's columns, in order).
    h_track : (time, input) the h that drives a re-simulation: the analysis ensemble mean (the
        forecast mean in the warm-up windows).
    tr_s : repetition time [s].
    observation, assimilation : the store's ``/observation`` and ``/assimilation`` groups.
    """

    store: Path
    config: TwinConfig
    labels: list[str]
    connectome: np.ndarray
    neuron_count: np.ndarray
    inputs: list[int]
    h_track: np.ndarray
    tr_s: float
    observation: xr.Dataset
    assimilation: xr.Dataset

    def run_seed(self, seed: int | None = None) -> int:
        """Run seed of the re-simulated brain (``seed`` None: the run's, as `dtb resimulate` uses by default);
        its member noise and gains derive from it (``derive_seed(run_seed, "resimulation" | "resimulation_gains")``)."""
        return self.config.seed if seed is None else int(seed)

    def gain_seed(self, run_seed: int) -> int:
        """Seed of the re-simulated brain's Gamma gains."""
        return derive_seed(run_seed, "resimulation_gains")

    @property
    def h_bounds(self) -> tuple[float, float]:
        """Bounds of h the filter used: calibrated ones where the run calibrated them
        (``assimilation.h_bounds: calibrated``), else the config's lower and upper."""
        used = twin_store.root_attrs(self.store).get("assimilation_settings") or {}
        s = self.config.hmda
        return float(used.get("lower", s.lower)), float(used.get("upper", s.upper))

    @property
    def graph_seed(self) -> int:
        """Seed of the twin's graph: always the run's (the h track was fitted on that graph)."""
        return derive_seed(self.config.seed, "graph")


def load_fitted(store: str | Path) -> FittedTwin:
    """Read what a re-simulation needs from a twin run store (errors say what is missing)."""
    store = Path(store)
    if not (store / "zarr.json").is_file():
        raise AssimilationError(f"{store} is not a twin run store (no zarr.json); give the .zarr written by `dtb twin`")
    root = twin_store.root_attrs(store)
    if not root.get("complete"):
        raise AssimilationError(f"{store} holds no complete assimilation; run (or resume) `dtb assimilate` first")
    verify_store(store, fix=f"Write it again: dtb assimilate ... --out {store} --overwrite, then dtb resimulate.")
    missing = [g for g in ("network", "observation", "assimilation") if not twin_store.has_group(store, g)]
    if missing:
        raise AssimilationError(f"{store} lacks the group(s) {missing}; re-run `dtb assimilate` into a fresh store")
    config = load_twin_config(_config_mapping(root["config"]))
    net_ds = twin_store.read_group(store, "network", load=True)
    obs_ds = twin_store.read_group(store, "observation", load=True)
    assim = twin_store.read_group(store, "assimilation", load=True)
    need = [v for v in ("h_forecast_mean", "h_analysis_mean", "warmup") if v not in assim]
    if need:
        raise AssimilationError(f"{store}/assimilation has no fitted h track (missing {need}); re-run `dtb assimilate`")
    labels = [str(x) for x in net_ds["region"].values]
    inputs = resolve_input_regions(config, labels, root.get("atlas"))
    graph_seed = derive_seed(config.seed, "graph")
    stored_graph_seed = net_ds.attrs.get("seed")
    if stored_graph_seed != graph_seed:
        raise AssimilationError(
            f"{store}: its network was sampled with graph seed {stored_graph_seed!r}, but run seed {config.seed} gives "
            f"{graph_seed} under this dtb's seed scheme ({SEED_SCHEME}); the store was written by an older dtb. "
            "Run `dtb assimilate` again to re-simulate it."
        )
    warmup = assim["warmup"].values.astype(bool)
    h_track = np.where(warmup[:, None], assim["h_forecast_mean"].values, assim["h_analysis_mean"].values)
    return FittedTwin(
        store=store,
        config=config,
        labels=labels,
        connectome=net_ds["connectome"].values,
        neuron_count=net_ds["neuron_count"].values,
        inputs=list(inputs),
        h_track=h_track,
        tr_s=float(root["tr_s"]),
        observation=obs_ds,
        assimilation=assim,
    )


def fitted_region_model(fitted: FittedTwin, connectome=None, *, network: str | Path | None = None) -> RegionModel:
    """The twin's network rebuilt from the store (or from ``connectome``, row = source, same regions).

    ``network``: the network store the run was assimilated on (``dtb network build``), loaded after
    checking that it is the run's network, instead of rebuilding it.
    """
    sc = fitted.connectome if connectome is None else np.asarray(connectome, dtype=np.float64)
    # the stored connectome and counts are those of the kept regions: rebuilding gives the same graph
    layout = twin_layout(fitted.neuron_count, sc, fitted.labels, fitted.config)
    if network is None:
        return model_of_layout(layout, build_network(layout), fitted.config.model)
    attrs = twin_store.root_attrs(fitted.store)
    expected = expected_identity(layout, sc, str(attrs.get("subject")), attrs.get("atlas"), fitted.config)
    model = load_twin_network(network, layout, expected, fitted.config)
    recorded = (attrs.get("network") or {}).get("digest")
    if recorded is not None and network_digest(model.network) != recorded:
        raise AssimilationError(
            f"network store {network} is not the network {fitted.store} was assimilated on (digest differs); "
            "re-simulate with the store given to `dtb assimilate --network`, or without --network"
        )
    return model


def resimulation_brain(fitted: FittedTwin, region_model: RegionModel, *, seed=None, backend=None, comm=None):
    """One brain (member) on ``region_model`` that records spikes, and its run seed.

    The graph is the run's (the h track was fitted on it); noise and gains follow ``seed`` (default
    the run's): ``derive_seed(run_seed, "resimulation" | "resimulation_gains")``. With ``comm`` (MPI,
    more than one rank) the brain's neurons are spread over the ranks (the ``neurons`` layout).
    """
    run_seed = fitted.run_seed(seed)
    regional = make_simulation(
        region_model,
        n_members=1,
        seed=run_seed,
        member_purpose="resimulation",
        gain_seed=fitted.gain_seed(run_seed),
        backend=resolve_backend_name(backend or fitted.config.backend),
        device=fitted.config.device,
        record_spikes=True,
        comm=comm,
        layout="neurons",
    )
    return regional, run_seed


def resimulate_store(
    store: str | Path,
    *,
    seed: int | None = None,
    backend: str | None = None,
    progress: str | None = None,
    network: str | Path | None = None,
    comm=None,
) -> Path:
    """Re-simulate one brain with the assimilated h track; write ``/resimulation`` and ``/metrics``.

    ``network``: the network store the run was assimilated on; checked, then simulated (default:
    the same network rebuilt from the run store). ``comm``: an MPI communicator; the brain's
    neurons are spread over its ranks (every rank calls this), rank 0 writes; bitwise the result
    of one process.
    """
    store = Path(store)
    writer = comm is None or comm.Get_size() == 1 or comm.Get_rank() == 0
    with output_lock(store, what="run store") if writer else contextlib.nullcontext():
        return _resimulate(store, seed=seed, backend=backend, progress=progress, network=network, comm=comm)


def _resimulate(store: Path, *, seed, backend, progress, network=None, comm=None) -> Path:
    fitted = load_fitted(store)
    store, config, labels, inputs = fitted.store, fitted.config, fitted.labels, fitted.inputs
    torch.set_num_threads(config.threads)
    region_model = fitted_region_model(fitted, network=network)
    graph_seed = fitted.graph_seed
    regional, run_seed = resimulation_brain(fitted, region_model, seed=seed, backend=backend, comm=comm)
    h_track = fitted.h_track
    tr_s = fitted.tr_s
    tr_ms = round(tr_s * 1000.0)
    name = config.hmda.hyperparameter
    n = h_track.shape[0]
    record_windows = int(np.ceil(config.record_seconds / tr_s))
    started = time.perf_counter()
    rank = 0 if comm is None else comm.Get_rank()
    bold, rate, counts, spikes = drive_h_track(
        regional,
        name,
        inputs,
        h_track,
        tr_ms,
        record_windows=record_windows,
        progress=progress if rank == 0 else "none",
    )
    if rank != 0:  # every rank holds the gathered results; rank 0 writes them
        comm.Barrier()
        return store
    time_s = np.arange(n) * tr_s
    seeds = {
        "noise": derive_seed(run_seed, "resimulation"),
        "gains": derive_seed(run_seed, "resimulation_gains"),
        "graph": graph_seed,
        "scheme": SEED_SCHEME,
    }
    resim_attrs = {
        "seed": run_seed,
        "seeds": seeds,
        "h_track": "analysis ensemble mean (forecast mean in warm-up)",
        "wall_time_s": time.perf_counter() - started,
    }
    # /metrics is written last and removed before the other groups are replaced: a store holding it has
    # a whole re-simulation (a killed one leaves /resimulation without /metrics; run it again)
    shutil.rmtree(store / "metrics", ignore_errors=True)
    twin_store.write_group_data(
        store,
        "resimulation",
        {"bold": bold, "rate": rate},
        {"time": ("time", time_s, {"units": "s"}), "region": np.asarray(labels, dtype=str)},
        json_safe(resim_attrs),
    )
    fault_point("resimulate", "resimulation")  # a test hook (dtb.io.faults); a no-op otherwise
    pc = np.concatenate(counts) if counts else np.zeros((0, len(region_model.network.populations)), np.int32)
    twin_store.write_group_data(
        store,
        "resimulation_counts",
        {"spike_count": pc},
        {
            "time": ("time", np.arange(pc.shape[0]) * 1e-3, {"units": "s"}),
            "population": np.array([p.name for p in region_model.network.populations], dtype=str),
        },
        {"bin_s": 1e-3},
    )
    ev = np.concatenate(spikes) if spikes else np.zeros((0, 2))
    twin_store.write_group_data(
        store,
        "resimulation_spikes",
        {"time": ev[:, 0], "neuron": ev[:, 1].astype(np.int64)},
        None,
        {"duration_s": len(counts) * tr_s, "start_s": 0.0},
    )
    _write_metrics(store, fitted.observation, fitted.assimilation, bold, inputs, config, labels)
    if comm is not None:
        comm.Barrier()  # the other ranks return once the store is written
    return store


def _write_metrics(store, obs_ds, assim, resim_bold, inputs, config: TwinConfig, labels) -> None:
    observed = obs_ds["bold"].values
    warm = int(assim["warmup"].values.sum())
    held = assim["heldout"].values.astype(bool)
    until = int((~held).sum())
    analysed = (~assim["warmup"].values.astype(bool)) & ~held
    forecast = assim["bold_forecast"].values
    fid = compute_fidelity(
        observed[:until],
        resimulated=resim_bold[:until],
        forecast_ensemble=forecast[:until],
        input_regions=np.asarray(inputs),
        warmup_frames=warm,
        innovations=assim["innovation"].values[analysed][:, inputs],
        innovation_spread=assim["innovation_spread"].values[analysed][:, inputs],
        obs_variance=config.hmda.enkf.obs_variance,
    )
    scalars = fid.to_json()
    if held.any():  # free forecast of the held-out frames vs persistence and climatology
        heldout = compute_fidelity(
            observed,
            input_regions=np.asarray(inputs),
            warmup_frames=warm,
            heldout_forecast=forecast[until:].mean(axis=1),
            heldout_start=until,
        )
        scalars.update(heldout.to_json())
    warning = haemodynamic_warning(forecast)
    if warning:
        scalars["warnings"] = [warning]  # listed by the report's warnings section as "/metrics: ..."
        log.warning("%s: %s", store, warning)
    arrays = {v.name: getattr(fid, v.name) for v in twin_store.GROUPS["metrics"].variables}
    twin_store.write_group_data(
        store,
        "metrics",
        {key: np.asarray(value) for key, value in arrays.items() if value is not None},
        {"region": np.asarray(labels, dtype=str), "region_source": np.asarray(labels, dtype=str)},
        json_safe({**scalars, "warmup_frames": warm, "frames_scored": until, "dtb_version": __version__}),
    )


def _config_mapping(described) -> dict:
    """Turn a stored ``TwinConfig.describe()`` back into the YAML form."""
    d = dict(described)
    if "graph_seed" in d.get("model", {}):
        raise AssimilationError(
            "this store was written by an older dtb (model.graph_seed, before the one-seed scheme of dtb.seeds); "
            "run `dtb assimilate` again to re-simulate it"
        )
    hmda = dict(d.pop("hmda"))
    enkf = dict(hmda.pop("enkf"))
    enkf.pop("seed", None)  # derived from the run seed
    bounds = {"balloon_floor": hmda.pop("clip", None), "balloon_ceiling": hmda.pop("clip_upper", None)}
    assim = {
        **hmda,
        **{key: value for key, value in bounds.items() if value is not None},
        "filter": enkf,
        "members": d.pop("members"),
        "input_regions": d.pop("input_regions"),
        **({"h_bounds": d.pop("h_bounds")} if "h_bounds" in d else {}),
        "n_frames": d.pop("n_frames"),
        "heldout_fraction": d.pop("heldout_fraction"),
    }
    obs = {k: d.pop(k) for k in ("low_hz", "high_hz", "detrend", "scaling", "scaling_params")}
    resim = {"record_seconds": d.pop("record_seconds")}
    return {**d, "assimilation": assim, "observation": obs, "resimulation": resim}
