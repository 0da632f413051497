"""Protocols A-thalamus and A-interoceptive beside protocol B on held-out frames (docs/fidelity.md),
subject by subject.

Each protocol's lines come from ``bench/fidelity/heldout.py --protocols P --balloon-update bounded``
(thirds split, the fast CPU setting otherwise), run into its own ``--out``. This script pairs every
protocol A folder with protocol B's (``ablation_balloon/update_bounded``, the same setting) on the
subjects both have and writes ``protocols.json`` and ``protocols.md`` into ``--out``: k-step R^2
(scored on every region: under protocol A the non-input regions are never observed, so their
forecasts are the network's own), the free run's FC r, and paired Wilcoxon tests over subjects
(dtb.fidelity.scores.paired_wilcoxon)::

    .venv/bin/python bench/fidelity/protocols.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dtb.fidelity.scores import paired_wilcoxon

HERE = Path(__file__).resolve().parent
HORIZONS = ("1", "2", "5")
#: protocol -> folder of its heldout_runs.jsonl
FOLDERS = {
    "B": HERE / "ablation_balloon" / "update_bounded",
    "A-thalamus": HERE / "protocol_a" / "A-thalamus",
    "A-interoceptive": HERE / "protocol_a" / "A-interoceptive",
}


def _runs(folder: Path, protocol: str, split: str) -> dict[str, dict]:
    path = folder / "heldout_runs.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    return {r["subject"]: r for r in rows if r["protocol"] == protocol and r["split"] == split}


def _stats(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "median": float(np.median(values))}


def compare(b: dict[str, dict], a: dict[str, dict]) -> dict:
    """Protocol A's twins (``a``) against B's (``b``) on the subjects both ran."""
    subjects = sorted(set(a) & set(b))
    out: dict = {"subjects": subjects, "forecast": {}}
    for k in HORIZONS:
        rb = np.array([b[s]["twin"]["forecast"][k]["r2"] for s in subjects])
        ra = np.array([a[s]["twin"]["forecast"][k]["r2"] for s in subjects])
        best = np.array([max(v[k]["r2"] for v in a[s]["baselines"].values()) for s in subjects])
        out["forecast"][k] = {
            "B": {**_stats(rb), "by_subject": dict(zip(subjects, rb.tolist(), strict=True))},
            "A": {**_stats(ra), "by_subject": dict(zip(subjects, ra.tolist(), strict=True))},
            "A_vs_B": paired_wilcoxon(ra, rb),
            "A_beats_best_baseline": int(np.sum(ra > best)),
        }
    fb = np.array([b[s]["twin"]["free_run"]["fc_r"] for s in subjects])
    fa = np.array([a[s]["twin"]["free_run"]["fc_r"] for s in subjects])
    out["free_run_fc_r"] = {"B": _stats(fb), "A": _stats(fa), "A_vs_B": paired_wilcoxon(fa, fb)}
    return out


def markdown(results: dict, split: str) -> str:
    lines = [
        f"# Protocols A beside B on held-out frames ({split} split, fast CPU setting, balloon_update bounded)",
        "",
        "k-step forecast R^2 over every region, mean (median) over the subjects both ran; better: subjects where",
        "protocol A's R^2 is higher than B's; p: paired Wilcoxon; beats best baseline: subjects where protocol A's",
        "R^2 is above every baseline's (persistence, climatology, AR(1), VAR(1), VAR(2)).",
        "",
        "| protocol | subjects | k | B | A | A better | p | A beats best baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for k, f in r["forecast"].items():
            p = f["A_vs_B"]["p"]
            lines.append(
                f"| {name} | {len(r['subjects'])} | {k} | {f['B']['mean']:.3f} ({f['B']['median']:.3f}) | "
                f"{f['A']['mean']:.3f} ({f['A']['median']:.3f}) | {f['A_vs_B']['n_better']}/{len(r['subjects'])} | "
                f"{'-' if p is None else f'{p:.3g}'} | {f['A_beats_best_baseline']} |"
            )
    lines += ["", "Free run over the held-out span, FC r with the subject's held-out FC, mean (median):", ""]
    for name, r in results.items():
        f = r["free_run_fc_r"]
        p = f["A_vs_B"]["p"]
        lines.append(
            f"- {name}: {f['A']['mean']:.3f} ({f['A']['median']:.3f}); B {f['B']['mean']:.3f} ({f['B']['median']:.3f}); "
            f"A higher in {f['A_vs_B']['n_better']}/{len(r['subjects'])}, p {'-' if p is None else f'{p:.3g}'}"
        )
    lines += ["", "Per subject (k = 1, 2, 5: B -> A):", ""]
    for name, r in results.items():
        for s in r["subjects"]:
            steps = ", ".join(
                f"{r['forecast'][k]['B']['by_subject'][s]:.2f} -> {r['forecast'][k]['A']['by_subject'][s]:.2f}"
                for k in HORIZONS
            )
            lines.append(f"- {name}, {s}: {steps}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="thirds", choices=("thirds", "halves"))
    p.add_argument("--out", type=Path, default=HERE / "protocol_a")
    args = p.parse_args(argv)
    b = _runs(FOLDERS["B"], "B", args.split)
    results = {}
    for name in ("A-thalamus", "A-interoceptive"):
        a = _runs(FOLDERS[name], name, args.split)
        if set(a) & set(b):
            results[name] = compare(b, a)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "protocols.json").write_text(json.dumps({"split": args.split, "protocols": results}, indent=1) + "\n")
    (args.out / "protocols.md").write_text(markdown(results, args.split))
    print(markdown(results, args.split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
