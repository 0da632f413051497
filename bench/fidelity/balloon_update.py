"""The Balloon write-back ablation (docs/twin.md, "Balloon bounds"): held-out scores of each
``assimilation.balloon_update`` (and the 0.1 floor) beside the table's twins, subject by subject.

Each variant's lines come from ``bench/fidelity/heldout.py --balloon-update MODE`` (or
``--balloon-floor``) with the table's setting otherwise, run into its own ``--out``; this script
pairs them with ``heldout_runs.jsonl`` (the default, ``linear``) on the subjects both have and writes
``balloon_update.json`` and ``balloon_update.md`` beside the lines, one section per split (thirds,
halves) where both have lines. Paired Wilcoxon tests over
subjects (dtb.fidelity.scores.paired_wilcoxon)::

    .venv/bin/python bench/fidelity/balloon_update.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dtb.fidelity.scores import paired_wilcoxon

HERE = Path(__file__).resolve().parent
#: variant name -> its folder under bench/fidelity/ablation_balloon (heldout.py --out).
VARIANTS = {
    "floor 0.1 (linear)": "",
    "log": "update_log",
    "bounded": "update_bounded",
    "none": "update_none",
}
HORIZONS = ("1", "2", "5")


SPLITS = ("thirds", "halves")


def _runs(path: Path, split: str) -> dict[str, dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["subject"]: row for row in rows if row["protocol"] == "B" and row["split"] == split}


def compare(base: dict[str, dict], variant: dict[str, dict]) -> dict:
    subjects = sorted(set(base) & set(variant))
    out = {"subjects": subjects, "forecast": {}}
    for k in HORIZONS:
        a = np.array([base[s]["twin"]["forecast"][k]["r2"] for s in subjects])
        b = np.array([variant[s]["twin"]["forecast"][k]["r2"] for s in subjects])
        persistence = np.array([base[s]["baselines"]["persistence"][k]["r2"] for s in subjects])
        out["forecast"][k] = {
            "linear_r2": dict(zip(subjects, a.tolist(), strict=True)),
            "variant_r2": dict(zip(subjects, b.tolist(), strict=True)),
            "linear_mean": float(a.mean()) if a.size else None,
            "linear_median": float(np.median(a)) if a.size else None,
            "variant_mean": float(b.mean()) if b.size else None,
            "variant_median": float(np.median(b)) if b.size else None,
            "vs_linear": paired_wilcoxon(b, a),
            "variant_beats_persistence": int(np.sum(b > persistence)),
        }
    fa = [base[s]["twin"]["free_run"]["fc_r"] for s in subjects]
    fb = [variant[s]["twin"]["free_run"]["fc_r"] for s in subjects]
    out["free_run_fc_r"] = {"linear_mean": float(np.mean(fa)), "variant_mean": float(np.mean(fb))} if fa else {}
    return out


def markdown(by_split: dict) -> str:
    lines = [
        "# Balloon write-back ablation (protocol B, fast CPU setting)",
        "",
        "Held-out k-step forecast R^2, mean (median) over the subjects each variant ran; `linear` is the",
        "table's twin (bench/fidelity/heldout.md) on the same subjects and split. Better: subjects where the",
        "variant's R^2 is higher than linear's; p: paired Wilcoxon.",
    ]
    for split, results in by_split.items():
        lines += _split_markdown(split, results)
    return "\n".join(lines) + "\n"


def _split_markdown(split: str, results: dict) -> list[str]:
    lines = [
        "",
        f"## {split} split",
        "",
        "| variant | subjects | k | linear | variant | better | p | beats persistence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for k, f in r["forecast"].items():
            p = f["vs_linear"]["p"]
            lines.append(
                f"| {name} | {len(r['subjects'])} | {k} | {f['linear_mean']:.3f} ({f['linear_median']:.3f}) | "
                f"{f['variant_mean']:.3f} ({f['variant_median']:.3f}) | {f['vs_linear']['n_better']}/"
                f"{len(r['subjects'])} | {'-' if p is None else f'{p:.3g}'} | {f['variant_beats_persistence']} |"
            )
    lines += ["", "Per subject (k = 1, 2, 5: linear -> variant):", ""]
    for name, r in results.items():
        for s in r["subjects"]:
            steps = ", ".join(
                f"{r['forecast'][k]['linear_r2'][s]:.2f} -> {r['forecast'][k]['variant_r2'][s]:.2f}" for k in HORIZONS
            )
            lines.append(f"- {name}, {s}: {steps}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, default=HERE / "heldout_runs.jsonl")
    p.add_argument("--ablation", type=Path, default=HERE / "ablation_balloon")
    args = p.parse_args(argv)
    results = {}
    for split in SPLITS:
        base = _runs(args.base, split)
        for name, folder in VARIANTS.items():
            variant = _runs(args.ablation / folder / "heldout_runs.jsonl", split)
            if set(base) & set(variant):
                results.setdefault(split, {})[name] = compare(base, variant)
    (args.ablation / "balloon_update.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.ablation / "balloon_update.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
