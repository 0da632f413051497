"""Predicted time per biological second of the distributed engine at cluster scale.

A performance model of the min-delay cycle (docs/scaling.md explains every term):

    T(N, G) = 1000 intervals/s x [ t_compute + t_comm ]            [s per biological s]
    t_compute = imbalance x (N/G) x (D / theta)                     (D = 10 steps of 0.1 ms)
    t_comm    = 2 x alpha x ceil(log2 G) + (G - 1) x o + bytes / beta
    bytes     = (N/G) x f x 1 ms x d(G) x b                        (ids a rank sends per interval)
    d(G)      = E share x expected number of other ranks among an E neuron's long-range targets
              = 0.8 x (G - 1) x (1 - (1 - 1/(G - 1))^(K p_lr))     (uniform placement: an upper bound)

The per-rank throughput ``theta`` (neuron-steps per second, synaptic input included) and
the bytes per spike id come from measurement: ``--measured bench/results/scaling.json``
adds the CPU ranks measured on this machine; the GPU rows use the DTB's own per-GPU
throughput (86e9 neurons on 14,012 GPUs at 560x slower than real time) and a 10x faster
kernel as scenarios.  Writes ``bench/results/scaling_model.json`` and prints a markdown
table.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from dtb.twin import cost as twin_cost

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Fabric:
    """An InfiniBand-class network (HDR/NDR), per rank (one GPU, one NIC share)."""

    alpha_s: float = 2.0e-6  #: latency of one collective stage (MPI small message)
    per_peer_s: float = 0.2e-6  #: per-peer cost of an all-to-all (message rate ~5 M msg/s per rank)
    beta_bytes_per_s: float = 20e9  #: injection bandwidth per rank (200 Gb/s HDR ~ 25 GB/s)


@dataclass(frozen=True)
class Workload:
    rate_hz: float = 10.0  #: mean firing rate
    indegree: int = 100  #: K, synapses per neuron (out-degree on average)
    long_range_share: float = 0.29  #: p_lr, share of inputs from other voxels (docs/model.md §3.2a)
    excitatory_share: float = 0.8  #: only E neurons project long-range (I neurons: no remote targets)
    bytes_per_id: int = 8  #: spike id on the wire (uint32 below 2**32 / (D M) neurons, else int64)
    delay_steps: int = 10  #: D: 1 ms of 0.1 ms steps
    imbalance: float = 1.05  #: max / mean rank cost from the partitioner

    @property
    def bytes_per_neuron(self) -> float:
        """Device memory per neuron, one member: state (V, I_ou, 4 J, refractory: 28 B),
        drive (D x 2 x int32: 80 B), incoming synapses (K x (4 B source + 1 B weight)), indptr (8 B)."""
        return 28 + 8 * self.delay_steps + 5 * self.indegree + 8


def destinations(G: int, workload: Workload) -> float:
    """Expected other ranks holding long-range targets of one neuron (uniform placement; dtb.twin.cost)."""
    return twin_cost.destinations(G, workload.indegree, workload.long_range_share)


def seconds_per_bio_second(N: float, G: int, theta: float, workload: Workload, fabric: Fabric) -> dict:
    """Model terms for N neurons on G ranks with per-rank throughput theta [neuron-steps/s]."""
    per_rank = N / G
    intervals = 1000.0 / (workload.delay_steps * 0.1)
    compute = workload.imbalance * per_rank * workload.delay_steps / theta
    ids_per_spike = workload.excitatory_share * destinations(G, workload)
    sent = per_rank * workload.rate_hz * 1e-3 * ids_per_spike * workload.bytes_per_id
    latency = 2 * fabric.alpha_s * math.ceil(math.log2(G)) + (G - 1) * fabric.per_peer_s if G > 1 else 0.0
    comm = latency + sent / fabric.beta_bytes_per_s
    return {
        "neurons": N,
        "ranks": G,
        "neurons_per_rank": per_rank,
        "compute_s": intervals * compute,
        "comm_s": intervals * comm,
        "total_s": intervals * (compute + comm),
        "bytes_sent_per_rank_per_bio_s": intervals * sent,
        "device_gib_per_rank": per_rank * workload.bytes_per_neuron / 2**30,
        "spike_ids_per_spike": ids_per_spike,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measured", default=str(ROOT / "bench" / "results" / "scaling.json"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaling_model.json"))
    args = parser.parse_args()
    fabric = Fabric()
    dtb_theta = 86e9 / 14012 * 1e4 / 560  # DTB: neuron-steps per s per GPU (~1.1e8)
    scenarios = {"GPU, DTB-class kernel": dtb_theta, "GPU, 10x DTB kernel": 10 * dtb_theta}
    measured = None
    if Path(args.measured).exists():
        measured = json.loads(Path(args.measured).read_text())
        best = measured["best"]["strong_1"]
        scenarios["CPU core, measured here"] = best["neuron_steps_per_s_per_rank"]
        two = measured["best"]["strong_2"]
        spikes_per_rank = two["rate_hz"] * two["neurons"] / two["n_ranks"]
        measured_ids = [r["spike_ids_sent_per_bio_s"] / spikes_per_rank for r in two["ranks"]]
        print(
            f"measured at 2 ranks: {sum(measured_ids) / len(measured_ids):.2f} spike ids sent per spike "
            f"(model: {Workload().excitatory_share * destinations(2, Workload()):.2f}), "
            f"{two['bytes_per_spike_id']} B per id\n"
        )
    rows = []
    for name, theta in scenarios.items():
        for N in (1e9, 1e10, 1e11):
            for G in (10, 100, 1000, 10000):
                row = seconds_per_bio_second(N, G, theta, Workload(), fabric)
                row.update(scenario=name, theta=theta)
                rows.append(row)
    dtb_check = seconds_per_bio_second(86e9, 14012, dtb_theta, Workload(indegree=556), fabric)
    document = {
        "fabric": asdict(fabric),
        "workload": asdict(Workload()),
        "theta_neuron_steps_per_s": scenarios,
        "rows": rows,
        "dtb_check_86e9_neurons_14012_gpus_K556": dtb_check,
        "dtb_published_slowdown": 560.0,
    }
    Path(args.out).write_text(json.dumps(document, indent=1))
    print(
        "| scenario | neurons | GPUs/ranks | neurons per rank | GiB per rank | compute s | comm s | total s per bio s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fits = "" if r["device_gib_per_rank"] <= 70 else " (> 70: does not fit an 80 GB GPU)"
        print(
            f"| {r['scenario']} | {r['neurons']:.0e} | {r['ranks']} | {r['neurons_per_rank']:.2e} | "
            f"{r['device_gib_per_rank']:.3g}{fits} | {r['compute_s']:.3g} | {r['comm_s']:.3g} | {r['total_s']:.3g} |"
        )
    print(
        f"\nDTB check (86e9 neurons, 14,012 GPUs, K = 556): compute {dtb_check['compute_s']:.0f} s + comm "
        f"{dtb_check['comm_s']:.2f} s = {dtb_check['total_s']:.0f} s per biological s (published: 560)"
    )


if __name__ == "__main__":
    main()
