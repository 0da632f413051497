"""A small twin under the held-out fidelity protocol (dtb.twin.heldout): the k-step forecasts and
the free run are made without the held-out frames, and come back scored beside the baselines.

Slow (three twin runs of 400 s of BOLD with lead forecasts): ``--run-slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

from dtb.fidelity.protocol import lead_frames, subject_baselines
from dtb.io.region_inputs import RegionSubject
from dtb.twin.heldout import assimilate_heldout, free_run_heldout, h_ar1_track, heldout_forecasts, score_twin

LABELS = ("Thalamus_L", "Thalamus_R", "Insula_L", "Insula_R")
TR_S = 2.0
N_FRAMES = 200  # 400 s: the "halves" split's minimum (200 s assimilated, 120 s held out)


def _subject(bold: np.ndarray) -> RegionSubject:
    sc = np.ones((len(LABELS), len(LABELS))) - np.eye(len(LABELS))
    return RegionSubject(
        label="t01", atlas="AAL2", labels=LABELS, bold=bold, tr_s=TR_S, sc=sc, neuron_counts=np.full(len(LABELS), 60)
    )


CONFIG = {
    "seed": 3,
    "neurons_total": 240,
    "model": {"indegree": 10, "min_excitatory": 4, "min_inhibitory": 1},
    "assimilation": {"members": 3, "warmup_windows": 5},
    "resimulation": {"record_seconds": 0.0},
}


@pytest.mark.slow
def test_twin_forecasts_and_free_run_never_see_heldout_frames(tmp_path):
    rng = np.random.default_rng(0)
    shared = np.cumsum(rng.normal(size=(N_FRAMES, 1)), axis=0)
    bold = 1000 + shared + 0.5 * np.cumsum(rng.normal(size=(N_FRAMES, len(LABELS))), axis=0)
    other = bold.copy()
    other[N_FRAMES // 2 :] = 1000 + 3 * rng.normal(size=(N_FRAMES - N_FRAMES // 2, len(LABELS)))

    store_a, run_a = assimilate_heldout(_subject(bold), CONFIG, "halves", tmp_path / "a.zarr", horizons=(1, 2))
    store_b, run_b = assimilate_heldout(_subject(other), CONFIG, "halves", tmp_path / "b.zarr", horizons=(1, 2))
    start = run_a.split.start
    (fa, frames), (fb, _) = heldout_forecasts(store_a, run_a, (1, 2)), heldout_forecasts(store_b, run_b, (1, 2))
    assert all(np.array_equal(frames[k], np.arange(N_FRAMES - start)) for k in (1, 2))
    assert fa[1].shape == (N_FRAMES - start, len(LABELS))
    # the forecasts of the first held-out frame were made before any held-out frame was seen
    np.testing.assert_array_equal(fa[1][0], fb[1][0])
    np.testing.assert_array_equal(fa[2][:2], fb[2][:2])
    assert not np.array_equal(fa[1][5:], fb[1][5:])  # later ones follow the (different) data
    # the free run's h comes from the assimilated frames only: the same held-out BOLD either way
    np.testing.assert_array_equal(free_run_heldout(store_a, run_a), free_run_heldout(store_b, run_b))

    # lead forecasts after every 3rd window only: the frames lead_frames names, which the baselines score on
    store_c, _ = assimilate_heldout(
        _subject(bold), CONFIG, "halves", tmp_path / "c.zarr", horizons=(1, 2), lead_every=3
    )
    (fc_, frames_c) = heldout_forecasts(store_c, run_a, (1, 2))
    expected = lead_frames(run_a, 3, (1, 2))
    assert all(np.array_equal(frames_c[k], expected[k]) and fc_[k].shape[0] == expected[k].size for k in (1, 2))

    scores = score_twin(store_a, run_a, subject_baselines(run_a, horizons=(1, 2)), horizons=(1, 2))
    for k in (1, 2):
        assert np.isfinite(scores["forecast"][k]["r"])
    free = scores["free_run"]
    assert -1 <= free["fc_r"] <= 1 and 0 <= free["fcd_ks"] <= 1 and free["fc_fnorm"] >= 0


def test_h_track_model_recovers_an_ar1_and_respects_the_bounds():
    rng = np.random.default_rng(1)
    h = np.empty((5000, 2))
    h[0] = 0.1
    for t in range(1, 5000):
        h[t] = 0.02 + 0.8 * h[t - 1] + 0.01 * rng.standard_normal(2)
    drawn = h_ar1_track(h, slice(0, 5000), 5000, 0.01, 0.3, seed=4)
    assert drawn.mean(axis=0) == pytest.approx([0.1, 0.1], abs=0.005)  # c / (1 - a)
    lag1 = [np.corrcoef(drawn[1:, i], drawn[:-1, i])[0, 1] for i in range(2)]
    assert lag1 == pytest.approx([0.8, 0.8], abs=0.03)
    tight = h_ar1_track(h, slice(0, 5000), 500, 0.09, 0.11, seed=4)
    assert tight.min() >= 0.09 and tight.max() <= 0.11
