"""``dtb report``: the per-subject twin report (one self-contained HTML page)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dtb.cli import options

log = logging.getLogger("dtb")


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write the twin report of a run (one self-contained HTML page)",
        description=(
            "Write the twin report of one run store (RUN.zarr from 'dtb assimilate' / 'dtb resimulate'): summary, "
            "anatomy, connectivity, simulation, assimilation, fidelity (with the DTB's published values), warnings "
            "and methods, as one HTML file with embedded figures that opens offline. Groups missing from the store "
            "are reported as 'not available', not as errors."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", type=Path, help="the twin run store (RUN.zarr)")
    options.add_out(p, "HTML file to write (replaced if it exists)")
    p.add_argument(
        "--figures", type=Path, default=None, help="also write every figure as a PNG file into this directory"
    )
    p.add_argument(
        "--atlas",
        type=Path,
        default=None,
        help="3-D NIfTI of integer region labels (MNI) the regions come from; enables the brain figures",
    )
    p.add_argument(
        "--atlas-labels",
        type=Path,
        default=None,
        help="label table of --atlas (TSV with columns index and name); default: region i is label i+1",
    )
    p.add_argument(
        "--warning",
        action="append",
        default=[],
        metavar="TEXT",
        help="an extra warning to list in the report (repeatable), e.g. from a workflow stage",
    )
    p.add_argument("--dpi", type=int, default=90, help="resolution of the figures [dots per inch]")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="processes drawing the figures (forked; the same page as with 1); e.g. the cores you have",
    )
    p.add_argument(
        "--experiment",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a `dtb experiment` output folder or its NAME.json (repeatable): figure and summary beside the DTB's claim",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dtb.report import build_report  # matplotlib and nilearn load only when a report is written

    out = build_report(
        args.run,
        args.out,
        figures_dir=args.figures,
        extra_warnings=args.warning,
        atlas=args.atlas,
        atlas_labels=args.atlas_labels,
        dpi=args.dpi,
        jobs=args.jobs,
        experiments=args.experiment,
    )
    print(out)
    return 0
