"""Time ``dtb report`` on a store the size of a real region-level twin (synthetic numbers).

A store in the twin run format with ``--regions`` regions (AAL2-like labels), ``--volumes``
TRs, ``--members`` members and ``--populations-per-region`` populations is filled with AR(1)
noise (no simulation: this measures the report, not the engine), then the report is built
and its wall time and size printed as JSON.

    python bench/report_scale.py --regions 94 --volumes 1200 --members 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from dtb.io.store import json_safe, write_group
from dtb.report import build_report


def _ar1(rng, shape, phi=0.9):
    x = np.empty(shape)
    x[0] = rng.standard_normal(shape[1:])
    for t in range(1, shape[0]):
        x[t] = phi * x[t - 1] + np.sqrt(1 - phi**2) * rng.standard_normal(shape[1:])
    return x


def synthetic_store(path: Path, regions: int, volumes: int, members: int, pops: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = [f"Region_{i:03d}" for i in range(regions)]
    tr = 0.72
    time_s = np.arange(volumes) * tr
    obs = 0.035 + 0.005 * _ar1(rng, (volumes, regions))
    coords = {"time": ("time", time_s, {"units": "s"}), "region": labels}
    write_group(path, "observation", xr.Dataset({"bold": (("time", "region"), obs)}, coords=coords), "time", True)
    population = [f"{r}:{k}" for r in labels for k in ("E", "I")[:pops]]
    conn = rng.gamma(0.5, 1.0, (regions, regions))
    np.fill_diagonal(conn, 0)
    write_group(
        path,
        "network",
        xr.Dataset(
            {
                "neuron_count": (("region",), rng.integers(1000, 20000, regions)),
                "connectome": (("region", "region_source"), conn / conn.sum(1, keepdims=True)),
                "population_size": (("population",), rng.integers(200, 8000, len(population))),
                "population_region": (("population",), np.array([p.split(":")[0] for p in population], dtype=object)),
                "population_kind": (("population",), np.array([p.split(":")[1] for p in population], dtype=object)),
            },
            coords={"region": labels, "region_source": labels, "population": population},
        ),
        None,
        True,
    )
    forecast = obs[:, None, :] + 0.003 * rng.standard_normal((volumes, members, regions))
    h = 0.1 + 0.02 * _ar1(rng, (volumes, 2))
    write_group(
        path,
        "assimilation",
        xr.Dataset(
            {
                "h_analysis_mean": (("time", "parameter"), h),
                "h_analysis_std": (("time", "parameter"), 0.01 + 0 * h),
                "h_members": (
                    ("time", "member", "parameter"),
                    h[:, None] + 0.01 * rng.standard_normal((volumes, members, 2)),
                ),
                "bold_forecast": (("time", "member", "region"), forecast),
                "warmup": (("time",), np.arange(volumes) < 10),
            },
            coords={**coords, "member": np.arange(members), "parameter": ["Thalamus_L:i_ext", "Thalamus_R:i_ext"]},
        ),
        "time",
        True,
    )
    write_group(
        path,
        "resimulation",
        xr.Dataset({"bold": (("time", "region"), obs + 0.004 * rng.standard_normal(obs.shape))}, coords=coords),
        "time",
        True,
    )
    n_neurons = 200_000
    spikes = rng.integers(0, n_neurons, 400_000)
    write_group(
        path,
        "resimulation/spikes",
        xr.Dataset({"time": (("spike",), np.sort(rng.random(spikes.size) * 10.0)), "neuron": (("spike",), spikes)}),
        "spike",
        True,
    )
    zarr.open_group(path, mode="a", zarr_format=3).attrs.update(
        json_safe({"subject": "scale", "tr_s": tr, "input_regions": labels[:2], "n_neurons": n_neurons, "config": {}})
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=94)
    parser.add_argument("--volumes", type=int, default=1200)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--populations-per-region", type=int, default=2, choices=(1, 2))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(
            Path(tmp) / "run.zarr", args.regions, args.volumes, args.members, args.populations_per_region
        )
        start = time.perf_counter()
        html = build_report(store, Path(tmp) / "report.html", figures_dir=Path(tmp) / "figures")
        wall = time.perf_counter() - start
        print(
            json.dumps(
                {
                    **vars(args),
                    "report_wall_s": round(wall, 1),
                    "html_mb": round(html.stat().st_size / 1e6, 2),
                    "figures": len(list((Path(tmp) / "figures").glob("*.png"))),
                }
            )
        )


if __name__ == "__main__":
    main()
