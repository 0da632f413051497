"""A small fitted twin (5 AAL2 regions, ~300 neurons, 3 members, 30 frames) for the experiment tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dtb.io.region_inputs import RegionSubject
from dtb.selftest import synthetic_region_subject

LABELS = ("Thalamus_L", "Thalamus_R", "Calcarine_L", "Hippocampus_L", "Frontal_Sup_2_L")


def small_subject() -> RegionSubject:
    return synthetic_region_subject(
        "exp01", LABELS, [60] * 5, n_frames=30, tr_s=0.2, kernel=np.exp(-np.arange(20) / 5.0), pad=50, seed=11
    )


def small_config() -> dict:
    return {
        "seed": 5,
        "neurons_total": 300,
        "threads": 1,
        "backend": "auto",
        "model": {"indegree": 10, "dt_ms": 1.0, "min_excitatory": 4, "min_inhibitory": 1},
        "assimilation": {"members": 3, "warmup_windows": 4, "checkpoint_every": 10, "input_regions": "thalamus"},
        "observation": {"low_hz": None, "high_hz": 0.2},
        "resimulation": {"record_seconds": 1.0},
    }


def make_fitted_store(directory: Path) -> Path:
    from dtb.twin.run import assimilate_subject, resimulate_store

    store = Path(directory) / "sub-exp01_twin.zarr"
    assimilate_subject(small_subject(), small_config(), store, progress="none")
    resimulate_store(store, progress="none")
    return store
