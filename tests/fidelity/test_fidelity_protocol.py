"""The held-out fidelity protocol (dtb.fidelity): baselines recover known processes, nothing
fitted reads a held-out frame, and bad input names the subject and the fix.

Synthetic series only (no data download); a few seconds in all.
"""

from __future__ import annotations

import numpy as np
import pytest

from dtb.errors import InputDataError, ParameterError
from dtb.fidelity.baselines import climatology, fit_ar1, fit_var, persistence
from dtb.fidelity.preprocess import fit_preprocessing
from dtb.fidelity.protocol import (
    group_baselines,
    lead_frames,
    prepare_run,
    score_forecasts,
    score_free_run,
    subject_baselines,
)
from dtb.fidelity.scores import fcd_ks, fcd_values, identification, region_skill
from dtb.fidelity.splits import make_split

TR = 0.72


def _var1(matrix: np.ndarray, n: int, seed: int, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros((n + 200, matrix.shape[0]))
    for t in range(1, y.shape[0]):
        y[t] = matrix @ y[t - 1] + noise * rng.standard_normal(matrix.shape[0])
    return y[200:]


def test_ar1_recovers_its_coefficient_and_the_theoretical_r2():
    a, n, start = 0.8, 6000, 4000
    y = _var1(np.diag([a] * 4), n, seed=1)
    model = fit_ar1(y[:start])
    assert np.allclose(np.diag(model.coefs[0]), a, atol=0.02)
    targets = np.arange(start, n)
    for k in (1, 2, 5):
        # the k-step forecast a^k y[t-k] leaves a fraction a^(2k) of the variance explained
        skill = region_skill(model.forecast(y, targets, k), y[start:])
        assert skill.r2_mean == pytest.approx(a ** (2 * k), abs=0.04)
        assert skill.r_mean == pytest.approx(a**k, abs=0.04)


def test_persistence_of_a_random_walk_has_error_variance_k_sigma2():
    rng = np.random.default_rng(2)
    y = np.cumsum(rng.standard_normal((20000, 3)), axis=0)
    targets = np.arange(10000, 20000)
    for k in (1, 2, 5):
        pred = persistence(y, targets, k)
        mse = np.mean((pred - y[targets]) ** 2)
        assert mse == pytest.approx(k, rel=0.05)
        sst = ((y[targets] - y[targets].mean(axis=0)) ** 2).mean(axis=0)
        assert np.allclose(region_skill(pred, y[targets]).r2, 1 - mse / sst, atol=0.01 * k)
    # climatology (the training mean) explains nothing of a wandering walk
    assert region_skill(climatology(y, 10000, targets), y[targets]).r2_mean < 0


def test_ridge_var_beats_persistence_and_ar1_on_a_coupled_var():
    theta, damping = 0.5, 0.9  # a damped rotation: each region is driven by the other
    rot = damping * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    y = _var1(np.kron(np.eye(2), rot), 3000, seed=3)
    start, targets = 2000, np.arange(2000, 3000)
    for k in (1, 2):
        var = fit_var(y[:start], 1, horizon=k)
        r2_var = region_skill(var.forecast(y, targets, k), y[start:]).r2_mean
        r2_pers = region_skill(persistence(y, targets, k), y[start:]).r2_mean
        r2_ar1 = region_skill(fit_ar1(y[:start]).forecast(y, targets, k), y[start:]).r2_mean
        assert r2_var > r2_pers + 0.1 and r2_var > r2_ar1 + 0.1
    # 1-step: the fitted matrix is the true one and R^2 = 1 - noise variance / stationary variance
    var = fit_var(y[:start], 1)
    assert np.allclose(var.coefs[0], np.kron(np.eye(2), rot), atol=0.05)
    stationary = 1.0 / (1.0 - damping**2)
    assert region_skill(var.forecast(y, targets, 1), y[start:]).r2_mean == pytest.approx(1 - 1 / stationary, abs=0.05)
    with pytest.raises(ParameterError, match="fitted for 2-step"):
        fit_var(y[:start], 1, horizon=2).forecast(y, targets, 5)


def _bold(n: int, regions: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((regions, regions)) * 0.3 + np.eye(regions)
    latent = _var1(np.eye(regions) * 0.97, n, seed=seed + 10)
    return 1000.0 + latent @ mixing.T + 0.01 * np.arange(n)[:, None]


def test_nothing_fitted_reads_a_heldout_frame():
    bold = _bold(900)
    other = bold.copy()
    split = make_split("thirds", 900, TR)
    other[split.start :] = np.random.default_rng(9).standard_normal((split.n_heldout, 6)) * 50 + 3.0
    a, b = fit_preprocessing(bold, split), fit_preprocessing(other, split)
    assert np.array_equal(a.trend, b.trend) and np.array_equal(a.mean, b.mean) and np.array_equal(a.sd, b.sd)
    clean_a, clean_b = a.apply(bold), b.apply(other)
    assert np.array_equal(clean_a[: split.start], clean_b[: split.start])
    # causal: frame t of the cleaned run does not change when only frames after t change
    t = split.start + 40
    later = bold.copy()
    later[t + 1 :] += 100.0
    assert np.array_equal(a.apply(later)[: t + 1], clean_a[: t + 1])
    # the fitted baselines are the same however the held-out frames look
    run_a, run_b = (prepare_run("s", x, TR, "thirds") for x in (bold, other))
    for lags in (1, 2):
        va, vb = fit_var(run_a.assimilated, lags, horizon=2), fit_var(run_b.assimilated, lags, horizon=2)
        assert np.array_equal(va.coefs, vb.coefs) and va.alpha == vb.alpha
    assert np.array_equal(fit_ar1(run_a.assimilated).coefs, fit_ar1(run_b.assimilated).coefs)


def test_baselines_are_scored_on_the_frames_a_twin_forecast():
    """A twin with lead forecasts after every n-th window forecasts every n-th held-out frame at each k;
    the baselines scored on those frames are the same forecasts, scored on the same frames."""
    run = prepare_run("s", _bold(900), TR, "thirds")
    n_held = run.heldout.shape[0]
    every = lead_frames(run, 1)
    assert all(np.array_equal(every[k], np.arange(n_held)) for k in (1, 2, 5))
    fifth = lead_frames(run, 5)
    for k in (1, 2, 5):
        origins = run.targets[fifth[k]] - k  # the windows the forecasts were made after
        assert np.all((origins - (run.split.start - 5)) % 5 == 0) and fifth[k].size == pytest.approx(n_held / 5, abs=1)
    assert not np.array_equal(fifth[1], fifth[2])  # one origin forecasts a different frame at each k
    same = subject_baselines(run, frames=fifth)
    for k in (1, 2, 5):
        expected = region_skill(persistence(run.clean, run.targets[fifth[k]], k), run.heldout[fifth[k]])
        np.testing.assert_array_equal(same.forecasts["persistence"][k].r2, expected.r2)
    full, all_frames = subject_baselines(run), subject_baselines(run, frames=every)
    for name in full.forecasts:
        for k in (1, 2, 5):
            np.testing.assert_allclose(full.forecasts[name][k].r2, all_frames.forecasts[name][k].r2, rtol=1e-12)
    with pytest.raises(ParameterError, match="lead_every must be a whole number"):
        lead_frames(run, 0)
    with pytest.raises(ParameterError, match="sub-s: only 2 held-out frames to score at k = 1"):
        subject_baselines(run, frames={1: np.array([0, 1]), 2: every[2], 5: every[5]})


def test_causal_bandpass_passes_the_band_and_stops_the_rest():
    n = 1500
    t = np.arange(n) * TR
    waves = np.stack([np.sin(2 * np.pi * f * t) for f in (0.002, 0.04, 0.3)], axis=1)
    split = make_split("thirds", n, TR)
    fitted = fit_preprocessing(waves + 5.0, split)
    out = fitted.bandpass(waves + 5.0)[split.start :]
    amplitude = np.sqrt(2) * out.std(axis=0)
    assert amplitude[1] == pytest.approx(1.0, abs=0.05)  # 0.04 Hz: in the 0.01-0.1 Hz band
    assert amplitude[2] < 0.01 and amplitude[0] < 0.15  # 0.3 Hz and 0.002 Hz: stopped


def test_bad_input_names_the_subject_and_the_fix():
    with pytest.raises(InputDataError, match=r"sub-07.*too short.*thirds.*>= \d+ frames"):
        prepare_run("07", _bold(200), TR, "thirds")
    with pytest.raises(ParameterError, match=r"sub-07.*TR\) is missing.*RepetitionTime"):
        prepare_run("07", _bold(900), None, "halves")
    bad = _bold(900)
    bad[10, 3] = np.nan
    with pytest.raises(InputDataError, match=r"sub-07.*region\(s\) \[3\].*NaN.*drop"):
        prepare_run("07", bad, TR, "halves")
    with pytest.raises(ParameterError, match="unknown split"):
        make_split("quarters", 900, TR)
    run = prepare_run("07", _bold(900), TR, "halves")
    with pytest.raises(ParameterError, match="must cover the 450 held-out frames scored"):
        score_forecasts(run, {1: np.zeros((10, 6))})


def test_fcd_and_fingerprints():
    y = _bold(600, seed=4)
    values = fcd_values(y, TR)
    n_windows = 600 - round(60 / TR) + 1
    assert values.shape == (n_windows * (n_windows - 1) // 2,)
    assert fcd_ks(values, values) == 0.0
    assert fcd_ks(values, np.ones(10)) == 1.0
    fcs = [np.corrcoef(_bold(400, seed=s).T) for s in range(4)]
    assert identification(fcs, fcs) == 1.0
    assert identification(fcs, fcs[1:] + fcs[:1]) == 0.0


def test_subject_and_group_baselines_on_synthetic_subjects():
    runs = [prepare_run(f"s{i}", _bold(900, seed=i), TR, "halves") for i in range(3)]
    results = [subject_baselines(r) for r in runs]
    for r in results:
        skill = r.forecasts
        # smooth band-passed series: persistence and AR(1) are good 1 step ahead, worse at 5
        assert (
            skill["persistence"][1].r2_mean > 0.8 and skill["persistence"][5].r2_mean < skill["persistence"][1].r2_mean
        )
        assert skill["VAR(2)"][1].r2_mean >= skill["persistence"][1].r2_mean - 0.02
        assert abs(skill["climatology"][1].r2_mean) < 0.1
        # the subject's own other half matches its FC better than any unrelated FC would
        assert r.ceiling["fc_r"] > 0.5
    group = group_baselines(results)
    assert group["identification"]["own_assimilated_fc"] == 1.0
    assert set(group["template"]) == {"s0", "s1", "s2"}
    # a perfect free run (the held-out data itself) reaches FC r 1 and FCD KS 0
    perfect = score_free_run(runs[0], runs[0].heldout, results[0])
    assert perfect["fc_r"] == pytest.approx(1.0) and perfect["fcd_ks"] == 0.0 and perfect["fc_fnorm"] == 0.0
