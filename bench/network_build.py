"""Benchmark of the network builder: synapses built per second and stored bytes per synapse.

Builds a voxel E/I network of about 1e7 synapses (default: 20 regions x 5000 neurons,
K = 100) and prints one JSON object:

- ``synapses_per_s_1proc``: incoming-synapse blocks built by one process, one thread;
- ``synapses_per_s_{N}proc``: the same with the ids split over N processes (as N ranks
  would build them), wall clock including process start-up;
- ``assemble_s``: joining the blocks into the engine's CSR-by-source Network;
- ``store_bytes_per_synapse``: bytes on disk of the zarr store per synapse (zstd).

Usage: ``python bench/network_build.py [--regions 20] [--per-region 5000] [--procs 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from dtb.network.build import assemble_network, build_block, even_ranges
from dtb.network.layout import NetworkConfig, make_layout
from dtb.network.partition import partition_populations
from dtb.network.store import build_to_store

_LAYOUT = None


def _init(layout):
    global _LAYOUT
    _LAYOUT = layout


def _build(bounds):
    block = build_block(_LAYOUT, *bounds)
    return block.n_synapses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=20)
    parser.add_argument("--per-region", type=int, default=5000)
    parser.add_argument("--indegree", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    connectome = rng.gamma(0.7, 10.0, (args.regions, args.regions))
    t0 = time.perf_counter()
    layout = make_layout(
        np.full(args.regions, args.per_region), connectome, NetworkConfig(indegree=args.indegree, seed=1)
    )
    layout_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    block = build_block(layout, 0, layout.n_neurons)
    one_s = time.perf_counter() - t0

    ranges = even_ranges(layout.n_neurons, args.procs * 4)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.procs, initializer=_init, initargs=(layout,)) as pool:
        built = sum(pool.map(_build, ranges))
    multi_s = time.perf_counter() - t0
    assert built == block.n_synapses

    t0 = time.perf_counter()
    net = assemble_network(layout.populations, [block])
    assemble_s = time.perf_counter() - t0

    part = partition_populations([p.size for p in layout.populations], layout.indegrees, args.procs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.zarr"
        t0 = time.perf_counter()
        build_to_store(path, layout, part)
        store_s = time.perf_counter() - t0
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

    print(
        json.dumps(
            {
                "neurons": layout.n_neurons,
                "synapses": int(block.n_synapses),
                "cpu_count": os.cpu_count(),
                "layout_s": round(layout_s, 4),
                "build_1proc_s": round(one_s, 3),
                "synapses_per_s_1proc": round(block.n_synapses / one_s),
                f"build_{args.procs}proc_s": round(multi_s, 3),
                f"synapses_per_s_{args.procs}proc": round(built / multi_s),
                "assemble_s": round(assemble_s, 3),
                "build_and_store_s": round(store_s, 3),
                "store_bytes_per_synapse": round(disk / block.n_synapses, 3),
                "in_memory_bytes_per_synapse": round(net.synapse_nbytes / net.n_synapses, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
