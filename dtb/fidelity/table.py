"""The fidelity results table: per-(subject, protocol) JSON lines -> results.json + results.md.

Used by ``bench/fidelity/run.py`` (after every run), by the ``input-regions`` experiment
(:mod:`dtb.experiment.inputregions`, docs/experiments.md) and by ``bench/experiments/run.py``.
Plain numpy/scipy; no simulation here.

One line of ``runs.jsonl`` per (subject, protocol) holds at least the issue's fields
(:data:`FIELDS`); the summary averages them per protocol (NaN-safe, with the number of subjects),
puts the DTB's published values beside them (:data:`PUBLISHED`), and runs the paired Wilcoxon
signed-rank test of the interoceptive input set against the thalamus alone over the subjects
that have both (:func:`paired_comparison`), whichever way it comes out.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from scipy import stats

#: Per-subject fields every run line carries (the issue's names).
FIELDS = (
    "subject",
    "protocol",
    "resim_region_r",
    "resim_input_r",
    "resim_noninput_r",
    "fc_similarity",
    "fnorm",
    "forecast_r",
    "heldout_r",
    "persistence_r",
)

#: Extra numeric fields averaged when present.
EXTRA = (
    "heldout_input_r",
    "persistence_input_r",
    "heldout_input_rmse",
    "persistence_input_rmse",
    "climatology_input_rmse",
    "fc_baseline_similarity",
    "fc_baseline_fnorm",
    "heldout_rmse",
    "persistence_rmse",
    "climatology_rmse",
    "wall_s",
)

#: Protocols, in table order: name -> input regions of the twin config.
PROTOCOLS = {"A-thalamus": "thalamus", "A-interoceptive": "interoceptive", "B": "all"}

#: The DTB's published values (Lu et al., the Digital Twin Brain; the issue's list) and targets.
PUBLISHED = {
    "resim_region_r": 0.624,
    "fc_similarity": 0.551,
    "fnorm": 0.271,
    "forecast_r": 0.9,
    "thalamus_r": "0.977 / 0.981 (left / right, assimilation)",
}

#: Target direction per field: a metric meets its target when ``value >= target`` ("ge") or
#: ``value <= target`` ("le").
TARGETS = {"resim_region_r": ("ge", 0.624), "fc_similarity": ("ge", 0.551), "forecast_r": ("ge", 0.9)}

NUMERIC = FIELDS[2:] + EXTRA

#: Means split by dataset (HCP, TR 0.72 s; GW, TR about 2 s) in the summary.
DATASET_KEYS = ("forecast_r", "resim_region_r", "fc_similarity", "fnorm", "heldout_rmse", "persistence_rmse")


def append_run_line(path: str | Path, row: dict) -> None:
    """Append ``row`` to a JSON-lines file as one line, in a single write (safe with two runners on one file)."""
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def other_setting(path: str | Path, lines, wanted: dict, unrecorded: dict | None = None) -> str | None:
    """Why a result file cannot take lines of the setting ``wanted`` (None when it can).

    ``lines`` are (subject, setting) pairs of the lines already in ``path``; a key a line does not
    record counts as its value in ``unrecorded`` (what lines were fitted with before it was recorded).
    A file's tables pool its lines as one setting, so lines of another setting need their own file.
    """
    unrecorded = unrecorded or {}
    for subject, setting in lines:
        have = {k: setting.get(k, unrecorded.get(k)) for k in wanted}
        differ = [f"{k} {have[k]!r} there, {v!r} asked" for k, v in wanted.items() if have[k] != v]
        if differ:
            return (
                f"{path} holds twins of another setting (sub-{subject}: {', '.join(differ)}); give this "
                "setting its own --out"
            )
    return None


def read_runs(path: str | Path) -> list[dict]:
    """The run lines of a JSON-lines file (missing file: none); the last line per pair wins."""
    path = Path(path)
    if not path.is_file():
        return []
    runs: dict[tuple[str, str], dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n} is not a JSON line ({exc}); delete or fix that line") from None
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ValueError(f"{path}:{n} lacks field(s) {missing}; every run line needs {list(FIELDS)}")
        runs[(str(row["subject"]), str(row["protocol"]))] = row
    return list(runs.values())


def _value(row: dict, key: str) -> float:
    value = row.get(key)
    return float("nan") if value is None else float(value)


def _mean(rows: list[dict], key: str) -> tuple[float | None, float | None, int]:
    values = np.array([_value(r, key) for r in rows])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None, 0
    sd = float(values.std(ddof=1)) if values.size > 1 else None
    return float(values.mean()), sd, int(values.size)


def _wilcoxon(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """(statistic, two-sided p) of the paired Wilcoxon signed-rank test; (None, None) with fewer than
    2 pairs or all differences zero (exact for small n, as scipy chooses)."""
    if x.size < 2 or not np.any(x != y):
        return None, None
    test = stats.wilcoxon(x, y, alternative="two-sided")
    return float(test.statistic), float(test.pvalue)


def paired_comparison(runs: list[dict], key: str, a: str = "A-interoceptive", b: str = "A-thalamus") -> dict:
    """Paired Wilcoxon signed-rank test of ``key`` between protocols ``a`` and ``b``.

    Over the subjects that have a finite value in both. Two-sided p (exact for small n, as scipy
    chooses); ``n_higher`` counts subjects where ``a`` is higher. With fewer than 2 pairs, or
    all differences zero, ``p`` is None.
    """
    by = {p: {r["subject"]: _value(r, key) for r in runs if r["protocol"] == p} for p in (a, b)}
    subjects = sorted(s for s in set(by[a]) & set(by[b]) if math.isfinite(by[a][s]) and math.isfinite(by[b][s]))
    x = np.array([by[a][s] for s in subjects])
    y = np.array([by[b][s] for s in subjects])
    diff = x - y
    out = {
        "metric": key,
        "a": a,
        "b": b,
        "n": len(subjects),
        "subjects": subjects,
        "n_higher": int((diff > 0).sum()),
        "mean_difference": float(diff.mean()) if diff.size else None,
    }
    out["statistic"], out["p"] = _wilcoxon(x, y)
    return out


def paired_keys(rows: list[dict], a: str, b: str) -> dict:
    """Paired Wilcoxon signed-rank test of field ``a`` against field ``b`` over the same runs.

    E.g. held-out forecast RMSE against persistence RMSE, subject by subject. ``n_lower`` counts
    runs where ``a`` is lower. With fewer than 2 finite pairs, or all differences zero, ``p`` is None.
    """
    pairs = [(_value(r, a), _value(r, b), r["subject"]) for r in rows]
    pairs = [(x, y, s) for x, y, s in pairs if math.isfinite(x) and math.isfinite(y)]
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    diff = x - y
    out = {
        "a": a,
        "b": b,
        "n": len(pairs),
        "subjects": sorted(p[2] for p in pairs),
        "n_lower": int((diff < 0).sum()),
        "median_difference": float(np.median(diff)) if diff.size else None,
        "p": _wilcoxon(x, y)[1],
    }
    return out


def summarize_runs(runs: list[dict], setting: dict | None = None) -> dict:
    """Means per protocol (with SD and n), the published values, target checks and the paired tests."""
    protocols = {}
    for name in [*PROTOCOLS, *sorted({r["protocol"] for r in runs} - set(PROTOCOLS))]:
        rows = [r for r in runs if r["protocol"] == name]
        if not rows:
            continue
        means = {}
        for key in NUMERIC:
            mean, sd, n = _mean(rows, key)
            if n:
                means[key] = {"mean": mean, "sd": sd, "n": n}
        targets = {}
        for key, (how, target) in TARGETS.items():
            if key in means:
                value = means[key]["mean"]
                targets[key] = {"target": target, "met": bool(value >= target if how == "ge" else value <= target)}
        for suffix, where in (("", "all regions"), ("_input", "input regions")):
            a, b = f"heldout{suffix}_rmse", f"persistence{suffix}_rmse"
            if a in means and b in means:
                test = paired_keys(rows, a, b)
                targets[f"heldout_beats_persistence{suffix}"] = {
                    "met": bool(means[a]["mean"] < means[b]["mean"] and test["n_lower"] > test["n"] / 2),
                    "by": f"held-out RMSE below persistence RMSE, {where}: mean over subjects and in most subjects",
                    "paired": test,
                }
        by_dataset = {}
        for dataset in sorted({str(r.get("dataset", "?")) for r in rows}):
            sel = [r for r in rows if str(r.get("dataset", "?")) == dataset]
            by_dataset[dataset] = {k: dict(zip(("mean", "sd", "n"), _mean(sel, k))) for k in DATASET_KEYS}
        protocols[name] = {
            "subjects": sorted(r["subject"] for r in rows),
            "mean": means,
            "targets": targets,
            "by_dataset": by_dataset,
        }
    return {
        "setting": setting or {},
        "published": PUBLISHED,
        "protocols": protocols,
        "interoceptive_vs_thalamus": [paired_comparison(runs, k) for k in ("fc_similarity", "resim_region_r")],
        "runs": sorted(runs, key=lambda r: (r["protocol"], r["subject"])),
    }


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _fmt_p(p) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


_ROWS = (
    ("forecast_r", "forecast r (assimilation, input regions)", "~0.9"),
    ("resim_region_r", "re-simulation r, all regions", "0.624 (voxels)"),
    ("resim_input_r", "re-simulation r, input regions", "0.977 / 0.981 (thalamus)"),
    ("resim_noninput_r", "re-simulation r, non-input regions", "-"),
    ("fc_similarity", "FC similarity", "0.551"),
    ("fc_baseline_similarity", "FC similarity of the others' mean FC (baseline)", "-"),
    ("fnorm", "F-norm (normalised)", "0.271"),
    ("heldout_r", "held-out forecast ACC", "-"),
    ("persistence_r", "persistence ACC", "-"),
    ("heldout_rmse", "held-out forecast RMSE", "-"),
    ("persistence_rmse", "persistence RMSE", "-"),
    ("climatology_rmse", "climatology RMSE (baseline)", "-"),
    ("heldout_input_r", "held-out forecast ACC, input regions", "-"),
    ("persistence_input_r", "persistence ACC, input regions", "-"),
    ("heldout_input_rmse", "held-out forecast RMSE, input regions", "-"),
    ("persistence_input_rmse", "persistence RMSE, input regions", "-"),
    ("climatology_input_rmse", "climatology RMSE, input regions (baseline)", "-"),
)


def markdown(summary: dict) -> str:
    """The results table as markdown (means ± SD over subjects, n, the DTB's values beside them)."""
    names = list(summary["protocols"])
    lines = [
        "**In-sample**: re-simulation and FC are scored on the 40 frames the twin assimilated, after a zero-phase "
        "band-pass over the whole run, and the DTB's published values are in-sample too. The held-out protocol and "
        "the field's baselines are in docs/fidelity.md (bench/fidelity/baselines.md, heldout.md).",
        "",
        "| metric | " + " | ".join(f"{n} (n)" for n in names) + " | DTB published |",
    ]
    lines.append("|---" * (len(names) + 2) + "|")
    for key, label, published in _ROWS:
        cells = []
        for name in names:
            m = summary["protocols"][name]["mean"].get(key)
            digits = 4 if key.endswith("rmse") else 3
            cells.append("-" if m is None else f"{_fmt(m['mean'], digits)} ± {_fmt(m['sd'], digits)} ({m['n']})")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {published} |")
    lines.append("")
    for test in summary["interoceptive_vs_thalamus"]:
        lines.append(
            f"- {test['a']} vs {test['b']}, {test['metric']}: n = {test['n']} subjects, "
            f"{test['n_higher']} higher with {test['a']}, mean difference {_fmt(test['mean_difference'])}, "
            f"Wilcoxon p = {_fmt_p(test['p'])}"
        )
    for name in names:
        met = summary["protocols"][name]["targets"]
        parts = [f"{k} {'met' if v['met'] else 'missed'}" for k, v in met.items()]
        lines.append(f"- targets, {name}: " + (", ".join(parts) if parts else "-"))
        for k, v in met.items():
            t = v.get("paired")
            if t:
                lines.append(
                    f"  - {k}: held-out RMSE lower than persistence's in {t['n_lower']} of {t['n']} subjects, "
                    f"median difference {_fmt(t['median_difference'], 5)}, Wilcoxon p = {_fmt_p(t['p'])}"
                )
    lines.append("")
    lines.append("| protocol | dataset | " + " | ".join(DATASET_KEYS) + " |")
    lines.append("|---" * (len(DATASET_KEYS) + 2) + "|")
    for name in names:
        for dataset, entry in summary["protocols"][name].get("by_dataset", {}).items():
            cells = []
            for key in DATASET_KEYS:
                m = entry[key]
                cells.append(f"{_fmt(m['mean'], 4 if key.endswith('rmse') else 3)} ({m['n']})" if m["n"] else "-")
            lines.append(f"| {name} | {dataset} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| subject | protocol | " + " | ".join(FIELDS[2:]) + " |")
    lines.append("|---" * (len(FIELDS)) + "|")
    for row in summary["runs"]:
        cells = [_fmt(row.get(k) if row.get(k) is None else float(row[k])) for k in FIELDS[2:]]
        lines.append(f"| {row['subject']} | {row['protocol']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(runs_path: str | Path, out_dir: str | Path, setting: dict | None = None) -> dict:
    """Read ``runs_path``, write ``results.json`` and ``results.md`` into ``out_dir``; return the summary."""
    out_dir = Path(out_dir)
    summary = summarize_runs(read_runs(runs_path), setting)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "results.md").write_text(markdown(summary))
    return summary
