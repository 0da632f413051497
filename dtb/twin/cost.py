"""How long a twin's assimilation takes: a cost model with measured constants (docs/hpc.md).

The assimilation simulates ``members`` brains of ``neurons`` neurons for every TR window of the run
(warm-up windows included) and runs one filter step per window. Its wall time is modelled as

    T = frames x [ t_sim + t_exchange + t_window ] + checkpoints x t_checkpoint            [s]

    t_sim       = imbalance x (members x neurons / ranks) x (TR / dt) x c_update(dt, K)
    c_update    = c_0(dt) + c_syn x rate x dt x K            (seconds per member-neuron-update)
    t_exchange  = (TR / delay) x [ x_0 + x_id n_ids + 2 alpha ceil(log2 G) + (G - 1) o + 4 n_ids / beta ]
                  (layout ``neurons`` only; G = ranks; n_ids = spike ids a rank sends per interval:
                   its spikes x E share x other ranks holding targets, uniform placement)
    t_window    = the per-window work outside the kernels (count gather, Balloon window, filter)

**CPU ranks** (``cuda_ext`` C++ kernels, one thread per rank): ``c_0`` is measured on the twin's own
network (``bench/twin_throughput.py``: HCP subject 101309, K = 100, CPU time of one thread, rows at
1e4 and 1e5 neurons; bench/README.md), ``c_syn`` from Brunel-COBA at K = 100 against K = 1000
(bench/README.md, "cuda_ext CPU kernels"), ``x_0`` and ``x_id`` the CPU seconds a rank spends in the
spike exchange outside MPI waits, per interval and per id sent, fitted to 2 ranks of this machine
(``bench/twin_throughput.py --ranks 1 2``, ``bench/results/twin_throughput_ranks.json``: the time in
the exchange less the waits, times the rank's CPU share, at a load of 10-12 on 2 cores). They hold
the delivery of every spike, which one process does too, so they bound the exchange's own cost from
above; the ranks' whole extra CPU (6.1 us per id, MPI polling while the other rank was descheduled
included) is the pessimistic bound docs/hpc.md also gives. ``t_window`` and
``t_checkpoint`` come from the 1e5-neuron twin run (docs/hpc.md, "A 1e5-neuron twin on this
machine"). **One GPU** (``device="cuda"``) is a *model*, not a measurement (no GPU was lent to the
sessions that wrote it): ``c_update`` = bytes moved per neuron-update (the roofline of docs/kernels.md)
/ (efficiency x memory bandwidth), plus a per-interval launch overhead; the efficiency (0.7, the
share of the bandwidth docs/kernels.md names as the kernels' target) and the overhead are
assumptions, stated in :data:`GPU_H100`. Fabric constants (``alpha``, ``o``, ``beta``) are those of
docs/scaling.md (an InfiniBand HDR-class network), also assumptions.

Memory per rank is :func:`dtb.network.memory.estimate_rank_memory` of the rank's share (what
``dtb plan`` reports).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from dtb.errors import ParameterError
from dtb.network.memory import GIB, estimate_rank_memory

__all__ = [
    "CpuConstants",
    "GpuConstants",
    "Fabric",
    "TwinTimeEstimate",
    "CPU_MEASURED",
    "GPU_H100",
    "GPU_H200",
    "FABRIC",
    "gpu_bytes_per_update",
    "estimate_twin_time",
    "twin_seconds",
]


@dataclass(frozen=True)
class CpuConstants:
    """Measured costs of the ``cuda_ext`` CPU kernels, one thread per rank (this 2-core AMD EPYC)."""

    #: c_0 by step dt [ms]: seconds of CPU per member-neuron-update at K = 0 (K = 100 measured, the
    #: synaptic share below taken off); from ``bench/results/twin_throughput.json``.
    seconds_per_update: dict = field(default_factory=lambda: {0.1: 1.40e-8, 1.0: 2.13e-8})
    #: c_syn: seconds per synaptic event delivered (Brunel-COBA, 1 thread, K = 100 vs 1000).
    seconds_per_synaptic_event: float = 2.0e-9
    #: mean rate of the twin's neurons at which c_0 was measured [Hz].
    rate_hz: float = 7.0
    #: x_0: CPU seconds per rank and 1 ms interval in the spike exchange outside MPI waits (2 ranks).
    exchange_s_per_interval: float = 2.8e-4
    #: x_id: the same per spike id sent (2 ranks; 6.1e-6 with the MPI polling of a loaded machine).
    exchange_s_per_id: float = 1.0e-6
    #: t_window: per-window seconds outside the kernels (gather, Balloon window, filter step): the
    #: 1e5-neuron twin's 82.0 s of CPU per window less its 81.5 s of kernel updates.
    window_overhead_s: float = 0.5
    #: t_checkpoint: seconds per GiB of engine state written to a checkpoint (the 1e5-neuron twin's
    #: 0.08 GiB took <= 1.5 s wall at load 10, < 1 s CPU: 10 s per GiB).
    checkpoint_s_per_gib: float = 10.0
    #: where the numbers come from.
    source: str = "bench/results/twin_throughput.json, twin_throughput_ranks.json, twin_1e5.json (docs/hpc.md)"


@dataclass(frozen=True)
class GpuConstants:
    """A GPU as a memory-bandwidth-bound device (docs/kernels.md, "Roofline"): a model, not measured."""

    name: str
    bandwidth_bytes_per_s: float
    memory_gib: float
    #: share of the bandwidth the kernels reach (docs/kernels.md: the 1e11 updates/s target is ~0.7).
    efficiency: float = 0.7
    #: per 1 ms interval: kernel launches, spike compaction, the per-interval population counts and
    #: the Python around them (assumed ~15 launches of ~10 us).
    interval_overhead_s: float = 1.5e-4
    window_overhead_s: float = 0.5
    checkpoint_s_per_gib: float = 10.0


@dataclass(frozen=True)
class Fabric:
    """Network between ranks (docs/scaling.md): an InfiniBand HDR-class fabric; assumptions."""

    alpha_s: float = 2.0e-6  #: latency of one collective stage
    per_peer_s: float = 0.2e-6  #: per-peer cost of an all-to-all
    beta_bytes_per_s: float = 20e9  #: injection bandwidth per rank
    long_range_share: float = 0.29  #: share of an E neuron's synapses to other regions (docs/model.md §3.2a)
    excitatory_share: float = 0.8
    bytes_per_id: int = 4


CPU_MEASURED = CpuConstants()
GPU_H100 = GpuConstants("H100 SXM", 3.35e12, 80.0)
GPU_H200 = GpuConstants("H200", 4.8e12, 141.0)
FABRIC = Fabric()


@dataclass(frozen=True)
class TwinTimeEstimate:
    """Projected assimilation time and memory of one twin run (seconds, GiB per rank)."""

    neurons: int
    indegree: float
    dt_ms: float
    members: int
    frames: int
    ranks: int
    device: str
    layout: str
    updates: float  #: member-neuron-updates of the whole run
    simulate_s: float
    exchange_s: float
    window_s: float
    checkpoint_s: float
    memory_gib_per_rank: float
    model: str  #: "measured" (CPU constants) or "roofline model" (GPU)

    @property
    def seconds(self) -> float:
        return self.simulate_s + self.exchange_s + self.window_s + self.checkpoint_s

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds": self.seconds, "hours": self.hours}


def gpu_bytes_per_update_parts(
    n_receptors: int = 4, delay_steps: int = 10, rate_hz: float = 10.0, indegree: float = 100.0
) -> dict[str, float]:
    """Bytes moved per neuron-update by the GPU fast path, by part (docs/kernels.md, "Roofline").

    ``state``: V, R x J, I_ou, refractory, class index (4 x (R + 4) B) read once and written once
    (all but the class index) per interval of D steps; ``drive``: the two int32 slots read and
    cleared every step (16 B); ``delivery``: rate x 0.1 ms x K synapses x (5 B target and weight +
    8 B atomic read-modify-write).
    """
    state = 4 + 4 * n_receptors + 4 + 4 + 4
    return {
        "state_per_update": (2 * state - 4) / delay_steps,
        "drive": 2 * 4 * 2,
        "delivery": rate_hz * 1e-4 * indegree * (5 + 2 * 4),
    }


def gpu_bytes_per_update(
    n_receptors: int = 4, delay_steps: int = 10, rate_hz: float = 10.0, indegree: float = 100.0
) -> float:
    """Bytes moved per neuron-update by the GPU fast path: the sum of :func:`gpu_bytes_per_update_parts`."""
    return sum(gpu_bytes_per_update_parts(n_receptors, delay_steps, rate_hz, indegree).values())


def destinations(ranks: int, indegree: float, long_range_share: float) -> float:
    """Expected other ranks holding long-range targets of one neuron (uniform placement: an upper bound).

    ``indegree`` x ``long_range_share`` long-range synapses, each on one of the ``ranks - 1`` other
    ranks at random: the expected number of distinct ranks hit (docs/scaling.md).
    """
    if ranks <= 1:
        return 0.0
    m = indegree * long_range_share
    return (ranks - 1) * (1.0 - (1.0 - 1.0 / (ranks - 1)) ** m)


def _positive(name: str, value, integer: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
    if not ok or not value > 0 or (not integer and not math.isfinite(value)):
        kind = "a whole number >= 1" if integer else "a positive number"
        raise ParameterError(f"twin cost estimate: {name} must be {kind}, got {value!r}")


def estimate_twin_time(
    neurons: int,
    indegree: float,
    dt_ms: float,
    members: int,
    frames: int,
    *,
    ranks: int = 1,
    device: str = "cpu",
    layout: str | None = None,
    tr_s: float = 0.72,
    delay_ms: float = 1.0,
    checkpoint_every: int = 10,
    imbalance: float = 1.05,
    cpu: CpuConstants = CPU_MEASURED,
    gpu: GpuConstants = GPU_H100,
    fabric: Fabric = FABRIC,
) -> TwinTimeEstimate:
    """Projected wall time of ``dtb assimilate`` for a twin of this size (module docstring).

    Parameters
    ----------
    neurons, indegree : network size and in-degree K.
    dt_ms : integration step [ms]; on CPUs one of the measured steps (0.1, 1.0).
    members : ensemble size; frames : TR windows of the run (HCP: 1,200 of ``tr_s`` = 0.72 s).
    ranks : MPI ranks (CPU cores, one thread each; or GPUs with ``device="cuda"``).
    layout : ``members`` (whole brains per rank; needs members divisible by ranks to balance) or
        ``neurons`` (brains split, spike exchange every ``delay_ms``); default ``members`` when
        ranks divide the members, else ``neurons``.
    checkpoint_every : windows between checkpoints (``assimilation.checkpoint_every``).
    imbalance : slowest rank / mean rank of the ``neurons`` layout (populations are whole).
    """
    for name, value in (("neurons", neurons), ("members", members), ("frames", frames), ("ranks", ranks)):
        _positive(name, value, integer=True)
    for name, value in (("indegree", indegree), ("dt_ms", dt_ms), ("tr_s", tr_s), ("delay_ms", delay_ms)):
        _positive(name, value)
    kind = "cpu" if str(device).startswith("cpu") else "cuda" if str(device).startswith("cuda") else None
    if kind is None:
        raise ParameterError(f"twin cost estimate: device must be 'cpu' or 'cuda', got {device!r}")
    if layout is None:
        layout = "members" if members % ranks == 0 else "neurons"
    if layout not in ("members", "neurons"):
        raise ParameterError(f"twin cost estimate: layout must be 'members' or 'neurons', got {layout!r}")
    if layout == "members" and ranks > members:
        raise ParameterError(
            f"twin cost estimate: layout 'members' needs at least one member per rank ({members} member(s) < "
            f"{ranks} ranks); use layout 'neurons'"
        )
    steps_per_window = tr_s * 1000.0 / dt_ms
    intervals_per_window = tr_s * 1000.0 / delay_ms
    delay_steps = max(1, round(delay_ms / dt_ms))
    updates = float(members) * neurons * steps_per_window * frames
    if layout == "members":
        members_per_rank = math.ceil(members / ranks)
        share = (members_per_rank, neurons)
        neurons_share = neurons
    else:
        neurons_share = min(neurons, math.ceil(imbalance * neurons / ranks))
        share = (members, neurons_share)
    rank_updates_per_window = share[0] * share[1] * steps_per_window
    if kind == "cpu":
        table = {round(float(k), 6): v for k, v in cpu.seconds_per_update.items()}
        key = round(float(dt_ms), 6)
        if key not in table:
            raise ParameterError(
                f"twin cost estimate: no measured CPU cost at dt_ms {dt_ms} (measured: {sorted(table)}); "
                f"run bench/twin_throughput.py --dt {dt_ms} and add it to CpuConstants.seconds_per_update"
            )
        c_update = table[key] + cpu.seconds_per_synaptic_event * cpu.rate_hz * dt_ms * 1e-3 * indegree
        per_interval_fixed = 0.0
        window_overhead, ckpt_rate, model = cpu.window_overhead_s, cpu.checkpoint_s_per_gib, "measured"
        exchange_base, exchange_per_id = cpu.exchange_s_per_interval, cpu.exchange_s_per_id
    else:
        c_update = gpu_bytes_per_update(delay_steps=delay_steps, indegree=indegree) / (
            gpu.efficiency * gpu.bandwidth_bytes_per_s
        )
        per_interval_fixed = gpu.interval_overhead_s
        window_overhead, ckpt_rate, model = gpu.window_overhead_s, gpu.checkpoint_s_per_gib, "roofline model"
        exchange_base, exchange_per_id = 0.0, 0.0
    simulate = frames * (rank_updates_per_window * c_update + intervals_per_window * per_interval_fixed)
    exchange = 0.0
    if layout == "neurons" and ranks > 1:
        ids = share[0] * neurons_share * cpu.rate_hz * delay_ms * 1e-3
        ids *= fabric.excitatory_share * destinations(ranks, indegree, fabric.long_range_share)
        per_interval = (
            exchange_base
            + exchange_per_id * ids
            + 2 * fabric.alpha_s * math.ceil(math.log2(ranks))
            + (ranks - 1) * fabric.per_peer_s
            + ids * fabric.bytes_per_id / fabric.beta_bytes_per_s
        )
        exchange = frames * intervals_per_window * per_interval
    rank_memory = estimate_rank_memory(
        neurons_share,
        int(round(neurons_share * indegree)),
        n_members=share[0],
        delay_steps=delay_steps,
        device=kind,
        dt_ms=dt_ms,
    )
    memory = rank_memory.total / GIB
    state_gib = (rank_memory.state + rank_memory.drive) / GIB
    checkpoints = frames // max(1, checkpoint_every)
    return TwinTimeEstimate(
        neurons=neurons,
        indegree=float(indegree),
        dt_ms=float(dt_ms),
        members=members,
        frames=frames,
        ranks=ranks,
        device=kind,
        layout=layout,
        updates=updates,
        simulate_s=simulate,
        exchange_s=exchange,
        window_s=frames * window_overhead,
        checkpoint_s=checkpoints * state_gib * ranks * ckpt_rate,
        memory_gib_per_rank=memory,
        model=model,
    )


def twin_seconds(neurons: int, indegree: float, dt_ms: float, members: int, frames: int, **kwargs) -> float:
    """Projected wall seconds of the assimilation (:func:`estimate_twin_time`, total)."""
    return estimate_twin_time(neurons, indegree, dt_ms, members, frames, **kwargs).seconds
