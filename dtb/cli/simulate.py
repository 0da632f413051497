"""``dtb simulate``: run a network description and write its records to a zarr store."""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from dtb.cli import options
from dtb.errors import ConfigError

log = logging.getLogger("dtb")

# Parsing must not import torch (dtb --help answers in well under a second), so the choices are
# spelt here; tests/cli/test_cli_startup.py checks they equal dtb.sim.engine.INITIAL_V_MODES and
# dtb.sim.distributed.LAYOUTS.
INITIAL_V_MODES = ("uniform", "rest", "reset")
LAYOUTS = ("neurons", "members")


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a network description file",
        description=(
            "Simulate the spiking network of a description file (YAML: populations, projections, neuron "
            "parameters; see dtb/sim/description.py) and stream population spike counts, spike events and "
            "sampled traces to a zarr store. Values not given on the command line come from the file's "
            "'simulate' section, then from the defaults."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("description", type=Path, help="network description file (.yaml)")
    options.add_out(p, "zarr store (a directory); must not exist unless --overwrite")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="biological time to simulate [ms] (default: the file's simulate.duration_ms, else 1000)",
    )
    options.add_seed(p, "default: the file's seed; replaces it for the graph, noise and initial state")
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="ensemble members sharing the graph; member m's noise uses derive_seed(seed, 'member', m)",
    )
    options.add_backend(p, "default: the file's, else torch")
    options.add_device(
        p,
        "or auto (default: the file's, else cpu; with --ranks above 1, auto: one GPU per rank, cuda:<local rank>, "
        "when CUDA is present)",
    )
    options.add_threads(p, "default: torch's choice; with --ranks, the node's cores / ranks on the node")
    p.add_argument("--initial-v", default=None, help=f"initial membrane potential: one of {INITIAL_V_MODES}")
    p.add_argument("--chunk", type=float, default=100.0, help="write records to the store every this many ms")
    p.add_argument("--no-spikes", action="store_true", help="do not record individual spike events (counts only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output store")
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="progress display: bar on a terminal / log lines otherwise (auto), or force one",
    )
    options.add_ranks(
        p,
        "above 1 the command re-executes itself under an MPI launcher (mpiexec locally, srun when SLURM_JOB_ID "
        "is set); results are identical for any rank count. Needs mpi4py and an MPI runtime (pip install mpi4py "
        "mpich)",
    )
    p.add_argument(
        "--launcher",
        default=None,
        help=(
            "MPI launcher command line used with --ranks, e.g. 'srun --mpi=pmix' or 'mpiexec -bind-to core' "
            "('{n}' is replaced by the rank count, else '-n N' is appended; default: $DTB_MPI_LAUNCHER, "
            "else srun under SLURM, else mpiexec)"
        ),
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="neurons",
        help=(
            "how ranks share the work: 'neurons' splits one brain (whole populations per rank, spike ids "
            "exchanged every delay), 'members' gives every rank whole brains for a block of members"
        ),
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dtb.seeds import derive_seed
    from dtb.sim.analysis import summarize
    from dtb.sim.backends import resolve_backend_name
    from dtb.sim.description import load_description
    from dtb.sim.engine import Ensemble, Simulation
    from dtb.sim.mpi_launch import inside_mpi_job, relaunch

    if args.ranks < 1:
        raise ConfigError(f"--ranks must be >= 1, got {args.ranks}")
    if args.layout == "members" and args.members < args.ranks:
        raise ConfigError(
            f"--layout members needs at least one member per rank (--members {args.members} < --ranks {args.ranks})"
        )
    if inside_mpi_job():
        return _run_rank(args)
    if args.ranks > 1:
        load_description(args.description)  # user mistakes are reported here, once, before any launch
        return relaunch(args.ranks, args.argv, args.launcher)
    desc = load_description(args.description, args.seed)
    settings = desc.simulate
    duration = args.duration if args.duration is not None else float(settings.get("duration_ms", 1000.0))
    backend = resolve_backend_name(args.backend or settings.get("backend", "torch"))
    device = args.device or settings.get("device", "cpu")
    initial_v = args.initial_v or settings.get("initial_V", "uniform")
    if args.members < 1:
        raise ConfigError(f"--members must be >= 1, got {args.members}")
    options.set_threads(args.threads)
    record = replace(desc.record, spikes=False) if args.no_spikes else desc.record
    sim = Simulation(
        desc.network,
        desc.model,
        ensemble=Ensemble(tuple(derive_seed(desc.seed, "member", m) for m in range(args.members))),
        backend=backend,
        device=device,
        record=record,
        initial_V=initial_v,
    )
    log.info(
        "%s: %d neurons, %d synapses, %d member(s), backend %s on %s",
        desc.name,
        desc.network.n_neurons,
        desc.network.n_synapses,
        args.members,
        sim.backend.name,
        sim.device,
    )
    t0 = time.perf_counter()
    with _lock(args.out):
        tree = sim.run(duration, store=args.out, chunk_ms=args.chunk, progress=args.progress, overwrite=args.overwrite)
    wall = time.perf_counter() - t0
    summary = summarize(tree["population_counts"].to_dataset()) if "population_counts" in tree else {}
    summary.update({"wall_s": round(wall, 3), "out": str(args.out), "duration_ms": duration})
    log.info(
        "done in %.2f s; mean rates [Hz]: %s",
        wall,
        {k: np.round(v, 2).tolist() for k, v in summary.get("rate_hz", {}).items()},
    )
    print(json.dumps(summary))
    return 0


def _lock(out):
    """The output store's lock (docs/reliability.md), or nothing without --out."""
    import contextlib

    from dtb.io.locks import output_lock

    return contextlib.nullcontext() if out is None else output_lock(out, what="simulation store")


def _run_rank(args: argparse.Namespace) -> int:
    """One rank of ``dtb simulate --ranks N`` (started by the MPI launcher)."""
    import torch

    from dtb.seeds import derive_seed
    from dtb.sim.analysis import summarize
    from dtb.sim.backends import resolve_backend_name
    from dtb.sim.description import load_description
    from dtb.sim.distributed import (
        DistributedConfig,
        DistributedSimulation,
        abort_on_error,
        max_op,
        mpi_world,
        ranks_share_of_cores,
    )
    from dtb.sim.engine import Ensemble

    comm = mpi_world()
    if comm.Get_size() != args.ranks:
        raise ConfigError(
            f"this MPI job has {comm.Get_size()} processes but --ranks is {args.ranks}; launch with -n {args.ranks}"
        )
    rank = comm.Get_rank()
    if rank != 0:
        logging.getLogger("dtb").setLevel(logging.WARNING)
    with abort_on_error(comm):
        desc = load_description(args.description, args.seed)
        settings = desc.simulate
        duration = args.duration if args.duration is not None else float(settings.get("duration_ms", 1000.0))
        if args.threads is not None:
            options.set_threads(args.threads)
        else:
            torch.set_num_threads(ranks_share_of_cores(comm))
            record = replace(desc.record, spikes=False) if args.no_spikes else desc.record
        sim = DistributedSimulation(
            desc.network,
            desc.model,
            comm=comm,
            config=DistributedConfig(layout=args.layout),
            ensemble=Ensemble(tuple(derive_seed(desc.seed, "member", m) for m in range(args.members))),
            backend=resolve_backend_name(args.backend or settings.get("backend", "torch")),
            device=args.device or settings.get("device", "auto"),
            record=record,
            initial_V=args.initial_v or settings.get("initial_V", "uniform"),
        )
        log.info(
            "%s: %d neurons on %d ranks (layout %s), %d member(s), backend %s on %s",
            desc.name,
            desc.network.n_neurons,
            comm.Get_size(),
            args.layout,
            args.members,
            sim.local.backend.name,
            sim.device,
        )
        t0 = time.perf_counter()
        with _lock(args.out if rank == 0 else None):  # rank 0 writes the store
            tree = sim.run(
                duration, store=args.out, chunk_ms=args.chunk, progress=args.progress, overwrite=args.overwrite
            )
        wall = comm.allreduce(time.perf_counter() - t0, op=max_op())
        traffic = comm.gather(sim.exchange_stats, root=0)
        if rank == 0:
            summary = summarize(tree["population_counts"].to_dataset()) if "population_counts" in tree else {}
            summary.update(
                {
                    "wall_s": round(wall, 3),
                    "out": str(args.out),
                    "duration_ms": duration,
                    "ranks": comm.Get_size(),
                    "layout": args.layout,
                    "bytes_sent_per_rank": [t.get("bytes_sent", 0) for t in traffic],
                }
            )
            log.info("done in %.2f s on %d ranks", wall, comm.Get_size())
            print(json.dumps(summary))
    return 0
