"""Observation cleaning (nilearn band-pass) and the replaceable, recorded observation scalings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import signal as sps

from dtb.assim.observation import (
    SCALINGS,
    IdentityScaling,
    MinMaxScaling,
    ObservationScaling,
    ZScoreScaling,
    clean_bold,
    get_scaling,
    scaling_from_description,
)
from dtb.errors import ConfigError, InputDataError, ParameterError

TR_S = 2.0


def _sines(freqs_hz, n_frames=300, tr_s=TR_S):
    t = np.arange(n_frames) * tr_s
    return np.stack([np.sin(2 * np.pi * f * t) for f in freqs_hz], axis=1)


def _amplitude_at(series, freq_hz, tr_s=TR_S):
    freqs, power = sps.periodogram(series, fs=1.0 / tr_s, axis=0, scaling="spectrum")
    return np.sqrt(2 * power[np.argmin(np.abs(freqs - freq_hz))])


def test_clean_bold_keeps_the_band_and_removes_drift_and_fast_oscillations():
    t = np.arange(300) * TR_S
    in_band = np.sin(2 * np.pi * 0.04 * t)
    bold = np.stack(
        [
            100.0 + 0.05 * t + in_band,  # linear drift + in-band signal
            in_band + np.sin(2 * np.pi * 0.2 * t),  # + fast (0.2 Hz) oscillation
            np.sin(2 * np.pi * 0.003 * t),  # slow, below the 0.01 Hz high-pass
        ],
        axis=1,
    )
    cleaned = clean_bold(bold, TR_S)
    assert cleaned.shape == bold.shape
    # the in-band 0.04 Hz component survives (away from the edges), drift/offset are gone
    middle = slice(30, 270)
    for column in (0, 1):
        assert np.corrcoef(cleaned[middle, column], in_band[middle])[0, 1] > 0.98
    assert abs(cleaned[:, 0].mean()) < 0.05
    assert _amplitude_at(cleaned[:, 1], 0.2) < 0.05
    assert cleaned[:, 2].std() < 0.2 * bold[:, 2].std()


def test_clean_bold_without_band_pass_only_detrends():
    t = np.arange(50) * TR_S
    bold = np.stack([3.0 + 0.2 * t, 1.0 - 0.1 * t], axis=1)
    cleaned = clean_bold(bold, TR_S, low_hz=None, high_hz=None)
    np.testing.assert_allclose(cleaned, 0.0, atol=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clean_bold_rejects_non_finite_values_naming_the_frame(bad):
    bold = _sines([0.03, 0.05])
    bold[17, 1] = bad
    with pytest.raises(InputDataError, match="time index 17, region 1"):
        clean_bold(bold, TR_S)


@pytest.mark.parametrize("tr_s", [0.0, -2.0, float("nan"), "2"])
def test_clean_bold_rejects_a_non_positive_tr(tr_s):
    with pytest.raises(ParameterError, match="tr_s"):
        clean_bold(_sines([0.03]), tr_s)


def test_clean_bold_rejects_too_few_points_with_the_filter_requirement():
    with pytest.raises(InputDataError, match="20 time points, too few"):
        clean_bold(_sines([0.03], n_frames=20), TR_S)
    with pytest.raises(InputDataError, match="at least 3"):
        clean_bold(_sines([0.03], n_frames=2), TR_S)


def test_clean_bold_rejects_cut_offs_above_nyquist_or_inverted():
    with pytest.raises(ParameterError, match="Nyquist"):
        clean_bold(_sines([0.03]), tr_s=6.0)  # Nyquist 0.083 Hz < 0.1 Hz
    with pytest.raises(ParameterError, match="low_hz < high_hz"):
        clean_bold(_sines([0.03]), TR_S, low_hz=0.1, high_hz=0.05)
    with pytest.raises(InputDataError, match="2-D"):
        clean_bold(np.zeros(100), TR_S)


# ------------------------------------------------------------------ scalings


def _bold(seed=0, n_frames=120, n_regions=4):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=np.arange(n_regions) * 10.0, scale=1.0 + np.arange(n_regions), size=(n_frames, n_regions))


def test_minmax_maps_each_region_onto_the_model_range():
    bold = _bold()
    scaled = get_scaling("minmax").fit(bold).apply(bold)
    np.testing.assert_allclose(scaled.min(axis=0), 0.02, atol=1e-15)
    np.testing.assert_allclose(scaled.max(axis=0), 0.05, atol=1e-15)
    task = get_scaling("minmax", low=0.05, high=0.08).fit(bold).apply(bold)
    np.testing.assert_allclose([task.min(), task.max()], [0.05, 0.08])


def test_global_minmax_keeps_the_relative_amplitudes_of_regions():
    bold = _bold()
    scaled = MinMaxScaling(per_region=False).fit(bold).apply(bold)
    assert scaled.min() == pytest.approx(0.02) and scaled.max() == pytest.approx(0.05)
    np.testing.assert_allclose(scaled.std(axis=0) / scaled.std(axis=0)[0], bold.std(axis=0) / bold.std(axis=0)[0])


def test_zscore_scaling_gives_the_target_mean_and_sd():
    bold = _bold()
    scaled = ZScoreScaling(target_mean=0.03, target_std=0.004).fit(bold).apply(bold)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.03, atol=1e-15)
    np.testing.assert_allclose(scaled.std(axis=0, ddof=1), 0.004, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(SCALINGS))
def test_every_scaling_inverts_exactly_and_round_trips_through_its_json_description(name):
    bold = _bold(seed=3)
    fitted = get_scaling(name).fit(bold)
    assert isinstance(fitted, ObservationScaling)
    model_units = fitted.apply(bold)
    np.testing.assert_allclose(fitted.inverse(model_units), bold, rtol=1e-12, atol=1e-12)
    description = json.loads(json.dumps(fitted.describe()))
    assert description["method"] == name
    rebuilt = scaling_from_description(description)
    np.testing.assert_array_equal(rebuilt.apply(bold), model_units)


def test_fitting_returns_a_new_object_and_unfitted_scalings_refuse_to_apply():
    scaling = get_scaling("minmax")
    fitted = scaling.fit(_bold())
    assert fitted is not scaling and scaling.describe()["data_min"] is None
    with pytest.raises(ParameterError, match="not fitted"):
        scaling.apply(_bold())
    with pytest.raises(InputDataError, match="fitted to 4 regions"):
        fitted.apply(_bold(n_regions=3))


def test_identity_scaling_leaves_data_untouched():
    bold = _bold()
    np.testing.assert_array_equal(IdentityScaling().fit(bold).apply(bold), bold)


def test_scalings_reject_constant_regions_and_nan():
    bold = _bold()
    bold[:, 2] = 5.0
    for name in ("minmax", "zscore"):
        with pytest.raises(InputDataError, match=r"region\(s\) \[2\] are constant"):
            get_scaling(name).fit(bold)
    bold = _bold()
    bold[3, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        get_scaling("minmax").fit(bold)


def test_registry_rejects_unknown_names_parameters_and_bad_values():
    with pytest.raises(ConfigError, match="unknown observation scaling 'minmaxx'"):
        get_scaling("minmaxx")
    with pytest.raises(ConfigError, match=r"no parameter\(s\) \['lo'\]"):
        get_scaling("minmax", lo=0.1)
    with pytest.raises(ConfigError, match="low < high"):
        get_scaling("minmax", low=0.05, high=0.02)
    with pytest.raises(ConfigError, match="target_std"):
        get_scaling("zscore", target_std=0.0)
    with pytest.raises(ConfigError, match="per_region"):
        get_scaling("zscore", per_region="yes")
    with pytest.raises(ConfigError, match="'method'"):
        scaling_from_description({"low": 0.02})
    with pytest.raises(ConfigError, match="unknown key"):
        scaling_from_description({"method": "identity", "low": 0.02})
