"""Benchmark of the network builder: synapses built per second and stored bytes per synapse.

Builds a voxel E/I network of about 1e7 synapses (default: 20 regions x 5000 neurons,
K = 100) and prints one JSON object:

- ``synapses_per_s_numpy``: the numpy/torch reference sampler, one process, one thread
  (the peer every other figure is compared with, measured in the same run);
- ``synapses_per_s_compiled_{T}thread``: the compiled C++ sampler with T OpenMP threads
  (T = 1 and ``--threads``), and ``speedup_*`` the ratios to the numpy figure;
- ``synapses_per_s_{N}proc``: the default sampler with the ids split over N processes (as
  N ranks would build them), wall clock including process start-up;
- ``synapses_per_s_device``: the torch sampler on ``--device`` (when given: ``cuda``);
- ``assemble_{numpy,compiled}_s``: joining the blocks into the engine's CSR-by-source
  Network (stable torch sort / C++ counting sort);
- ``store_bytes_per_synapse``: bytes on disk of the zarr store per synapse (zstd).

Every timing is the best of ``--repeats`` runs (the machine may be shared: the load
average is recorded).  Results go to ``bench/results/network_build.json`` (``--out``).

Usage: ``python bench/network_build.py [--regions 20] [--per-region 5000] [--procs 2] [--threads 2]``
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

from dtb.network import compiled
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


def _best(fn, repeats: int) -> tuple[float, object]:
    """Fastest wall time of ``repeats`` calls [s] and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=20)
    parser.add_argument("--per-region", type=int, default=5000)
    parser.add_argument("--indegree", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads of the second compiled run")
    parser.add_argument("--device", default=None, help="also time the torch sampler on this device (e.g. cuda)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "network_build.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    connectome = rng.gamma(0.7, 10.0, (args.regions, args.regions))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    layout = make_layout(
        np.full(args.regions, args.per_region), connectome, NetworkConfig(indegree=args.indegree, seed=1)
    )
    layout_s = time.perf_counter() - t0
    n = layout.n_neurons
    if compiled.compiled_error() is not None:
        raise SystemExit(compiled.compiled_error())
    build_block(layout, 0, min(n, 1000))  # build the library and the tables once

    numpy_s, reference = _best(lambda: build_block(layout, 0, n, method="numpy"), args.repeats)
    syn = reference.n_synapses
    results = {
        "neurons": n,
        "synapses": int(syn),
        "cpu_count": os.cpu_count(),
        "layout_s": round(layout_s, 4),
        "build_numpy_s": round(numpy_s, 3),
        "synapses_per_s_numpy": round(syn / numpy_s),
    }
    for threads in sorted({1, args.threads}):
        seconds, block = _best(
            lambda threads=threads: build_block(layout, 0, n, threads=threads, method="compiled"), args.repeats
        )
        assert np.array_equal(block.sources, reference.sources) and np.array_equal(block.indptr, reference.indptr)
        results[f"build_compiled_{threads}thread_s"] = round(seconds, 3)
        results[f"synapses_per_s_compiled_{threads}thread"] = round(syn / seconds)
        results[f"speedup_compiled_{threads}thread_vs_numpy"] = round(numpy_s / seconds, 2)
    if args.device:
        build_block(layout, 0, min(n, 1000), device=args.device)  # warm up the device
        seconds, block = _best(lambda: build_block(layout, 0, n, device=args.device), args.repeats)
        assert np.array_equal(block.sources, reference.sources)
        results.update(
            {
                "device": args.device,
                "build_device_s": round(seconds, 3),
                "synapses_per_s_device": round(syn / seconds),
                "speedup_device_vs_numpy": round(numpy_s / seconds, 2),
            }
        )

    ranges = even_ranges(n, args.procs * 4)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.procs, initializer=_init, initargs=(layout,)) as pool:
        built = sum(pool.map(_build, ranges))
    multi_s = time.perf_counter() - t0
    assert built == syn
    results[f"build_{args.procs}proc_s"] = round(multi_s, 3)
    results[f"synapses_per_s_{args.procs}proc"] = round(built / multi_s)

    assemble_numpy_s, _ = _best(lambda: assemble_network(layout.populations, [reference], method="numpy"), 1)
    assemble_s, net = _best(lambda: assemble_network(layout.populations, [reference], method="compiled"), args.repeats)
    results["assemble_numpy_s"] = round(assemble_numpy_s, 3)
    results["assemble_compiled_s"] = round(assemble_s, 3)

    part = partition_populations([p.size for p in layout.populations], layout.indegrees, args.procs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.zarr"
        t0 = time.perf_counter()
        build_to_store(path, layout, part)
        results["build_and_store_s"] = round(time.perf_counter() - t0, 3)
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    results["store_bytes_per_synapse"] = round(disk / syn, 3)
    results["in_memory_bytes_per_synapse"] = round(net.synapse_nbytes / net.n_synapses, 3)
    results["loadavg_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    results["peers_synapses_per_s"] = {"brian2": 8.4e6, "nest": 3.2e6}  # from issue #5, 1e7 synapses
    text = json.dumps(results, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
