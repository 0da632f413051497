"""Machine-independent float64 log, exp, pow and cos/sin of 2 pi u: the transcendental half of the contract.

Every value that decides a random draw or enters a simulation is computed in ``dtb`` from
correctly rounded IEEE-754 operations (+, -, *, /, sqrt, exact scaling by powers of two, and
rounding to an integer) in a fixed order, or from integers.  The C library's ``log``/``cos``,
numpy's and torch's are *not* such operations: they are accurate to about one unit in the last
place, but which last bit they return depends on the implementation the machine dispatches to
(glibc picks FMA or SSE2 variants by CPU, numpy and ATen have AVX2/AVX-512 variants, MKL picks
per CPU vendor).  Measured on one AMD EPYC: torch, numpy and Python's ``math`` disagree in the
last bit of ``log`` for 0.05-0.3 % of uniform inputs; the Gamma gains made from them differed
between an AMD EPYC and an Intel Xeon.

The functions here are the polynomials of fdlibm (Sun Microsystems, 1993; as in musl), each line
one separately rounded float64 operation.  They take numpy arrays (evaluated by numpy ufuncs, one
per operation) or torch tensors (by torch operations, on any device); numpy and torch, every
device and every dispatch level give the same bits, since no step is left to a math library's
choice.  Python and numpy scalars come back as floats.  The C++/CUDA
kernels repeat the same steps in ``cuda_ext/lif_common.h`` (compiled without contraction into
fused multiply-adds).  Accuracy, measured against 120-bit mpmath on 20,000 arguments each
(tests/sim/test_fpmath.py): :func:`log` and :func:`exp` within 1 ulp (about 92 % and 90 % correctly
rounded), :func:`cos_2pi` and :func:`sin_2pi` within 2 ulp (the argument 2 pi u is rounded once);
:func:`pow` is ``exp(y log x)``, relative error below ``(1 + |y log x|) 2^-52``.

Special values: ``log(0) = -inf``, ``log(x < 0) = nan``, ``log(inf) = inf``; ``exp`` underflows to 0
below about -745 and overflows to inf above about 709.8; NaN gives NaN.  ``cos_2pi``/``sin_2pi``
need |u| < 2^50.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["log", "exp", "pow", "cos_2pi", "sin_2pi", "ordered_sum", "ordered_mean", "sigmoid", "logit", "TWO_PI"]

TWO_PI = 6.283185307179586  #: float64 nearest 2 pi (== 2.0 * numpy.pi)

_LN2_HI = 6.93147180369123816490e-01  # 0x3FE62E42FEE00000
_LN2_LO = 1.90821492927058770002e-10  # 0x3DEA39EF35793C76
_INV_LN2 = 1.44269504088896338700e00
_SQRT_HALF = 0.70710678118654752440
_LG1, _LG2, _LG3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
_LG4, _LG5, _LG6 = 2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_P1, _P2, _P3 = 1.66666666666666019037e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05
_P4, _P5 = -1.65339022054652515390e-06, 4.13813679705723846039e-08
_C1, _C2, _C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_C4, _C5, _C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
_S1, _S2, _S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_S4, _S5, _S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10


class _Ops:
    """The few non-arithmetic primitives, for numpy arrays or torch tensors (all exact)."""

    def __init__(self, torch_like: bool) -> None:
        self.torch = torch_like

    def frexp(self, x):
        return torch.frexp(x) if self.torch else np.frexp(x)

    def rint(self, x):  # nearest integer, ties to even
        return torch.round(x) if self.torch else np.rint(x)

    def clip(self, x, lo: float, hi: float):
        return torch.clamp(x, lo, hi) if self.torch else np.clip(x, lo, hi)

    def where(self, c, a, b):
        return torch.where(c, a, b) if self.torch else np.where(c, a, b)

    def to_float(self, k):
        return k.to(torch.float64) if self.torch else k.astype(np.float64)

    def pow2(self, k):  # 2^k exactly for integer-valued float64 k in [-1022, 1023]
        if self.torch:
            return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)
        return ((k.astype(np.int64) + 1023) << 52).view(np.float64)

    def quadrant(self, n, shift: int):  # (n - shift) mod 4 of integer-valued float64 n
        if self.torch:
            return torch.remainder(n.to(torch.int64) - shift, 4)
        return np.remainder(n.astype(np.int64) - shift, 4)


def _prepare(x):
    """float64 tensor or array (torch stays torch; anything else becomes a numpy array) and its ops."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64), _Ops(True)
    return np.asarray(x, dtype=np.float64), _Ops(False)


def _out(value, like):
    """A 0-d numpy result of a Python or numpy scalar input comes back as a float."""
    return float(value) if not isinstance(like, torch.Tensor) and np.ndim(like) == 0 else value


def log(x):
    """Natural log of float64 values (fdlibm e_log; within 1 ulp)."""
    with np.errstate(all="ignore"):  # 0, negative and NaN arguments are sorted out at the end
        return _log(x)


