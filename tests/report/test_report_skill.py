"""The report's forecast skill beside the baselines (dtb.report.skill): synthetic stores, no twin.

A "twin" whose forecasts are the truth must beat every baseline; one whose forecasts are noise
must be told that it loses to persistence; a store without lead forecasts is scored at k = 1 only.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from dtb.report import figures
from dtb.report.skill import SkillTable, forecast_skill


def _series(n: int = 400, regions: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros((n, regions))
    for t in range(1, n):
        y[t] = 0.9 * y[t - 1] + rng.standard_normal(regions)
    return y


def _store(observed: np.ndarray, forecast_of, start: int, leads: int = 5, warmup: int = 10) -> xr.Dataset:
    """An /assimilation group with lead forecasts after every window from start - leads on."""
    n, regions = observed.shape
    lead = np.full((n, leads, regions), np.nan)
    for w in range(start - leads, n):
        for j in range(leads):
            if w + j + 1 < n:
                lead[w, j] = forecast_of(w + j + 1, j + 1)
    return xr.Dataset(
        {
            "warmup": ("time", np.arange(n) < warmup),
            "bold_lead": (("time", "lead", "region"), lead),
            "bold_forecast": (("time", "member", "region"), np.repeat(observed[:, None], 2, axis=1)),
        }
    )


def test_a_perfect_twin_beats_every_baseline_and_a_noise_twin_loses_to_persistence():
    y = _series()
    perfect = forecast_skill(y, _store(y, lambda t, k: y[t], start=300))
    assert isinstance(perfect, SkillTable) and perfect.heldout and perfect.frames == 100
    assert perfect.horizons == (1, 2, 5) and set(perfect.r2) >= {"twin", "persistence", "AR(1)", "VAR(1)", "VAR(2)"}
    assert all(perfect.r2["twin"][k] == pytest.approx(1.0) for k in (1, 2, 5)) and perfect.losses == ()
    # an AR(1) with a = 0.9: persistence explains about 2a - 1 = 0.8 of the variance 1 step ahead
    assert perfect.r2["persistence"][1] == pytest.approx(0.8, abs=0.1)
    assert perfect.r2["persistence"][5] < perfect.r2["persistence"][1]
    rng = np.random.default_rng(1)
    noise = forecast_skill(y, _store(y, lambda t, k: rng.standard_normal(y.shape[1]), start=300))
    assert "persistence" in noise.losses and noise.r2["twin"][1] < 0
    assert figures.skill_vs_horizon(noise.horizons, noise.r2).axes


def test_a_store_without_lead_forecasts_is_scored_one_step_ahead_only():
    y = _series()
    store = _store(y, lambda t, k: y[t], start=300).drop_vars("bold_lead")
    table = forecast_skill(y, store)
    assert table.horizons == (1,) and not table.heldout and set(table.r2) == {"twin", "persistence"}
    assert table.r2["twin"][1] == pytest.approx(1.0)
    assert "frames" in forecast_skill(y[:15], store.isel(time=slice(0, 15)))  # too short: a sentence, not a table
