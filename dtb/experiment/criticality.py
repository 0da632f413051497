"""Neuronal avalanches of a spiking twin: sizes, durations, power-law fits, branching ratio.

The analysis follows the field's standard recipe (Beggs & Plenz 2003; Friedman et al. 2012;
Clauset, Shalizi & Newman 2009; Wilting & Priesemann 2018):

1. **Binning** (:func:`bin_spikes`). Spike times of the analysed neurons are counted in bins of
   width Δt. By default Δt is the mean inter-event interval of the pooled spike train (all analysed
   neurons together), rounded up to a whole multiple of the simulation's time resolution.
2. **Avalanches** (:func:`avalanches`). An avalanche is a run of consecutive non-empty bins between
   empty bins; its *size* S is the number of spikes in it, its *duration* T the number of bins.
3. **Power-law fits** (:func:`fit_power_law`). The size and duration distributions are fitted by the
   discrete maximum-likelihood power law of Clauset et al. (the ``powerlaw`` package: x_min chosen
   by the Kolmogorov-Smirnov distance), and compared with an exponential and a log-normal by the
   log-likelihood ratio R (R > 0 favours the power law) and its p-value.
4. **Exponent relation** (:func:`exponent_relation`). At criticality the mean size of avalanches of
   duration T scales as <S>(T) ~ T^γ with γ = (α_T - 1)/(α_S - 1) (Sethna et al. 2001; Friedman et al.
   2012), α_S and α_T the size and duration exponents. γ_fit is the least-squares slope of
   log <S>(T) on log T; the deviation from criticality coefficient DCC = |γ_pred - γ_fit|
   (Ma et al. 2019) is 0 at criticality.
5. **Branching ratio** (:func:`branching_ratio_mr`). The multistep-regression (MR) estimator of
   Wilting & Priesemann: the slopes r_k of A(t + k) on A(t) for k = 1..k_max follow r_k = b m^k, and
   m is fitted to them (nonlinear least squares, scipy.optimize.curve_fit). Unlike the naive ratio of descendants to ancestors it is unbiased under
   subsampling, so it can be computed on a region's or a random subset's counts. m = 1 is critical,
   m < 1 subcritical (activity dies out), m > 1 supercritical.

A critical branching process (m = 1) has α_S = 3/2, α_T = 2 and γ = 2 (tested on simulated
branching processes in tests/experiment/test_experiment.py).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from dtb.errors import ConfigError

__all__ = [
    "AvalancheStatistics",
    "PowerLawFit",
    "analyse_avalanches",
    "avalanches",
    "bin_spikes",
    "branching_ratio_mr",
    "exponent_relation",
    "fit_power_law",
]


def bin_spikes(times_s, *, duration_s: float, resolution_s: float, bin_s: float | None = None):
    """Count spikes in bins; returns (counts (bins,), bin width [s]).

    ``times_s``: spike times [s] in [0, duration_s); ``resolution_s``: the simulation's step [s]
    (spike times are multiples of it); ``bin_s``: the bin width [s], or None for the mean
    inter-event interval of the pooled train, rounded up to a whole number of steps.
    """
    t = np.asarray(times_s, dtype=np.float64)
    if duration_s <= 0 or resolution_s <= 0:
        raise ConfigError(f"duration_s and resolution_s must be positive, got {duration_s}, {resolution_s}")
    if t.size < 2:
        raise ConfigError(f"avalanches need at least 2 spikes, got {t.size}; record longer or analyse more neurons")
    if bin_s is None:
        bin_s = duration_s / t.size  # mean inter-event interval of the pooled train
    steps = max(1, math.ceil(bin_s / resolution_s - 1e-9))
    width = steps * resolution_s
    n_bins = int(math.floor(duration_s / width + 1e-9))
    if n_bins < 2:
        raise ConfigError(f"a bin of {width:g} s leaves fewer than 2 bins in {duration_s:g} s")
    index = np.floor(t / width + 1e-9).astype(np.int64)
    index = index[(index >= 0) & (index < n_bins)]
    return np.bincount(index, minlength=n_bins), width


def avalanches(counts) -> tuple[np.ndarray, np.ndarray]:
    """Sizes and durations of the runs of non-empty bins in ``counts``.

    A run touching the first or last bin is cut by the recording and is left out.
    """
    c = np.asarray(counts)
    if c.ndim != 1:
        raise ConfigError(f"counts must be one series of bins, got shape {c.shape}")
    active = c > 0
    edges = np.diff(np.concatenate([[False], active, [False]]).astype(np.int8))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = (starts > 0) & (stops < c.size)
    starts, stops = starts[keep], stops[keep]
    cumulative = np.concatenate([[0], np.cumsum(c, dtype=np.int64)])
    return cumulative[stops] - cumulative[starts], stops - starts


@dataclass(frozen=True)
class PowerLawFit:
    """A discrete power-law fit p(x) ~ x^-alpha for x >= xmin, with its comparisons.

    ``r_exponential``/``r_lognormal``: log-likelihood ratio power law vs the alternative (> 0 favours
    the power law); ``p_*`` its significance (Vuong's test; small p means the sign of R is reliable).
    """

    alpha: float
    sigma: float
    xmin: float
    n_tail: int
    ks_distance: float
    r_exponential: float
    p_exponential: float
    r_lognormal: float
    p_lognormal: float

    def to_json(self) -> dict:
        return {k: (float(v) if math.isfinite(v) else None) for k, v in self.__dict__.items()}


def fit_power_law(values, *, xmin: float | None = None, xmax: float | None = None) -> PowerLawFit:
    """Clauset et al.'s discrete maximum-likelihood power-law fit of ``values`` (the ``powerlaw`` package)."""
    import powerlaw

    x = np.asarray(values, dtype=np.float64)
    x = x[x > 0]
    if x.size < 10 or np.unique(x).size < 3:
        raise ConfigError(
            f"a power-law fit needs at least 10 avalanches with 3 distinct values, got {x.size} "
            f"({np.unique(x).size} distinct); record longer or analyse more neurons"
        )
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(x, discrete=True, xmin=xmin, xmax=xmax, verbose=False)
        r_exp, p_exp = fit.distribution_compare("power_law", "exponential", normalized_ratio=True)
        r_ln, p_ln = fit.distribution_compare("power_law", "lognormal", normalized_ratio=True)
    pl = fit.power_law
    return PowerLawFit(
        alpha=float(pl.alpha),
        sigma=float(pl.standard_err),
        xmin=float(pl.xmin),
        n_tail=int(np.count_nonzero(x >= pl.xmin)),
        ks_distance=float(pl.D),
        r_exponential=float(r_exp),
        p_exponential=float(p_exp),
        r_lognormal=float(r_ln),
        p_lognormal=float(p_ln),
    )


def exponent_relation(sizes, durations, alpha_size: float, alpha_duration: float) -> dict:
    """γ predicted from the exponents, γ fitted from <S>(T) ~ T^γ, and DCC = |γ_pred - γ_fit|."""
    s = np.asarray(sizes, dtype=np.float64)
    d = np.asarray(durations, dtype=np.int64)
    values = np.unique(d)
    if values.size < 3:
        raise ConfigError(f"the exponent relation needs avalanches of at least 3 durations, got {values.size}")
    mean_size = np.array([s[d == v].mean() for v in values])
    gamma_fit = float(np.polyfit(np.log(values), np.log(mean_size), 1)[0])
    gamma_pred = (alpha_duration - 1.0) / (alpha_size - 1.0) if alpha_size != 1.0 else float("nan")
    return {
        "gamma_predicted": float(gamma_pred),
        "gamma_fitted": gamma_fit,
        "dcc": float(abs(gamma_pred - gamma_fit)),
        "durations": values,
        "mean_size": mean_size,
    }


def branching_ratio_mr(activity, *, k_max: int = 40) -> dict:
    """Multistep-regression estimate of the branching ratio m of ``activity`` (bins,).

    r_k = slope of A(t + k) on A(t) (least squares) for k = 1..k_max; m and b are fitted to
    r_k = b m^k by nonlinear least squares (Wilting & Priesemann 2018), started from the log-linear fit.
    """
    a = np.asarray(activity, dtype=np.float64)
    if a.ndim != 1 or a.size < 4 * k_max:
        raise ConfigError(f"the branching ratio needs a series of at least {4 * k_max} bins, got shape {a.shape}")
    if np.var(a) == 0:
        raise ConfigError("the activity is constant; no branching ratio can be estimated")
    ks = np.arange(1, k_max + 1)
    r = np.empty(k_max)
    for i, k in enumerate(ks):
        x, y = a[:-k], a[k:]
        x_c = x - x.mean()
        r[i] = float(np.dot(x_c, y - y.mean()) / np.dot(x_c, x_c))
    positive = r > 0
    if positive.sum() < 2:
        return {"m": float("nan"), "b": float("nan"), "k": ks, "r_k": r}
    from scipy.optimize import curve_fit

    slope, intercept = np.polyfit(ks[positive], np.log(r[positive]), 1)  # start values
    start = (float(np.exp(intercept)), float(min(np.exp(slope), 1.5)))
    try:
        (b, m), _ = curve_fit(lambda k, b, m: b * m**k, ks, r, p0=start, bounds=([-np.inf, 0.0], [np.inf, 2.0]))
    except RuntimeError:  # no convergence: keep the log-linear estimate
        b, m = start
    return {"m": float(m), "b": float(b), "k": ks, "r_k": r}
    return {"m": float(np.exp(slope)), "b": float(np.exp(intercept)), "k": ks, "r_k": r}


@dataclass(frozen=True)
class AvalancheStatistics:
    """Everything :func:`analyse_avalanches` measured (arrays kept for figures and stores)."""

    bin_s: float
    n_neurons: int
    n_spikes: int
    sizes: np.ndarray
    durations: np.ndarray
    size_fit: PowerLawFit
    duration_fit: PowerLawFit
    relation: dict
    branching: dict

    def summary(self) -> dict:
        rel = self.relation
        return {
            "bin_s": self.bin_s,
            "n_neurons": self.n_neurons,
            "n_spikes": self.n_spikes,
            "n_avalanches": int(self.sizes.size),
            "size_fit": self.size_fit.to_json(),
            "duration_fit": self.duration_fit.to_json(),
            "gamma_predicted": _finite(rel["gamma_predicted"]),
            "gamma_fitted": _finite(rel["gamma_fitted"]),
            "dcc": _finite(rel["dcc"]),
            "branching_ratio_mr": _finite(self.branching["m"]),
        }


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def analyse_avalanches(
    times_s,
    neurons,
    *,
    duration_s: float,
    resolution_s: float,
    n_neurons: int | None = None,
    population_size: int | None = None,
    bin_s: float | None = None,
    seed: int = 0,
    k_max: int = 40,
) -> AvalancheStatistics:
    """Avalanche statistics of a spike train (times [s], neuron ids).

    ``n_neurons`` analyses a random subset of that many of the ``population_size`` neurons (ids
    0..population_size-1; drawn with ``seed``), as recordings do; None analyses every neuron. The
    branching ratio uses the same subset's counts in bins of the simulation's resolution.
    """
    t = np.asarray(times_s, dtype=np.float64)
    ids = np.asarray(neurons, dtype=np.int64)
    if t.shape != ids.shape:
        raise ConfigError(f"spike times and neuron ids differ in length: {t.shape} vs {ids.shape}")
    total = int(population_size if population_size is not None else (ids.max() + 1 if ids.size else 0))
    if n_neurons is not None:
        if not 1 <= n_neurons <= total:
            raise ConfigError(f"criticality.n_neurons must be in [1, {total}] (the twin's neurons), got {n_neurons}")
        chosen = np.random.default_rng(seed).choice(total, size=int(n_neurons), replace=False)
        mask = np.isin(ids, chosen)
        t = t[mask]
        used = int(n_neurons)
    else:
        used = total
    counts, width = bin_spikes(t, duration_s=duration_s, resolution_s=resolution_s, bin_s=bin_s)
    sizes, durations = avalanches(counts)
    size_fit = fit_power_law(sizes)
    duration_fit = fit_power_law(durations)
    relation = exponent_relation(sizes, durations, size_fit.alpha, duration_fit.alpha)
    fine, _ = bin_spikes(t, duration_s=duration_s, resolution_s=resolution_s, bin_s=resolution_s)
    branching = branching_ratio_mr(fine, k_max=min(k_max, max(1, fine.size // 4)))
    return AvalancheStatistics(
        bin_s=width,
        n_neurons=used,
        n_spikes=int(t.size),
        sizes=sizes,
        durations=durations,
        size_fit=size_fit,
        duration_fit=duration_fit,
        relation=relation,
        branching=branching,
    )
