"""Twin-experiment benchmark of the Vw-dHMDA driver: recovery r and wall time per TR window vs N_e.

A truth run (one member) with a known h(t) in two input regions of a small region-level
network gives synthetic BOLD; the driver assimilates it with N_e = 8, 32, 100 members (or
``--members``).  Reported per ensemble size: h recovery r per input region, forecast BOLD r,
wall time per TR window, and the share of that time spent in the filter (analysis + random
walk) rather than in the spiking forecast.  Writes JSON (``--json``).

    .venv/bin/python bench/assimilation.py --json bench/results/assimilation.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dtb.assembly.forward import make_simulation
from dtb.assembly.region import build_region_model
from dtb.assembly.settings import ModelSettings
from dtb.assim import hmda as hmda_module
from dtb.assim.enkf import EnKFSettings
from dtb.assim.hmda import HMDA, HMDASettings
from dtb.sim.backends import resolve_backend_name

N_REGIONS, INPUTS, TR_MS = 6, (0, 1), 500.0


def _model(per_region: int):
    rng = np.random.default_rng(0)
    sc = rng.random((N_REGIONS, N_REGIONS))
    sc = sc + sc.T
    np.fill_diagonal(sc, 0.0)
    return build_region_model(
        np.full(N_REGIONS, per_region), sc, [f"r{i}" for i in range(N_REGIONS)],
        ModelSettings(indegree=20, min_excitatory=4, min_inhibitory=1, dt_ms=1.0), graph_seed=3,
    )  # fmt: skip


def _truth(region_model, n_frames: int, backend: str):
    t = np.arange(n_frames) * TR_MS / 1000.0
    h = np.stack([0.12 + 0.08 * np.sin(2 * np.pi * t / 20.0), 0.12 + 0.08 * np.cos(2 * np.pi * t / 25.0)], axis=1)
    regional = make_simulation(region_model, n_members=1, seed=99, gain_seed=5, backend=backend)
    bold = []
    for row in h:
        regional.set_region_hyperparameter("i_ext", INPUTS, row)
        bold.append(regional.advance(TR_MS).bold[0].numpy())
    bold = np.array(bold)
    return h, bold + np.random.default_rng(1).normal(0.0, 1e-4, bold.shape)


class _FilterClock:
    """Wraps the filter functions the driver calls to time them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._saved = {}

    def __enter__(self):
        for name in ("analysis", "random_walk"):
            original = getattr(hmda_module, name)
            self._saved[name] = original

            def timed(*args, _f=original, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _f(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - t0

            setattr(hmda_module, name, timed)
        return self

    def __exit__(self, *exc):
        for name, f in self._saved.items():
            setattr(hmda_module, name, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, nargs="+", default=[8, 32, 100])
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--neurons-per-region", type=int, default=50)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backend = resolve_backend_name(args.backend)
    region_model = _model(args.neurons_per_region)
    h_true, observed = _truth(region_model, args.frames, backend)
    warm = 10
    rows = []
    for m in args.members:
        regional = make_simulation(region_model, n_members=m, seed=4, gain_seed=6, backend=backend)
        settings = HMDASettings(
            warmup_windows=warm, checkpoint_every=args.frames, enkf=EnKFSettings(seed=4, random_walk_std=2.0)
        )
        driver = HMDA(regional, INPUTS, [f"r{i}" for i in range(N_REGIONS)], TR_MS, settings)
        with tempfile.TemporaryDirectory() as tmp, _FilterClock() as clock:
            t0 = time.perf_counter()
            store = driver.run(observed, Path(tmp) / "run.zarr", progress="none")
            wall = time.perf_counter() - t0
            from dtb.io import twin_store

            a = twin_store.read_group(store, "assimilation")
            h_mean = a["h_analysis_mean"].values
            bold_f = a["bold_forecast"].values.mean(axis=1)
        row = {
            "members": m,
            "n_neurons": region_model.network.n_neurons,
            "frames": args.frames,
            "tr_s": TR_MS / 1000.0,
            "wall_s": wall,
            "wall_per_window_s": wall / args.frames,
            "filter_s": clock.seconds,
            "filter_share": clock.seconds / wall,
            "h_recovery_r": [float(np.corrcoef(h_mean[warm:, i], h_true[warm:, i])[0, 1]) for i in range(len(INPUTS))],
            "forecast_bold_r": [float(np.corrcoef(bold_f[warm:, r], observed[warm:, r])[0, 1]) for r in INPUTS],
        }
        rows.append(row)
        print(json.dumps(row))
    result = {
        "benchmark": "assimilation_twin_experiment",
        "backend": backend,
        "threads": args.threads,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
