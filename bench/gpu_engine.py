"""GPU engine benchmark: the DTB voxel E/I model at 1e7 and 1e8 neurons, and Brunel-COBA at 1e6.

Voxel E/I model (docs/model.md §3.2a, DTB neuron and receptor defaults, K = 100): voxels of
1600 E + 400 I neurons; every E neuron sends 71 synapses into its own voxel and 36 to
neurons anywhere (the long-range share), every I neuron 72 into its own voxel, so a
neuron receives on average 56.8 local E, 14.4 local I and 28.8 long-range E inputs
(docs/model.md §3.2a: 57 / 14 / 29).  Weights k = 120 (E) and 255 (I): about 10 Hz with this
topology (measured on CPU at 2e4 neurons, 300-500 ms: 10.0 Hz; k = 133, the setting of
``dtb.network.layout``, gives 17 Hz here, 110 gives 5.9 Hz).  The graph (push CSR by source, u32 targets, u8 weights: 5 bytes
per synapse) is generated on the device in chunks; random long-range targets stand in for
a connectome (the kernels' cost does not depend on which neurons are targets).

The timed loop is the engine-free fast path of the CUDA backend: per delay interval one
fused integrate launch (state in registers, warp-aggregated spike compaction, counts per
voxel population, the drive cleared as read) and one delivery launch (a warp per spike).
Printed/written: neuron-updates per second, mean rate, GPU memory (max allocated) beside
``dtb.network.memory.estimate_rank_memory``, and bytes moved per neuron-update.

Usage (one command on a GPU machine; ``--dry-run`` runs a 20,000-neuron model on the CPU
through the C++ kernels, which CI does)::

    python bench/gpu_engine.py --json bench/results/gpu_engine.json
    python bench/gpu_engine.py --sizes 1e7 --steps 500 --brunel-n 0
    python bench/gpu_engine.py --dry-run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cuda_ext.cuda_backend import param_tables
from dtb.network import Network, Population
from dtb.network.memory import estimate_rank_memory
from dtb.philox import Stream, philox4x32, uniform_from_uint32
from dtb.sim import DTB_RECEPTORS, ModelParams, NeuronParams, Simulation
from dtb.sim.backends import DeviceNetwork, EngineState, get_backend

VOXEL_E, VOXEL_I = 1600, 400
VOXEL = VOXEL_E + VOXEL_I
E_LOCAL, E_REMOTE, I_LOCAL = 71, 36, 72
W_E, W_I = 120, 255
ROOT = Path(__file__).resolve().parents[1]


def voxel_model(delay_ms: float = 1.0) -> ModelParams:
    """DTB defaults (docs/model.md §1-2) for the E and I neurons of every voxel."""
    neuron = NeuronParams()
    return ModelParams({"E": neuron, "I": neuron}, DTB_RECEPTORS, delay_ms=delay_ms)


def voxel_graph(n_voxels: int, device: torch.device, seed: int = 1, chunk_voxels: int = 500) -> DeviceNetwork:
    """Push CSR by source of the voxel E/I model, generated on ``device`` in chunks."""
    N = n_voxels * VOXEL
    local = torch.arange(VOXEL, device=device)
    is_inh = local >= VOXEL_E
    degree = torch.where(is_inh, I_LOCAL, E_LOCAL + E_REMOTE)  # per neuron of a voxel
    local_degree = torch.where(is_inh, I_LOCAL, E_LOCAL)
    per_voxel = int(degree.sum())
    row_start = torch.cumsum(degree, 0) - degree
    indptr = torch.zeros(N + 1, dtype=torch.int64, device=device)
    indptr[1:] = torch.cumsum(degree.repeat(n_voxels), 0)
    S = n_voxels * per_voxel
    targets = torch.empty(S, dtype=torch.int32 if N < 2**31 else torch.int64, device=device)
    weights = torch.empty(S, dtype=torch.uint8, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    # one voxel's edge pattern (source within voxel, position in row), reused for every voxel
    src_local = torch.repeat_interleave(local, degree)
    pos = torch.arange(per_voxel, device=device) - row_start[src_local]
    is_local_edge = pos < local_degree[src_local]
    edge_w = torch.where(is_inh[src_local], W_I, W_E).to(torch.uint8)
    for v0 in range(0, n_voxels, chunk_voxels):
        nv = min(chunk_voxels, n_voxels - v0)
        base = (torch.arange(v0, v0 + nv, device=device) * VOXEL).repeat_interleave(per_voxel)
        local_t = base + torch.randint(0, VOXEL, (nv * per_voxel,), device=device, generator=gen)
        remote_t = torch.randint(0, N, (nv * per_voxel,), device=device, generator=gen)
        chunk = torch.where(is_local_edge.repeat(nv), local_t, remote_t)
        sl = slice(v0 * per_voxel, (v0 + nv) * per_voxel)
        targets[sl] = chunk.to(targets.dtype)
        weights[sl] = edge_w.repeat(nv)
        del base, local_t, remote_t, chunk
    neuron_inh = is_inh.repeat(n_voxels)
    voxel_pop = (torch.arange(N, device=device) // VOXEL) * 2 + neuron_inh.to(torch.int64)
    return DeviceNetwork(
        indptr=indptr,
        targets=targets,
        weights=weights,
        source_kind=neuron_inh.to(torch.int64),
        population_index=voxel_pop,
        n_populations=2 * n_voxels,
    )


def template(model: ModelParams, seed: int):
    """Expanded parameters of one voxel (E then I) from the engine itself."""
    net = Network.from_edges(
        [Population("E", VOXEL_E, "E"), Population("I", VOXEL_I, "I")], np.zeros(0), np.zeros(0), 255
    )
    return Simulation(net, model, seed=seed, backend="torch", device="cpu")


def scaled_params(params, n_voxels: int, device: torch.device):
    """The one-voxel ExpandedParams repeated over ``n_voxels`` voxels, on ``device``."""

    def tile(t: torch.Tensor) -> torch.Tensor:
        if t.dim() >= 1 and t.shape[-1] == VOXEL:
            return t.to(device).repeat(*([1] * (t.dim() - 1)), n_voxels)
        return t.to(device)

    N = n_voxels * VOXEL
    ids = torch.arange(N, dtype=torch.int64, device=device).view(1, -1)
    changes = {
        f.name: tile(getattr(params, f.name))
        for f in dataclasses.fields(params)
        if isinstance(getattr(params, f.name), torch.Tensor)
    }
    changes["keys"] = tuple(k.to(device) for k in params.keys)
    changes["neuron_ids"] = (ids & 0xFFFFFFFF, ids >> 32)
    return dataclasses.replace(params, **changes)


def initial_state(params, n_receptors: int) -> EngineState:
    """The engine's "uniform" start (V ~ U[V_reset, V_th) from the Philox stream of each neuron)."""
    words = philox4x32((*params.neuron_ids, 0, int(Stream.INITIAL_STATE)), params.keys)
    V = (params.V_reset + (params.V_th - params.V_reset) * uniform_from_uint32(words[0])).to(torch.float32)
    N = V.shape[-1]
    return EngineState(
        V=V.contiguous(),
        J=torch.zeros((n_receptors, 1, N), dtype=torch.float32, device=V.device),
        I_ou=params.ou_mu.expand(1, N).clone(),
        refractory=torch.zeros((1, N), dtype=torch.int32, device=V.device),
        step=0,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_voxel_model(n_neurons: float, steps: int, warmup: int, device: torch.device, seed: int = 1) -> dict:
    """Build, warm up and time the voxel E/I model; returns the measured numbers."""
    n_voxels = max(1, int(round(float(n_neurons) / VOXEL)))
    N = n_voxels * VOXEL
    model = voxel_model()
    D = model.delay_steps
    tmpl = template(model, seed)
    backend = get_backend("cuda_ext", device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    graph = voxel_graph(n_voxels, device, seed)
    _sync(device)
    t_graph = time.perf_counter() - t0
    big = scaled_params(tmpl.params, n_voxels, device)
    state = initial_state(big, len(model.receptors))
    if device.type == "cuda":
        tables = param_tables(big, 1, N)
        del big  # the kernels read the per-class tables only
    drive = torch.zeros((D, 2, 1, N), dtype=torch.int32, device=device)
    P = graph.n_populations
    capacity = max(1 << 16, int(N * D * 0.05))  # 50x the spikes of 10 Hz
    rows = torch.empty((capacity, 3), dtype=torch.int64, device=device) if device.type == "cuda" else None
    count = torch.zeros(1, dtype=torch.int64, device=device)
    pop32 = graph.population_index.to(torch.int32)
    counts = torch.zeros((D, 1, P), dtype=torch.int32, device=device)
    total_spikes = 0

    def interval(n: int) -> int:
        """One delay interval: integrate, then deliver into the ring (cleared as read)."""
        offset = state.step % D
        if device.type == "cuda":
            count.zero_()
            counts.zero_()
            backend.integrate_compact(
                state, drive, tables, n, offset, rows, count, pop32, counts[:n], expanded=tmpl.params
            )
            k = int(count)  # one host sync per interval, as the engine's record step needs
            if k > capacity:
                raise RuntimeError(f"spike buffer overflow: {k} spikes > capacity {capacity}; raise the capacity")
            backend.deliver(rows[:k], graph, drive)
            return k
        result = backend.integrate(state, drive, big, n, offset, None, 1)
        if not backend.consumes_drive:
            drive[offset : offset + n] = 0
        spikes = result.rows().clone()
        spikes[:, 0] += offset
        backend.deliver(spikes, graph, drive)
        return len(spikes)

    setup_s = time.perf_counter() - t0
    if device.type == "cuda":
        setup_peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    done = 0
    while done < warmup:
        done += D
        interval(D)
    _sync(device)
    t1 = time.perf_counter()
    done = 0
    while done < steps:
        total_spikes += interval(D)
        done += D
    _sync(device)
    elapsed = time.perf_counter() - t1
    updates = N * done
    estimate = estimate_rank_memory(
        N, int(graph.targets.numel()), n_receptors=4, delay_steps=D, n_populations=P, device=device.type
    )
    out = {
        "model": "DTB voxel E/I (docs/model.md §3.2a), K=100",
        "n_neurons": N,
        "n_voxels": n_voxels,
        "n_synapses": int(graph.targets.numel()),
        "mean_indegree": graph.targets.numel() / N,
        "steps_timed": done,
        "dt_ms": model.dt_ms,
        "delay_steps": D,
        "graph_build_s": round(t_graph, 3),
        "setup_s": round(setup_s, 3),
        "sim_s": round(elapsed, 4),
        "neuron_updates_per_s": updates / elapsed,
        "realtime_factor": (done * model.dt_ms / 1000.0) / elapsed,
        "rate_hz": total_spikes / N / (done * model.dt_ms / 1000.0),
        "bytes_per_synapse_graph": (graph.targets.element_size() + 1),
        "estimate_device_bytes": estimate.device,
        "estimate": estimate.as_dict(),
    }
    if device.type == "cuda":
        out["max_memory_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        out["setup_peak_memory_allocated_bytes"] = int(setup_peak)
        out["state_bytes_per_neuron"] = (
            sum(t.element_size() * t.numel() for t in (state.V, state.J, state.I_ou, state.refractory)) / N
            + tables.neuron_class.element_size()
        )
    return out


def roofline(n_receptors: int = 4, delay_steps: int = 10, rate_hz: float = 10.0, indegree: float = 100.0) -> dict:
    """Bytes moved per neuron-update by the fast path (``dtb.twin.cost``), and the bandwidth-bound rate."""
    from dtb.twin.cost import GPU_H100, GPU_H200, gpu_bytes_per_update_parts

    parts = gpu_bytes_per_update_parts(n_receptors, delay_steps, rate_hz, indegree)
    per_update = sum(parts.values())
    return {
        "bytes_per_neuron_update": per_update,
        "parts": parts,
        "bound_updates_per_s_H100_3.35TBps": GPU_H100.bandwidth_bytes_per_s / per_update,
        "bound_updates_per_s_H200_4.8TBps": GPU_H200.bandwidth_bytes_per_s / per_update,
    }


def run_brunel(n: int, device: str, peers: Path, T_ms: float) -> dict:
    """Brunel-COBA through the engine (bench/brunel.py) with the cuda_ext backend."""
    sys.path.insert(0, str(ROOT / "bench"))
    import brunel

    args = ["--N", str(n), "--K", "100", "--T", str(T_ms), "--backend", "cuda_ext", "--device", device]
    args += ["--peers", str(peers), "--threads", "1"]
    return brunel.main(args)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=float, default=[1e7, 1e8], help="neurons of the voxel model")
    p.add_argument("--steps", type=int, default=1000, help="timed steps (0.1 ms each)")
    p.add_argument("--warmup", type=int, default=200, help="untimed steps first")
    p.add_argument("--brunel-n", type=int, default=1_000_000, help="Brunel-COBA size (0: skip)")
    p.add_argument("--brunel-T", type=float, default=1000.0, help="Brunel-COBA biological time [ms]")
    p.add_argument(
        "--peers", type=Path, default=os.environ.get("DTB_PEERS"), help="peers' folder (default: $DTB_PEERS)"
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="20,000 neurons, 100 steps, on the CPU kernels")
    p.add_argument("--json", type=Path, help="write the result JSON here")
    a = p.parse_args(argv)
    if a.dry_run:
        a.sizes, a.steps, a.warmup, a.brunel_n, a.device = [2e4], 100, 20, 0, "cpu"
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_engine.py: torch sees no CUDA GPU; run with --dry-run for the CPU smoke test")
    result: dict = {
        "benchmark": "gpu_engine",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dry_run": a.dry_run,
        "roofline_estimate": roofline(),
        "voxel_model": [],
    }
    for n in a.sizes:
        row = run_voxel_model(n, a.steps, a.warmup, device)
        print(json.dumps(row), flush=True)
        result["voxel_model"].append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if a.brunel_n and a.peers is None:
        print("Brunel-COBA skipped: no --peers DIR and no DTB_PEERS (the peers' folder)", flush=True)
    elif a.brunel_n:
        result["brunel_coba"] = run_brunel(a.brunel_n, a.device, a.peers, a.brunel_T)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "voxel_model"}))
    return result


if __name__ == "__main__":
    main()
