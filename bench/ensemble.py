"""Ensemble axis and storage of the dtb engine on Brunel-COBA (the peers' exact network).

Times ``--members`` separate runs (one Simulation per seed, run one after the other in this
process, build excluded) against one run of an ensemble of the same seeds sharing the graph,
checks that the first members of the ensemble spike exactly like their separate runs, and
measures storage from the actual tensors: bytes per synapse of the graph, bytes per neuron of
the dynamical state, of the delay buffer (drive) and of the per-neuron parameter tables.

    python bench/ensemble.py --K 100 --T 200 --members 32 --threads 2 --backend cuda_ext \
        --json bench/results/ensemble.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_brunel():
    spec = importlib.util.spec_from_file_location("dtb_bench_brunel", HERE / "brunel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--N", type=int, default=10_000)
    p.add_argument("--K", type=int, default=100)
    p.add_argument("--T", type=float, default=200.0, help="biological time per run [ms]")
    p.add_argument("--members", type=int, default=32)
    p.add_argument("--check", type=int, default=2, help="members whose spikes are compared with their separate run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="cuda_ext")
    p.add_argument("--peers", type=Path, default=HERE.parents[1] / "shared" / "bench" / "peers")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from dtb.network import Network, Population
    from dtb.sim import Ensemble, RecordSpec, Simulation
    from dtb.sim.reference_models import brunel_coba

    bc = _load_brunel().load_brunel_common(a.peers)
    peer_args = argparse.ArgumentParser()
    bc.add_common_args(peer_args)
    P = bc.resolve_params(peer_args.parse_args(["--N", str(a.N), "--K", str(a.K), "--T", str(a.T)]))
    src_E, tgt_E, src_I, tgt_I, V0 = bc.make_graph(P)
    ref = brunel_coba(
        N=P["N"], K=P["K"], seed=P["seed"], dt_ms=P["dt"], delay_ms=P["delay"], w_E=P["w_E"], g=P["g"],
        nu_ext_hz=P["nu_ext"],
    )  # fmt: skip
    network = Network.from_edges(
        [Population("E", P["N_E"], "E"), Population("I", P["N_I"], "I")],
        np.concatenate([src_E, src_I]),
        np.concatenate([tgt_E, tgt_I]),
        255,
        {"builder": "brunel_common"},
    )
    seeds = tuple(P["seed"] + 3 + m for m in range(a.members))
    record = RecordSpec(population_counts=False, spikes=True)

    cpu_times: list[float] = []  # process CPU seconds of each timed run (all threads)

    def simulate(**kw):
        sim = Simulation(network, ref.model, backend=a.backend, initial_V=V0, record=record, current_unit="pA", **kw)
        sim.run(0.0, progress=False)
        start, cpu = time.perf_counter(), time.process_time()
        tree = sim.run(a.T, progress=False)
        cpu_times.append(time.process_time() - cpu)
        return sim, tree, time.perf_counter() - start

    def table(tree, member=None):
        ds = tree["spikes"].to_dataset()
        keep = np.ones(ds.sizes["spike"], bool) if member is None else ds["member"].values == member
        return np.stack([ds["step"].values[keep], ds["neuron"].values[keep]], axis=1)

    separate_times, separate_spikes, separate_tables = [], [], []
    for m, seed in enumerate(seeds):
        sim1, tree, t = simulate(seed=seed)
        separate_times.append(t)
        separate_spikes.append(int(tree["spikes"].sizes["spike"]))
        if m < a.check:
            separate_tables.append(table(tree))
    sim, tree, t_ensemble = simulate(ensemble=Ensemble(seeds))
    identical = [bool(np.array_equal(table(tree, m), separate_tables[m])) for m in range(min(a.check, a.members))]
    M, N = sim.state.V.shape
    s = sim.state
    g = sim._graph
    n_syn = int(g.targets.numel())
    backend_cache = getattr(sim.backend, "_expanded_cache", None)
    param_bytes = None
    if backend_cache is not None:
        tables = backend_cache[2]
        param_bytes = sum(
            _nbytes(v) if isinstance(v, torch.Tensor) else (v.nbytes if hasattr(v, "nbytes") else 0)
            for v in tables.values()
        )
    result = {
        "benchmark": "brunel_coba_ensemble",
        "backend": sim.backend.name,
        "N": N,
        "K": a.K,
        "T_ms": a.T,
        "members": M,
        "threads": torch.get_num_threads(),
        "t_separate_total_s": sum(separate_times),
        "t_separate_min_s": min(separate_times),
        "t_separate_median_s": float(np.median(separate_times)),
        "t_ensemble_s": t_ensemble,
        "ensemble_over_separate": t_ensemble / sum(separate_times),
        "cpu_separate_total_s": sum(cpu_times[:-1]),
        "cpu_ensemble_s": cpu_times[-1],
        "cpu_ensemble_over_separate": cpu_times[-1] / sum(cpu_times[:-1]),
        "spikes_separate_total": sum(separate_spikes),
        "spikes_ensemble": int(tree["spikes"].sizes["spike"]),
        "members_bitwise_equal_to_separate_runs": identical,
        "bytes_per_synapse_targets_weights": _nbytes(g.targets, g.weights) / n_syn,
        "bytes_per_synapse_with_indptr_and_kinds": _nbytes(g.targets, g.weights, g.indptr, g.source_kind) / n_syn,
        "bytes_per_neuron_state": _nbytes(s.V, s.J, s.I_ou, s.refractory) / (M * N),
        "bytes_per_neuron_drive": _nbytes(sim._drive) / (M * N),
        "bytes_per_neuron_parameters": None if param_bytes is None else param_bytes / (M * N),
        "delay_steps": sim.model.delay_steps,
        "loadavg_end": os.getloadavg()[0],
    }
    print(json.dumps(result))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        with a.json.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
