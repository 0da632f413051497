"""The contract's float32 exp and the integer Poisson thresholds (torch side; no compiler needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtb.philox import uniform_from_uint32
from dtb.sim.backends.base import exp_contract
from dtb.sim.backends.poisson_tables import _unique_rows, poisson_tables, thresholds_for
from dtb.sim.backends.torch_backend import poisson_by_inversion


def ulp_error(x: torch.Tensor) -> torch.Tensor:
    """|exp_contract(x) - exp(x)| in units of the float32 spacing at exp(x)."""
    exact = torch.exp(x.to(torch.float64))
    got = exp_contract(x).to(torch.float64)
    spacing = torch.abs(torch.nextafter(exact.float(), torch.tensor(float("inf"))).double() - exact.float().double())
    return torch.abs(got - exact) / spacing


def test_exp_contract_is_accurate_to_two_ulp_over_its_range():
    x = torch.linspace(-87.0, 88.0, 1_000_001, dtype=torch.float32)
    assert float(ulp_error(x).max()) < 2.0
    small = -torch.rand(200_000, generator=torch.Generator().manual_seed(1)) * 0.2  # the Euler factor's range
    assert float(ulp_error(small).max()) < 2.0
    assert float(exp_contract(torch.zeros(1))[0]) == 1.0


def test_exp_contract_clamps_and_refuses_other_dtypes():
    out = exp_contract(torch.tensor([-1000.0, 1000.0]))
    assert float(out[0]) == pytest.approx(np.exp(np.float32(-87.0)), rel=1e-6)
    assert np.isfinite(float(out[1]))
    with pytest.raises(TypeError, match="float32"):
        exp_contract(torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("lam", [1e-4, 0.08, 0.8, 3.0, 40.0, 100.0])
def test_thresholds_give_the_inversion_counts_exactly(lam):
    p0 = float(np.exp(-lam))
    max_events = int(np.ceil(lam + 20 * np.sqrt(lam) + 30))
    base, thr = thresholds_for(lam, p0, max_events)
    assert thr == sorted(thr)
    rng = np.random.default_rng(int(lam * 1000))
    edges = np.array([t + d for t in thr for d in (-1, 0, 1)], dtype=np.int64)
    words = np.concatenate([rng.integers(0, 2**32, 200_000), edges, [0, 2**32 - 1]])
    words = words[(words >= 0) & (words < 2**32)]
    w = torch.from_numpy(words)
    expected = poisson_by_inversion(
        uniform_from_uint32(w),
        torch.tensor(lam, dtype=torch.float64),
        torch.tensor(p0, dtype=torch.float64),
        max_events,
    )
    counts = base + np.searchsorted(np.asarray(thr, dtype=np.int64), words, side="left")
    np.testing.assert_array_equal(counts, expected.numpy())
    assert abs(expected.double().mean().item() - lam) < 5 * np.sqrt(lam / len(words)) + 1e-9


def test_tables_share_one_row_per_distinct_rate():
    lam = torch.tensor([[0.08, 0.08, 0.8], [0.0, 0.08, 0.8]], dtype=torch.float64)
    tables = poisson_tables(lam, torch.exp(-lam), 50, (2, 3))
    assert tables.index.shape == (2, 3) and tables.thresholds.shape[0] == 3
    assert tables.index[0, 0] == tables.index[0, 1] == tables.index[1, 1]
    zero_rate = int(tables.index[1, 0])
    assert int(tables.base[zero_rate]) == 0 and int(tables.length[zero_rate]) == 0  # never an event


@pytest.mark.parametrize("pattern", ["populations", "alternating", "random", "one", "members"])
def test_unique_rows_equals_numpy_unique(pattern):
    """The run-length shortcut gives np.unique's tables and indices for any arrangement of rates."""
    rng = np.random.default_rng(3)
    lam = {
        "populations": np.repeat([0.1, 0.02, 0.1, 0.0], [800, 200, 300, 50]),
        "alternating": np.tile([0.3, 0.1], 500),
        "random": rng.random(2000),
        "one": np.array([0.25]),
        "members": np.repeat(rng.choice([0.05, 0.07, 0.09], 32), 1000),
    }[pattern]
    pairs = np.stack([lam, np.exp(-lam)], axis=1)
    expected_unique, expected_inverse = np.unique(pairs, axis=0, return_inverse=True)
    unique, inverse = _unique_rows(pairs)
    np.testing.assert_array_equal(unique, expected_unique)
    np.testing.assert_array_equal(inverse, expected_inverse.reshape(-1))
