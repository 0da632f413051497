"""Balloon-Windkessel BOLD model: the published steady states, rest, and convergence."""

from __future__ import annotations

import pytest
import torch

from dtb.errors import ParameterError
from dtb.sim.bold import BalloonParams, BalloonState, bold_signal, integrate_bold, steady_state

# docs/model.md §4: rate -> (f, BOLD)
PUBLISHED = {1.0: (1.08, 0.0027), 5.0: (1.40, 0.0136), 10.0: (1.80, 0.0259), 20.0: (2.60, 0.0448)}


@pytest.mark.parametrize("rate_hz", sorted(PUBLISHED))
def test_fixed_point_matches_published_steady_states(rate_hz):
    f, bold = PUBLISHED[rate_hz]
    ss = steady_state(rate_hz)
    assert ss["f"] == pytest.approx(f, abs=0.005)
    assert ss["bold"] == pytest.approx(bold, abs=0.00006)


def test_integration_converges_to_the_steady_states_from_rest():
    rates = torch.tensor(sorted(PUBLISHED), dtype=torch.float64)
    u = (rates / 1000.0).expand(60_000, -1)  # 60 s of constant input, 1 ms steps
    state, y = integrate_bold(BalloonState.resting((len(rates),)), u)
    for i, rate in enumerate(sorted(PUBLISHED)):
        f, bold = PUBLISHED[rate]
        assert float(state.f[i]) == pytest.approx(f, abs=0.005)
        assert float(y[-1, i]) == pytest.approx(bold, abs=0.0001)
        assert abs(float(state.s[i])) < 1e-6


def test_rest_is_a_fixed_point_with_zero_bold():
    rest = BalloonState.resting((2, 3))
    assert torch.all(bold_signal(rest) == 0)
    state, y = integrate_bold(rest, torch.zeros((5000, 2, 3)), BalloonParams(u_floor=1e-12))
    assert torch.all(y.abs() < 1e-8)


def test_invalid_constants_are_refused():
    with pytest.raises(ParameterError, match="tau_s must be a positive number"):
        BalloonParams(tau_s=-1.0)
    with pytest.raises(ParameterError, match="E_0"):
        BalloonParams(E_0=1.5)
