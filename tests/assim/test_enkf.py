"""The ensemble Kalman filter alone (dtb.assim.enkf): Kalman-filter equivalence on linear-Gaussian
models, the diffusion blend, determinism of its random streams, the transform, and bad inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dtb.assim.enkf import (
    EnKFSettings,
    analysis,
    initial_ensemble,
    random_walk,
    to_bounded,
    to_unbounded,
)
from dtb.errors import AssimilationError, ConfigError, ParameterError


def _gaussian_ensemble(mean, cov, n_members, seed):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.multivariate_normal(mean, cov, size=n_members), dtype=torch.float64)


def _kalman_update(mean, cov, h_row, y, r):
    """Exact Kalman analysis for one scalar observation y = h_row . x + N(0, r)."""
    s = h_row @ cov @ h_row + r
    k = cov @ h_row / s
    return mean + k * (y - h_row @ mean), cov - np.outer(k, h_row @ cov)


def _sample_stats(ensemble):
    x = ensemble.numpy()
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


# ------------------------------------------------------------------ linear-Gaussian equivalence


def test_perturbed_enkf_matches_kalman_filter_for_a_scalar_state():
    prior_mean, prior_var, r, y = 1.0, 2.0, 0.5, 2.5
    members = _gaussian_ensemble([prior_mean], [[prior_var]], 20000, seed=1)  # (M, 1)
    settings = EnKFSettings(obs_variance=r, rho=1.0, seed=7)
    result = analysis(members[:, None, :], members, torch.tensor([y], dtype=torch.float64), settings, window=3)
    f_mean, f_cov = _sample_stats(members)
    kf_mean, kf_cov = _kalman_update(f_mean, f_cov, np.array([1.0]), y, r)
    a_mean, a_cov = _sample_stats(result.state[:, 0, :])
    # exact KF: gain 0.8, mean 2.2, variance 0.4; the perturbed EnKF matches to sampling error (~1 % at M = 20000)
    assert a_mean[0] == pytest.approx(kf_mean[0], abs=0.02)
    assert a_cov[0, 0] == pytest.approx(kf_cov[0, 0], rel=0.04)
    assert kf_mean[0] == pytest.approx(2.2, abs=0.05) and kf_cov[0, 0] == pytest.approx(0.4, rel=0.05)


def test_perturbed_enkf_matches_kalman_filter_for_two_components_observed_through_one():
    cov = np.array([[1.0, 0.6], [0.6, 0.8]])
    members = _gaussian_ensemble([0.5, -1.0], cov, 20000, seed=2)  # (M, 2)
    r, y = 0.3, 1.4
    settings = EnKFSettings(obs_variance=r, rho=1.0, seed=11)
    result = analysis(members[:, None, :], members[:, :1], torch.tensor([y], dtype=torch.float64), settings, window=0)
    f_mean, f_cov = _sample_stats(members)
    kf_mean, kf_cov = _kalman_update(f_mean, f_cov, np.array([1.0, 0.0]), y, r)
    a_mean, a_cov = _sample_stats(result.state[:, 0, :])
    np.testing.assert_allclose(a_mean, kf_mean, atol=0.02)
    np.testing.assert_allclose(a_cov, kf_cov, atol=0.02)
    # the unobserved component moved through its covariance with the observed one
    assert abs(kf_mean[1] - f_mean[1]) > 0.2
    np.testing.assert_allclose(result.gain[0].numpy(), f_cov[:, 0] / (f_cov[0, 0] + r), rtol=1e-10)


def test_sqrt_variant_gives_exactly_the_kalman_posterior_of_the_forecast_ensemble():
    cov = np.array([[1.0, -0.4], [-0.4, 0.5]])
    members = _gaussian_ensemble([0.0, 2.0], cov, 40, seed=3)
    r, y = 0.2, -0.7
    settings = EnKFSettings(obs_variance=r, rho=1.0, variant="sqrt")
    result = analysis(members[:, None, :], members[:, :1], torch.tensor([y], dtype=torch.float64), settings, window=5)
    f_mean, f_cov = _sample_stats(members)
    kf_mean, kf_cov = _kalman_update(f_mean, f_cov, np.array([1.0, 0.0]), y, r)
    a_mean, a_cov = _sample_stats(result.state[:, 0, :])
    np.testing.assert_allclose(a_mean, kf_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a_cov, kf_cov, rtol=1e-10, atol=1e-12)


def test_inflation_scales_the_forecast_anomalies_before_the_update():
    members = _gaussian_ensemble([0.0, 1.0], [[1.0, 0.3], [0.3, 1.0]], 50, seed=4)
    lam, r, y = 1.5, 0.4, 0.8
    result = analysis(
        members[:, None, :],
        members[:, :1],
        torch.tensor([y], dtype=torch.float64),
        EnKFSettings(obs_variance=r, rho=1.0, variant="sqrt", inflation=lam),
        window=0,
    )
    f_mean, f_cov = _sample_stats(members)
    kf_mean, kf_cov = _kalman_update(f_mean, lam**2 * f_cov, np.array([1.0, 0.0]), y, r)
    a_mean, a_cov = _sample_stats(result.state[:, 0, :])
    np.testing.assert_allclose(a_mean, kf_mean, atol=1e-12)
    np.testing.assert_allclose(a_cov, kf_cov, atol=1e-12)
    assert float(result.forecast_obs_spread[0]) == pytest.approx(lam * np.sqrt(f_cov[0, 0]), rel=1e-12)


@pytest.mark.parametrize("variant", ["perturbed", "sqrt"])
def test_random_walk_tracking_stays_within_its_spread(variant):
    """Random-walk truth observed with noise: forecast-analysis cycles of the EnKF are a Kalman
    filter; the truth stays within the ensemble spread and the normalised error is ~1."""
    n_members, n_windows, q, r = 200, 150, 0.3, 0.25
    rng = np.random.default_rng(5)
    truth = np.cumsum(q * rng.standard_normal(n_windows)) + 1.0
    obs = truth + np.sqrt(r) * rng.standard_normal(n_windows)
    settings = EnKFSettings(obs_variance=r, rho=1.0, random_walk_std=q, variant=variant, seed=99)
    ens = torch.as_tensor(rng.normal(1.0, 1.0, size=(n_members, 1)))
    z = []
    for window in range(n_windows):
        ens = random_walk(ens, settings, window)
        ens = analysis(ens[:, None, :], ens, torch.tensor([obs[window]], dtype=torch.float64), settings, window).state[
            :, 0, :
        ]
        mean, spread = float(ens.mean()), float(ens.std())
        z.append((mean - truth[window]) / spread)
    z = np.array(z[10:])
    assert np.mean(np.abs(z) < 3.0) > 0.97
    assert 0.6 < np.mean(z**2) < 1.6
    # and it tracks: the analysis error is well below the observation error
    assert np.sqrt(np.mean(z**2)) * spread < np.sqrt(r)


# ------------------------------------------------------------------ diffusion blend


def _multi_location_problem(n_members=30, n_locations=5, n_components=3, seed=6):
    rng = np.random.default_rng(seed)
    state = torch.as_tensor(rng.normal(size=(n_members, n_locations, n_components)))
    state[:, :, 1] += 0.5 * state[:, :, 0]  # component 1 correlated with the observed component 0
    predicted = state[:, :, 0] + 0.1 * torch.as_tensor(rng.normal(size=(n_members, n_locations)))
    observed = torch.as_tensor(rng.normal(size=n_locations))
    return state, predicted, observed


def test_rho_one_is_the_purely_local_update():
    state, predicted, observed = _multi_location_problem()
    settings = EnKFSettings(obs_variance=0.1, rho=1.0, variant="sqrt")
    together = analysis(state, predicted, observed, settings, window=1).state
    for v in range(state.shape[1]):
        alone = analysis(state[:, v : v + 1], predicted[:, v : v + 1], observed[v : v + 1], settings, 1).state
        torch.testing.assert_close(together[:, v : v + 1], alone, rtol=0, atol=1e-14)


def test_rho_one_perturbed_update_of_a_location_ignores_the_other_locations():
    state, predicted, observed = _multi_location_problem()
    settings = EnKFSettings(obs_variance=0.1, rho=1.0, seed=3)
    base = analysis(state, predicted, observed, settings, window=2).state
    other_state, other_predicted, other_observed = state.clone(), predicted.clone(), observed.clone()
    other_state[:, 1:] += 5.0
    other_predicted[:, 1:] *= 3.0
    other_observed[1:] -= 2.0
    changed = analysis(other_state, other_predicted, other_observed, settings, window=2).state
    assert torch.equal(base[:, 0], changed[:, 0])
    assert not torch.equal(base[:, 1], changed[:, 1] - 5.0)


@pytest.mark.parametrize("variant", ["perturbed", "sqrt"])
def test_rho_zero_gives_every_location_the_network_average_increment(variant):
    state, predicted, observed = _multi_location_problem()
    local = analysis(state, predicted, observed, EnKFSettings(obs_variance=0.1, rho=1.0, variant=variant), 4)
    blended = analysis(state, predicted, observed, EnKFSettings(obs_variance=0.1, rho=0.0, variant=variant), 4)
    increment = blended.state - state
    for v in range(1, state.shape[1]):
        torch.testing.assert_close(increment[:, v], increment[:, 0], rtol=0, atol=1e-14)
    torch.testing.assert_close(increment[:, 0], local.increment.mean(dim=1), rtol=0, atol=1e-14)


def test_intermediate_rho_blends_local_and_average_increments():
    state, predicted, observed = _multi_location_problem()
    local = analysis(state, predicted, observed, EnKFSettings(obs_variance=0.1, rho=1.0), 4).increment
    blended = analysis(state, predicted, observed, EnKFSettings(obs_variance=0.1, rho=0.8), 4).increment
    expected = 0.8 * local + 0.2 * local.mean(dim=1, keepdim=True)
    torch.testing.assert_close(blended, expected, rtol=0, atol=1e-14)


def test_diagnostics_have_the_documented_meaning():
    state, predicted, observed = _multi_location_problem()
    result = analysis(state, predicted, observed, EnKFSettings(obs_variance=0.1), 0)
    torch.testing.assert_close(result.innovation_mean, observed - predicted.mean(dim=0))
    torch.testing.assert_close(result.forecast_obs_spread, predicted.std(dim=0))
    assert result.gain.shape == (state.shape[1], state.shape[2])
    torch.testing.assert_close(result.state, state + result.increment)


# ------------------------------------------------------------------ determinism


def test_same_window_repeats_bitwise_and_another_window_draws_other_noise():
    state, predicted, observed = _multi_location_problem()
    settings = EnKFSettings(obs_variance=0.1, seed=12)
    first = analysis(state, predicted, observed, settings, window=8).state
    analysis(state, predicted, observed, settings, window=3)  # call order must not matter
    again = analysis(state, predicted, observed, settings, window=8).state
    assert torch.equal(first, again)
    assert not torch.equal(first, analysis(state, predicted, observed, settings, window=9).state)
    other_seed = dataclasses.replace(settings, seed=13)
    assert not torch.equal(first, analysis(state, predicted, observed, other_seed, window=8).state)
    h = torch.zeros(10, 3)
    assert torch.equal(random_walk(h, settings, 4), random_walk(h, settings, 4))
    assert not torch.equal(random_walk(h, settings, 4), random_walk(h, settings, 5))


def test_random_walk_steps_have_the_configured_standard_deviation():
    settings = EnKFSettings(random_walk_std=0.3, seed=1)
    steps = random_walk(torch.zeros(4000, 5), settings, window=0)
    assert float(steps.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(steps.std()) == pytest.approx(0.3, rel=0.02)
    assert torch.equal(
        random_walk(torch.ones(7, 2), dataclasses.replace(settings, random_walk_std=0.0), 0), torch.ones(7, 2)
    )


# ------------------------------------------------------------------ transform and initial ensemble


def test_bounded_logit_round_trip_is_exact_and_stays_inside_the_bounds():
    lower, upper = torch.tensor([0.01, 1.5e-3]), torch.tensor([0.3, 1.2e-2])
    h_tilde = torch.linspace(-60, 60, 241, dtype=torch.float64)[:, None].expand(241, 2)
    h = to_bounded(h_tilde, lower, upper)
    assert bool(((h > lower) & (h < upper)).all())
    torch.testing.assert_close(to_unbounded(h, lower, upper), h_tilde, rtol=1e-9, atol=1e-9)
    assert to_bounded(torch.zeros(1), 0.01, 0.3).item() == pytest.approx(0.155)
    assert to_bounded(torch.tensor([10.0]), 0.0, 1.0).item() == pytest.approx(1 / (1 + np.exp(-1.0)))


@pytest.mark.parametrize("value", [0.01, 0.3, 0.5, -1.0, float("nan")])
def test_inverse_transform_rejects_values_on_or_outside_the_bounds(value):
    with pytest.raises(ParameterError, match="strictly inside the bounds"):
        to_unbounded(torch.tensor([0.1, value]), 0.01, 0.3)


def test_transform_rejects_inverted_bounds_and_bad_scale():
    with pytest.raises(ParameterError, match="lower < upper"):
        to_bounded(torch.zeros(2), 0.3, 0.01)
    with pytest.raises(ParameterError, match="scale"):
        to_bounded(torch.zeros(2), 0.0, 1.0, scale=0.0)


def test_initial_ensemble_spreads_evenly_over_the_middle_third_shuffled_per_parameter():
    lower, upper = np.array([0.01, 1e-3, -2.0]), np.array([0.3, 1e-2, 4.0])
    h_tilde = initial_ensemble(30, lower, upper, seed=5)
    assert h_tilde.shape == (30, 3)
    h = to_bounded(h_tilde, lower, upper).numpy()
    width = upper - lower
    for p in range(3):
        expected = np.linspace(lower[p] + width[p] / 3, upper[p] - width[p] / 3, 30)
        np.testing.assert_allclose(np.sort(h[:, p]), expected, rtol=1e-9)
    ranks = np.argsort(np.argsort(h, axis=0), axis=0)
    assert not np.array_equal(ranks[:, 0], np.arange(30))  # shuffled
    assert not np.array_equal(ranks[:, 0], ranks[:, 1])  # independently per hyperparameter
    assert torch.equal(h_tilde, initial_ensemble(30, lower, upper, seed=5))
    assert not torch.equal(h_tilde, initial_ensemble(30, lower, upper, seed=6))
    assert initial_ensemble(4, 0.01, 0.3, seed=0).shape == (4, 1)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"obs_variance": 0.0}, "obs_variance"),
        ({"obs_variance": float("nan")}, "obs_variance"),
        ({"rho": 1.2}, "rho"),
        ({"rho": -0.1}, "rho"),
        ({"inflation": 0.9}, "inflation"),
        ({"random_walk_std": -1.0}, "random_walk_std"),
        ({"variant": "square-root"}, "variant"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_settings_reject_out_of_range_values(changes, match):
    with pytest.raises(ParameterError, match=match):
        EnKFSettings(**changes)


def test_settings_from_a_config_mapping_reject_unknown_keys():
    settings = EnKFSettings.from_mapping({"rho": 0.5, "variant": "sqrt"})
    assert settings.rho == 0.5 and settings.variant == "sqrt" and settings.obs_variance == 1e-8
    with pytest.raises(ConfigError, match=r"unknown EnKF setting\(s\) \['rh0'\]"):
        EnKFSettings.from_mapping({"rh0": 0.5})


@pytest.mark.gpu
def test_analysis_on_cuda_matches_cpu():
    state, predicted, observed = _multi_location_problem(n_members=64, n_locations=50)
    settings = EnKFSettings(obs_variance=0.1, rho=0.8, inflation=1.1, seed=4)
    on_cpu = analysis(state, predicted, observed, settings, 6)
    on_gpu = analysis(state.cuda(), predicted.cuda(), observed.cuda(), settings, 6)
    assert on_gpu.state.device.type == "cuda"
    torch.testing.assert_close(on_gpu.state.cpu(), on_cpu.state, rtol=1e-12, atol=1e-12)
    h = torch.zeros(64, 3)
    torch.testing.assert_close(random_walk(h.cuda(), settings, 2).cpu(), random_walk(h, settings, 2), rtol=0, atol=0)


def test_analysis_rejects_non_finite_inputs_naming_the_argument():
    state, predicted, observed = _multi_location_problem()
    settings = EnKFSettings()
    bad_observed = observed.clone()
    bad_observed[2] = float("nan")
    with pytest.raises(AssimilationError, match="observed contains 1 NaN"):
        analysis(state, predicted, bad_observed, settings, 0)
    bad_state = state.clone()
    bad_state[0, 0, 0] = float("inf")
    with pytest.raises(AssimilationError, match="state contains"):
        analysis(bad_state, predicted, observed, settings, 0)
    bad_predicted = predicted.clone()
    bad_predicted[3, 1] = float("nan")
    with pytest.raises(AssimilationError, match="predicted_obs contains"):
        analysis(state, bad_predicted, observed, settings, 0)
    with pytest.raises(AssimilationError, match="h_tilde contains"):
        random_walk(torch.tensor([[0.0], [float("nan")]]), settings, 0)


def test_analysis_rejects_a_single_member_and_mismatched_shapes():
    state, predicted, observed = _multi_location_problem()
    settings = EnKFSettings()
    with pytest.raises(AssimilationError, match="at least 2 members"):
        analysis(state[:1], predicted[:1], observed, settings, 0)
    with pytest.raises(AssimilationError, match="predicted_obs must have shape"):
        analysis(state, predicted[:, :-1], observed, settings, 0)
    with pytest.raises(AssimilationError, match="observed must have shape"):
        analysis(state, predicted, observed[:-1], settings, 0)
    with pytest.raises(AssimilationError, match="state must be a 3-D array"):
        analysis(state[:, :, 0], predicted, observed, settings, 0)
    with pytest.raises(AssimilationError, match="window"):
        analysis(state, predicted, observed, settings, -1)
    with pytest.raises(AssimilationError, match="n_members"):
        initial_ensemble(1, 0.0, 1.0, seed=0)


@pytest.mark.parametrize("rho", [1.0, 0.8])
def test_toy_twin_recovers_bounded_hyperparameter_tracks_through_the_transform(rho):
    """The driver's loop on a neuron-free toy twin: three locations, each observing 0.1 h_v(t) + noise
    with h_v a slow sinusoid inside its bounds; the filter works on h~ and must recover every h_v(t)."""
    lower, upper, n_members, n_windows, noise_sd = 0.01, 0.3, 60, 160, 0.001
    t = np.arange(n_windows)
    truth = 0.155 + 0.09 * np.sin(2 * np.pi * t[:, None] / 60.0 + np.array([0.0, 2.0, 4.0]))  # (T, L)
    observed = 0.1 * truth + noise_sd * np.random.default_rng(12).standard_normal(truth.shape)
    settings = EnKFSettings(obs_variance=noise_sd**2, rho=rho, random_walk_std=0.5, seed=21)
    h_tilde = initial_ensemble(n_members, [lower] * 3, [upper] * 3, seed=21)  # (M, L): one h per location
    estimate = np.zeros_like(truth)
    for window in range(n_windows):
        h_tilde = random_walk(h_tilde, settings, window)
        predicted = 0.1 * to_bounded(h_tilde, lower, upper)  # the "simulation" of this window
        state = torch.stack([h_tilde, predicted], dim=2)
        h_tilde = analysis(state, predicted, observed[window], settings, window).state[:, :, 0]
        estimate[window] = to_bounded(h_tilde, lower, upper).mean(dim=0).numpy()
    for v in range(3):
        assert np.corrcoef(estimate[10:, v], truth[10:, v])[0, 1] > 0.9
    assert np.abs(estimate[10:] - truth[10:]).mean() < 0.025  # h range 0.29; 0.016 (rho 1), 0.020 (rho 0.8)
