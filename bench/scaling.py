"""Strong and weak scaling of the distributed engine over MPI ranks (this machine: 1 and 2).

The driver launches ``mpiexec -n R python bench/scaling.py --worker ...`` for each
configuration, several rounds alternating the configurations, and writes
``bench/results/scaling.json``:

* strong scaling: one network (``--strong-neurons``) on 1 and 2 ranks;
* weak scaling: ``--weak-neurons-per-rank`` neurons per rank on 1 and 2 ranks;
* per rank: wall time, time blocked in MPI waits, compute time (wall - wait), spike ids and
  bytes sent to other ranks, all per second of biological time;
* a 2-rank run without overlap (blocking collectives) for comparison.

Every rank builds its own synapses from a network ``Layout`` (``build_block``), as on a
cluster.  The network is the voxel E/I model (docs/model.md §3.2a, in-degree 100, DTB
conductances, weight k = 133 for a ~10 Hz regime) over voxels of 2000 neurons with a
random connectome.  Run from the repository root::

    .venv/bin/python bench/scaling.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _layout(n_neurons: int, per_voxel: int, seed: int):
    from dtb.network.layout import NetworkConfig, make_layout

    n_voxels = max(1, n_neurons // per_voxel)
    rng = np.random.default_rng(0)
    connectome = rng.gamma(0.7, 10.0, (n_voxels, n_voxels))
    connectome[np.arange(n_voxels), (np.arange(n_voxels) + 1) % n_voxels] += 1.0
    np.fill_diagonal(connectome, 0.0)
    config = NetworkConfig(model="ei", seed=seed, weight=133, min_excitatory=1, min_inhibitory=1)
    return make_layout(np.full(n_voxels, per_voxel), connectome, config)


def worker(args) -> None:
    import torch

    from dtb.sim import DTB_G, ModelParams, NeuronParams, RecordSpec
    from dtb.sim.distributed import DistributedConfig, DistributedSimulation, abort_on_error, mpi_world

    comm = mpi_world()
    torch.set_num_threads(1)
    with abort_on_error(comm):
        t0 = time.perf_counter()
        layout = _layout(args.neurons, args.per_voxel, seed=1)
        # one weight k = 133 for all synapses; inhibitory g scaled by 255/133 so that inhibition
        # keeps its calibrated strength (E weight 133, I weight 255 as in examples/ei_network.yaml)
        g = {u: v * (255 / 133 if u.startswith("GABA") else 1.0) for u, v in DTB_G.items()}
        model = ModelParams({p.name: NeuronParams(g=g) for p in layout.populations})
        sim = DistributedSimulation(
            layout,
            model,
            comm=comm,
            seed=7,
            backend=args.backend,
            device=args.device,
            record=RecordSpec(spikes=False),
            config=DistributedConfig(overlap=not args.no_overlap),
        )
        comm.Barrier()
        build_s = time.perf_counter() - t0
        sim.run(args.warmup_ms, progress=False)  # JIT caches, first allocations, transient
        before = dict(sim.exchange_stats)
        comm.Barrier()
        t0 = time.perf_counter()
        tree = sim.run(args.duration_ms, progress=False)
        wall = time.perf_counter() - t0
        after = sim.exchange_stats
        bio_s = args.duration_ms / 1000.0
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        start, stop = sim.id_range
        mine = {
            "rank": comm.Get_rank(),
            "neurons": stop - start,
            "synapses": int(sim.n_local_synapses),
            "build_s": build_s,
            "wall_s_per_bio_s": wall / bio_s,
            "mpi_wait_s_per_bio_s": delta.get("wait_s", 0.0) / bio_s,
            "compute_s_per_bio_s": (wall - delta.get("wait_s", 0.0)) / bio_s,
            "spike_ids_sent_per_bio_s": delta.get("spikes_sent", 0) / bio_s,
            "bytes_sent_per_bio_s": delta.get("bytes_sent", 0) / bio_s,
            "intervals_per_bio_s": delta.get("intervals", 0) / bio_s,
        }
        ranks = comm.gather(mine, root=0)
        if comm.Get_rank() == 0:
            counts = tree["population_counts"]["spike_count"].values
            rate = counts.sum() / (layout.n_neurons * bio_s)
            wall_max = max(r["wall_s_per_bio_s"] for r in ranks)
            result = {
                "n_ranks": comm.Get_size(),
                "neurons": int(layout.n_neurons),
                "synapses": int(sum(r["synapses"] for r in ranks)),
                "backend": args.backend,
                "overlap": not args.no_overlap,
                "duration_ms": args.duration_ms,
                "rate_hz": float(rate),
                "wall_s_per_bio_s": wall_max,
                "slowdown_vs_real_time": wall_max,
                "neuron_steps_per_s_per_rank": layout.n_neurons / comm.Get_size() * 10000 / wall_max,
                "bytes_per_spike_id": 4 if 10 * layout.n_neurons < 2**32 else 8,
                "ranks": ranks,
            }
            Path(args.json).write_text(json.dumps(result))


def run_config(n_ranks: int, neurons: int, args, no_overlap: bool = False) -> dict:
    out = Path(tempfile.mkdtemp(prefix="dtb-scaling-")) / "result.json"
    command = [
        str(Path(sys.executable).parent / "mpiexec"),
        "-n",
        str(n_ranks),
        sys.executable,
        __file__,
        "--worker",
        "--neurons",
        str(neurons),
        "--per-voxel",
        str(args.per_voxel),
        "--duration-ms",
        str(args.duration_ms),
        "--warmup-ms",
        str(args.warmup_ms),
        "--backend",
        args.backend,
        "--device",
        args.device,
        "--json",
        str(out),
    ] + (["--no-overlap"] if no_overlap else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    result = json.loads(out.read_text())
    out.unlink()
    out.parent.rmdir()
    result["load_average_1min"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--neurons", type=int, default=16000, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-overlap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strong-neurons", type=int, default=16000, help="network size of the strong-scaling runs")
    parser.add_argument("--weak-neurons-per-rank", type=int, default=8000, help="neurons per rank, weak scaling")
    parser.add_argument("--per-voxel", type=int, default=2000, help="neurons per voxel (2 populations each)")
    parser.add_argument("--duration-ms", type=float, default=1000.0, help="timed biological time [ms]")
    parser.add_argument("--warmup-ms", type=float, default=50.0, help="untimed biological time first [ms]")
    parser.add_argument("--backend", default="cuda_ext", help="torch or cuda_ext")
    parser.add_argument("--device", default="cpu", help="cpu, or auto (one GPU per rank, cuda:<local rank>)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all configurations (minimum is kept)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaling.json"))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    configs = {
        "strong_1": (1, args.strong_neurons, False),
        "strong_2": (2, args.strong_neurons, False),
        "strong_2_no_overlap": (2, args.strong_neurons, True),
        "weak_1": (1, args.weak_neurons_per_rank, False),
        "weak_2": (2, 2 * args.weak_neurons_per_rank, False),
    }
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for round_index in range(args.rounds):
        for name, (n, neurons, no_overlap) in configs.items():
            result = run_config(n, neurons, args, no_overlap)
            runs[name].append(result)
            print(
                f"round {round_index} {name}: {result['wall_s_per_bio_s']:.2f} s per bio s, "
                f"rate {result['rate_hz']:.2f} Hz, load {result['load_average_1min']:.2f}",
                flush=True,
            )
    best = {name: min(rs, key=lambda r: r["wall_s_per_bio_s"]) for name, rs in runs.items()}
    summary = {
        "strong_speedup_2_ranks": best["strong_1"]["wall_s_per_bio_s"] / best["strong_2"]["wall_s_per_bio_s"],
        "strong_efficiency_2_ranks": best["strong_1"]["wall_s_per_bio_s"] / (2 * best["strong_2"]["wall_s_per_bio_s"]),
        "weak_efficiency_2_ranks": best["weak_1"]["wall_s_per_bio_s"] / best["weak_2"]["wall_s_per_bio_s"],
        "overlap_gain_2_ranks": best["strong_2_no_overlap"]["wall_s_per_bio_s"] / best["strong_2"]["wall_s_per_bio_s"],
        "bytes_sent_per_rank_per_bio_s_strong_2": [r["bytes_sent_per_bio_s"] for r in best["strong_2"]["ranks"]],
    }
    document = {
        "what": "dtb distributed engine, strong and weak scaling over MPI ranks (1 thread per rank)",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "json", "neurons", "no_overlap")},
        "best": best,
        "summary": summary,
        "all_runs": runs,
    }
    Path(args.out).write_text(json.dumps(document, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
