"""The studies of `dtb experiment <name>`: lesion, stimulation, rewiring, spectra, granger, criticality.

Each study checks everything (store, region names, P values, settings) before it runs or writes,
then writes ``<name>.zarr`` (the arrays), ``<name>.json`` (settings and scalar results) and
``<name>.png`` (one figure) into ``out``. docs/experiments.md.

Scores compare re-simulated BOLD with the store's observed (scaled) BOLD on the frames the twin's
``/metrics`` scores: after the warm-up, before the held-out part.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from dtb.errors import ConfigError
from dtb.experiment.inputregions import CLAIM as INPUT_REGIONS_CLAIM
from dtb.experiment.inputregions import INPUT_REGIONS_DEFAULTS
from dtb.experiment.scaling import CLAIM as SCALING_CLAIM
from dtb.experiment.scaling import SCALING_DEFAULTS
from dtb.validation import check_unknown_keys

__all__ = ["STUDIES", "SUBJECT_STUDIES", "StudySettings", "load_study_settings", "run_study", "run_subject_study"]

log = logging.getLogger("dtb")

#: Study names, in the order `dtb experiment --help` lists them.
STUDIES = ("lesion", "stimulation", "rewiring", "spectra", "granger", "criticality", "scaling", "input-regions")
#: Studies that fit twins of a subject's region-level inputs (``--inputs``/``--subject``) instead of
#: perturbing or analysing a fitted store (``--store``).
SUBJECT_STUDIES = ("scaling", "input-regions")

#: Default settings of every study (a --config YAML overrides any of them, under the study's name).
DEFAULTS: dict[str, dict] = {
    "lesion": {
        "regions": ["Calcarine", "Cuneus", "Lingual"],
        "direction": "outgoing",
        "report_regions": ["Hippocampus"],
    },
    "stimulation": {"regions": ["Calcarine", "Cuneus", "Lingual"], "amplitude": 0.05, "start_s": 10.0, "stop_s": 20.0},
    "rewiring": {"p": [0.0, 0.25, 0.5, 0.75, 1.0], "k": 8, "centres": None},
    "spectra": {"nperseg": 64},
    "granger": {"order": 1, "n_surrogates": 199, "alpha": 0.05, "seed": 0},
    "criticality": {"n_neurons": 100, "bin_ms": None, "seed": 0, "k_max": 40},
    "scaling": SCALING_DEFAULTS,
    "input-regions": INPUT_REGIONS_DEFAULTS,
}

#: The DTB's claim each study is put beside (written into NAME.json as ``dtb_claim``; docs/experiments.md).
CLAIMS = {
    "lesion": "DTB: cutting V1's outputs lowers the similarity at the hippocampus; the whole brain barely changes.",
    "stimulation": "DTB: stimulating a region set raises its rate during the window and spreads along the connectome.",
    "rewiring": "DTB: similarity falls as P (the share of long-range input made local) rises from 0 to 1.",
    "spectra": "DTB: the h tracks peak at 0.02-0.025 Hz, with smaller peaks between 0.02 and 0.08 Hz.",
    "granger": "DTB: thalamus -> ACC, thalamus -> insula, vmPFC/sgACC -> ACC, thalamus -> hippocampus.",
    "criticality": "DTB: the network comes closer to criticality as the neuron count grows.",
    "scaling": SCALING_CLAIM,
    "input-regions": INPUT_REGIONS_CLAIM,
}


StudySettings = dict


def load_study_settings(name: str, config: str | Path | dict | None = None, **overrides) -> dict:
    """Settings of study ``name``: defaults, then the ``name:`` section of ``config``, then ``overrides``."""
    if name not in STUDIES:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {list(STUDIES)}")
    settings = dict(DEFAULTS[name])
    if config is not None:
        if not isinstance(config, dict):
            import yaml

            path = Path(config)
            if not path.is_file():
                raise ConfigError(f"experiment config {path} does not exist")
            config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, dict):
            raise ConfigError("an experiment config is a YAML mapping: <study>: {setting: value, ...}")
        unknown_studies = sorted(set(config) - set(STUDIES))
        if unknown_studies:
            raise ConfigError(f"unknown experiment(s) {unknown_studies} in the config; accepted: {list(STUDIES)}")
        section = config.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"config section {name!r} must be a mapping of settings")
        settings.update(section)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    check_unknown_keys(settings, DEFAULTS[name], what=f"{name} setting")
    return settings


# ------------------------------------------------------------------------------------------ helpers


def _scored(fitted) -> tuple[np.ndarray, int, int]:
    assim = fitted.assimilation
    warm = int(assim["warmup"].values.sum())
    until = int((~assim["heldout"].values.astype(bool)).sum()) if "heldout" in assim else assim.sizes["time"]
    return fitted.observation["bold"].values, warm, until


def _scores(fitted, bold) -> dict:
    from dtb.assim.metrics import fc_similarity, functional_connectivity, region_correlation

    observed, warm, until = _scored(fitted)
    r = region_correlation(bold[:until], observed[:until], warmup_frames=warm).r_lag0
    fc_sim = functional_connectivity(bold[warm:until])
    fc_emp = functional_connectivity(observed[warm:until])
    return {"region_r": r, "fc": fc_sim, "fc_similarity": fc_similarity(fc_sim, fc_emp)}


def _mean(x) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _finite(x):
    """``x`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def _write(out: Path, name: str, ds: xr.Dataset, summary: dict, fig) -> list[Path]:
    summary = _finite(summary)
    out.mkdir(parents=True, exist_ok=True)
    zpath, jpath, fpath = out / f"{name}.zarr", out / f"{name}.json", out / f"{name}.png"
    ds = ds.copy()
    ds.attrs = {"experiment": name, "summary": json.dumps(summary)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        ds.to_zarr(zpath, mode="w", consolidated=False, zarr_format=3)
    jpath.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    fig.savefig(fpath, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return [zpath, jpath, fpath]


def _figure(width=7.0, height=3.5, ncols=1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), constrained_layout=True)


def _assimilated_h(fitted) -> tuple[np.ndarray, list[str]]:
    """The fitted h track of the input regions over the assimilated windows (no warm-up, no held-out part)."""
    assim = fitted.assimilation
    keep = ~assim["warmup"].values.astype(bool)
    if "heldout" in assim:
        keep &= ~assim["heldout"].values.astype(bool)
    names = [fitted.labels[i] for i in fitted.inputs]
    return fitted.h_track[keep], names


# ------------------------------------------------------------------------------------------ studies


def _lesion(fitted, settings, out, common):
    from dtb.experiment.perturb import Lesion, Perturbation, resolve_regions
    from dtb.experiment.run import check_perturbation, run_perturbed

    pert = Perturbation(lesion=Lesion(tuple(settings["regions"]), settings["direction"]))
    lesioned = check_perturbation(fitted, pert)["lesioned"]
    report = _report_regions(settings["report_regions"], fitted.labels)
    yield  # everything is checked: the caller may now run and write
    base = run_perturbed(fitted, None, **common)
    les = run_perturbed(fitted, pert, **common)
    # the noise control: the unperturbed twin re-simulated with the next seed (other noise and gains,
    # same graph and h track): how much region r moves without any lesion
    noise_seed = int(base.attrs["seed"]) + 1
    ctl = run_perturbed(fitted, None, **{**common, "seed": noise_seed})
    sb, sl = _scores(fitted, base["bold"].values), _scores(fitted, les["bold"].values)
    sc = _scores(fitted, ctl["bold"].values)
    delta = sl["region_r"] - sb["region_r"]
    delta_noise = sc["region_r"] - sb["region_r"]
    labels = fitted.labels
    rate_delta = les["rate"].values.mean(axis=0) - base["rate"].values.mean(axis=0)
    others = [i for i in range(len(labels)) if i not in lesioned]
    rep_idx = resolve_regions(report, labels) if report else []
    summary = {
        "experiment": "lesion",
        "store": str(fitted.store),
        "lesioned_regions": [labels[i] for i in lesioned],
        "direction": settings["direction"],
        "removed_synapses": int(base.attrs["n_synapses"] - les.attrs["n_synapses"]),
        "region_r_baseline": {labels[i]: _num(sb["region_r"][i]) for i in range(len(labels))},
        "region_r_lesioned": {labels[i]: _num(sl["region_r"][i]) for i in range(len(labels))},
        "delta_r": {labels[i]: _num(delta[i]) for i in range(len(labels))},
        "delta_rate_hz": {labels[i]: float(rate_delta[i]) for i in range(len(labels))},
        "report_regions": [labels[i] for i in rep_idx],
        "delta_r_report_regions": _mean(delta[rep_idx]) if rep_idx else None,
        "delta_r_whole_brain": _mean(delta),
        "delta_r_outside_lesion": _mean(delta[others]),
        "fc_similarity_baseline": _num(sb["fc_similarity"]),
        "fc_similarity_lesioned": _num(sl["fc_similarity"]),
        "seed": int(base.attrs["seed"]),
        "noise_seed": noise_seed,
        "delta_r_noise": {labels[i]: _num(delta_noise[i]) for i in range(len(labels))},
        "delta_r_noise_report_regions": _mean(delta_noise[rep_idx]) if rep_idx else None,
        "delta_r_noise_whole_brain": _mean(delta_noise),
        "delta_r_noise_outside_lesion": _mean(delta_noise[others]),
        # mean |change| of region r outside the lesion: lesion vs the noise control
        "abs_delta_r_outside_lesion": _mean(np.abs(delta[others])),
        "abs_delta_r_noise_outside_lesion": _mean(np.abs(delta_noise[others])),
        "fc_similarity_noise": _num(sc["fc_similarity"]),
    }
    ds = xr.Dataset(
        {
            "region_r_baseline": ("region", sb["region_r"]),
            "region_r_lesioned": ("region", sl["region_r"]),
            "delta_r": ("region", delta),
            "delta_r_noise": ("region", delta_noise),
            "delta_rate": ("region", rate_delta, {"units": "Hz"}),
            "bold_baseline": (("time", "region"), base["bold"].values),
            "bold_lesioned": (("time", "region"), les["bold"].values),
        },
        coords={"region": np.asarray(labels, dtype=str), "time": base["time"].values},
    )
    fig, ax = _figure(max(6.0, 0.25 * len(labels)), 3.5)
    colours = [
        "tab:red" if i in lesioned else ("tab:purple" if i in rep_idx else "tab:grey") for i in range(len(labels))
    ]
    ax.bar(np.arange(len(labels)), np.nan_to_num(delta), color=colours)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=90, fontsize=6 if len(labels) > 20 else 8)
    ax.set_ylabel("change of re-simulation r")
    ax.set_title(f"lesion ({settings['direction']}) of {', '.join(summary['lesioned_regions'])}", fontsize=9)
    return ds, summary, fig


def _report_regions(names, labels):
    """Report regions present in this atlas (missing ones are left out with a log line, not an error)."""
    present = []
    for name in names or []:
        if name in labels or f"{name}_L" in labels or f"{name}_R" in labels:
            present.append(name)
        else:
            log.info("report region %s is not among this twin's regions; left out", name)
    return present


def _stimulation(fitted, settings, out, common):
    from dtb.experiment.perturb import Perturbation, Stimulation
    from dtb.experiment.run import check_perturbation, run_perturbed

    stop = settings["stop_s"]
    stim = Stimulation(
        tuple(settings["regions"]),
        float(settings["amplitude"]),
        float(settings["start_s"]),
        float("inf") if stop is None else float(stop),
    )
    pert = Perturbation(stimulation=stim)
    stimulated = check_perturbation(fitted, pert)["stimulated"]
    yield
    base = run_perturbed(fitted, None, **common)
    run = run_perturbed(fitted, pert, **common)
    labels = fitted.labels
    t = base["time"].values
    on = (t >= stim.start_s) & (t < stim.stop_s)
    d_rate = run["rate"].values - base["rate"].values
    d_bold = run["bold"].values - base["bold"].values
    summary = {
        "experiment": "stimulation",
        "store": str(fitted.store),
        "stimulated_regions": [labels[i] for i in stimulated],
        "amplitude": stim.amplitude,
        "window_s": [stim.start_s, _num(stim.stop_s)],
        "windows_stimulated": int(on.sum()),
        "delta_rate_hz_during": {labels[i]: _mean(d_rate[on, i]) for i in range(len(labels))},
        "delta_bold_peak": {labels[i]: float(np.abs(d_bold[:, i]).max()) for i in range(len(labels))},
        "seed": int(base.attrs["seed"]),
    }
    ds = xr.Dataset(
        {
            "rate_baseline": (("time", "region"), base["rate"].values, {"units": "Hz"}),
            "rate_stimulated": (("time", "region"), run["rate"].values, {"units": "Hz"}),
            "bold_baseline": (("time", "region"), base["bold"].values),
            "bold_stimulated": (("time", "region"), run["bold"].values),
            "stimulated": ("time", on),
        },
        coords={"region": np.asarray(labels, dtype=str), "time": t},
    )
    fig, ax = _figure(7.0, 3.5)
    for i in range(len(labels)):
        ax.plot(t, d_rate[:, i], lw=1.2 if i in stimulated else 0.5, color="tab:red" if i in stimulated else "tab:grey")
    ax.axvspan(stim.start_s, min(stim.stop_s, t[-1] if t.size else 0), color="tab:orange", alpha=0.15)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("rate change [Hz]")
    ax.set_title(f"stimulation +{stim.amplitude:g} of {', '.join(summary['stimulated_regions'])}", fontsize=9)
    return ds, summary, fig


def _rewiring(fitted, settings, out, common):
    from dtb.assim.metrics import fc_similarity
    from dtb.experiment.perturb import Perturbation
    from dtb.experiment.run import run_perturbed

    p_values = settings["p"] if isinstance(settings["p"], list | tuple) else [settings["p"]]
    perts = [Perturbation(rewire_p=p, rewire_k=int(settings["k"])) for p in p_values]  # ConfigError outside [0, 1]
    centres = _centres(settings["centres"], fitted.labels)
    yield
    base = None
    rows = []
    bolds = []
    for pert in perts:
        ds = run_perturbed(fitted, pert, centres=centres, **common)
        if base is None:
            base = ds if pert.rewire_p == 0.0 else run_perturbed(fitted, None, **common)
            sb = _scores(fitted, base["bold"].values)
        sc = _scores(fitted, ds["bold"].values)
        rows.append(
            {
                "p": pert.rewire_p,
                "region_r": _mean(sc["region_r"]),
                "fc_similarity": _num(sc["fc_similarity"]),
                "fc_similarity_to_unperturbed": _num(fc_similarity(sc["fc"], sb["fc"])),
                "mean_rate_hz": float(ds["rate"].values.mean()),
            }
        )
        bolds.append(ds["bold"].values)
    # the noise control: P = 0 re-simulated with the next seed (other noise and gains, same graph)
    ctl = run_perturbed(fitted, None, **{**common, "seed": int(base.attrs["seed"]) + 1})
    sc = _scores(fitted, ctl["bold"].values)
    summary = {
        "experiment": "rewiring",
        "store": str(fitted.store),
        "k": int(settings["k"]),
        "neighbours": "distance (centres)" if centres is not None else "strongest connections",
        "rows": rows,
        "seed": int(base.attrs["seed"]),
        "noise_control": {
            "seed": int(base.attrs["seed"]) + 1,
            "region_r": _mean(sc["region_r"]),
            "fc_similarity": _num(sc["fc_similarity"]),
            "fc_similarity_to_unperturbed": _num(fc_similarity(sc["fc"], sb["fc"])),
        },
    }
    p = np.array([r["p"] for r in rows])

    def col(key):
        return np.array([np.nan if r[key] is None else r[key] for r in rows])

    ds = xr.Dataset(
        {
            "region_r": ("p", col("region_r")),
            "fc_similarity": ("p", col("fc_similarity")),
            "fc_similarity_to_unperturbed": ("p", col("fc_similarity_to_unperturbed")),
            "mean_rate": ("p", col("mean_rate_hz"), {"units": "Hz"}),
            "bold": (("p", "time", "region"), np.stack(bolds)),
        },
        coords={"p": p, "time": base["time"].values, "region": np.asarray(fitted.labels, dtype=str)},
    )
    fig, ax = _figure(5.0, 3.5)
    for key, label in (
        ("fc_similarity", "FC similarity to data"),
        ("region_r", "mean region r to data"),
        ("fc_similarity_to_unperturbed", "FC similarity to P = 0"),
    ):
        ax.plot(p, col(key), "o-", label=label)
    ax.set_xlabel("P (share of long-range input made local)")
    ax.set_ylabel("similarity")
    ax.legend(fontsize=7)
    return ds, summary, fig


def _centres(value, labels):
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"rewiring.centres {path} does not exist (a TSV: region, x, y, z in mm)")
    import pandas as pd

    table = pd.read_csv(path, sep="\t")
    if not {"region", "x", "y", "z"} <= set(table.columns):
        raise ConfigError(f"rewiring.centres {path} needs the columns region, x, y, z")
    table = table.set_index("region")
    missing = [x for x in labels if x not in table.index]
    if missing:
        raise ConfigError(f"rewiring.centres {path} lacks region(s) {missing[:10]}")
    return table.loc[list(labels), ["x", "y", "z"]].to_numpy(dtype=np.float64)


def _spectra(fitted, settings, out, common):
    from dtb.experiment.analysis import h_spectra

    h, names = _assimilated_h(fitted)
    if h.shape[0] < 8:
        raise ConfigError(f"{fitted.store}: only {h.shape[0]} assimilated windows; a spectrum needs at least 8")
    yield
    freqs, power, peak = h_spectra(h, 1.0 / fitted.tr_s, nperseg=settings["nperseg"])
    summary = {
        "experiment": "spectra",
        "store": str(fitted.store),
        "frames": int(h.shape[0]),
        "fs_hz": 1.0 / fitted.tr_s,
        "nperseg": int(min(h.shape[0], settings["nperseg"])),
        "peak_hz": {n: float(f) for n, f in zip(names, peak)},
        # the first frequency above 0 Hz; a peak there is no resolved peak (a red spectrum's maximum)
        "lowest_bin_hz": float(freqs[1]),
        "peak_at_lowest_bin": {n: bool(np.isclose(f, freqs[1])) for n, f in zip(names, peak)},
    }
    ds = xr.Dataset(
        {"power": (("frequency", "region"), power), "peak_frequency": ("region", peak, {"units": "Hz"})},
        coords={"frequency": ("frequency", freqs, {"units": "Hz"}), "region": np.asarray(names, dtype=str)},
    )
    fig, ax = _figure(5.0, 3.5)
    for k, n in enumerate(names):
        ax.semilogy(freqs[1:], power[1:, k], label=n)
    ax.set_xlabel("frequency [Hz]")
    ax.set_ylabel("power of h [units²/Hz]")
    if len(names) <= 12:
        ax.legend(fontsize=6)
    return ds, summary, fig


def _granger(fitted, settings, out, common):
    from dtb.experiment.analysis import conditional_granger

    h, names = _assimilated_h(fitted)
    if len(names) < 2:
        raise ConfigError(f"{fitted.store} has {len(names)} input region(s); Granger causality needs at least 2")
    order, n_surr = int(settings["order"]), int(settings["n_surrogates"])
    if n_surr < 19:
        raise ConfigError(f"granger.n_surrogates must be >= 19 (p >= 0.05 otherwise), got {n_surr}")
    if h.shape[0] - order <= 1 + len(names) * order + 2:
        raise ConfigError(
            f"{fitted.store}: {h.shape[0]} assimilated windows are too few for a VAR({order}) of {len(names)} series"
        )
    yield
    res = conditional_granger(
        h, order=order, n_surrogates=n_surr, alpha=float(settings["alpha"]), seed=int(settings["seed"])
    )
    pairs = [
        {"source": names[i], "target": names[j], "gc": float(res.gc[i, j]), "p": float(res.p_value[i, j]), "significant_fdr": bool(res.significant_fdr[i, j])}
        for i in range(len(names))
        for j in range(len(names))
        if i != j
    ]  # fmt: skip
    summary = {
        "experiment": "granger",
        "store": str(fitted.store),
        "frames": int(h.shape[0]),
        "order": order,
        "n_surrogates": n_surr,
        "alpha": res.alpha,
        "method": "least-squares VAR in numpy, phase-randomised surrogates of the source, Benjamini-Hochberg",
        "pairs": pairs,
        "n_significant_fdr": int(res.significant_fdr.sum()),
    }
    ds = xr.Dataset(
        {
            "gc": (("source", "target"), res.gc),
            "p_value": (("source", "target"), res.p_value),
            "significant_fdr": (("source", "target"), res.significant_fdr),
        },
        coords={"source": np.asarray(names, dtype=str), "target": np.asarray(names, dtype=str)},
    )
    fig, ax = _figure(5.0, 4.2)
    im = ax.imshow(res.gc, cmap="viridis")
    for i, j in zip(*np.nonzero(res.significant_fdr)):
        ax.text(j, i, "*", ha="center", va="center", color="w")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    fig.colorbar(im, ax=ax, label="conditional GC (* FDR significant)")
    return ds, summary, fig


def _criticality(fitted, settings, out, common):
    from dtb.experiment.criticality import analyse_avalanches
    from dtb.io import twin_store

    if not twin_store.has_group(fitted.store, "resimulation_spikes"):
        raise ConfigError(
            f"{fitted.store} has no re-simulation spikes (/resimulation_spikes); run `dtb resimulate` on it first"
        )
    spikes = twin_store.read_group(fitted.store, "resimulation_spikes")
    duration_s = float(spikes.attrs.get("duration_s", 0.0))
    times, ids = spikes["time"].values, spikes["neuron"].values
    if duration_s <= 0 or times.size < 2:
        raise ConfigError(
            f"{fitted.store}: the re-simulation recorded {times.size} spikes over {duration_s:g} s; "
            "criticality needs a spike recording (set resimulation.record_seconds > 0 and re-simulate)"
        )
    n_neurons = settings["n_neurons"]
    if n_neurons is not None and (not isinstance(n_neurons, int) or isinstance(n_neurons, bool) or n_neurons < 1):
        raise ConfigError(f"criticality.n_neurons must be a positive whole number or null (all), got {n_neurons!r}")
    bin_ms = settings["bin_ms"]
    if bin_ms is not None and not (isinstance(bin_ms, (int, float)) and bin_ms > 0):
        raise ConfigError(
            f"criticality.bin_ms must be a positive number of ms or null (mean inter-event interval), got {bin_ms!r}"
        )
    from dtb.twin.run import fitted_region_model

    population = int(fitted_region_model(fitted).network.n_neurons)
    yield
    stats = analyse_avalanches(
        times,
        ids,
        duration_s=duration_s,
        resolution_s=fitted.config.model.dt_ms * 1e-3,
        n_neurons=None if n_neurons is None else min(int(n_neurons), population),
        population_size=population,
        bin_s=None if bin_ms is None else float(bin_ms) * 1e-3,
        seed=int(settings["seed"]),
        k_max=int(settings["k_max"]),
    )
    summary = {
        "experiment": "criticality",
        "store": str(fitted.store),
        "recorded_s": duration_s,
        "network_neurons": population,
    }
    summary.update(stats.summary())
    summary["method"] = (
        "avalanches = runs of non-empty bins of a random subset's pooled spikes; discrete power-law ML fits with "
        "KS-chosen xmin (powerlaw package) vs exponential and log-normal; gamma from <S>(T); MR branching ratio"
    )
    rel = stats.relation
    ds = xr.Dataset(
        {
            "size": ("avalanche", stats.sizes, {"units": "spikes"}),
            "duration": ("avalanche", stats.durations, {"units": "bins", "bin_s": stats.bin_s}),
            "mean_size_by_duration": ("duration_value", rel["mean_size"], {"units": "spikes"}),
            "r_k": ("lag", stats.branching["r_k"], {"long_name": "MR regression slope of A(t+k) on A(t)"}),
        },
        coords={"duration_value": ("duration_value", rel["durations"]), "lag": ("lag", stats.branching["k"])},
    )
    fig, axes = _figure(10.0, 3.2, ncols=3)
    for ax, x, fit, label in (
        (axes[0], stats.sizes, stats.size_fit, "size S [spikes]"),
        (axes[1], stats.durations, stats.duration_fit, "duration T [bins]"),
    ):
        values, counts = np.unique(x, return_counts=True)
        ax.loglog(values, counts / counts.sum(), ".", ms=3)
        tail = values >= fit.xmin
        if tail.any():
            ref = (counts[tail] / counts.sum())[0] * (values[tail] / values[tail][0]) ** (-fit.alpha)
            ax.loglog(values[tail], ref, "-", label=f"alpha {fit.alpha:.2f}")
            ax.legend(fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("P")
    axes[2].loglog(rel["durations"], rel["mean_size"], ".", ms=3)
    axes[2].set_xlabel("duration T [bins]")
    axes[2].set_ylabel("<S>(T)")
    axes[2].set_title(f"gamma fit {rel['gamma_fitted']:.2f}, pred {rel['gamma_predicted']:.2f}", fontsize=8)
    return ds, summary, fig


_RUNNERS = {
    "lesion": _lesion,
    "stimulation": _stimulation,
    "rewiring": _rewiring,
    "spectra": _spectra,
    "granger": _granger,
    "criticality": _criticality,
}


def run_study(
    name: str,
    store: str | Path,
    out: str | Path,
    *,
    config: str | Path | dict | None = None,
    seed: int | None = None,
    backend: str | None = None,
    progress: str | None = "none",
    **overrides,
) -> list[Path]:
    """Run study ``name`` on the fitted twin ``store``; write its zarr, JSON and figure into ``out``.

    Every check (settings, store, region names, P values) happens before anything runs or is
    written. Returns the written paths.
    """
    from dtb.twin.run import load_fitted

    if name in SUBJECT_STUDIES:
        raise ConfigError(f"{name} fits twins of a subject's inputs: give --inputs DIR --subject LABEL, not --store")
    settings = load_study_settings(name, config, **overrides)
    fitted = load_fitted(store)
    common = {"seed": seed, "backend": backend, "progress": progress}
    ds, summary, fig = _finish(_RUNNERS[name](fitted, settings, Path(out), common))
    summary["settings"] = {k: v for k, v in settings.items()}
    summary.setdefault("dtb_claim", CLAIMS[name])
    return _write(Path(out), name, ds, summary, fig)


def _finish(steps):
    """Drive a study generator: its checks (up to its one ``yield``), then its run; (ds, summary, fig)."""
    next(steps)  # the checks
    try:
        next(steps)
    except StopIteration as done:
        return done.value
    raise RuntimeError("internal: a study yields once")  # pragma: no cover


def run_subject_study(
    name: str,
    subject,
    out: str | Path,
    *,
    config: str | Path | dict | None = None,
    progress: str | None = "none",
    **overrides,
) -> list[Path]:
    """Run study ``name`` (``scaling`` or ``input-regions``) on one subject; write its zarr, JSON and figure.

    ``subject`` is a :class:`~dtb.io.region_inputs.RegionSubject` or ``(inputs folder, label)`` of a
    region-level dataset. Every check happens before any twin is fitted or anything is written.
    Returns the written paths.
    """
    from dtb.experiment.inputregions import run_input_regions
    from dtb.experiment.scaling import run_scaling

    if name not in SUBJECT_STUDIES:
        raise ConfigError(f"{name!r} is not a subject study ({list(SUBJECT_STUDIES)}); run it with --store")
    settings = load_study_settings(name, config, **overrides)
    if isinstance(subject, tuple | list):
        from dtb.io.region_inputs import load_region_subject

        subject = load_region_subject(*subject)
    runner = run_scaling if name == "scaling" else run_input_regions
    ds, summary, fig = _finish(runner(subject, settings, Path(out), progress=progress))
    summary["settings"] = {k: v for k, v in settings.items()}
    return _write(Path(out), name, ds, summary, fig)
