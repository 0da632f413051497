"""dtb.fpmath: accurate, and the same bits from numpy, torch and the C++ kernels' copy (lif_common.h)."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

from dtb import fpmath
from dtb.philox import normal_from_uint32, philox4x32, uniform_from_uint32

mpmath.mp.prec = 120
RNG = np.random.default_rng(20261207)
UNIFORMS = (RNG.integers(0, 2**32, 3000) + 0.5) / 2**32  # the values Box-Muller sees


def ulp_errors(got: np.ndarray, xs: np.ndarray, exact) -> np.ndarray:
    """|got - f(x)| in units of the float64 spacing at f(x), f evaluated with 120-bit mpmath."""
    ref = np.array([exact(mpmath.mpf(float(x))) for x in xs])
    ref_f = ref.astype(np.float64)
    return np.array([float(abs(mpmath.mpf(float(g)) - r)) for g, r in zip(got, ref)]) / np.spacing(np.abs(ref_f))


@pytest.mark.parametrize(
    "name, xs, exact, bound",
    [
        ("log", UNIFORMS, mpmath.log, 1.0),
        ("log", np.exp(RNG.uniform(-700, 700, 2000)), mpmath.log, 1.0),
        ("exp", RNG.uniform(-708, 709, 2000), mpmath.exp, 1.0),
        ("exp", RNG.uniform(-1e-3, 1e-3, 2000), mpmath.exp, 1.0),
        ("cos_2pi", UNIFORMS, lambda u: mpmath.cos(2 * mpmath.pi * u), 2.0),
        ("sin_2pi", RNG.uniform(-300, 300, 2000), lambda u: mpmath.sin(2 * mpmath.pi * u), 2.0),
    ],
)
def test_functions_are_accurate(name, xs, exact, bound):
    err = ulp_errors(getattr(fpmath, name)(xs), xs, exact)
    # within the bound everywhere (the exact value is at most `bound` - 1/2 ulp from the result,
    # measured against the unrounded value), and mostly correctly rounded
    assert err.max() < bound
    assert np.mean(err <= 0.5) > 0.75


def test_pow_integer_exponents_are_products_and_others_exp_log():
    x = RNG.uniform(0.2, 3.0, 500)
    x2 = x * x
    assert np.array_equal(fpmath.pow(x, 5), x * (x2 * x2))  # repeated squaring, in this order
    assert np.array_equal(fpmath.pow(x, 2), x * x)
    assert np.array_equal(fpmath.pow(x, -1), 1.0 / x)
    assert np.array_equal(fpmath.pow(x, 0), np.ones_like(x))
    y = 1.0 / 0.32
    exact = np.array([float(mpmath.power(mpmath.mpf(float(a)), mpmath.mpf(y))) for a in x])
    assert np.max(np.abs(fpmath.pow(x, y) - exact) / exact) < 8 * 2.0**-52


def test_numpy_and_torch_give_the_same_bits():
    u = (RNG.integers(0, 2**32, 100_000) + 0.5) / 2**32
    wide = RNG.uniform(-700, 700, 100_000)
    for f, x in (
        (fpmath.log, u),
        (fpmath.exp, wide),
        (fpmath.cos_2pi, u),
        (fpmath.sin_2pi, wide),
        (fpmath.sigmoid, wide),
    ):
        assert np.array_equal(f(x), f(torch.from_numpy(x)).numpy()), f.__name__
    assert isinstance(fpmath.log(0.5), float) and fpmath.log(1.0) == 0.0 and fpmath.exp(0.0) == 1.0


def test_quarter_turns_are_exact():
    q = np.array([0.0, 0.25, 0.5, 0.75, 1.0, -0.25, 10.5])
    assert np.array_equal(fpmath.cos_2pi(q), [1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0])
    assert np.array_equal(fpmath.sin_2pi(q), [0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0])


def test_sigmoid_and_logit_are_inverse_and_saturate():
    x = RNG.uniform(-10, 10, 1000)  # beyond, 1 - sigmoid(x) keeps too few bits to invert
    assert np.allclose(fpmath.logit(fpmath.sigmoid(x)), x, rtol=0, atol=1e-10)
    low, high = fpmath.sigmoid(np.array([-1e6, 1e6]))
    assert 0.0 < low < 1e-300 and high == 1.0  # clamped to +-700: finite, no overflow
    assert float(fpmath.sigmoid(0.0)) == 0.5


def test_ordered_sum_adds_in_index_order():
    # 1e16 + 1 + 1 + ... loses every 1 in index order; a pairwise or vector order would keep some
    x = np.array([1e16] + [1.0] * 15)
    assert fpmath.ordered_sum(x) == 1e16
    t = torch.from_numpy(RNG.normal(size=(7, 5, 3)))
    acc = t[0].clone()
    for i in range(1, 7):
        acc = acc + t[i]
    assert torch.equal(fpmath.ordered_sum(t, 0), acc)
    assert np.array_equal(fpmath.ordered_mean(t.numpy(), 1), fpmath.ordered_mean(t, 1).numpy())


def test_cpp_copy_gives_the_same_bits():
    from cuda_ext.loader import build_error, load_cpu_extension

    reason = build_error()
    if reason is not None:
        pytest.skip(f"cuda_ext CPU kernels not built here: {reason.splitlines()[0]}")
    ext = load_cpu_extension()
    u = torch.from_numpy((RNG.integers(0, 2**32, 200_000) + 0.5) / 2**32)
    assert torch.equal(ext.fpmath(u, 0), fpmath.log(u))
    assert torch.equal(ext.fpmath(u, 1), fpmath.cos_2pi(u))
    # and so the engine's normals: the torch reference against the kernels' Box-Muller, through spikes
    # elsewhere; here the float32 normals of the Python contract are finite and standard
    w = philox4x32((torch.arange(100_000), 0, 5, 0), (1, 2))
    z = normal_from_uint32(w[0], w[1]).double()
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1.0) < 0.02
    assert torch.all(uniform_from_uint32(w[2]) > 0)


def test_special_values_and_range_ends():
    """Zero, negatives, infinities and NaN follow IEEE; exp under- and overflows instead of wrapping."""
    for xp in (np.asarray, torch.as_tensor):
        logs = np.asarray(fpmath.log(xp(np.array([0.0, -1.0, np.inf, np.nan, 5e-324, 1.0]))))
        assert logs[0] == -np.inf and np.isnan(logs[1]) and logs[2] == np.inf and np.isnan(logs[3])
        assert logs[4] == pytest.approx(-744.4400719213812) and logs[5] == 0.0
        exps = np.asarray(fpmath.exp(xp(np.array([-1e6, -746.0, -745.0, 709.0, 710.0, 1e6, np.nan]))))
        assert exps[0] == 0.0 and exps[1] == 0.0 and 0.0 < exps[2] < 1e-323
        assert exps[3] == pytest.approx(8.218407461554972e307) and exps[4] == np.inf and exps[5] == np.inf
        assert np.isnan(exps[6])
    # the Balloon model's (1 - E_0)^(1/f) at the flow floor: 0, not garbage
    assert fpmath.pow(np.array([0.2]), 1.0 / 1e-5)[0] == 0.0
