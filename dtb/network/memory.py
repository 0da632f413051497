"""Memory a simulation rank needs, estimated before anything big is allocated.

The byte counts follow what ``dtb.sim.engine.Simulation`` holds (see its ``__init__``,
``_expand_params`` and ``_initial_state``); N = neurons of the rank, S = its synapses,
M = ensemble members, R = receptor channels, D = delay steps:

=========================  =====================================================================
graph, host (Network)      S x (4 B uint32 target + 1 B uint8 weight) + (N + 1) x 8 B indptr
graph, device              S x (4 B int32 target [8 B if N >= 2**31] + 1 B weight) + (N + 1) x 8 B
                           indptr + N x 16 B (int64 source kind and population index).  On CPU
                           the device tensors share indptr and weights with the host arrays, so
                           only the int32 targets are extra.
state                      M x N x (4 B V + 4 B I_ou + 4 B refractory + R x 4 B J)
drive buffer               D x 2 x M x N x 4 B (int32)
parameters                 M x N x (R x 4 B g + 3 x 4 B OU/I_ext + 2 x 8 B Poisson) + N x 52 B
                           (8 float32/int32 per-neuron tables, 2 int64 id words, 1 float32 gain)
recording (per chunk)      D x M x N x 1 B spike flags + chunk_steps x M x P x 4 B counts +
                           expected spikes x 24 B (int64 triples) at ``rate_hz``
=========================  =====================================================================

Everything that grows with M is the ensemble share (``per_member_bytes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dtb.errors import MemoryBudgetError

__all__ = ["MemoryEstimate", "estimate_rank_memory", "check_fits", "plan_ranks", "GIB"]

GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one rank needs, by part.  ``host`` is CPU memory, ``device`` GPU memory (equal to
    0 for a CPU run, where everything is host)."""

    graph_host: int
    graph_device: int
    state: int
    drive: int
    params: int
    recording: int
    per_member_bytes: int
    device_kind: str

    @property
    def device(self) -> int:
        if self.device_kind == "cpu":
            return 0
        return self.graph_device + self.state + self.drive + self.params + self.recording

    @property
    def host(self) -> int:
        if self.device_kind == "cpu":
            return self.graph_host + self.graph_device + self.state + self.drive + self.params + self.recording
        return self.graph_host

    @property
    def total(self) -> int:
        """Bytes on the memory that limits the run (device for GPU runs, host for CPU runs)."""
        return self.host if self.device_kind == "cpu" else self.device

    def as_dict(self) -> dict:
        return {
            "graph_host": self.graph_host,
            "graph_device": self.graph_device,
            "state": self.state,
            "drive": self.drive,
            "params": self.params,
            "recording": self.recording,
            "per_member_bytes": self.per_member_bytes,
            "device_kind": self.device_kind,
            "host": self.host,
            "device": self.device,
            "total": self.total,
        }


def estimate_rank_memory(
    n_neurons: int,
    n_synapses: int,
    *,
    n_members: int = 1,
    n_receptors: int = 4,
    delay_steps: int = 10,
    n_populations: int = 1,
    device: str = "cpu",
    rate_hz: float = 10.0,
    chunk_ms: float = 100.0,
    dt_ms: float = 0.1,
) -> MemoryEstimate:
    """Bytes one rank holds for ``n_neurons`` neurons receiving ``n_synapses`` synapses.

    Parameters
    ----------
    n_neurons, n_synapses : neurons and incoming synapses of the rank.
    n_members : ensemble members sharing the graph.
    n_receptors : receptor channels (4 in the DTB model).
    delay_steps : synaptic delay in steps (D = delay / dt; 10 for 1 ms at 0.1 ms).
    n_populations : populations of the rank (for the count records).
    device : ``"cpu"`` or ``"cuda"`` (any name starting with ``cuda``).
    rate_hz : mean firing rate assumed for the spike records [Hz].
    chunk_ms : records are held for this long before being written [ms].
    dt_ms : integration step [ms].
    """
    N, S, M, R, D = int(n_neurons), int(n_synapses), int(n_members), int(n_receptors), int(delay_steps)
    kind = "cpu" if str(device).startswith("cpu") else "cuda"
    target_bytes = 8 if N >= 2**31 else 4
    indptr = (N + 1) * 8
    graph_host = S * 5 + indptr
    if kind == "cpu":
        graph_device = S * target_bytes + N * 16
    else:
        graph_device = S * (target_bytes + 1) + indptr + N * 16
    state = M * N * (12 + 4 * R)
    drive = D * 2 * M * N * 4
    params = M * N * (4 * R + 12 + 16) + N * 52
    chunk_steps = max(1, int(round(chunk_ms / dt_ms)))
    spikes = M * N * rate_hz * chunk_ms / 1000.0
    recording = D * M * N + chunk_steps * M * int(n_populations) * 4 + int(math.ceil(spikes * 24))
    per_member = (state + drive + params - N * 52 + recording) // max(M, 1)
    return MemoryEstimate(graph_host, graph_device, state, drive, params, recording, per_member, kind)


def check_fits(estimate: MemoryEstimate, available_bytes: int, what: str = "rank") -> None:
    """Raise :class:`MemoryBudgetError`, with the fix, when ``estimate`` exceeds ``available_bytes``."""
    need = estimate.total
    if need <= available_bytes:
        return
    where = "host memory" if estimate.device_kind == "cpu" else "GPU memory"
    graph = estimate.graph_host if estimate.device_kind == "cpu" else estimate.graph_device
    raise MemoryBudgetError(
        f"one {what} needs {need / GIB:.2f} GiB of {where} but {available_bytes / GIB:.2f} GiB is available "
        f"(graph {graph / GIB:.2f} GiB, per ensemble member {estimate.per_member_bytes / GIB:.2f} GiB). "
        "Fix: use more ranks/GPUs (dtb plan tells how many), fewer ensemble members, or a smaller in-degree"
    )


def plan_ranks(
    n_neurons: int,
    n_synapses: int,
    available_bytes: int,
    *,
    imbalance: float = 1.1,
    reserve_bytes: int = 0,
    max_ranks: int = 1_000_000,
    **estimate_kwargs,
) -> tuple[int, MemoryEstimate]:
    """Fewest ranks (e.g. GPUs) whose largest share of the network fits ``available_bytes``.

    Each rank is assumed to hold ``imbalance`` times the mean share of neurons and synapses
    (the partitioner guarantees max/mean <= 1.1 where the populations allow), plus
    ``reserve_bytes`` (CUDA context, allocator slack).

    Returns
    -------
    (n_ranks, estimate of the largest rank)
    """
    budget = int(available_bytes) - int(reserve_bytes)

    def rank_estimate(n: int) -> MemoryEstimate:
        share = min(1.0, imbalance / n)
        return estimate_rank_memory(math.ceil(n_neurons * share), math.ceil(n_synapses * share), **estimate_kwargs)

    if budget <= 0 or rank_estimate(max_ranks).total > budget:
        raise MemoryBudgetError(
            f"no split over up to {max_ranks} ranks fits {available_bytes / GIB:.2f} GiB per rank; "
            "use fewer ensemble members or a smaller in-degree"
        )
    hi = 1
    while rank_estimate(hi).total > budget:
        hi *= 2
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if rank_estimate(mid).total > budget:
            lo = mid + 1
        else:
            hi = mid
    return hi, rank_estimate(hi)
