"""Fit one subject's region-level twin under an input protocol and score it (docs/experiments.md).

The fidelity bench (``bench/fidelity/run.py``), the ``input-regions`` study
(:mod:`dtb.experiment.inputregions`) and the ``scaling`` study (:mod:`dtb.experiment.scaling`)
build their twins from one setting, :func:`twin_setting` (the fast CPU setting of docs/twin.md,
``config/twin/fast-cpu.yaml``), with the protocol choosing ``assimilation.input_regions``
(:data:`dtb.fidelity.table.PROTOCOLS`).

:func:`fit_protocol` assimilates the first 2/3 of the subject's frames (the last 1/3 is a free
forecast with h frozen), re-simulates one brain with the fitted h track, and returns one line of
the results table (:data:`dtb.fidelity.table.FIELDS` and more) from the store's ``/metrics``, with
the per-region re-simulation r and the held-out skill over the input regions only.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import xarray as xr

from dtb.assim.metrics import fc_frobenius_distance, fc_similarity, heldout_skill
from dtb.fidelity.table import PROTOCOLS
from dtb.io.region_inputs import RegionSubject
from dtb.twin.config import INPUT_SETS, TwinConfig, load_twin_config
from dtb.twin.run import assimilate_subject, resimulate_store

__all__ = ["twin_setting", "protocol_config", "heldout_inputs", "fit_protocol", "input_labels"]

#: Scalars of ``/metrics`` copied into a run line.
METRIC_KEYS = (
    "resim_region_r", "resim_region_r_best", "resim_input_r", "resim_noninput_r", "fc_similarity", "fnorm",
    "forecast_r", "heldout_r", "persistence_r", "climatology_r", "heldout_rmse", "persistence_rmse",
    "climatology_rmse", "innovation_nis", "warmup_frames", "frames_scored",
)  # fmt: skip


def twin_setting(
    *,
    neurons: int = 1000,
    indegree: int = 20,
    members: int = 8,
    frames: int | None = 60,
    warmup: int = 10,
    wiring: str = "dti",
    knn_k: int = 8,
    seed: int = 1,
    backend: str = "auto",
    record_seconds: float = 0.0,
) -> dict:
    """The twin config mapping of the fast CPU setting (every key documented in dtb/twin/config.py).

    ``neurons`` [total neurons], ``indegree`` [synapses per neuron], ``members`` (ensemble),
    ``frames`` (frames used per subject, the first 2/3 assimilated; None: the whole run), ``warmup``
    (windows before the first analysis), ``record_seconds`` [s] of re-simulation spikes kept in the
    store (0: none; the ``criticality`` study needs them). With the defaults this is ``config/twin/fast-cpu.yaml`` up
    to threads and spike recording (tested).
    """
    return {
        "seed": seed,
        "backend": backend,
        "threads": 1,
        "neurons_total": neurons,
        "model": {"indegree": indegree, "dt_ms": 1.0, "wiring": wiring, "knn_k": knn_k},
        "assimilation": {
            "members": members,
            "n_frames": frames,
            "heldout_fraction": 1.0 / 3.0,
            "warmup_windows": warmup,
            "checkpoint_every": 20,
        },
        "resimulation": {"record_seconds": record_seconds},
    }


def protocol_config(setting: dict, protocol: str) -> TwinConfig:
    """``setting`` (a :func:`twin_setting` mapping) with the protocol's input regions, loaded and checked."""
    if protocol not in PROTOCOLS:
        from dtb.errors import ConfigError

        raise ConfigError(f"unknown input protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    mapping = {k: (dict(v) if isinstance(v, dict) else v) for k, v in setting.items()}
    mapping.setdefault("assimilation", {})["input_regions"] = PROTOCOLS[protocol]
    return load_twin_config(mapping)


def input_labels(protocol: str, labels) -> list[str]:
    """The protocol's input regions among ``labels`` (all of them for protocol B)."""
    labels = list(labels)
    name = PROTOCOLS[protocol]
    return labels if name == "all" else [x for x in INPUT_SETS[name] if x in labels]


def _group(store: Path, name: str) -> xr.Dataset:
    return xr.open_dataset(store, engine="zarr", group=name, consolidated=False, zarr_format=3).load()


def heldout_inputs(store: str | Path, input_labels: list[str]) -> dict:
    """Held-out skill over the input regions only (protocol A's other regions are not on the data's scale)."""
    store = Path(store)
    obs, assim = _group(store, "observation"), _group(store, "assimilation")
    labels = [str(x) for x in obs["region"].values]
    cols = [labels.index(x) for x in input_labels]
    held = assim["heldout"].values.astype(bool)
    until = int((~held).sum())
    warm = int(assim["warmup"].values.sum())
    forecast = assim["bold_forecast"].values[until:].mean(axis=1)[:, cols]
    skill = heldout_skill(forecast, obs["bold"].values[:, cols], until, warmup_frames=warm)
    return {
        "heldout_input_r": skill.forecast_r,
        "persistence_input_r": skill.persistence_r,
        "heldout_input_rmse": skill.forecast_rmse,
        "persistence_input_rmse": skill.persistence_rmse,
        "climatology_input_rmse": skill.climatology_rmse,
    }


def fit_protocol(
    subject: RegionSubject,
    setting: dict,
    protocol: str,
    store: str | Path,
    *,
    fc_baseline: np.ndarray | None = None,
    keep_store: bool = False,
    progress: str | None = "none",
) -> dict:
    """Assimilate + re-simulate ``subject`` under ``protocol``; its run line (resumes a store at ``store``).

    ``fc_baseline`` (region, region), e.g. the other subjects' mean FC, is scored like the twin
    (``fc_baseline_similarity``, ``fc_baseline_fnorm``). The line also holds ``region_r`` (the
    per-region re-simulation r, a mapping region -> r) for paired tests over regions.
    """
    store = Path(store)
    config = protocol_config(setting, protocol)
    started = time.perf_counter()
    assimilate_subject(subject, config, store, resume=store.exists(), progress=progress)
    resimulate_store(store, progress=progress)
    wall = time.perf_counter() - started
    ds = _group(store, "metrics")
    scalars = dict(ds.attrs)
    labels = [str(x) for x in ds["region"].values]
    fc_emp = ds["fc_empirical"].values
    row = {
        "subject": subject.label,
        "protocol": protocol,
        "dataset": "HCP" if subject.label.isdigit() else "GW",
        **{k: scalars.get(k) for k in METRIC_KEYS},
        "fc_baseline_similarity": None if fc_baseline is None else fc_similarity(fc_baseline, fc_emp),
        "fc_baseline_fnorm": None if fc_baseline is None else fc_frobenius_distance(fc_baseline, fc_emp),
        **heldout_inputs(store, input_labels(protocol, labels)),
        "region_r": {x: (None if not np.isfinite(r) else float(r)) for x, r in zip(labels, ds["region_r"].values)},
        "input_regions": input_labels(protocol, labels),
        "n_frames": int(min(config.n_frames or subject.bold.shape[0], subject.bold.shape[0])),
        "tr_s": subject.tr_s,
        "wiring": config.model.wiring,
        "neurons_total": config.neurons_total,
        "indegree": config.model.indegree,
        "members": config.members,
        "balloon_update": config.hmda.balloon_update,
        "wall_s": wall,
        "load_avg_1min": os.getloadavg()[0],
        "warnings": scalars.get("warnings", []),
    }
    if not keep_store:
        shutil.rmtree(store, ignore_errors=True)
    return row
