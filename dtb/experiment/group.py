"""Group statistics of `dtb experiment` results over subjects, beside the DTB's claims (docs/experiments.md).

:func:`summarize_study` takes the subjects' ``NAME.json`` summaries of one study and returns the
paired statistics the docs' tables show: Wilcoxon signed-rank tests over subjects (two-sided;
exact for small n as scipy chooses), each with ``n`` and the number of subjects in the claim's
direction. :func:`markdown` writes them as a table beside the claim. Plain numpy/scipy.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from dtb.fidelity.scores import paired_wilcoxon
from dtb.fidelity.table import paired_comparison

__all__ = ["summarize_study", "markdown", "one_sample"]


def _finite(values) -> np.ndarray:
    x = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return x[np.isfinite(x)]


def one_sample(values) -> dict:
    """Wilcoxon signed-rank test of ``values`` against 0: n, mean, n_positive, p (None with < 2 or all 0)."""
    x = _finite(values)
    out = {"n": int(x.size), "mean": float(x.mean()) if x.size else None, "n_positive": int((x > 0).sum())}
    out["p"] = paired_wilcoxon(x, np.zeros_like(x))["p"]
    return out


def _scaling(rows: list[dict]) -> dict:
    out = {}
    for sweep in ("neurons", "indegree"):
        metrics = sorted({m for r in rows for m in r.get("trends", {}).get(sweep, {})})
        entry = {}
        for metric in metrics:
            rho = [r["trends"][sweep][metric]["rho"] for r in rows if metric in r["trends"].get(sweep, {})]
            change = [
                r["trends"][sweep][metric]["last_minus_first"] for r in rows if metric in r["trends"].get(sweep, {})
            ]
            entry[metric] = {"spearman_rho": one_sample(rho), "largest_minus_smallest": one_sample(change)}
        out[sweep] = entry
    return out


def _input_regions(rows: list[dict]) -> dict:
    runs = [run for r in rows for run in r.get("runs", [])]
    protocols = rows[0]["protocols"] if rows else ["A-thalamus", "A-interoceptive"]
    a, b = protocols[-1], protocols[0]
    keys = ("fc_similarity", "resim_region_r", "resim_noninput_r", "heldout_input_r")
    return {
        "paired_over_subjects": [paired_comparison(runs, k, a=a, b=b) for k in keys],
        "within_subject_regions": [
            {"subject": r["subject"], **{k: r["paired_regions"][k] for k in ("n", "n_higher", "mean_difference", "p")}}
            for r in rows
        ],
    }


def _lesion(rows: list[dict]) -> dict:
    return {
        "delta_r_report_regions": one_sample([r.get("delta_r_report_regions") for r in rows]),
        "delta_r_whole_brain": one_sample([r.get("delta_r_whole_brain") for r in rows]),
        "delta_r_outside_lesion": one_sample([r.get("delta_r_outside_lesion") for r in rows]),
        # the same with the noise control (the next seed, no lesion) in place of the lesion
        "delta_r_noise_report_regions": one_sample([r.get("delta_r_noise_report_regions") for r in rows]),
        "delta_r_noise_whole_brain": one_sample([r.get("delta_r_noise_whole_brain") for r in rows]),
        # does the lesion move region r outside it more than a new seed does? (paired over subjects)
        "abs_delta_r_outside_lesion_vs_noise": paired_wilcoxon(
            [_or_nan(r.get("abs_delta_r_outside_lesion")) for r in rows],
            [_or_nan(r.get("abs_delta_r_noise_outside_lesion")) for r in rows],
        ),
    }


def _or_nan(x) -> float:
    return np.nan if x is None else float(x)


def _rewiring(rows: list[dict]) -> dict:
    out = {}
    for key in ("fc_similarity", "region_r"):
        first, last = [], []
        for r in rows:
            by_p = {row["p"]: row[key] for row in r["rows"]}
            if 0.0 in by_p and 1.0 in by_p:
                first.append(_or_nan(by_p[0.0]))
                last.append(_or_nan(by_p[1.0]))
        out[f"{key}_p1_vs_p0"] = paired_wilcoxon(last, first)
    # the noise floor: P = 0 re-simulated with the next seed, against P = 0
    pairs = [
        (r["noise_control"], p0[0])
        for r in rows
        if r.get("noise_control") and (p0 := [x for x in r["rows"] if x["p"] == 0.0])
    ]
    if pairs:
        out["noise_control_fc_similarity_to_unperturbed"] = one_sample(
            [c["fc_similarity_to_unperturbed"] for c, _ in pairs]
        )
        out["noise_control_region_r_vs_p0"] = paired_wilcoxon(
            [_or_nan(c["region_r"]) for c, _ in pairs], [_or_nan(x["region_r"]) for _, x in pairs]
        )
    return out


def _spectra(rows: list[dict]) -> dict:
    peaks: dict[str, list[float]] = {}
    for r in rows:
        for region, hz in r["peak_hz"].items():
            peaks.setdefault(region, []).append(hz)
    every = _finite([hz for values in peaks.values() for hz in values])
    lowest = [flag for r in rows for flag in r.get("peak_at_lowest_bin", {}).values()]
    return {
        # a peak in the first bin above 0 Hz is a red spectrum's maximum, not a resolved peak
        "share_of_peaks_at_the_lowest_bin": float(np.mean(lowest)) if lowest else None,
        "lowest_bin_hz": sorted({round(r["lowest_bin_hz"], 5) for r in rows if "lowest_bin_hz" in r}),
        "median_peak_hz": {k: float(np.median(v)) for k, v in peaks.items()},
        "share_of_peaks_in_0.02_0.025_hz": float(np.mean((every >= 0.02) & (every <= 0.025))) if every.size else None,
        "share_of_peaks_in_0.02_0.08_hz": float(np.mean((every >= 0.02) & (every <= 0.08))) if every.size else None,
    }


def _granger(rows: list[dict]) -> dict:
    count = Counter(f"{p['source']} -> {p['target']}" for r in rows for p in r["pairs"] if p["significant_fdr"])
    return {"significant_pairs": dict(count.most_common()), "subjects": len(rows)}


def _criticality(rows: list[dict]) -> dict:
    return {key: one_sample([r.get(key) for r in rows]) for key in ("dcc", "branching_ratio_mr")}


_SUMMARIES = {
    "scaling": _scaling,
    "input-regions": _input_regions,
    "lesion": _lesion,
    "rewiring": _rewiring,
    "spectra": _spectra,
    "granger": _granger,
    "criticality": _criticality,
}


def summarize_study(name: str, rows: list[dict]) -> dict:
    """Statistics over the subjects' summaries (``NAME.json``) of study ``name``."""
    out = {"experiment": name, "subjects": sorted(str(r.get("subject", r.get("store", "?"))) for r in rows)}
    out["dtb_claim"] = next((r["dtb_claim"] for r in rows if r.get("dtb_claim")), None)
    if name in _SUMMARIES and rows:
        out["statistics"] = _SUMMARIES[name](rows)
    return out


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _flatten(value, prefix="") -> list[tuple[str, str]]:
    if isinstance(value, dict) and not {"n", "p"} <= set(value):
        return [row for k, v in value.items() for row in _flatten(v, f"{prefix}{k} / ")]
    if isinstance(value, list):
        return [row for i, v in enumerate(value) for row in _flatten(v, f"{prefix}{i} / ")]
    if isinstance(value, dict):  # a test: n, direction count, mean / difference, p
        parts = [f"n = {value['n']}"]
        for key in ("n_positive", "n_higher", "n_better"):
            if key in value:
                parts.append(f"{key} {value[key]}")
        for key in ("mean", "mean_difference"):
            if key in value:
                parts.append(f"{key} {_fmt(value[key])}")
        parts.append(f"Wilcoxon p {_fmt(value['p'])}")
        label = prefix.rstrip(" /")
        if "metric" in value:
            label = f"{value['a']} vs {value['b']}, {value['metric']}"
        return [(label, ", ".join(parts))]
    return [(prefix.rstrip(" /"), _fmt(value))]


def markdown(summary: dict) -> str:
    """One study's group table: the DTB's claim first, then each statistic."""
    lines = [
        f"## {summary['experiment']} ({len(summary['subjects'])} subject(s))",
        "",
        "| | value |",
        "|---|---|",
        f"| DTB's claim | {summary.get('dtb_claim') or '-'} |",
    ]
    for label, text in _flatten(summary.get("statistics", {})):
        lines.append(f"| {label} | {text} |")
    return "\n".join(lines) + "\n"
