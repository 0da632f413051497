"""Ablation of the twin's wiring and size (issue #8): does DTI wiring, more neurons, a larger in-degree help?

The DTB's qualitative claims at region level: random wiring, or DTI rewired as a kNN graph, lowers
similarity; more neurons or a larger in-degree raise it. Each variant changes one setting of the
fast CPU setting of ``run.py`` and reruns the same subjects, protocol and seed; the reference
(``dti``) lines are the main table's (``runs.jsonl``), or run here when missing. One JSON line per
(variant, subject) in ``ablation.jsonl`` (resumable), then ``ablation.json`` and ``ablation.md``:
mean per variant and the paired difference against ``dti`` over the same subjects.

Protocol B (every region assimilated) is the default: under protocol A the twin's non-input regions
are at chance with any wiring (docs/twin.md), so an ablation there cannot show a difference.

Run: ``.venv/bin/python bench/fidelity/ablation.py --inputs DIR --subjects 101309 NAP001``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dtb.fidelity.ablation import markdown, summarize
from dtb.fidelity.table import read_runs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

HERE = Path(__file__).resolve().parent

#: Variant name -> run.py options that differ from the fast CPU setting (``dti`` last: its lines
#: usually come from the main table once that has the subjects).
VARIANTS = {
    "random": ["--wiring", "random"],
    "knn": ["--wiring", "knn"],
    "indegree100": ["--indegree", "100"],
    "neurons2000": ["--neurons", "2000"],
    "dti": [],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=Path, required=True)
    p.add_argument("--subjects", nargs="+", default=["101309", "NAP001"])
    p.add_argument("--protocol", default="B", choices=list(run.PROTOCOLS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--summarize-only", action="store_true", help="only rewrite ablation.json/ablation.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = args.out / "ablation.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    main_runs = {(r["subject"], r["protocol"]): r for r in read_runs(args.out / "runs.jsonl")}
    if not args.summarize_only:
        update = run.load_twin_config(run.fast_setting(run._parser().parse_args(["--inputs", "."]))).hmda.balloon_update
        for where, lines in ((path, rows), (args.out / "runs.jsonl", list(main_runs.values()))):
            refused = run.other_setting(
                where, [(r["subject"], r) for r in lines], {"balloon_update": update},
                {"balloon_update": run.UNRECORDED_BALLOON_UPDATE},
            )  # fmt: skip
            if refused:
                raise SystemExit(refused)
    for variant in [] if args.summarize_only else args.variants:
        for subject in args.subjects:
            if any(r["variant"] == variant and r["subject"] == subject for r in rows):
                continue
            reference = main_runs.get((subject, args.protocol))
            if variant == "dti" and reference is not None and reference.get("wiring") == "dti":
                row = dict(reference)
            else:
                run_args = run._parser().parse_args(["--inputs", str(args.inputs), *VARIANTS[variant]])
                run_args.work = args.inputs.parent / "fidelity-runs"
                run_args.work.mkdir(parents=True, exist_ok=True)
                row = run.run_pair(run_args, subject, args.protocol)
            row["variant"] = variant
            rows.append(row)
            run.append_line(path, row)
            write_summary(args.out, args.protocol, rows)
    # two runners on disjoint subjects share ablation.jsonl: summarise all of its lines at the end
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    write_summary(args.out, args.protocol, rows)
    return 0


def write_summary(out: Path, protocol: str, rows: list[dict]) -> None:
    summary = summarize(rows)
    (out / "ablation.json").write_text(json.dumps({"protocol": protocol, "variants": summary}, indent=1))
    (out / "ablation.md").write_text(markdown(summary))


if __name__ == "__main__":
    sys.exit(main())
