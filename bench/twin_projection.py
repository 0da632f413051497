"""Projected whole-run twin times at 1e5-1e7 neurons on CPU ranks and on one GPU (dtb.twin.cost).

The CPU rows come from constants measured on this machine (``bench/twin_throughput.py``, the
1e5-neuron twin run); the GPU rows are the roofline model of docs/kernels.md (no GPU was lent).
Every row: K = 100, dt = 0.1 ms, 8 members, 1,200 HCP frames (TR 0.72 s, 864 s of biology),
checkpoints every 10 windows. Writes ``bench/results/twin_projection.json`` and prints a markdown
table (docs/hpc.md, "A 1e6-neuron twin").

Example::

    python bench/twin_projection.py --json bench/results/twin_projection.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from dtb.twin.cost import CPU_MEASURED, FABRIC, GPU_H100, GPU_H200, estimate_twin_time

#: (neurons, device, ranks) of the table
CASES = [
    (100_000, "cpu", 1),
    (100_000, "cpu", 8),
    (1_000_000, "cpu", 8),
    (1_000_000, "cpu", 64),
    (1_000_000, "cpu", 256),
    (1_000_000, "cuda", 1),
    (10_000_000, "cpu", 256),
    (10_000_000, "cpu", 1024),
    (10_000_000, "cuda", 1),
]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--frames", type=int, default=1200)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    rows = []
    for neurons, device, ranks in CASES:
        for gpu in (GPU_H100, GPU_H200) if device == "cuda" else (GPU_H100,):
            est = estimate_twin_time(neurons, 100, 0.1, a.members, a.frames, ranks=ranks, device=device, gpu=gpu)
            row = est.as_dict()
            row["hardware"] = gpu.name if device == "cuda" else f"{ranks} CPU core(s)"
            rows.append(row)
    print(
        "| neurons | hardware | layout | simulate h | exchange h | window + checkpoints h | total h | "
        "without exchange h | memory GiB per rank | model |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        other = (r["window_s"] + r["checkpoint_s"]) / 3600
        print(
            f"| {r['neurons']:.0e} | {r['hardware']} | {r['layout']} | {r['simulate_s'] / 3600:.3g} | "
            f"{r['exchange_s'] / 3600:.2g} | {other:.2g} | **{r['hours']:.3g}** | "
            f"{(r['seconds'] - r['exchange_s']) / 3600:.3g} | {r['memory_gib_per_rank']:.2f} | {r['model']} |"
        )
    result = {
        "benchmark": "twin_projection",
        "settings": {"indegree": 100, "dt_ms": 0.1, "members": a.members, "frames": a.frames, "tr_s": 0.72},
        "constants": {
            "cpu": asdict(CPU_MEASURED),
            "gpu": [asdict(GPU_H100), asdict(GPU_H200)],
            "fabric": asdict(FABRIC),
        },
        "rows": rows,
    }
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
