"""Fidelity metrics with known answers (dtb.assim.metrics)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from dtb.assim.metrics import (
    compute_fidelity,
    crps_ensemble,
    ensemble_rmse_spread,
    fc_frobenius_distance,
    fc_similarity,
    functional_connectivity,
    heldout_skill,
    innovation_statistics,
    rank_histogram,
    region_correlation,
    rmse_spread_per_frame,
    summarize,
)
from dtb.errors import AssimilationError


def _series(n_frames=200, n_regions=6, seed=0):
    """Correlated AR(1) series (time, region)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_regions, n_regions))
    noise = rng.normal(size=(n_frames, n_regions)) @ mixing
    out = np.zeros_like(noise)
    for t in range(1, n_frames):
        out[t] = 0.8 * out[t - 1] + noise[t]
    return out


# ------------------------------------------------------------------ region r


def test_identical_series_have_r_one_and_a_scaled_copy_too():
    emp = _series()
    corr = region_correlation(0.01 * emp + 3.0, emp)
    np.testing.assert_allclose(corr.r_lag0, 1.0, atol=1e-12)
    np.testing.assert_array_equal(corr.best_lag, 0)


def test_a_series_delayed_by_one_tr_has_lag1_r_one():
    emp = _series()
    simulated = np.vstack([emp[:1], emp[:-1]])  # sim[t] = emp[t - 1]: the simulation lags one TR
    corr = region_correlation(simulated, emp, warmup_frames=1)
    np.testing.assert_allclose(corr.r_lag1, 1.0, atol=1e-12)
    assert (corr.r_lag0 < 0.99).all()
    np.testing.assert_array_equal(corr.best_lag, 1)
    np.testing.assert_allclose(corr.best, 1.0, atol=1e-12)


def test_warmup_frames_are_dropped_before_correlating():
    emp = _series()
    simulated = emp.copy()
    simulated[:10] = np.random.default_rng(1).normal(size=(10, emp.shape[1])) * 100
    assert (region_correlation(simulated, emp).r_lag0 < 0.9).all()
    np.testing.assert_allclose(region_correlation(simulated, emp, warmup_frames=10).r_lag0, 1.0, atol=1e-12)


def test_independent_series_have_r_near_zero_and_constant_ones_nan():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5000, 3)), rng.normal(size=(5000, 3))
    assert np.abs(region_correlation(a, b).r_lag0).max() < 0.05
    b[:, 1] = 0.02
    assert np.isnan(region_correlation(a, b).r_lag0[1])


# ------------------------------------------------------------------ FC


def test_fc_matches_numpy_and_identical_fcs_have_similarity_one_and_fnorm_zero():
    bold = _series()
    fc = functional_connectivity(bold)
    np.testing.assert_allclose(fc, np.corrcoef(bold.T), atol=1e-12)
    assert fc_similarity(fc, fc) == pytest.approx(1.0)
    assert fc_frobenius_distance(fc, fc) == 0.0


def test_fc_of_unrelated_series_has_low_similarity_and_the_normalised_fnorm_by_definition():
    fc_a = functional_connectivity(_series(seed=3, n_regions=12))
    fc_b = functional_connectivity(_series(seed=4, n_regions=12))
    assert abs(fc_similarity(fc_a, fc_b)) < 0.5
    expected = np.linalg.norm(fc_a - fc_b) / np.linalg.norm(fc_b)
    assert fc_frobenius_distance(fc_a, fc_b) == pytest.approx(expected)
    # similarity is invariant to an affine map of the off-diagonal entries, the distance is not
    fc_c = 0.5 * fc_b + 0.1
    np.fill_diagonal(fc_c, 1.0)
    assert fc_similarity(fc_c, fc_b) == pytest.approx(1.0)
    assert fc_frobenius_distance(fc_c, fc_b) > 0.1


# ------------------------------------------------------------------ held-out skill


