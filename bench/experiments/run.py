"""`dtb experiment` studies on the 12 development subjects (issue #23): resumable, one JSON line per result.

For every (study, subject) not yet in ``--runs``: run the study into ``--out/<study>/sub-<L>/``
(``NAME.zarr``, ``NAME.json``, ``NAME.png``) and append one JSON line (the study's summary with
``study``, ``subject``, ``folder``, ``wall_s``). Then rewrite ``--out/<study>.md`` and
``--out/summary.json``: the group statistics of :mod:`dtb.experiment.group` (paired Wilcoxon tests
over subjects) beside the DTB's claim. docs/experiments.md lists what each table holds.

``scaling`` and ``input-regions`` fit their own twins from the region-level inputs (``--inputs``).
The other studies work on a fitted store per subject: ``--store-pattern`` with ``{subject}``, e.g.
the protocol-B stores ``bench/fidelity/run.py --keep-stores`` leaves in its work folder.

Usage (resumable: kill and rerun at will; the scaling study also resumes inside a subject)::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/experiments/run.py --studies scaling input-regions \
        --subjects all [--config experiments.yaml]
    .venv/bin/python bench/experiments/run.py --studies lesion rewiring spectra granger \
        --store-pattern '/tmp/dtb/fidelity-runs/sub-{subject}_B_dti_n1000_k20.zarr'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from dtb.experiment.group import markdown, summarize_study
from dtb.experiment.studies import STUDIES, SUBJECT_STUDIES, run_study, run_subject_study
from dtb.fidelity.table import append_run_line, other_setting
from dtb.io.datasets import GW_SUBJECTS, HCP_SUBJECTS
from dtb.io.region_inputs import bids_label

log = logging.getLogger("dtb.bench.experiments")
HERE = Path(__file__).resolve().parent
SUBJECTS = tuple(bids_label(s) for s in HCP_SUBJECTS + GW_SUBJECTS)


def read_lines(path: Path) -> list[dict]:
    """The result lines (the last per (study, subject) wins; a line cut by a kill is skipped)."""
    rows: dict[tuple[str, str], dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[(row["study"], row["subject"])] = row
    return list(rows.values())


def check_same_fits(runs: Path) -> None:
    """Refuse to add input-regions fits of another Balloon update to ``runs`` (its summary pools the lines);
    the study's twins take ``assimilation.balloon_update`` from the default."""
    from dtb.assim.hmda import UNRECORDED_BALLOON_UPDATE, HMDASettings

    fits = [(r["subject"], fit) for r in read_lines(runs) if r["study"] == "input-regions" for fit in r.get("runs", [])]
    refused = other_setting(
        runs, fits, {"balloon_update": HMDASettings.balloon_update}, {"balloon_update": UNRECORDED_BALLOON_UPDATE}
    )
    if refused:
        raise SystemExit(refused)


def run_one(args, study: str, subject: str) -> dict:
    folder = args.out / study / f"sub-{subject}"
    started = time.perf_counter()
    if study in SUBJECT_STUDIES:
        run_subject_study(study, (args.inputs, subject), folder, config=args.config)
    else:
        store = Path(args.store_pattern.format(subject=subject))
        run_study(study, store, folder, config=args.config)
    summary = json.loads((folder / f"{study}.json").read_text())
    return {
        **summary,
        "study": study,
        "subject": subject,
        "folder": str(folder),
        "wall_s": time.perf_counter() - started,
        "load_avg_1min": os.getloadavg()[0],
    }


def write_summaries(runs: Path, out: Path) -> dict:
    rows = read_lines(runs)
    summaries = {}
    for study in STUDIES:
        sel = [r for r in rows if r["study"] == study]
        if sel:
            summaries[study] = summarize_study(study, sel)
            (out / f"{study}.md").write_text(markdown(summaries[study]))
    (out / "summary.json").write_text(json.dumps(summaries, indent=1) + "\n")
    return summaries


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", nargs="+", default=list(SUBJECT_STUDIES), choices=list(STUDIES))
    p.add_argument("--subjects", nargs="+", default=["all"], help="BIDS labels (101309, NAP001, ...) or all")
    p.add_argument("--inputs", type=Path, default=Path(os.environ.get("DTB_CACHE_DIR", "/tmp/dtb")) / "fidelity-inputs")
    p.add_argument("--store-pattern", default=None, help="fitted store per subject, with {subject}")
    p.add_argument("--config", type=Path, default=None, help="experiment settings (a section per study)")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--runs", default="runs.jsonl", help="JSON-lines file inside --out")
    p.add_argument("--summarize-only", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if any(s not in SUBJECT_STUDIES for s in args.studies) and not args.summarize_only and not args.store_pattern:
        p.error("studies on fitted stores need --store-pattern (with {subject})")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.out / args.runs
    subjects = SUBJECTS if args.subjects == ["all"] else tuple(args.subjects)
    if not args.summarize_only and "input-regions" in args.studies:
        check_same_fits(runs)
    if not args.summarize_only:
        for study in args.studies:
            for subject in subjects:
                if any(r["study"] == study and r["subject"] == subject for r in read_lines(runs)):
                    continue
                log.info("%s sub-%s: start", study, subject)
                append_run_line(runs, run_one(args, study, subject))
                write_summaries(runs, args.out)
    write_summaries(runs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