def _log(x):
    like = x
    x, ops = _prepare(x)
    m, e = ops.frexp(x)  # x = m 2^e, m in [0.5, 1): exact
    k = ops.to_float(e)
    low = m < _SQRT_HALF
    m = ops.where(low, m * 2.0, m)  # m in [sqrt(1/2), sqrt(2)): exact
    k = ops.where(low, k - 1.0, k)
    f = m - 1.0  # exact (Sterbenz)
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    out = k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)
    out = ops.where(x > 0, ops.where(x < np.inf, out, x), ops.where(x == 0, -np.inf, np.nan))
    return _out(out, like)


def exp(x):
    """e^x of float64 values (fdlibm e_exp; within 1 ulp where the result is normal)."""
    with np.errstate(all="ignore"):  # overflow to inf and NaN pass through as IEEE says
        return _exp(x)


def _exp(x):
    like = x
    x, ops = _prepare(x)
    x = ops.clip(x, -1000.0, 1000.0)  # beyond, the result is 0 or inf anyway (NaN stays NaN)
    k = ops.rint(x * _INV_LN2)  # nearest integer, ties to even: exact
    hi = x - k * _LN2_HI
    lo = k * _LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * (_P1 + t * (_P2 + t * (_P3 + t * (_P4 + t * _P5))))
    y = 1.0 + ((r * c) / (2.0 - c) - lo + hi)
    k1 = ops.rint(0.5 * k)  # two exact scalings, so |k| up to 2044 stays representable; the result
    return _out((y * ops.pow2(k1)) * ops.pow2(k - k1), like)  # under- or overflows as IEEE says


def pow(x, y):
    """x^y for positive x.

    A scalar integer exponent ``|y| <= 64`` is done by repeated squaring (a fixed sequence of
    correctly rounded products, and one division for negative ``y``); any other ``y`` as
    ``exp(y * log(x))`` (relative error below ``(1 + |y log x|) 2^-52``).
    """
    if np.ndim(y) == 0 and not isinstance(y, torch.Tensor) and float(y).is_integer() and abs(y) <= 64:
        return _ipow(x, int(y))
    return exp(y * log(x))


def _ipow(x, n: int):
    like = x
    x, _ = _prepare(x)
    result = None
    base, m = x, abs(n)
    while m:
        if m & 1:
            result = base if result is None else result * base
        m >>= 1
        if m:
            base = base * base
    if result is None:
        result = x * 0.0 + 1.0
    return _out(1.0 / result if n < 0 else result, like)


def _kernel_cos(x):
    z = x * x
    w = z * z
    r = z * (_C1 + z * (_C2 + z * _C3)) + w * w * (_C4 + z * (_C5 + z * _C6))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + z * r)


def _kernel_sin(x):
    z = x * x
    w = z * z
    r = _S2 + z * (_S3 + z * _S4) + z * w * (_S5 + z * _S6)
    v = z * x
    return x + v * (_S1 + z * r)


def _quadrant_cos(u, shift: int):
    like = u
    u, ops = _prepare(u)
    n = ops.rint(4.0 * u)  # nearest quarter turn: exact
    x = (u - 0.25 * n) * TWO_PI  # u - n/4 exact, |x| <= pi/4
    q = ops.quadrant(n, shift)
    c, s = _kernel_cos(x), _kernel_sin(x)
    return _out(ops.where(q == 0, c, ops.where(q == 1, -s, ops.where(q == 2, -c, s))), like)


def cos_2pi(u):
    """cos(2 pi u), reduced exactly in u (quarter turns), then fdlibm's kernels on |x| <= pi/4."""
    return _quadrant_cos(u, 0)


def sin_2pi(u):
    """sin(2 pi u) = cos(2 pi u - pi/2), by the same exact reduction as :func:`cos_2pi`."""
    return _quadrant_cos(u, 1)


def sigmoid(x):
    """1 / (1 + e^-x), with the argument clamped to [-700, 700] (where it is 0 or 1 to double precision anyway)."""
    if isinstance(x, torch.Tensor):
        x = torch.clamp(x.to(torch.float64), -700.0, 700.0)
    else:
        x = np.clip(np.asarray(x, dtype=np.float64), -700.0, 700.0)
    return 1.0 / (1.0 + exp(-x))


def logit(p):
    """log(p / (1 - p)) of p in (0, 1)."""
    return log(p / (1.0 - p))


def ordered_sum(x, dim: int = 0):
    """Sum over ``dim`` strictly in index order, ``((x_0 + x_1) + x_2) + ...``.

    Library reductions choose their own order (vector width, blocking, threads); this one is
    fixed, so the result is the same on every machine.  Meant for short axes (ensemble members,
    regions): one elementwise addition per index.
    """
    n = x.shape[dim]
    if n == 0:
        return x.sum(dim) if isinstance(x, torch.Tensor) else x.sum(axis=dim)
    take = (lambda i: x.select(dim, i)) if isinstance(x, torch.Tensor) else (lambda i: np.take(x, i, axis=dim))
    total = take(0).clone() if isinstance(x, torch.Tensor) else np.array(take(0), copy=True)
    for i in range(1, n):
        total = total + take(i)
    return total


def ordered_mean(x, dim: int = 0):
    """:func:`ordered_sum` divided by the length of ``dim``."""
    return ordered_sum(x, dim) / x.shape[dim]
