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


#: A run long enough for the held-out protocol's "halves" split (200 s assimilated, 120 s held out).
HELDOUT_LABELS = ("Thalamus_L", "Thalamus_R", "Insula_L", "Insula_R")


def heldout_subject() -> RegionSubject:
    """4 regions, 200 frames at TR 2 s (400 s): the held-out protocol's shortest "halves" run."""
    rng = np.random.default_rng(0)
    n = 200
    shared = np.cumsum(rng.normal(size=(n, 1)), axis=0)
    bold = 1000 + shared + 0.5 * np.cumsum(rng.normal(size=(n, len(HELDOUT_LABELS))), axis=0)
    sc = np.ones((len(HELDOUT_LABELS), len(HELDOUT_LABELS))) - np.eye(len(HELDOUT_LABELS))
    return RegionSubject(
        label="s01", atlas="AAL2", labels=HELDOUT_LABELS, bold=bold, tr_s=2.0, sc=sc,
        neuron_counts=np.full(len(HELDOUT_LABELS), 60),
    )  # fmt: skip


def tiny_scaling_config() -> dict:
    """A scaling study over 2 sizes and 2 in-degrees of a 4-region twin (3 fits: (120, 10) is in both sweeps)."""
    return {
        "scaling": {
            "neurons": [120, 240],
            "indegree": 10,
            "indegrees": [5, 10],
            "indegree_neurons": 120,
            "split": "halves",
            "horizons": [1, 2],
            "lead_every": 5,
            "members": 2,
            "warmup": 5,
            "seed": 3,
            "twin": {"threads": 1, "model": {"min_excitatory": 4, "min_inhibitory": 1}},
        }
    }
