"""``dtb network build`` (counts + connectome -> stored network) and ``dtb plan`` (GPUs needed)."""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from dtb.cli import options
from dtb.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("dtb")

# Parsing must not import torch or numpy (dtb --help answers in well under a second), so the
# choices are spelt here; tests/cli/test_cli_startup.py checks they equal dtb.network.build.METHODS,
# dtb.network.layout.SPLIT_MODES and dtb.network.populations.MODEL_NAMES.
METHODS = ("auto", "compiled", "numpy")
SPLIT_MODES = ("exact", "multinomial")
MODEL_NAMES = ("ei", "laminar")


def register(sub) -> None:
    p = sub.add_parser(
        "network",
        help="build a spiking network from neuron counts and a connectome",
        description="Build the network of a twin (docs/model.md §3) and store it as a zarr v3 group, one block per rank.",
    )
    actions = p.add_subparsers(dest="network_command", metavar="ACTION", required=True)
    b = actions.add_parser(
        "build",
        help="build and store a network",
        description=(
            "Build populations and fixed in-degree synapses from per-voxel (or per-region) neuron counts and a "
            "structural connectome, partition them over ranks, and write a zarr v3 network store. Arrays are read "
            "from .npy, .npz (a scipy.sparse matrix for the connectome), or text (.tsv/.csv/.txt) files. The "
            "graph is a pure function of the seed and the target neuron id: building rank by rank (--rank) in "
            "separate processes gives the same network."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--inputs",
        type=Path,
        help="a twin's network: the region-level input dataset of --participant-label, built with the network "
        "settings of --config (neurons_total, model) exactly as dtb assimilate/twin would (docs/twin.md, 'One network')",
    )
    src.add_argument("--counts", type=Path, help="neurons per voxel/region (1-D array file)")
    src.add_argument("--grey-matter", type=Path, help="grey-matter volume per voxel (1-D array file); needs --neurons")
    b.add_argument("--participant-label", default=None, help="with --inputs: the subject, without 'sub-'")
    options.add_config(b, "with --inputs: the twin config (docs/twin.md); default: built-in defaults")
    b.add_argument(
        "--neurons",
        type=int,
        default=None,
        help="total neurons to distribute by grey matter (N_v = round(N * gm_v / sum gm))",
    )
    b.add_argument(
        "--connectome",
        type=Path,
        default=None,
        help=(
            "voxel x voxel (or region x region) connectome, row = inputs of a target; a labelled relmat TSV "
            "(row = source, header and first column = region labels) is transposed; optional for a single voxel"
        ),
    )
    b.add_argument(
        "--cortical",
        type=Path,
        default=None,
        help="per-voxel cortical flag (1-D array of 0/1); laminar model in cortical voxels only",
    )
    b.add_argument(
        "--indegree-scale", type=Path, default=None, help="per-voxel in-degree scale, mean 1 (e.g. a PET SV2A map)"
    )
    b.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default=None,
        help="population model: voxel E/I, or laminar cortex + E/I subcortex (default: ei)",
    )
    b.add_argument(
        "--indegree", type=int, default=None, help="reference in-degree K (synapses per neuron; default 100)"
    )
    options.add_seed(
        b,
        "the graph uses derive_seed(seed, 'graph'), as the twin's does; default: the config's seed with --inputs, else 0",
    )
    b.add_argument("--min-e", type=int, default=None, help="floor of every excitatory population size [neurons] (200)")
    b.add_argument("--min-i", type=int, default=None, help="floor of every inhibitory population size [neurons] (50)")
    b.add_argument("--weight", type=int, default=None, help="synaptic weight k of every synapse (w = k/255; 255)")
    b.add_argument(
        "--weight-inhibitory",
        type=int,
        default=None,
        help="weight k of synapses from inhibitory neurons (default: --weight); e.g. --weight 133 "
        "--weight-inhibitory 255 gives the E/I model's ~10 Hz regime",
    )
    b.add_argument(
        "--split",
        choices=SPLIT_MODES,
        default=None,
        help="exact largest-remainder split of K over source columns, or a multinomial draw per synapse (exact)",
    )
    b.add_argument(
        "--long-range-sources",
        choices=("all_e", "l5e"),
        default=None,
        help="laminar model: long-range output from all E layers (by share) or from L5E only (all_e)",
    )
    options.add_ranks(b, "the network is partitioned into one block per rank")
    b.add_argument(
        "--rank",
        type=int,
        action="append",
        default=None,
        help="build only this rank's block into an existing store (repeatable); see --init-only",
    )
    b.add_argument(
        "--init-only",
        action="store_true",
        help="only create the store (populations, ranges, metadata) for ranks to fill with --rank",
    )
    b.add_argument(
        "--memory-gib",
        type=float,
        default=None,
        help="refuse to build when one rank would need more than this much memory [GiB] to simulate",
    )
    b.add_argument(
        "--members",
        type=int,
        default=None,
        help="ensemble members, for the memory check (default: the config's with --inputs, else 1)",
    )
    options.add_threads(
        b, "threads of the compiled synapse sampler (the network is identical for any number)", default=1
    )
    options.add_device(
        b,
        "where to sample synapses: cpu (compiled C++ sampler), cuda/cuda:N (torch on a GPU) or auto "
        "(cuda when a GPU is visible); the network is identical on every device",
        default="cpu",
    )
    b.add_argument(
        "--sampler",
        choices=METHODS,
        default="auto",
        help="CPU sampler: compiled (C++/OpenMP, built on first use), numpy (reference), auto (compiled when "
        "a C++ compiler is available, else numpy with a warning)",
    )
    options.add_out(b, "zarr store (a directory)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing store")
    b.set_defaults(func=run_build)

    plan = sub.add_parser(
        "plan",
        help="how many GPUs (ranks) a network needs",
        description=(
            "Estimate the memory per rank of a simulation (graph, state, delay buffer, parameters, records; see "
            "dtb.network.memory) and say how many GPUs it needs, or whether it fits the number given with --gpus. "
            "Give either a built network store (--network) or its size (--neurons and --indegree)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    plan.add_argument("--network", type=Path, default=None, help="a network store written by 'dtb network build'")
    plan.add_argument("--neurons", type=int, default=None, help="total neurons (without --network)")
    plan.add_argument("--indegree", type=float, default=100.0, help="mean in-degree (without --network)")
    plan.add_argument(
        "--members",
        type=int,
        default=None,
        help="ensemble members sharing the graph (default: the twin's, recorded in a store built with --inputs; else 1)",
    )
    plan.add_argument("--gpus", type=int, default=None, help="check this many GPUs instead of finding the fewest")
    plan.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory of one GPU [GiB]")
    plan.add_argument(
        "--reserve-gib",
        type=float,
        default=1.0,
        help="memory per GPU kept free for the CUDA context and allocator slack [GiB]",
    )
    plan.add_argument(
        "--delay-steps",
        type=int,
        default=None,
        help="synaptic delay in steps (default: the twin's model.delay_ms / model.dt_ms recorded in the store; else 10, "
        "1 ms at dt 0.1 ms)",
    )
    plan.add_argument("--receptors", type=int, default=4, help="receptor channels per neuron")
    options.add_out(plan, "the plan (JSON) is written there, whole or not at all, instead of printed", required=False)
    plan.set_defaults(func=run_plan)


def _read_array(path: Path, what: str, sparse_ok: bool = False):
    import numpy as np
    import scipy.sparse as sp

    if not path.exists():
        raise ConfigError(f"{what} file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path)
        if suffix == ".npz":
            if sparse_ok:
                return sp.load_npz(path)
            with np.load(path) as data:
                return data[data.files[0]]
        delimiter = "," if suffix == ".csv" else None
        if _has_header(path, delimiter):
            return _read_labelled_table(path, delimiter, what)
        return np.loadtxt(path, delimiter=delimiter, ndmin=1)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} from {path}: {exc}; use .npy, .npz or a numeric .tsv/.csv") from None


def _has_header(path: Path, delimiter: str | None) -> bool:
    """True when the first field of a text table is not a number (a header row of labels)."""
    with path.open() as handle:
        first = handle.readline().strip()
    field = first.split(delimiter)[0] if first else ""
    try:
        float(field)
    except ValueError:
        return bool(first)
    return False


def _read_labelled_table(path: Path, delimiter: str | None, what: str) -> np.ndarray:
    """A TSV/CSV with region labels (the region-level input form, docs/workflow.md).

    A first column of labels becomes the index; a stats table (``*_stats.tsv``) gives its
    ``neuron_count`` column, a table with a single value column gives that column, and a
    connectome (``*_relmat.tsv``) is the square table that remains. A labelled relmat has
    row = source region and column = target region (BIDS connectivity derivatives, and
    dtb.io.region_inputs), so it is returned transposed: the builder's rows are the inputs
    of each target.
    """
    import pandas as pd

    from dtb.io.region_inputs import read_relmat

    sep = "\t" if delimiter is None else delimiter
    table = pd.read_csv(path, sep=sep)
    if not pd.api.types.is_numeric_dtype(table.iloc[:, 0]):
        table = table.set_index(table.columns[0])
    if "neuron_count" in table.columns:
        table = table[["neuron_count"]]
    if table.shape[1] == 1:
        return table.iloc[:, 0].to_numpy(dtype=float)
    if table.shape[0] != table.shape[1]:
        raise ConfigError(
            f"cannot read {what} from {path}: a labelled table must be square (a connectome), have a "
            f"neuron_count column or a single value column; got columns {list(table.columns)[:5]}..."
        )
    matrix, _ = read_relmat(path, what=what, sep=sep)
    return matrix.T


#: options of the counts form and their defaults; with --inputs the twin config sets these instead
_COUNTS_ONLY = {
    "neurons": ("--neurons", None),
    "connectome": ("--connectome", None),
    "cortical": ("--cortical", None),
    "indegree_scale": ("--indegree-scale", None),
    "model": ("--model", "ei"),
    "indegree": ("--indegree", 100),
    "min_e": ("--min-e", 200),
    "min_i": ("--min-i", 50),
    "weight": ("--weight", 255),
    "weight_inhibitory": ("--weight-inhibitory", None),
    "split": ("--split", "exact"),
    "long_range_sources": ("--long-range-sources", "all_e"),
}
#: where each refused option lives in the twin config
_TWIN_KEY = {
    "--indegree": "model.indegree",
    "--min-e": "model.min_excitatory",
    "--min-i": "model.min_inhibitory",
    "--weight": "model.weight_excitatory",
    "--weight-inhibitory": "model.weight_inhibitory",
    "--neurons": "neurons_total",
}


def _build_twin(args: argparse.Namespace) -> int:
    """``dtb network build --inputs``: the twin's network of one subject, as dtb assimilate builds it."""
    import dataclasses

    from dtb.io.region_inputs import load_region_subject
    from dtb.network.memory import GIB
    from dtb.twin.config import load_twin_config
    from dtb.twin.network import write_twin_network

    given = [flag for key, (flag, _) in _COUNTS_ONLY.items() if getattr(args, key) is not None]
    if given:
        where = "; ".join(f"{f} -> {_TWIN_KEY[f]}" for f in given if f in _TWIN_KEY)
        raise ConfigError(
            f"dtb network build --inputs takes the twin's network settings from --config, not {given}; set them in the "
            f"twin config{' (' + where + ')' if where else ''} so that assimilate and resimulate run the same network"
        )
    if args.participant_label is None:
        raise ConfigError("dtb network build --inputs needs --participant-label (the subject, without 'sub-')")
    if args.rank or args.init_only:
        raise ConfigError("--rank and --init-only build a --counts network in parts; a twin's network is built whole")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    config = load_twin_config(args.config)
    if args.seed is not None:  # --seed N means the config's `seed: N`
        config = dataclasses.replace(config, seed=args.seed)
    subject = load_region_subject(args.inputs, args.participant_label)
    members = config.members if args.members is None else args.members
    memory = None if args.memory_gib is None else int(args.memory_gib * GIB)
    summary = write_twin_network(
        subject,
        config,
        args.out,
        ranks=args.ranks,
        overwrite=args.overwrite,
        threads=args.threads,
        sampler=args.sampler,
        device=args.device,
        memory_bytes=memory,
        members=members,
    )
    print(json.dumps(summary))
    return 0


def run_build(args: argparse.Namespace) -> int:
    import numpy as np

    from dtb.network.layout import NetworkConfig, make_layout
    from dtb.network.memory import GIB, check_fits, estimate_rank_memory
    from dtb.network.partition import partition_populations
    from dtb.network.populations import neuron_counts_from_grey_matter
    from dtb.network.store import build_to_store, build_whole_store, store_info
    from dtb.seeds import SEED_SCHEME, derive_seed

    if args.inputs is not None:
        return _build_twin(args)
    if args.participant_label is not None or args.config is not None:
        raise ConfigError("--participant-label and --config go with --inputs (a twin's network)")
    for key, (_, default) in _COUNTS_ONLY.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.seed = 0 if args.seed is None else args.seed
    args.members = 1 if args.members is None else args.members
    if args.grey_matter is not None:
        if args.neurons is None:
            raise ConfigError("--grey-matter needs --neurons (the total number of neurons to distribute)")
        counts = neuron_counts_from_grey_matter(_read_array(args.grey_matter, "grey matter"), args.neurons)
    else:
        counts = _read_array(args.counts, "neuron counts")
    connectome = _read_array(args.connectome, "connectome", sparse_ok=True) if args.connectome else None
    cortical = _read_array(args.cortical, "cortical flags") if args.cortical else None
    scale = _read_array(args.indegree_scale, "in-degree scale") if args.indegree_scale else None
    config = NetworkConfig(
        indegree=args.indegree,
        model=args.model,
        seed=derive_seed(args.seed, "graph"),
        min_excitatory=args.min_e,
        min_inhibitory=args.min_i,
        weight=args.weight,
        weight_inhibitory=args.weight_inhibitory,
        split=args.split,
        long_range_sources=args.long_range_sources,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layout = make_layout(counts, connectome, config, cortical=cortical, indegree_scale=scale)
    for warning in caught:
        log.warning("%s", warning.message)
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    sampling = dict(threads=args.threads, method=args.sampler, device=args.device)
    partition = partition_populations([p.size for p in layout.populations], layout.indegrees, args.ranks)
    if args.memory_gib is not None:
        for rank in range(partition.n_ranks):
            a, b = partition.rank_range(rank)
            pops = slice(partition.population_ranges[rank], partition.population_ranges[rank + 1])
            synapses = int(np.sum(np.diff(layout.offsets)[pops] * layout.indegrees[pops]))
            check_fits(
                estimate_rank_memory(b - a, synapses, n_members=args.members),
                int(args.memory_gib * GIB),
                what=f"rank ({rank})",
            )
    log.info(
        "%d populations, %d neurons, ~%d synapses over %d rank(s) (imbalance %.3f)",
        len(layout.populations),
        layout.n_neurons,
        layout.n_synapses,
        partition.n_ranks,
        partition.imbalance,
    )
    if args.rank:
        bad = [r for r in args.rank if not 0 <= r < partition.n_ranks]
        if bad:
            raise ConfigError(f"--rank {bad} out of range for --ranks {partition.n_ranks}")
        store_info(args.out)  # must exist (made with --init-only)
        written = build_to_store(args.out, layout, partition, ranks=args.rank, create=False, **sampling)
    elif args.init_only:  # the ranks fill this store in place (--rank), each block under its own lock
        written = build_to_store(
            args.out,
            layout,
            partition,
            ranks=[],
            overwrite=args.overwrite,
            metadata={"run_seed": args.seed, "seed_scheme": SEED_SCHEME},
            **sampling,
        )
    else:  # the whole store: built beside its final name and renamed into place when every block is in
        written = build_whole_store(
            args.out,
            layout,
            partition,
            overwrite=args.overwrite,
            metadata={"run_seed": args.seed, "seed_scheme": SEED_SCHEME},
            **sampling,
        )
    print(
        json.dumps(
            {
                "out": str(args.out),
                "neurons": layout.n_neurons,
                "populations": len(layout.populations),
                "ranks": partition.n_ranks,
                "synapses_written": int(sum(written)),
                "imbalance": round(partition.imbalance, 4),
                "dropped_voxels": layout.metadata["dropped_voxels_no_neurons"]
                + layout.metadata["dropped_voxels_no_connections"],
            }
        )
    )
    return 0


def run_plan(args: argparse.Namespace) -> int:
    import numpy as np

    from dtb.network.memory import GIB, check_fits, estimate_rank_memory, plan_ranks
    from dtb.network.store import store_info

    members, delay_steps, dt_ms = args.members, args.delay_steps, 0.1
    if args.network is not None:
        info = store_info(args.network)
        n_neurons = int(info["n_neurons"])
        sizes = np.array([p["size"] for p in info["populations"]])
        n_synapses = int(np.sum(sizes * np.asarray(info["metadata"]["population_indegree"])))
        twin = info["metadata"].get("twin")
        if isinstance(twin, dict):  # a twin's network: the run that will use it (docs/twin.md, "One network")
            dt_ms = float(twin["model"]["dt_ms"])
            delay_steps = round(float(twin["model"]["delay_ms"]) / dt_ms) if delay_steps is None else delay_steps
            members = int(info["metadata"].get("ensemble_members", 1)) if members is None else members
    elif args.neurons is not None:
        n_neurons, n_synapses = args.neurons, int(round(args.neurons * args.indegree))
    else:
        raise ConfigError("give --network STORE or --neurons N (with --indegree K)")
    members = 1 if members is None else members
    delay_steps = 10 if delay_steps is None else delay_steps
    if members < 1:
        raise ConfigError(f"--members must be >= 1, got {members}")
    if delay_steps < 1:
        raise ConfigError(f"--delay-steps must be >= 1, got {delay_steps}")
    kwargs = dict(n_members=members, delay_steps=delay_steps, n_receptors=args.receptors, device="cuda", dt_ms=dt_ms)
    available, reserve = int(args.gpu_memory_gib * GIB), int(args.reserve_gib * GIB)
    needed, est = plan_ranks(n_neurons, n_synapses, available, reserve_bytes=reserve, **kwargs)
    result = {
        "neurons": n_neurons,
        "synapses": n_synapses,
        "members": members,
        "delay_steps": delay_steps,
        "gpus_needed": needed,
        "gpu_memory_gib": args.gpu_memory_gib,
        "per_gpu_gib": round(est.device / GIB, 3),
    }
    if args.gpus is not None:
        share = min(1.0, 1.1 / args.gpus)
        mine = estimate_rank_memory(int(np.ceil(n_neurons * share)), int(np.ceil(n_synapses * share)), **kwargs)
        result.update(
            {"gpus": args.gpus, "per_gpu_gib_with_gpus": round(mine.device / GIB, 3), "fits": args.gpus >= needed}
        )
        _emit_plan(result, args.out)
        check_fits(mine, available - reserve, what=f"GPU (of {args.gpus})")
        return 0
    _emit_plan(result, args.out)
    return 0


def _emit_plan(result: dict, out: Path | None) -> None:
    """Print the plan, or write it to ``out`` through a temporary file under its lock (dtb.io.atomic)."""
    text = json.dumps(result)
    if out is None:
        print(text)
        return
    from dtb.io.atomic import staged_output
    from dtb.io.locks import output_lock

    with output_lock(out, what="plan"), staged_output(out, stage="plan") as staging:
        staging.write_text(text + "\n")
    print(f"wrote {out}")
