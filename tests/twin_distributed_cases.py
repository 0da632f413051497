"""The small twin assimilation shared by tests/twin/test_twin_distributed.py and its MPI worker."""

from __future__ import annotations

import numpy as np

from dtb.assembly.forward import make_simulation
from dtb.assembly.region import build_region_model
from dtb.assembly.settings import ModelSettings
from dtb.assim.enkf import EnKFSettings
from dtb.assim.hmda import HMDA, HMDASettings
from dtb.sim.backends import resolve_backend_name

N_REGIONS = 5
INPUTS = [0, 1]
LABELS = [f"r{i}" for i in range(N_REGIONS)]
TR_MS = 300.0
MEMBERS = 4
FRAMES = 14


def observed() -> np.ndarray:
    """Smooth BOLD-like frames (time, region) in the scaled range the filter sees."""
    t = np.arange(FRAMES)[:, None] * TR_MS / 1000.0
    return 0.035 + 0.01 * np.sin(2 * np.pi * t / 6.0 + np.arange(N_REGIONS)[None, :])


def region_model():
    """The 5-region network of about 300 neurons."""
    rng = np.random.default_rng(0)
    sc = rng.random((N_REGIONS, N_REGIONS))
    sc = sc + sc.T
    np.fill_diagonal(sc, 0.0)
    return build_region_model(
        np.full(N_REGIONS, 50), sc, LABELS, ModelSettings(indegree=15, min_excitatory=4, min_inhibitory=1), graph_seed=3
    )


def calibration(*, comm=None):
    """``assimilation.h_bounds: calibrated`` on that network (dtb.twin.calibration), searching [0, 0.6]."""
    from dtb.twin.calibration import calibrate_h_bounds
    from dtb.twin.config import load_twin_config

    config = load_twin_config({"seed": 4, "assimilation": {"h_bounds": "calibrated", "lower": 0.0, "upper": 0.6}})
    return calibrate_h_bounds(region_model(), INPUTS, config, backend=resolve_backend_name("auto"), comm=comm)


def assimilation(*, comm=None, layout: str = "members") -> tuple[HMDA, np.ndarray]:
    """A 5-region twin of about 300 neurons with 4 members, and its observations."""
    model = region_model()
    regional = make_simulation(
        model,
        n_members=MEMBERS,
        seed=4,
        gain_seed=6,
        backend=resolve_backend_name("auto"),
        comm=comm,
        layout=layout,
    )
    settings = HMDASettings(warmup_windows=3, checkpoint_every=3, enkf=EnKFSettings(seed=4))
    return HMDA(regional, INPUTS, LABELS, TR_MS, settings), observed()
