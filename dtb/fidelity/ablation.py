"""The wiring and size ablation's summary: mean per variant and the paired difference against ``dti``.

Each row is one (variant, subject) run line of ``bench/fidelity/ablation.py`` (the fields of
:data:`dtb.fidelity.table.FIELDS` plus ``variant``); :func:`summarize` pairs every variant with
the ``dti`` reference over the same subjects (:func:`dtb.fidelity.table.paired_comparison`).
"""

from __future__ import annotations

import numpy as np

from dtb.fidelity.table import paired_comparison

__all__ = ["METRICS", "TESTED", "summarize", "markdown"]

METRICS = ("fc_similarity", "resim_region_r", "fnorm", "forecast_r", "heldout_r")
#: Metrics of the paired Wilcoxon test of each variant against ``dti`` over subjects.
TESTED = ("fc_similarity", "resim_region_r", "fnorm")


def summarize(rows: list[dict]) -> dict:
    """Mean per variant and the paired difference against ``dti`` (same subjects)."""
    ref = {r["subject"]: r for r in rows if r["variant"] == "dti"}
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == variant]
        entry = {"subjects": sorted(r["subject"] for r in sel)}
        for key in METRICS:
            values = np.array([np.nan if r.get(key) is None else r[key] for r in sel], dtype=float)
            diffs = [r[key] - ref[r["subject"]][key] for r in sel if r["subject"] in ref and r.get(key) is not None]
            entry[key] = float(np.nanmean(values)) if np.isfinite(values).any() else None
            entry[f"{key}_minus_dti"] = float(np.mean(diffs)) if diffs and variant != "dti" else None
        if variant != "dti":
            as_protocols = [{**r, "protocol": r["variant"]} for r in rows]
            entry["paired"] = {k: paired_comparison(as_protocols, k, a=variant, b="dti") for k in TESTED}
        out[variant] = entry
    return out


def markdown(summary: dict) -> str:
    lines = ["| variant | subjects | " + " | ".join(f"{k} (- dti)" for k in METRICS) + " |"]
    lines.append("|---" * (len(METRICS) + 2) + "|")
    for variant, e in summary.items():
        cells = []
        for key in METRICS:
            v, d = e[key], e[f"{key}_minus_dti"]
            cells.append("-" if v is None else f"{v:.3f}" + ("" if d is None else f" ({d:+.3f})"))
        lines.append(f"| {variant} | {len(e['subjects'])} | " + " | ".join(cells) + " |")
    lines.append("")
    for variant, e in summary.items():
        for key, t in e.get("paired", {}).items():
            p = "-" if t["p"] is None else f"{t['p']:.4f}"
            diff = "-" if t["mean_difference"] is None else f"{t['mean_difference']:+.3f}"
            lines.append(
                f"- {variant} vs dti, {key}: n = {t['n']} subjects, {t['n_higher']} higher with {variant}, "
                f"mean difference {diff}, Wilcoxon p = {p}"
            )
    return "\n".join(lines) + "\n"
