"""``dtb experiment <name>``: virtual experiments on a fitted twin store (docs/experiments.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dtb.cli import options

log = logging.getLogger("dtb")

#: The studies, spelt here so that --help needs no library (tests check they equal dtb.experiment.studies.STUDIES).
STUDIES = ("lesion", "stimulation", "rewiring", "spectra", "granger", "criticality")


def register(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="virtual experiments on a fitted twin: lesion, stimulation, rewiring, h spectra, Granger causality, avalanche criticality",
        description=(
            "Perturb a fitted twin (run store of `dtb twin`) and re-simulate it with its fitted h track and the "
            "seeds of `dtb resimulate`, or analyse its h tracks. Writes NAME.zarr, NAME.json and NAME.png into "
            "--out. lesion: cut a region set's outgoing (or incoming) connections, change of re-simulation r per "
            "region; stimulation: add current to a region set's excitatory populations in a time window; "
            "rewiring: move a share P of every region's long-range input to its nearest neighbours, similarity "
            "vs P; spectra: Welch spectra and peak frequency of the input regions' h; granger: conditional "
            "Granger causality among the input regions' h with surrogate p-values. Settings: --config YAML with "
            "a section per study (docs/experiments.md)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("name", choices=STUDIES, help="the experiment")
    p.add_argument("--store", type=Path, required=True, help="fitted twin run store (sub-<L>_twin.zarr)")
    options.add_out(p, "a directory for NAME.zarr, NAME.json and NAME.png")
    options.add_config(p, "sections lesion:, stimulation:, rewiring:, spectra:, granger: (default: built-in)")
    p.add_argument(
        "--regions",
        nargs="+",
        default=None,
        metavar="REGION",
        help="lesion/stimulation: region labels (a name without _L/_R means both hemispheres)",
    )
    p.add_argument(
        "--direction", choices=("outgoing", "incoming", "both"), default=None, help="lesion: which connections"
    )
    p.add_argument("--p", type=float, nargs="+", default=None, metavar="P", help="rewiring: shares P in [0, 1]")
    options.add_seed(p, "noise seed of the re-simulated brains; default: the one `dtb resimulate` used")
    options.add_backend(p, "default: the run's")
    p.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="none", help="progress display")
    p.set_defaults(func=_experiment)


def _experiment(args) -> int:
    from dtb.experiment.studies import run_study

    overrides = {}
    if args.regions is not None:
        overrides["regions"] = list(args.regions)
    if args.direction is not None:
        overrides["direction"] = args.direction
    if args.p is not None:
        overrides["p"] = list(args.p)
    paths = run_study(
        args.name,
        args.store,
        args.out,
        config=args.config,
        seed=args.seed,
        backend=args.backend,
        progress=args.progress,
        **overrides,
    )
    for path in paths:
        log.info("wrote %s", path)
    print(f"dtb experiment {args.name}: {', '.join(str(x) for x in paths)}")
    return 0
