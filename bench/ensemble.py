"""Ensemble axis and storage of the dtb engine on Brunel-COBA (the peers' exact network).

Times ``--members`` separate runs (one Simulation per seed, run one after the other in this
process, build excluded) against one run of an ensemble of the same seeds sharing the graph,
checks that the first members of the ensemble spike exactly like their separate runs, and
measures storage from the actual tensors: bytes per synapse of the graph, bytes per neuron of
the dynamical state, of the delay buffer (drive) and of the per-neuron parameter tables.

It also measures two floors of what an ensemble can save: the per-member cost of the neuron
update alone (integration with the noise switched off and no input, so no spikes and no
delivery), and of the neuron update with its noise (still no delivery), each on the
ensemble's own state and on one member alone (the best case for caches).  Each member owns
its state and, under the RNG contract, its noise stream, so sharing the graph cannot bring a
member's cost below the one-member floors; divided by the mean separate run they bound the
achievable ``ensemble_over_separate`` from below.

``--processes`` adds the whole-process comparison a user pays for: ``--members`` separate
invocations of ``bench/brunel.py --members 1 --first-member m`` (each one starts Python,
builds the graph and the simulation, and simulates) against one invocation with
``--members N``; wall and CPU seconds of the child processes, and the spike totals (which
must agree exactly).

    python bench/ensemble.py --K 100 --T 200 --members 32 --threads 2 --backend cuda_ext \
        --json bench/results/ensemble.json
    python bench/ensemble.py --K 100 --T 1000 --members 32 --processes --json bench/results/ensemble.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import resource
import subprocess
import sys
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


def _integrate_only(sim, T_ms: float, *, noise: bool) -> float:
    """Seconds the backend needs to integrate a copy of ``sim``'s state for ``T_ms`` with no input.

    Interval by interval as the engine does (``delay_steps`` per call, spike rows taken),
    into a zero drive, without delivery; ``noise=False`` also switches the OU and Poisson
    noise off.  What is left is work every member does for itself in any layout.
    """
    import torch

    def copy_state():
        return dataclasses.replace(
            sim.state,
            V=sim.state.V.clone(),
            J=sim.state.J.clone(),
            I_ou=sim.state.I_ou.clone(),
            refractory=sim.state.refractory.clone(),
        )

    params = sim.params if noise else dataclasses.replace(sim.params, ou_on=False, poisson_on=False)
    drive = torch.zeros_like(sim._drive)
    D, n_steps = sim.model.delay_steps, int(round(T_ms / sim.model.dt_ms))
    # one step on a throwaway copy first: the backend prepares its tables for new params once
    sim.backend.integrate(copy_state(), drive, params, 1, sim.state.step % D, None, 1).rows()
    state = copy_state()
    start = time.perf_counter()
    while n_steps > 0:
        offset = state.step % D
        n = min(D - offset, n_steps)
        sim.backend.integrate(state, drive, params, n, offset, None, 1).rows()
        n_steps -= n
    return time.perf_counter() - start


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _compare_processes(a: argparse.Namespace) -> dict:
    """Whole processes: ``a.members`` runs of brunel.py with one member each against one run with all."""
    common = [
        sys.executable, str(HERE / "brunel.py"), "--peers", str(a.peers), "--backend", a.backend,
        "--N", str(a.N), "--K", str(a.K), "--T", str(a.T), "--threads", str(a.threads),
    ]  # fmt: skip

    def one(extra: list[str]) -> tuple[float, float, dict]:
        cpu, start = _children_cpu(), time.perf_counter()
        done = subprocess.run(common + extra, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"ensemble.py: {' '.join(common + extra)} failed:\n{done.stderr[-2000:]}")
        return wall, _children_cpu() - cpu, json.loads(done.stdout.strip().splitlines()[-1])

    separate = [one(["--members", "1", "--first-member", str(m)]) for m in range(a.members)]
    wall_e, cpu_e, together = one(["--members", str(a.members)])
    wall_s, cpu_s = sum(w for w, _, _ in separate), sum(c for _, c, _ in separate)
    spikes_s = sum(r["n_spikes"] for _, _, r in separate)
    return {
        "what": "whole processes (start, import, graph, build, simulate) of bench/brunel.py",
        "T_ms": a.T,
        "wall_separate_total_s": wall_s,
        "wall_separate_min_s": min(w for w, _, _ in separate),
        "wall_ensemble_s": wall_e,
        "wall_ensemble_over_separate": wall_e / wall_s,
        "cpu_separate_total_s": cpu_s,
        "cpu_ensemble_s": cpu_e,
        "cpu_ensemble_over_separate": cpu_e / cpu_s,
        "t_sim_separate_total_s": sum(r["t_sim_s"] for _, _, r in separate),
        "t_sim_ensemble_s": together["t_sim_s"],
        "t_sim_ensemble_over_separate": together["t_sim_s"] / sum(r["t_sim_s"] for _, _, r in separate),
        "t_import_separate_mean_s": sum(r["t_import_s"] for _, _, r in separate) / len(separate),
        "spikes_separate_total": spikes_s,
        "spikes_ensemble": together["n_spikes"],
        "spikes_equal": spikes_s == together["n_spikes"],
        "rates_separate_Hz": [r["rate_mean_Hz"] for _, _, r in separate],
        "rates_ensemble_Hz": together["rate_mean_Hz_per_member"],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--N", type=int, default=10_000)
    p.add_argument("--K", type=int, default=100)
    p.add_argument("--T", type=float, default=200.0, help="biological time per run [ms]")
    p.add_argument("--members", type=int, default=32)
    p.add_argument("--check", type=int, default=2, help="members whose spikes are compared with their separate run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="cuda_ext")
    p.add_argument(
        "--peers", type=Path, default=os.environ.get("DTB_PEERS"), help="peers' folder (default: $DTB_PEERS)"
    )
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--processes",
        action="store_true",
        help="also time --members separate processes of brunel.py against one ensemble process",
    )
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
    t_update_only = _integrate_only(sim, a.T, noise=False)
    t_update_noise = _integrate_only(sim, a.T, noise=True)
    t_one_update_only = _integrate_only(sim1, a.T, noise=False)
    t_one_update_noise = _integrate_only(sim1, a.T, noise=True)
    mean_separate = sum(separate_times) / len(separate_times)
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
        "t_update_only_s": t_update_only,
        "t_update_with_noise_s": t_update_noise,
        "floor_update_only_over_separate": t_update_only / M / mean_separate,
        "floor_update_with_noise_over_separate": t_update_noise / M / mean_separate,
        "floor_one_member_update_only_over_separate": t_one_update_only / mean_separate,
        "floor_one_member_update_with_noise_over_separate": t_one_update_noise / mean_separate,
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
    if a.processes:
        result["processes"] = _compare_processes(a)
    print(json.dumps(result))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        with a.json.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
