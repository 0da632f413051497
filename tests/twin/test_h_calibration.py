"""``assimilation.h_bounds: calibrated``: bounds of h measured on the twin's own network (dtb.twin.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from dtb.errors import AssimilationError, ConfigError
from dtb.io import twin_store
from dtb.twin.calibration import LEVEL_FRACTIONS, MARGIN, bounds_from_curve, calibrate_h_bounds
from dtb.twin.config import load_twin_config, resolve_input_regions
from dtb.twin.network import twin_network_inputs, twin_region_model
from dtb.twin.run import assimilate_subject, load_fitted
from tests.helpers import small_twin_subject

LEVELS = 0.3 * np.asarray(LEVEL_FRACTIONS)


def test_bounds_invert_a_linear_transfer_at_the_ends_of_the_observation_range():
    # BOLD = 0.01 + 0.2 h: 0.02 at h = 0.05, 0.05 at h = 0.2; widened by MARGIN of 0.15 per side
    lower, upper = bounds_from_curve(LEVELS, 0.01 + 0.2 * LEVELS, (0.02, 0.05))
    assert lower == pytest.approx(0.05 - MARGIN * 0.15)
    assert upper == pytest.approx(0.2 + MARGIN * 0.15)


def test_bounds_follow_the_envelope_of_a_noisy_or_cliffed_transfer_and_stay_in_the_search_range():
    # BOLD already above the range's low end at the lowest level: the lower bound is that level
    lower, upper = bounds_from_curve(LEVELS, 0.025 + 0.2 * LEVELS, (0.02, 0.05))
    assert lower == LEVELS[0] and upper == pytest.approx(0.125 + MARGIN * 0.125)
    # a jump (a high-rate state) between two levels: both ends fall inside that step
    cliff = np.where(LEVELS < 0.05, 0.022 + 0.1 * LEVELS, 0.09)
    lower, upper = bounds_from_curve(LEVELS, cliff, (0.02, 0.05))
    assert LEVELS[0] <= lower < upper < 0.075
    # a transfer that falls back after passing the range's top (saturation with noise) keeps the crossings
    rising = 0.01 + 0.3 * LEVELS  # 0.02 at h = 1/30, 0.05 at h = 2/15
    saturating = np.where(LEVELS > 0.15, 0.052, rising)
    lower, upper = bounds_from_curve(LEVELS, saturating, (0.02, 0.05))
    assert (lower, upper) == pytest.approx((1 / 30 - MARGIN * 0.1, 2 / 15 + MARGIN * 0.1))
    # the bounds never leave the searched range
    lower, upper = bounds_from_curve(LEVELS, 0.02 + 0.1 * LEVELS, (0.02, 0.05))
    assert lower == LEVELS[0] and upper == LEVELS[-1]


def test_a_network_whose_bold_never_reaches_the_range_is_refused_with_the_fix():
    with pytest.raises(AssimilationError, match=r"reaches only 0\.03 at h = 0\.3.*raise assimilation\.upper"):
        bounds_from_curve(LEVELS, 0.01 + LEVELS / 15, (0.02, 0.05))


def test_config_accepts_fixed_or_calibrated_and_refuses_calibration_without_a_model_range():
    assert load_twin_config({}).h_bounds == "fixed"
    assert load_twin_config({"assimilation": {"h_bounds": "calibrated"}}).h_bounds == "calibrated"
    with pytest.raises(ConfigError, match=r"assimilation.h_bounds .*'fixed', 'calibrated'.*did you mean 'calibrated'"):
        load_twin_config({"assimilation": {"h_bounds": "calibrate"}})
    with pytest.raises(ConfigError, match="h_bounds: calibrated .* needs observation.scaling: minmax"):
        load_twin_config({"assimilation": {"h_bounds": "calibrated"}, "observation": {"scaling": "zscore"}})


def _mapping(**assimilation) -> dict:
    return {
        "seed": 4,
        "neurons_total": 200,
        "threads": 1,
        "backend": "cuda_ext",
        "model": {"indegree": 10, "dt_ms": 1.0, "min_excitatory": 4, "min_inhibitory": 1},
        "assimilation": {
            "members": 3,
            "warmup_windows": 3,
            "checkpoint_every": 50,
            "input_regions": "all",
            **assimilation,
        },
        "observation": {"low_hz": None, "high_hz": 0.2},
        "resimulation": {"record_seconds": 0.0},
    }


def test_a_calibrated_twin_fits_h_within_bounds_measured_on_its_own_network(tmp_path):
    subject = small_twin_subject()
    mapping = _mapping(h_bounds="calibrated", lower=0.0, upper=0.6)
    config = load_twin_config(mapping)
    model = twin_region_model(twin_network_inputs(subject, config), config)
    inputs = resolve_input_regions(config, list(model.region_labels), subject.atlas)
    calibration = calibrate_h_bounds(model, inputs, config, backend="cuda_ext")
    # physics: more external current, more firing and more BOLD (top level against none)
    assert calibration.rate_hz[-1] > calibration.rate_hz[0] + 5.0
    assert calibration.bold[-1] > calibration.bold[0]
    assert calibration.levels[0] == 0.0 and calibration.levels[-1] == pytest.approx(0.6)
    assert 0.0 <= calibration.lower < calibration.upper <= 0.6
    # a function of the network and the config only: measured again, the same bits; and measured in
    # batches of the ensemble size (3 members here: 4 batches) as in one batch of all 12 levels
    assert calibrate_h_bounds(model, inputs, config, backend="cuda_ext") == calibration
    at_once = load_twin_config({**mapping, "assimilation": {**mapping["assimilation"], "members": 12}})
    assert calibrate_h_bounds(model, inputs, at_once, backend="cuda_ext") == calibration

    store = assimilate_subject(subject, mapping, tmp_path / "run.zarr", progress="none")
    attrs = twin_store.root_attrs(store)
    assert attrs["h_calibration"]["lower"] == calibration.lower
    assert attrs["h_calibration"]["upper"] == calibration.upper
    assert (attrs["assimilation_settings"]["lower"], attrs["assimilation_settings"]["upper"]) == (
        calibration.lower,
        calibration.upper,
    )
    from dtb.report.sections import _h_bounds  # the report's summary row

    assert _h_bounds(attrs).endswith("(calibrated on this network)")
    fitted = load_fitted(store)
    assert fitted.h_bounds == (calibration.lower, calibration.upper)
    # the stored config keeps what was asked (the search range), so a rerun calibrates again the same way
    assert fitted.config.h_bounds == "calibrated" and fitted.config.hmda.lower == 0.0
    h = twin_store.read_group(store, "assimilation", load=True)["h_analysis_mean"].values
    assert np.all((h >= calibration.lower) & (h <= calibration.upper))
