"""Analyses of a fitted twin's h tracks: Welch spectra and conditional Granger causality.

**Spectra** (:func:`h_spectra`): :func:`scipy.signal.welch` of each input region's h track (mean
removed, Hann window, segments of ``nperseg`` frames, half overlap), sampled at 1/TR; the peak
frequency is the largest power above 0 Hz.

**Granger causality** (:func:`conditional_granger`): statsmodels is not a dependency of dtb, so the
vector autoregression is an ordinary least-squares VAR(p) in numpy (intercept + p lags of every
series, ``numpy.linalg.lstsq``). The conditional Granger causality of x_i on x_j given the others is

    F(i -> j) = ln( var(residual of x_j without x_i's lags) / var(residual of x_j, full model) )

(Geweke's measure, with maximum-likelihood residual variances: >= 0, near 0 when x_i's past adds
nothing). Significance: ``n_surrogates``
phase-randomised copies of x_i (same power spectrum, random Fourier phases, so no timing relation
to x_j is left) replace x_i in the full model; p = (1 + #{F_surrogate >= F}) / (1 + n_surrogates).
Benjamini-Hochberg over all ordered pairs gives ``significant_fdr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtb.errors import ConfigError

__all__ = ["GrangerResult", "conditional_granger", "h_spectra", "phase_randomise", "var_residual_variance"]


def h_spectra(tracks, fs_hz: float, *, nperseg: int | None = None):
    """Welch spectra of ``tracks`` (time, series): (frequencies [Hz], power (freq, series), peak [Hz] (series,))."""
    from scipy.signal import welch

    x = np.asarray(tracks, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    if n < 8:
        raise ConfigError(f"a spectrum needs at least 8 frames of h, got {n}")
    seg = min(n, int(nperseg) if nperseg else min(n, 64))
    freqs, power = welch(x, fs=float(fs_hz), nperseg=seg, noverlap=seg // 2, detrend="constant", axis=0)
    positive = freqs > 0
    peak = freqs[positive][np.argmax(power[positive], axis=0)]
    return freqs, power, peak


def _lagged(x: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets (time - order, series) and the design [1, x(t-1), ..., x(t-order)] of a VAR(order)."""
    n = x.shape[0]
    lags = [x[order - k : n - k] for k in range(1, order + 1)]
    design = np.concatenate([np.ones((n - order, 1)), *lags], axis=1)
    return x[order:], design


def var_residual_variance(x, order: int = 1, *, exclude: dict[int, int] | None = None) -> np.ndarray:
    """Residual variance of each series of a least-squares VAR(order) on ``x`` (time, series).

    ``exclude`` maps a target series j to a source series i whose lags are left out of j's equation.
    """
    x = np.asarray(x, dtype=np.float64)
    y, design = _lagged(x, order)
    m = x.shape[1]
    out = np.empty(m)
    for j in range(m):
        cols = np.arange(design.shape[1])
        if exclude and j in exclude:
            i = exclude[j]
            cols = np.array([c for c in cols if c == 0 or (c - 1) % m != i])
        d = design[:, cols]
        beta, *_ = np.linalg.lstsq(d, y[:, j], rcond=None)
        r = y[:, j] - d @ beta
        out[j] = r @ r / y.shape[0]  # maximum-likelihood variance: nested fits give F >= 0
    return out


def phase_randomise(x, rng: np.random.Generator) -> np.ndarray:
    """A copy of the 1-D series ``x`` with the same amplitude spectrum and uniformly random phases."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    spec = np.fft.rfft(x - x.mean())
    phases = rng.uniform(0.0, 2.0 * np.pi, spec.size)
    phases[0] = 0.0
    if n % 2 == 0:
        phases[-1] = 0.0  # the Nyquist term stays real
    return np.fft.irfft(np.abs(spec) * np.exp(1j * phases), n=n) + x.mean()


@dataclass(frozen=True)
class GrangerResult:
    """Conditional Granger causality among m series: arrays (source, target), diagonal NaN."""

    gc: np.ndarray
    p_value: np.ndarray
    significant_fdr: np.ndarray
    order: int
    n_surrogates: int
    alpha: float


def _benjamini_hochberg(p: np.ndarray, alpha: float) -> np.ndarray:
    flat = p[np.isfinite(p)]
    out = np.zeros(p.shape, dtype=bool)
    if flat.size == 0:
        return out
    order = np.sort(flat)
    ok = order <= alpha * np.arange(1, flat.size + 1) / flat.size
    threshold = order[np.flatnonzero(ok).max()] if ok.any() else -1.0
    out[np.isfinite(p)] = p[np.isfinite(p)] <= threshold
    return out


def conditional_granger(
    series, *, order: int = 1, n_surrogates: int = 199, alpha: float = 0.05, seed: int = 0
) -> GrangerResult:
    """Conditional Granger causality F(i -> j | others) with phase-randomised surrogates (module docstring)."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ConfigError(f"Granger causality needs (time, series) with >= 2 series, got shape {x.shape}")
    n, m = x.shape
    order = int(order)
    if order < 1 or n - order <= 1 + m * order + 2:
        raise ConfigError(
            f"a VAR({order}) of {m} series needs more than {1 + m * order + 2 + order} frames, got {n}: "
            "use a lower order or a longer run"
        )
    if not np.all(np.isfinite(x)) or np.any(x.std(axis=0) == 0):
        raise ConfigError("Granger causality needs finite series that are not constant")
    full = var_residual_variance(x, order)
    gc = np.full((m, m), np.nan)
    p = np.full((m, m), np.nan)
    rng = np.random.default_rng([int(seed), 0x6A2])
    for i in range(m):
        restricted = np.array(
            [var_residual_variance(x, order, exclude={j: i})[j] if j != i else np.nan for j in range(m)]
        )
        gc[i] = np.log(restricted / full)
        null = np.empty((n_surrogates, m))
        for s in range(n_surrogates):
            xs = x.copy()
            xs[:, i] = phase_randomise(x[:, i], rng)
            # the restricted equations of j != i do not contain x_i: only the full model changes
            null[s] = np.log(restricted / var_residual_variance(xs, order))
        p[i] = (1 + np.sum(null >= gc[i][None, :], axis=0)) / (1 + n_surrogates)
        gc[i, i] = np.nan
        p[i, i] = np.nan
    return GrangerResult(
        gc=gc,
        p_value=p,
        significant_fdr=_benjamini_hochberg(p, alpha),
        order=order,
        n_surrogates=int(n_surrogates),
        alpha=float(alpha),
    )
