"""Wall time of one EnKF window (random walk + analysis) vs ensemble size and number of locations.

The filter should cost little next to one TR of spiking simulation; this measures it alone on
synthetic ensembles (7 state components per location, as the Vw-dHMDA driver packs them).
One JSON line per configuration on stdout (and appended to ``--json`` when given).

    python bench/enkf_analysis.py                      # CPU, default sizes
    python bench/enkf_analysis.py --device cuda --locations 374 16043 --members 8 32 100
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from dtb.assim.enkf import EnKFSettings, analysis, random_walk


def time_window(n_members: int, n_locations: int, n_components: int, variant: str, device: str, repeats: int):
    generator = torch.Generator(device="cpu").manual_seed(0)
    state = torch.randn(n_members, n_locations, n_components, generator=generator, dtype=torch.float64).to(device)
    predicted = state[:, :, -1].clone()
    observed = torch.randn(n_locations, generator=generator, dtype=torch.float64).to(device)
    settings = EnKFSettings(obs_variance=1e-2, variant=variant, seed=1)
    times = []
    for window in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        h = random_walk(state[:, :, 0], settings, window)
        result = analysis(torch.cat([h[:, :, None], state[:, :, 1:]], dim=2), predicted, observed, settings, window)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        float(result.state[0, 0, 0])
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])  # the first call warms up
    return {
        "bench": "enkf_analysis",
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "variant": variant,
        "members": n_members,
        "locations": n_locations,
        "components": n_components,
        "median_s": times[len(times) // 2],
        "min_s": times[0],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[8, 32, 100])
    parser.add_argument("--locations", type=int, nargs="+", default=[2, 374, 16043])
    parser.add_argument("--components", type=int, default=7)
    parser.add_argument("--variant", choices=["perturbed", "sqrt"], default="perturbed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="append the JSON lines to this file")
    args = parser.parse_args(argv)
    rows = []
    for n_locations in args.locations:
        for n_members in args.members:
            row = time_window(n_members, n_locations, args.components, args.variant, args.device, args.repeats)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return rows


if __name__ == "__main__":
    main()
