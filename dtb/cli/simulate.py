"""``dtb simulate``: run a network description and write its records to a zarr store."""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dtb.errors import ConfigError
from dtb.sim.analysis import summarize
from dtb.sim.backends import BACKEND_NAMES
from dtb.sim.description import load_description
from dtb.sim.engine import INITIAL_V_MODES, Ensemble, Simulation

log = logging.getLogger("dtb")


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
    p.add_argument(
        "--out", type=Path, required=True, help="output zarr store (a directory); must not exist unless --overwrite"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="biological time to simulate [ms] (default: the file's simulate.duration_ms, else 1000)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="noise and initial-state seed (default: the file's seed); the graph always uses the file's seed",
    )
    p.add_argument("--members", type=int, default=1, help="ensemble members sharing the graph; member m uses seed + m")
    p.add_argument(
        "--backend", choices=BACKEND_NAMES, default=None, help="simulation backend (default: the file's, else torch)"
    )
    p.add_argument(
        "--device", default=None, help="torch device: cpu, cuda, cuda:1 or auto (default: the file's, else cpu)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for the torch backend (default: torch's choice)"
    )
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    desc = load_description(args.description)
    settings = desc.simulate
    duration = args.duration if args.duration is not None else float(settings.get("duration_ms", 1000.0))
    backend = args.backend or settings.get("backend", "torch")
    device = args.device or settings.get("device", "cpu")
    initial_v = args.initial_v or settings.get("initial_V", "uniform")
    if args.members < 1:
        raise ConfigError(f"--members must be >= 1, got {args.members}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    seed = desc.seed if args.seed is None else args.seed
    record = replace(desc.record, spikes=False) if args.no_spikes else desc.record
    sim = Simulation(
        desc.network,
        desc.model,
        ensemble=Ensemble(tuple(seed + m for m in range(args.members))),
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