def test_persistence_beats_climatology_for_a_random_walk():
    rng = np.random.default_rng(5)
    walk = np.cumsum(rng.normal(size=(400, 20)), axis=0)
    skill = heldout_skill(walk[300:320], walk, 300)  # a perfect forecast of 20 frames
    assert skill.forecast_r == pytest.approx(1.0) and skill.forecast_rmse == 0.0
    no_forecast = heldout_skill(np.broadcast_to(walk[299], (20, 20)), walk, 300)
    assert no_forecast.persistence_rmse < no_forecast.climatology_rmse
    assert no_forecast.persistence_r > 0.5 > no_forecast.climatology_r == 0.0
    assert no_forecast.skill_vs_persistence == pytest.approx(0.0)
    assert no_forecast.skill_vs_climatology > 0.5


def test_climatology_beats_persistence_for_white_noise():
    rng = np.random.default_rng(6)
    noise = rng.normal(size=(400, 20))
    skill = heldout_skill(noise[300:340] * 0 + noise[:300].mean(axis=0), noise, 300)
    assert skill.climatology_rmse < skill.persistence_rmse
    assert skill.forecast_rmse == pytest.approx(skill.climatology_rmse)
    assert skill.skill_vs_persistence > 0.3


# ------------------------------------------------------------------ ensemble diagnostics


def test_crps_of_a_large_gaussian_ensemble_matches_the_closed_form():
    mu, sigma, n_members = 0.3, 1.7, 4000
    members = stats.norm.ppf((np.arange(n_members) + 0.5) / n_members, loc=mu, scale=sigma)
    truth = np.array([-2.0, 0.3, 1.0, 5.0])
    ensemble = np.repeat(members[:, None], truth.size, axis=1)  # (member, region)
    z = (truth - mu) / sigma
    closed_form = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    np.testing.assert_allclose(crps_ensemble(ensemble, truth), closed_form, rtol=2e-3)


def test_crps_matches_the_pairwise_definition_and_reduces_to_mae_for_one_value():
    rng = np.random.default_rng(7)
    ensemble, truth = rng.normal(size=(3, 9, 2)), rng.normal(size=(3, 2))
    pairwise = np.abs(ensemble[:, :, None, :] - ensemble[:, None, :, :]).sum(axis=(1, 2)) / (2 * 81)
    expected = np.abs(ensemble - truth[:, None, :]).mean(axis=1) - pairwise
    np.testing.assert_allclose(crps_ensemble(ensemble, truth), expected, atol=1e-12)
    np.testing.assert_allclose(crps_ensemble(np.full((5, 1), 2.0), np.array([3.5])), [1.5])


def test_rank_histogram_is_flat_for_an_exchangeable_truth_and_u_shaped_when_underdispersed():
    rng = np.random.default_rng(8)
    n_members = 9
    draws = rng.normal(size=(2000, n_members + 1, 4))
    counts = rank_histogram(draws[:, :n_members], draws[:, n_members])
    assert counts.shape == (n_members + 1,) and counts.sum() == 8000
    assert stats.chisquare(counts).pvalue > 0.001
    narrow = rank_histogram(0.3 * draws[:, :n_members], draws[:, n_members])
    assert narrow[0] + narrow[-1] > 0.5 * narrow.sum()


def test_rmse_equals_spread_for_a_calibrated_ensemble():
    rng = np.random.default_rng(9)
    n_members = 20
    draws = rng.normal(size=(3000, n_members + 1, 3))
    rmse, spread = ensemble_rmse_spread(draws[:, :n_members], draws[:, n_members])
    assert rmse == pytest.approx(spread * np.sqrt((n_members + 1) / n_members), rel=0.03)


