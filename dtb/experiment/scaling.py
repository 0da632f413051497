"""The ``scaling`` study: held-out fidelity of one subject's twin vs neuron count and in-degree.

For each point of two sweeps, the neuron sweep (``neurons`` at in-degree ``indegree``) and the
in-degree sweep (``indegrees`` at ``indegree_neurons`` neurons), a twin of the subject's
region-level inputs is fitted under the held-out protocol (:func:`dtb.twin.heldout.assimilate_heldout`:
preprocessing fitted on the assimilated frames, k-step lead forecasts from the analysis state) and
scored by :func:`dtb.twin.heldout.score_twin`: k-step forecast R^2 and r per horizon, and the free
run's FC r, F-norm and FCD KS against the held-out frames. A point in both sweeps is fitted once.
The baselines of the same frames (persistence, climatology, AR(1), VAR, scored on the held-out
frames the twins forecast: :func:`dtb.fidelity.protocol.lead_frames`) and the split-half FC
ceiling come once per subject (the data do not change with the twin's size). docs/experiments.md.

Every point is appended to ``scaling_points.jsonl`` in ``out`` as soon as it is scored; a rerun
with the same settings and subject reuses those lines (resumable), and only the final
``scaling.zarr``/``.json``/``.png`` are written whole at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import xarray as xr

from dtb.errors import AssimilationError, ConfigError
from dtb.io.region_inputs import RegionSubject

__all__ = ["SCALING_DEFAULTS", "check_scaling", "scaling_points", "run_scaling", "trend"]

log = logging.getLogger("dtb")

#: Default settings (a ``scaling:`` section of ``--config`` overrides any of them).
SCALING_DEFAULTS = {
    "neurons": [1000, 3162, 10000, 31623],  # 1.5 decades [total neurons]
    "indegree": 100,  # in-degree of the neuron sweep (the DTB's K = 100)
    "indegrees": [20, 50, 100, 200],
    "indegree_neurons": 10000,  # neurons of the in-degree sweep
    "input_regions": "all",  # protocol B; a named set (thalamus, interoceptive) or a list of labels
    "split": "thirds",
    "frames": None,  # the first frames of the run used (None: the whole run); the split must still fit
    "horizons": [1, 2, 5],  # forecast horizons [frames]
    "lead_every": 5,  # lead forecasts after every n-th window (cost; docs/fidelity.md)
    "members": 8,
    "warmup": 10,
    "seed": 1,
    "backend": "auto",
    "twin": None,  # a twin config (YAML path or mapping) under the sweep; default the fast CPU setting
    "keep_stores": False,
}

#: The DTB's claim this study is put beside (docs/experiments.md).
CLAIM = (
    "DTB: similarity to the data rises with the neuron count at in-degree 100; with the in-degree it rises, "
    "then levels off."
)


def _positive_ints(name: str, value, *, many: bool) -> list[int]:
    values = value if isinstance(value, list | tuple) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ConfigError(
            f"scaling.{name} must be {'a list of ' if many else ''}positive whole number(s), got {value!r}"
        )
    if len(set(values)) != len(values):
        raise ConfigError(f"scaling.{name} lists a value twice: {values}")
    return sorted(values)


def _base_mapping(settings: dict) -> dict:
    """The twin config mapping under the sweep: ``twin`` (or the fast CPU setting) with the study's
    input regions, members, warm-up, seed and backend, and no spike recording."""
    from dtb.experiment.protocols import twin_setting

    twin = settings["twin"]
    if twin is None:
        mapping = twin_setting(frames=None)
    elif isinstance(twin, dict):
        mapping = json.loads(json.dumps(twin))
    else:
        import yaml

        path = Path(twin)
        if not path.is_file():
            raise ConfigError(f"scaling.twin {path} does not exist (a twin config YAML, docs/twin.md)")
        mapping = yaml.safe_load(path.read_text()) or {}
        if not isinstance(mapping, dict):
            raise ConfigError(f"scaling.twin {path} is not a YAML mapping of twin settings")
    mapping["seed"], mapping["backend"] = settings["seed"], settings["backend"]
    assim = mapping.setdefault("assimilation", {})
    assim.update(
        input_regions=settings["input_regions"], members=settings["members"], warmup_windows=settings["warmup"]
    )
    mapping.setdefault("resimulation", {})["record_seconds"] = 0.0
    return mapping


def scaling_points(settings: dict) -> list[dict]:
    """The (neurons, indegree) points of both sweeps, each once, with the sweeps it belongs to."""
    points: dict[tuple[int, int], dict] = {}
    for n in settings["neurons"]:
        points.setdefault((n, settings["indegree"]), {"neurons": n, "indegree": settings["indegree"], "sweeps": []})
        points[(n, settings["indegree"])]["sweeps"].append("neurons")
    for k in settings["indegrees"]:
        key = (settings["indegree_neurons"], k)
        points.setdefault(key, {"neurons": key[0], "indegree": k, "sweeps": []})
        points[key]["sweeps"].append("indegree")
    return list(points.values())


def check_scaling(subject: RegionSubject, settings: dict) -> dict:
    """Check every setting and each point's twin config before anything runs; the checked settings.

    Returns the settings with sorted sweeps, the point configs (``configs``: (neurons, indegree) ->
    TwinConfig), the prepared run and its split.
    """
    from dtb.fidelity.protocol import prepare_run
    from dtb.twin.config import load_twin_config, resolve_input_regions

    s = dict(settings)
    s["neurons"] = _positive_ints("neurons", s["neurons"], many=True)
    s["indegrees"] = _positive_ints("indegrees", s["indegrees"], many=True)
    s["indegree"] = _positive_ints("indegree", s["indegree"], many=False)[0]
    s["indegree_neurons"] = _positive_ints("indegree_neurons", s["indegree_neurons"], many=False)[0]
    s["horizons"] = _positive_ints("horizons", s["horizons"], many=True)
    s["lead_every"] = _positive_ints("lead_every", s["lead_every"], many=False)[0]
    if s["frames"] is not None:
        s["frames"] = _positive_ints("frames", s["frames"], many=False)[0]
        subject = dataclasses.replace(subject, bold=subject.bold[: s["frames"]])  # the fits see these frames only
    s["subject"] = subject
    if s["split"] not in ("thirds", "halves"):
        raise ConfigError(f"scaling.split must be thirds or halves, got {s['split']!r}")
    if isinstance(s["input_regions"], list | tuple):  # labels; a name without _L/_R means both hemispheres
        from dtb.experiment.perturb import resolve_regions

        labels = list(subject.labels)
        s["input_regions"] = [labels[i] for i in resolve_regions(s["input_regions"], labels, "scaling input region")]
    base = _base_mapping(s)
    configs = {}
    for point in scaling_points(s):
        mapping = json.loads(json.dumps(base))
        mapping["neurons_total"] = point["neurons"]
        mapping.setdefault("model", {})["indegree"] = point["indegree"]
        configs[(point["neurons"], point["indegree"])] = load_twin_config(mapping)
    first = next(iter(configs.values()))
    resolve_input_regions(first, list(subject.labels), subject.atlas)  # unknown names list the valid ones
    dataset = str(subject.metadata.get("SourceDataset", "")) if subject.metadata else ""
    run = prepare_run(subject.label, subject.bold, subject.tr_s, s["split"], dataset=dataset)  # too short: refused
    s["configs"], s["run"] = configs, run
    return s


#: Twin settings whose default changed after points were stored: a mapping that leaves one out is
#: fingerprinted with the value it resolves to now, so a point fitted under the old default is refitted
#: (assimilation.balloon_update: linear until 2026-12-08, bounded since).
CHANGED_DEFAULTS = (("assimilation", "balloon_update"),)


def _effective_twin(settings: dict) -> dict:
    """``settings["twin"]`` (a YAML file: its contents) with every :data:`CHANGED_DEFAULTS` key set to the
    value it resolves to."""
    twin = settings["twin"]
    if twin is None:
        twin = {}
    elif isinstance(twin, dict):
        twin = json.loads(json.dumps(twin, default=str))
    else:
        import yaml

        twin = yaml.safe_load(Path(twin).read_text()) or {}  # check_scaling made sure it is a mapping
    config = next(iter(settings["configs"].values()))
    resolved = {("assimilation", "balloon_update"): config.hmda.balloon_update}
    for section, key in CHANGED_DEFAULTS:
        twin.setdefault(section, {}).setdefault(key, resolved[(section, key)])
    return twin


def _fingerprint(subject: RegionSubject, settings: dict, point: dict) -> str:
    """Which fit a stored point is: the subject's data, the point, and every setting that changes the fit."""
    keys = (
        "input_regions",
        "split",
        "frames",
        "horizons",
        "lead_every",
        "members",
        "warmup",
        "seed",
        "backend",
        "twin",
    )
    text = json.dumps(
        {
            "subject": subject.label,
            "bold": hashlib.sha256(np.ascontiguousarray(subject.bold, dtype=np.float64).tobytes()).hexdigest(),
            "point": [point["neurons"], point["indegree"]],
            **{k: settings[k] if not isinstance(settings[k], Path) else str(settings[k]) for k in keys},
            "twin": _effective_twin(settings),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_points(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: that point runs again
            continue
        out[row.get("fingerprint", "")] = row
    return out


def _fit_point(subject, config, run, baselines, frames, horizons, lead_every, work: Path, keep: bool, progress) -> dict:
    from dtb.io import twin_store
    from dtb.twin.heldout import assimilate_heldout, score_twin

    store = work / f"sub-{subject.label}_n{config.neurons_total}_k{config.model.indegree}.zarr"
    started = time.perf_counter()
    store, _ = assimilate_heldout(
        subject,
        config,
        run.split.name,
        store,
        horizons=tuple(horizons),
        lead_every=lead_every,
        resume=store.exists(),
        progress=progress,
    )
    scores = score_twin(store, run, baselines, horizons=tuple(horizons))
    for k in horizons:  # the baselines were scored on the frames this rule gives: the twin's must be them
        if not np.array_equal(scores["forecast"][k]["frame_index"], frames[int(k)]):
            raise AssimilationError(
                f"{store}: its {k}-step forecasts cover other held-out frames than lead_every {lead_every} gives; "
                "delete the store (or the work folder) and run the study again"
            )
    network = twin_store.read_group(store, "network")
    row = {
        "neurons_requested": int(config.neurons_total),
        "neurons_built": int(network["neuron_count"].values.sum()),
        "indegree": int(config.model.indegree),
        "forecast": {str(k): {m: v[m] for m in ("r2", "r", "frames")} for k, v in scores["forecast"].items()},
        "free_run": {m: scores["free_run"][m] for m in ("fc_r", "fc_fnorm", "fcd_ks")},
        "wall_s": time.perf_counter() - started,
    }
    if not keep:
        shutil.rmtree(store, ignore_errors=True)
    return row


#: Up to this many points the trend's p-value is the exact permutation p (all n! pairings).
EXACT_TREND_POINTS = 8


def trend(x, y) -> dict:
    """Spearman rank correlation of ``y`` with ``x`` (finite pairs), its two-sided p-value and the
    change from the first to the last.

    With at most :data:`EXACT_TREND_POINTS` points the p-value is exact (every pairing of x and y;
    ``scipy.stats.permutation_test``): a sweep of n sizes cannot reach p below 2 / n! (1/3 for 3
    sizes), whereas the t approximation of ``spearmanr`` reports p = 0 for a perfect 3-point trend.
    """
    from scipy.stats import permutation_test, spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n": int(x.size), "rho": None, "p": None, "last_minus_first": None}
    if x.size >= 2:
        out["last_minus_first"] = float(y[np.argmax(x)] - y[np.argmin(x)])
    if x.size >= 3 and np.ptp(y) > 0:
        test = spearmanr(x, y)
        out["rho"], out["p"] = float(test.statistic), float(test.pvalue)
        if x.size <= EXACT_TREND_POINTS:
            exact = permutation_test(
                (y,), lambda yy: spearmanr(x, yy).statistic, permutation_type="pairings", n_resamples=np.inf
            )
            out["p"] = float(exact.pvalue)
    return out


def _num(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def run_scaling(subject: RegionSubject, settings: dict, out: Path, *, progress: str | None = "none"):
    """The study as a generator: checks, yields once, then fits and scores; returns (ds, summary, fig)."""
    from dtb.fidelity.protocol import FORECASTERS, lead_frames, subject_baselines

    s = check_scaling(subject, settings)
    yield
    subject = s["subject"]  # the first ``frames`` frames when set
    run, horizons = s["run"], s["horizons"]
    frames = lead_frames(run, s["lead_every"], tuple(horizons))  # the held-out frames every twin forecasts
    baselines = subject_baselines(run, horizons=tuple(horizons), frames=frames)
    out.mkdir(parents=True, exist_ok=True)
    points_path = out / "scaling_points.jsonl"
    done = _read_points(points_path)
    work = out / "scaling_stores"
    rows = []
    for point in scaling_points(s):
        key = _fingerprint(subject, s, point)
        if key in done:
            row = done[key]
            log.info("scaling: n %d, K %d: reused from %s", point["neurons"], point["indegree"], points_path)
        else:
            work.mkdir(parents=True, exist_ok=True)
            config = s["configs"][(point["neurons"], point["indegree"])]
            log.info("scaling: n %d, K %d: fitting", point["neurons"], point["indegree"])
            row = _fit_point(
                subject, config, run, baselines, frames, horizons, s["lead_every"], work, s["keep_stores"], progress
            )
            row["fingerprint"] = key
            with points_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        rows.append({**row, "sweeps": point["sweeps"]})
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    return _result(subject, s, rows, baselines, FORECASTERS)


def _result(subject, s, rows, baselines, forecasters):
    from dtb.experiment.studies import _figure

    horizons = [str(k) for k in s["horizons"]]
    base_json = baselines.to_json()
    summary = {
        "experiment": "scaling",
        "subject": subject.label,
        "dtb_claim": CLAIM,
        "split": s["split"],
        "frames": int(subject.bold.shape[0]),
        "tr_s": float(subject.tr_s),
        "points": [{k: v for k, v in r.items() if k != "fingerprint"} for r in rows],
        "baselines": {f: {k: base_json["forecast"][f][k]["r2"] for k in horizons} for f in forecasters},
        "ceiling_fc_r": _num(baselines.ceiling["fc_r"]),
        "sizes_honoured": all(r["neurons_built"] == r["neurons_requested"] for r in rows),
    }
    trends = {}
    for sweep, axis in (("neurons", "neurons_built"), ("indegree", "indegree")):
        sel = sorted((r for r in rows if sweep in r["sweeps"]), key=lambda r: r[axis])
        x = [r[axis] for r in sel]
        trends[sweep] = {
            **{f"forecast_r2_k{k}": trend(x, [r["forecast"][k]["r2"] for r in sel]) for k in horizons},
            "free_fc_r": trend(x, [r["free_run"]["fc_r"] for r in sel]),
        }
    summary["trends"] = trends
    ds = xr.Dataset(
        {
            "forecast_r2": (("point", "horizon"), [[r["forecast"][k]["r2"] for k in horizons] for r in rows]),
            "forecast_r": (("point", "horizon"), [[r["forecast"][k]["r"] for k in horizons] for r in rows]),
            "free_fc_r": ("point", [r["free_run"]["fc_r"] for r in rows]),
            "free_fc_fnorm": ("point", [r["free_run"]["fc_fnorm"] for r in rows]),
            "free_fcd_ks": ("point", [r["free_run"]["fcd_ks"] for r in rows]),
            "neurons_built": ("point", [r["neurons_built"] for r in rows], {"units": "neurons"}),
            "in_neuron_sweep": ("point", ["neurons" in r["sweeps"] for r in rows]),
            "in_indegree_sweep": ("point", ["indegree" in r["sweeps"] for r in rows]),
            "wall_s": ("point", [r["wall_s"] for r in rows], {"units": "s"}),
            "baseline_r2": (
                ("forecaster", "horizon"),
                [[summary["baselines"][f][k] for k in horizons] for f in forecasters],
            ),
        },
        coords={
            "neurons": ("point", [r["neurons_requested"] for r in rows], {"units": "neurons"}),
            "indegree": ("point", [r["indegree"] for r in rows], {"units": "synapses per neuron"}),
            "horizon": ("horizon", [int(k) for k in horizons], {"units": "frames"}),
            "forecaster": ("forecaster", list(forecasters)),
        },
    )
    fig, axes = _figure(10.0, 3.6, ncols=2)
    for ax, sweep, axis, label in (
        (axes[0], "neurons", "neurons_built", f"neurons built (in-degree {s['indegree']})"),
        (axes[1], "indegree", "indegree", f"in-degree K ({s['indegree_neurons']} neurons)"),
    ):
        sel = sorted((r for r in rows if sweep in r["sweeps"]), key=lambda r: r[axis])
        x = [r[axis] for r in sel]
        for k in horizons:
            ax.plot(x, [r["forecast"][k]["r2"] for r in sel], "o-", label=f"forecast R² k={k}")
        ax.plot(x, [r["free_run"]["fc_r"] for r in sel], "s--", color="k", label="free-run FC r")
        if summary["ceiling_fc_r"] is not None:
            ax.axhline(summary["ceiling_fc_r"], color="grey", lw=0.8, ls=":", label="FC ceiling")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out fidelity")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"sub-{subject.label}: fidelity vs size", fontsize=9)
    axes[1].set_title("fidelity vs in-degree", fontsize=9)
    return ds, summary, fig
