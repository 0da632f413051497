"""Cost of ``dtb report``: wall time, CPU time and peak resident memory, on stores of real twins' sizes.

Two cases, each a synthetic store in the twin run format filled with AR(1) noise (no simulation:
this measures the report, not the engine), with the shapes of a real store:

- ``twin1244``: subject 101309's twin at the fast CPU setting (1,244 neurons in 188 populations,
  94 AAL2-sized regions, 60 frames, 8 members, 10.08 s of recorded spikes: 10,080 1 ms count bins and
  about 194,000 spike events);
- ``regions94_1200``: a whole HCP run (94 regions, 1,200 volumes, TR 0.72 s, 8 members, the same
  network and recording).

``--store RUN.zarr`` measures a real store instead. The store is written by this process; the report
is built by ``dtb report`` in a fresh process, whose peak RSS (``ru_maxrss`` of the child) and CPU
time are its own. ``--jobs`` is passed as ``dtb report --jobs``. Writes a JSON list of results.

    python bench/report_scale.py --out bench/results/report_scale.json [--cases twin1244 regions94_1200] [--jobs 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dtb.assim.metrics import compute_fidelity
from dtb.io import twin_store
from dtb.io.store import json_safe

#: case -> (regions, volumes, members, neurons, recorded seconds, spike events)
CASES = {
    "twin1244": (94, 60, 8, 1244, 10.08, 194_240),
    "regions94_1200": (94, 1200, 8, 1244, 10.08, 194_240),
}


def _ar1(rng, shape, phi=0.9):
    x = np.empty(shape)
    x[0] = rng.standard_normal(shape[1:])
    for t in range(1, shape[0]):
        x[t] = phi * x[t - 1] + np.sqrt(1 - phi**2) * rng.standard_normal(shape[1:])
    return x


def synthetic_store(
    path: Path,
    regions: int,
    volumes: int,
    members: int,
    neurons: int = 1244,
    record_s: float = 10.08,
    n_spikes: int = 194_240,
    seed: int = 0,
) -> Path:
    """A complete twin run store (every group the report reads) of the given size [s, neurons]."""
    rng = np.random.default_rng(seed)
    labels = [f"Region_{i:03d}" for i in range(regions)]
    tr = 0.72
    time_s = np.arange(volumes) * tr
    obs = 0.035 + 0.005 * _ar1(rng, (volumes, regions))
    coords = {"time": ("time", time_s, {"units": "s"}), "region": labels}
    twin_store.create_store(path, {"subject": "scale"})
    twin_store.write_group_data(path, "observation", {"bold": obs, "bold_clean": obs}, coords)
    population = [f"{r}:{k}" for r in labels for k in ("E", "I")]
    sizes = np.maximum(2, np.round(rng.dirichlet(np.ones(len(population))) * neurons)).astype(np.int64)
    conn = rng.gamma(0.5, 1.0, (regions, regions))
    np.fill_diagonal(conn, 0)
    network = {
        "neuron_count": sizes.reshape(regions, 2).sum(1),
        "connectome": conn / conn.sum(1, keepdims=True),
        "population_size": sizes,
        "population_region": np.array([p.split(":")[0] for p in population]),
        "population_kind": np.array([p.split(":")[1] for p in population]),
    }
    coords_net = {"region": labels, "region_source": labels, "population": population}
    twin_store.write_group_data(path, "network", network, coords_net)
    forecast = obs[:, None, :] + 0.003 * rng.standard_normal((volumes, members, regions))
    h = 0.1 + 0.02 * _ar1(rng, (volumes, regions))
    heldout = np.arange(volumes) >= volumes - volumes // 3
    warmup = np.arange(volumes) < 10
    innovation = obs - forecast.mean(axis=1)
    assimilation = {
        "h_analysis_mean": h,
        "h_analysis_std": 0.01 + 0 * h,
        "h_forecast_mean": h,
        "h_forecast_std": 0.012 + 0 * h,
        "rate_forecast": 5 + rng.random((volumes, members, regions)),
        "h_members": h[:, None] + 0.01 * rng.standard_normal((volumes, members, regions)),
        "bold_forecast": forecast,
        "innovation": innovation,
        "innovation_spread": forecast.std(axis=1),
        "warmup": warmup,
        "heldout": heldout,
    }
    parameters = [f"{r}:i_ext" for r in labels]
    asm_coords = {**coords, "member": np.arange(members), "parameter": parameters}
    twin_store.write_group_data(path, "assimilation", assimilation, asm_coords, fill={"h": "i_ext", "h_units": "pA"})
    resim = obs + 0.004 * rng.standard_normal(obs.shape)
    rate = 5 + rng.random(obs.shape)
    twin_store.write_group_data(path, "resimulation", {"bold": resim, "rate": rate}, coords)
    bins = int(round(record_s * 1000))
    counts = rng.poisson(sizes * 0.008, (bins, sizes.size)).astype(np.int32)
    twin_store.write_group_data(
        path,
        "resimulation_counts",
        {"spike_count": counts},
        {"time": np.arange(bins) * 1e-3, "population": population},
        {"bin_s": 1e-3},
    )
    spikes = {
        "time": np.sort(rng.random(n_spikes) * record_s),
        "neuron": rng.integers(0, int(sizes.sum()), n_spikes),
    }
    twin_store.write_group_data(path, "resimulation_spikes", spikes, None, {"duration_s": record_s, "start_s": 0.0})
    # the metrics as dtb resimulate computes them (dtb.assim.metrics), not a copy of the computation
    fid = compute_fidelity(obs, resimulated=resim, forecast_ensemble=forecast, warmup_frames=int(warmup.sum()))
    arrays = {v.name: getattr(fid, v.name) for v in twin_store.GROUPS["metrics"].variables}
    twin_store.write_group_data(
        path,
        "metrics",
        {key: np.asarray(value) for key, value in arrays.items() if value is not None},
        {"region": labels, "region_source": labels},
        json_safe(fid.to_json()),
    )
    attrs = {
        "subject": "scale",
        "tr_s": tr,
        "input_regions": labels,
        "assimilated_regions": labels,
        "n_neurons": int(sizes.sum()),
        "n_members": members,
        "config": {},
        "complete": True,
    }
    twin_store.update_root_attrs(path, attrs)
    return path


def measure(store: Path, work: Path, jobs: int) -> dict:
    """Run ``dtb report`` on ``store`` in a fresh process; its wall time, CPU time and peak RSS."""
    html = work / "report.html"
    argv = [sys.executable, "-m", "dtb", "report", str(store), "--out", str(html), "--figures", str(work / "figures")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([*argv, "--jobs", str(jobs)] if jobs != 1 else argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"dtb report failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {
        "report_wall_s": round(wall, 1),
        "report_cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),  # the largest child so far: one child per process
        "html_mb": round(html.stat().st_size / 1e6, 2),
        "figures": len(list((work / "figures").glob("*.png"))),
    }


def _one(case: str | None, store: Path | None, jobs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if store is None:
            regions, volumes, members, neurons, record_s, n_spikes = CASES[case]
            store = synthetic_store(work / "run.zarr", regions, volumes, members, neurons, record_s, n_spikes)
            shape = {"regions": regions, "volumes": volumes, "members": members, "neurons": neurons}
        else:
            shape = {"store": str(store)}
        result = {"case": case or "store", **shape, "jobs": jobs, **measure(store, work, jobs)}
    result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["load_1min"] = round(os.getloadavg()[0], 1)
    result["cores"] = os.cpu_count()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON file of the results (a list)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--store", type=Path, help="measure this run store instead of the synthetic cases")
    parser.add_argument("--jobs", type=int, default=1, help="dtb report --jobs (figure-drawing processes)")
    args = parser.parse_args()
    if args.store is not None:
        results = [_one(None, args.store, args.jobs)]
    else:
        results = [_one(case, None, args.jobs) for case in args.cases]
    for result in results:
        print(json.dumps(result), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