def test_innovations_of_a_consistent_kalman_filter_have_nis_one():
    """Random walk observed with noise, filtered by the EnKF (a Kalman filter here): its innovations
    have zero mean and variance spread^2 + R; a too-small random walk makes NIS >> 1."""
    import torch

    from dtb.assim.enkf import EnKFSettings, analysis, random_walk

    def run(walk_std_filter):
        rng = np.random.default_rng(13)
        q, r, n_windows, n_members = 0.3, 0.2, 250, 100
        truth = np.cumsum(q * rng.standard_normal((n_windows, 2)), axis=0)
        obs = truth + np.sqrt(r) * rng.standard_normal((n_windows, 2))
        settings = EnKFSettings(obs_variance=r, rho=1.0, random_walk_std=walk_std_filter, seed=3)
        ens = torch.as_tensor(rng.normal(0.0, 1.0, size=(n_members, 2)))
        innovations, spreads = [], []
        for window in range(n_windows):
            ens = random_walk(ens, settings, window)
            result = analysis(ens[:, :, None], ens, torch.as_tensor(obs[window]), settings, window)
            ens = result.state[:, :, 0]
            innovations.append(result.innovation_mean.numpy())
            spreads.append(result.forecast_obs_spread.numpy())
        return innovation_statistics(np.array(innovations[20:]), np.array(spreads[20:]), r)

    consistent = run(0.3)
    assert consistent["innovation_nis"] == pytest.approx(1.0, abs=0.2)
    assert abs(consistent["innovation_mean"]) < 0.1
    assert run(0.03)["innovation_nis"] > 2.0


# ------------------------------------------------------------------ summary


def test_summary_has_the_twin_store_names_and_is_json_safe():
    rng = np.random.default_rng(10)
    observed = _series(n_frames=120, n_regions=5, seed=11)
    resimulated = observed + 0.5 * rng.normal(size=observed.shape)
    forecast = observed[:, None, :] + rng.normal(size=(120, 8, 5))
    inputs = np.array([True, True, False, False, False])
    summary = summarize(
        observed,
        resimulated=resimulated,
        forecast_ensemble=forecast,
        input_regions=inputs,
        warmup_frames=4,
        heldout_forecast=observed[100:],
        heldout_start=100,
        innovations=rng.normal(size=(50, 2)),
        innovation_spread=np.ones((50, 2)),
        obs_variance=1e-8,
    )
    json.dumps(summary)
    assert summary["innovation_nis"] == pytest.approx(1.0, abs=0.3)
    for key in (
        "fc_similarity",
        "fnorm",
        "forecast_r",
        "resim_region_r",
        "resim_input_r",
        "resim_noninput_r",
        "heldout_r",
        "persistence_r",
        "climatology_r",
        "rmse",
        "spread",
        "crps",
        "rank_histogram",
    ):
        assert key in summary
    assert 0.5 < summary["resim_region_r"] < 1.0
    assert summary["heldout_r"] == pytest.approx(1.0)
    assert len(summary["rank_histogram"]) == 9 and sum(summary["rank_histogram"]) == (120 - 4) * 2
    full = compute_fidelity(observed, resimulated=resimulated, input_regions=inputs, warmup_frames=4)
    assert full.region_r.shape == (5,) and full.fc_simulated.shape == (5, 5)
    np.testing.assert_allclose(summary["resim_input_r"], full.region_r[:2].mean())


def test_summary_reports_undefined_values_as_none_and_omits_missing_parts():
    observed = _series(n_frames=50, n_regions=3)
    resimulated = observed.copy()
    resimulated[:, :] = 1.0  # a silent re-simulation: every r undefined
    summary = summarize(observed, resimulated=resimulated)
    assert summary["resim_region_r"] is None
    assert "forecast_r" not in summary and "heldout_r" not in summary and "resim_noninput_r" not in summary


# ------------------------------------------------------------------ validation


def test_metrics_reject_bad_inputs_naming_the_argument():
    observed = _series(n_frames=30, n_regions=4)
    bad = observed.copy()
    bad[3, 2] = np.nan
    with pytest.raises(AssimilationError, match="empirical contains 1 NaN"):
        region_correlation(observed, bad)
    with pytest.raises(AssimilationError, match="same shape"):
        region_correlation(observed, observed[:, :3])
    with pytest.raises(AssimilationError, match="after dropping 28 warm-up"):
        region_correlation(observed, observed, warmup_frames=28)
    with pytest.raises(AssimilationError, match="warmup_frames"):
        functional_connectivity(observed, warmup_frames=-1)
    with pytest.raises(AssimilationError, match="square matrices"):
        fc_similarity(np.eye(3), np.eye(4))
    with pytest.raises(AssimilationError, match="truth must have"):
        crps_ensemble(np.zeros((30, 5, 4)), np.zeros((30, 3)))
    with pytest.raises(AssimilationError, match="at least 2 members"):
        rank_histogram(np.zeros((30, 1, 4)), np.zeros((30, 4)))
    with pytest.raises(AssimilationError, match="held-out start"):
        heldout_skill(observed[:5], observed, 0)
    with pytest.raises(AssimilationError, match="must cover"):
        heldout_skill(observed[:20], observed, 20)
    with pytest.raises(AssimilationError, match="heldout_start"):
        summarize(observed, heldout_forecast=observed[20:])
    with pytest.raises(AssimilationError, match="input_regions"):
        summarize(observed, input_regions=np.zeros(4, dtype=bool))
    with pytest.raises(AssimilationError, match="innovation_spread and obs_variance"):
        summarize(observed, innovations=np.zeros((5, 2)))
    with pytest.raises(AssimilationError, match="same shape"):
        innovation_statistics(np.zeros((5, 2)), np.zeros((5, 3)), 1e-8)
    with pytest.raises(AssimilationError, match="obs_variance"):
        innovation_statistics(np.zeros(5), np.zeros(5), 0.0)
    with pytest.raises(AssimilationError, match="forecast_ensemble"):
        summarize(observed, forecast_ensemble=np.zeros((29, 3, 4)))


def test_balloon_bold_on_its_attractor_is_physiological_and_off_it_is_flagged():
    import torch

    from dtb.assim.metrics import PHYSIOLOGICAL_BOLD, haemodynamic_warning
    from dtb.sim.bold import BalloonState, bold_signal, integrate_bold, steady_state

    # any firing rate a region reaches, held for 30 s: BOLD stays far inside the limit
    rates = torch.tensor([0.0, 1.0, 10.0, 50.0, 200.0], dtype=torch.float64)
    state = BalloonState.resting(rates.shape)
    state, series = integrate_bold(state, (rates * 1e-3).expand(30_000, -1).contiguous())
    series = series.numpy()
    assert np.max(np.abs(series)) < PHYSIOLOGICAL_BOLD / 2
    assert steady_state(20.0)["bold"] < 0.05
    assert haemodynamic_warning(np.array(series)) is None
    # an analysis that wrote the volume down to its floor: the BOLD equation gives hundreds of percent
    pushed = BalloonState.resting((1,))
    pushed.v[:] = 1e-5
    y = bold_signal(pushed).numpy()
    warning = haemodynamic_warning(np.concatenate([np.ravel(series), y]))
    assert abs(y[0]) > 100 and "physiological range" in warning and "does not follow the data" in warning


def test_rmse_spread_per_frame_pools_to_the_run_values_and_skips_missing_observations():
    rng = np.random.default_rng(4)
    ensemble, truth = rng.normal(size=(30, 6, 4)), rng.normal(size=(30, 4))
    rmse, spread = rmse_spread_per_frame(ensemble, truth)
    pooled_rmse, pooled_spread = ensemble_rmse_spread(ensemble, truth)
    assert rmse.shape == spread.shape == (30,)
    np.testing.assert_allclose([np.sqrt(np.mean(rmse**2)), np.sqrt(np.mean(spread**2))], [pooled_rmse, pooled_spread])
    truth[3, 1] = np.nan  # a missing observation leaves its region out of that frame's RMSE only
    again, _ = rmse_spread_per_frame(ensemble, truth)
    keep = [0, 2, 3]
    expected = np.sqrt(np.mean((ensemble[3].mean(axis=0)[keep] - truth[3, keep]) ** 2))
    assert np.isclose(again[3], expected) and np.array_equal(np.delete(again, 3), np.delete(rmse, 3))
