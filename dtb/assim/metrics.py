"""Fidelity metrics of a twin (docs/model.md §5.1): how well simulated BOLD matches the data.

Plain numpy on (time, region) series and (time, member, region) ensembles, the layout of the twin
store. Every function validates its inputs and raises :class:`~dtb.errors.AssimilationError` with
the argument's name on a shape mismatch or a non-finite value.

- :func:`region_correlation`: per-region Pearson r at 0 and 1 TR lag and the better of the two.
- :func:`functional_connectivity`, :func:`fc_similarity`, :func:`fc_frobenius_distance`.
- :func:`heldout_skill`: a free forecast after the assimilated part, scored against persistence and
  climatology.
- :func:`ensemble_rmse_spread`, :func:`crps_ensemble`, :func:`rank_histogram`,
  :func:`innovation_statistics`: ensemble and filter diagnostics.
- :func:`compute_fidelity` / :func:`summarize`: everything at once, with the twin-store names.

A Pearson r is undefined for a constant series; such regions get NaN (a silent region in a
simulation is a finding, not an error), and summaries average over the defined ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dtb.errors import AssimilationError

__all__ = [
    "RegionCorrelation",
    "HeldoutSkill",
    "FidelityMetrics",
    "pearson_columns",
    "region_correlation",
    "functional_connectivity",
    "fc_similarity",
    "fc_frobenius_distance",
    "anomaly_correlation",
    "heldout_skill",
    "ensemble_rmse_spread",
    "crps_ensemble",
    "PHYSIOLOGICAL_BOLD",
    "haemodynamic_warning",
    "rank_histogram",
    "innovation_statistics",
    "compute_fidelity",
    "summarize",
]


def _as_array(name: str, value, ndim: int | tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise AssimilationError(
            f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise AssimilationError(
            f"{name} contains {int((~np.isfinite(array)).sum())} NaN or infinite value(s); "
            "clean the series or drop the affected frames/regions first"
        )
    return array


def _same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise AssimilationError(f"{name_a} {a.shape} and {name_b} {b.shape} must have the same shape (time, region)")


def _drop_warmup(warmup_frames: int, n_frames: int) -> int:
    if isinstance(warmup_frames, bool) or not isinstance(warmup_frames, (int, np.integer)) or warmup_frames < 0:
        raise AssimilationError(f"warmup_frames must be a non-negative integer, got {warmup_frames!r}")
    if n_frames - warmup_frames < 3:
        raise AssimilationError(
            f"only {n_frames - warmup_frames} frame(s) left after dropping {warmup_frames} warm-up frame(s) of "
            f"{n_frames}; a correlation needs at least 3 (use fewer warm-up windows or a longer run)"
        )
    return int(warmup_frames)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of two (time, column) arrays; NaN where either is constant."""
    a_anom = a - a.mean(axis=0)
    b_anom = b - b.mean(axis=0)
    norm = np.sqrt((a_anom**2).sum(axis=0) * (b_anom**2).sum(axis=0))
    # a series whose spread is at rounding level of its mean counts as constant
    tiny = (np.abs(a_anom).max(axis=0) <= 1e-12 * (1 + np.abs(a).max(axis=0))) | (
        np.abs(b_anom).max(axis=0) <= 1e-12 * (1 + np.abs(b).max(axis=0))
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a_anom * b_anom).sum(axis=0) / norm
    r[tiny] = np.nan
    return np.clip(r, -1.0, 1.0)


# ----------------------------------------------------------------------------------------------
# per-region correlation


@dataclass(frozen=True)
class RegionCorrelation:
    """Per-region Pearson r of simulated vs empirical BOLD (each shape (region,)).

    ``r_lag1`` compares the simulation one TR later with the data (``sim[t + 1]`` vs ``emp[t]``):
    the simulation lagging the data by one TR, as a haemodynamic or filter delay would make it.
    ``best`` is the larger of the two per region and ``best_lag`` (0 or 1) which one it was.
    """

    r_lag0: np.ndarray
    r_lag1: np.ndarray
    best: np.ndarray
    best_lag: np.ndarray


def region_correlation(simulated, empirical, *, warmup_frames: int = 0) -> RegionCorrelation:
    """Per-region Pearson r with 0 and 1 TR lag after dropping the first ``warmup_frames`` frames.

    Parameters
    ----------
    simulated, empirical : array-like, shape (time, region)
        BOLD series on the same TR grid (any units; r is scale-free).
    warmup_frames : int
        Number of leading frames (TRs) to drop from both.
    """
    sim = _as_array("simulated", simulated, 2)
    emp = _as_array("empirical", empirical, 2)
    _same_shape("simulated", sim, "empirical", emp)
    start = _drop_warmup(warmup_frames, sim.shape[0])
    sim, emp = sim[start:], emp[start:]
    r0 = pearson_columns(sim, emp)
    r1 = pearson_columns(sim[1:], emp[:-1])
    best_lag = np.where(np.nan_to_num(r1, nan=-np.inf) > np.nan_to_num(r0, nan=-np.inf), 1, 0)
    best = np.where(best_lag == 1, r1, r0)
    return RegionCorrelation(r_lag0=r0, r_lag1=r1, best=best, best_lag=best_lag)


# ----------------------------------------------------------------------------------------------
# functional connectivity


def functional_connectivity(bold, *, warmup_frames: int = 0) -> np.ndarray:
    """Pearson correlation matrix (region, region) of a (time, region) series after warm-up.

    Rows and columns of constant regions are NaN (their diagonal too).
    """
    array = _as_array("bold", bold, 2)
    start = _drop_warmup(warmup_frames, array.shape[0])
    array = array[start:]
    if array.shape[1] < 2:
        raise AssimilationError(f"functional connectivity needs at least 2 regions, got {array.shape[1]}")
    anomalies = array - array.mean(axis=0)
    norms = np.sqrt((anomalies**2).sum(axis=0))
    constant = norms <= 1e-12 * (1 + np.abs(array).max(axis=0)) * np.sqrt(array.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        fc = (anomalies.T @ anomalies) / np.outer(norms, norms)
    fc[constant, :] = np.nan
    fc[:, constant] = np.nan
    return np.clip(fc, -1.0, 1.0)


def _fc_pair(fc_simulated, fc_empirical) -> tuple[np.ndarray, np.ndarray]:
    sim = np.asarray(fc_simulated, dtype=np.float64)
    emp = np.asarray(fc_empirical, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape != emp.shape:
        raise AssimilationError(
            f"fc_simulated {sim.shape} and fc_empirical {emp.shape} must be square matrices of the same shape"
        )
    return sim, emp


def fc_similarity(fc_simulated, fc_empirical) -> float:
    """FC similarity: Pearson r between the strict upper triangles of two FC matrices.

    Pairs undefined (NaN) in either matrix are left out; NaN if fewer than 3 pairs remain.
    """
    sim, emp = _fc_pair(fc_simulated, fc_empirical)
    rows, cols = np.triu_indices(sim.shape[0], k=1)
    a, b = sim[rows, cols], emp[rows, cols]
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    return float(pearson_columns(a[keep, None], b[keep, None])[0])


def fc_frobenius_distance(fc_simulated, fc_empirical) -> float:
    """Normalised Frobenius distance ``||FC_sim - FC_emp||_F / ||FC_emp||_F`` over the full matrices.

    Entries undefined (NaN) in either matrix are left out of both norms.
    """
    sim, emp = _fc_pair(fc_simulated, fc_empirical)
    keep = np.isfinite(sim) & np.isfinite(emp)
    denominator = np.sqrt((emp[keep] ** 2).sum())
    if denominator == 0:
        return float("nan")
    return float(np.sqrt(((sim[keep] - emp[keep]) ** 2).sum()) / denominator)


# ----------------------------------------------------------------------------------------------
# held-out forecast skill


def anomaly_correlation(forecast, truth, climatology) -> float:
    """Anomaly correlation coefficient (ACC) of a forecast, pooled over time and regions.

    ``ACC = sum(f' t') / sqrt(sum f'^2 sum t'^2)`` with anomalies ``f' = forecast - climatology``,
    ``t' = truth - climatology`` (the climatology per region, no further centring). Unlike a Pearson
    r over time it is defined for a constant forecast (persistence); a forecast equal to the
    climatology has zero anomaly and gets ACC 0 (no skill).
    """
    forecast_anom = np.asarray(forecast, dtype=np.float64) - climatology
    truth_anom = np.asarray(truth, dtype=np.float64) - climatology
    norm = np.sqrt((forecast_anom**2).sum() * (truth_anom**2).sum())
    if norm == 0:
        return 0.0
    return float((forecast_anom * truth_anom).sum() / norm)


@dataclass(frozen=True)
class HeldoutSkill:
    """Skill of a free forecast over held-out frames and of two reference forecasts.

    ``*_r`` are anomaly correlations (:func:`anomaly_correlation`) relative to the training
    climatology, ``*_rmse`` root-mean-square errors (data units); ``skill_vs_*`` are MSE skill scores
    ``1 - MSE_forecast / MSE_reference`` (> 0: the forecast beats the reference).
    """

    forecast_r: float
    persistence_r: float
    climatology_r: float
    forecast_rmse: float
    persistence_rmse: float
    climatology_rmse: float
    skill_vs_persistence: float
    skill_vs_climatology: float


def heldout_skill(forecast, observed, start: int, *, warmup_frames: int = 0) -> HeldoutSkill:
    """Score a forecast of the frames after the assimilated part of a run.

    Parameters
    ----------
    forecast : array-like, shape (T_h, region)
        Forecast BOLD of frames ``start .. start + T_h - 1`` (h frozen or extrapolated).
    observed : array-like, shape (T, region)
        The whole observed run; frames ``warmup_frames .. start - 1`` were assimilated (training).
    start : int
        First held-out frame.
    warmup_frames : int
        Leading frames left out of the climatology.

    Notes
    -----
    Persistence holds the last assimilated value ``observed[start - 1]``; climatology is the mean of
    the training frames ``observed[warmup_frames:start]``, per region.
    """
    forecast_a = _as_array("forecast", forecast, 2)
    observed_a = _as_array("observed", observed, 2)
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
        raise AssimilationError(f"start must be an integer frame index, got {start!r}")
    if not 0 <= warmup_frames < start:
        raise AssimilationError(
            f"held-out start {start} must come after the warm-up ({warmup_frames} frames) so there is training data"
        )
    n_heldout = forecast_a.shape[0]
    if start + n_heldout > observed_a.shape[0] or forecast_a.shape[1] != observed_a.shape[1] or n_heldout < 2:
        raise AssimilationError(
            f"forecast {forecast_a.shape} must cover >= 2 frames from start {start} within observed "
            f"{observed_a.shape}, with the same regions"
        )
    truth = observed_a[start : start + n_heldout]
    climatology = observed_a[warmup_frames:start].mean(axis=0)
    persistence = np.broadcast_to(observed_a[start - 1], truth.shape)

    def mse(prediction) -> float:
        return float(np.mean((prediction - truth) ** 2))

    mse_forecast, mse_persistence = mse(forecast_a), mse(persistence)
    mse_climatology = mse(np.broadcast_to(climatology, truth.shape))
    with np.errstate(invalid="ignore", divide="ignore"):
        skill_p = 1.0 - mse_forecast / mse_persistence if mse_persistence > 0 else float("nan")
        skill_c = 1.0 - mse_forecast / mse_climatology if mse_climatology > 0 else float("nan")
    return HeldoutSkill(
        forecast_r=anomaly_correlation(forecast_a, truth, climatology),
        persistence_r=anomaly_correlation(persistence, truth, climatology),
        climatology_r=0.0,
        forecast_rmse=math.sqrt(mse_forecast),
        persistence_rmse=math.sqrt(mse_persistence),
        climatology_rmse=math.sqrt(mse_climatology),
        skill_vs_persistence=skill_p,
        skill_vs_climatology=skill_c,
    )


# ----------------------------------------------------------------------------------------------
# ensemble diagnostics (member axis = second to last: (..., member, region))


def _ensemble_and_truth(ensemble, truth) -> tuple[np.ndarray, np.ndarray]:
    ens = _as_array("ensemble", ensemble, (2, 3))
    tru = _as_array("truth", truth, (1, 2))
    expected = ens.shape[:-2] + ens.shape[-1:]
    if tru.shape != expected:
        raise AssimilationError(
            f"truth must have the ensemble's shape without the member axis, {expected} for ensemble "
            f"{ens.shape} (time, member, region), got {tru.shape}"
        )
    if ens.shape[-2] < 2:
        raise AssimilationError(f"ensemble diagnostics need at least 2 members, got {ens.shape[-2]}")
    return ens, tru


def ensemble_rmse_spread(ensemble, truth) -> tuple[float, float]:
    """RMSE of the ensemble mean and the ensemble spread, both pooled over time and regions.

    ``rmse = sqrt(mean (mean_m x_m - truth)^2)``, ``spread = sqrt(mean var_m(x_m))`` (ddof = 1). For
    a calibrated ensemble of M members, ``rmse ~ spread * sqrt((M + 1) / M)``.

    Parameters
    ----------
    ensemble : array-like, shape (time, member, region) or (member, region)
    truth : array-like, shape (time, region) or (region,)
    """
    ens, tru = _ensemble_and_truth(ensemble, truth)
    rmse = math.sqrt(float(np.mean((ens.mean(axis=-2) - tru) ** 2)))
    spread = math.sqrt(float(np.mean(ens.var(axis=-2, ddof=1))))
    return rmse, spread


def rmse_spread_per_frame(ensemble, truth) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: RMSE of the ensemble mean and the ensemble spread, pooled over regions.

    ``rmse[t] = sqrt(nanmean_r (mean_m x_m - truth)^2)``, ``spread[t] = sqrt(nanmean_r var_m(x_m))``
    (ddof = 1; NaN observations are left out of the RMSE, a frame with none is NaN). The series behind
    :func:`ensemble_rmse_spread`'s pooled values (the report's "RMSE vs spread" figure).

    Parameters
    ----------
    ensemble : array-like, shape (time, member, region)
    truth : array-like, shape (time, region)
    """
    ens = _as_array("ensemble", ensemble, 3)
    tru = np.asarray(truth, dtype=np.float64)  # NaN allowed: a frame's missing regions are skipped
    _ensemble_and_truth(ens, np.where(np.isfinite(tru), tru, 0.0))
    rmse = np.sqrt(np.nanmean((ens.mean(axis=1) - tru) ** 2, axis=1))
    spread = np.sqrt(np.nanmean(ens.var(axis=1, ddof=1), axis=1))
    return rmse, spread


def crps_ensemble(ensemble, truth) -> np.ndarray:
    """Continuous ranked probability score of an ensemble forecast, per (time, region).

    The standard ensemble estimator (Gneiting & Raftery 2007, eq. 21, the CRPS of the empirical
    distribution of the members)::

        CRPS = mean_m |x_m - y| - 1 / (2 M^2) sum_{m, m'} |x_m - x_m'|

    computed in O(M log M) from the sorted members. Same units as the data; lower is better.
    """
    ens, tru = _ensemble_and_truth(ensemble, truth)
    n_members = ens.shape[-2]
    term_obs = np.abs(ens - tru[..., None, :]).mean(axis=-2)
    ordered = np.sort(ens, axis=-2)
    weights = (2 * np.arange(1, n_members + 1) - n_members - 1).astype(np.float64)
    pair_sum = 2.0 * np.tensordot(weights, np.moveaxis(ordered, -2, 0), axes=(0, 0))  # sum |x_m - x_m'|
    return term_obs - pair_sum / (2.0 * n_members**2)


def rank_histogram(ensemble, truth) -> np.ndarray:
    """Rank histogram (Talagrand diagram): counts of the truth's rank among the members.

    The rank is the number of members strictly below the truth, so M members give M + 1 bins;
    a calibrated ensemble gives a flat histogram. Returns int64 counts of shape (M + 1,).
    """
    ens, tru = _ensemble_and_truth(ensemble, truth)
    ranks = (ens < tru[..., None, :]).sum(axis=-2)
    return np.bincount(ranks.ravel(), minlength=ens.shape[-2] + 1).astype(np.int64)


#: Largest |BOLD| (fractional signal change) a Balloon-Windkessel state on its attractor gives:
#: 0.045 at 20 Hz, about 0.1 at any rate a spiking region reaches; 0.5 leaves a wide margin.
PHYSIOLOGICAL_BOLD = 0.5


def haemodynamic_warning(bold_forecast, limit: float = PHYSIOLOGICAL_BOLD) -> str | None:
    """A warning when the forecast BOLD leaves the physiological range, else None.

    An assimilation whose model cannot reach the data (e.g. rates too high for the scaled BOLD even
    at the lowest input) drives the Balloon states it writes back off their attractor, to the
    floors of f, v, q, where the BOLD equation gives hundreds of percent: the filter has lost the
    data, whatever the other metrics say. ``bold_forecast`` is any array of model BOLD.
    """
    values = np.asarray(bold_forecast, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    extreme = float(np.max(np.abs(finite)))
    if extreme <= limit:
        return None
    share = float(np.mean(np.abs(finite) > limit))
    return (
        f"the model BOLD left the physiological range (|BOLD| up to {extreme:.3g}, {100 * share:.1f} % of values "
        f"beyond {limit}): the analysis pushed the haemodynamic states off their attractor and the twin does not "
        "follow the data; typically the rates are too high for the scaled BOLD even at the lowest input "
        "(docs/twin.md, Ablation)"
    )


def innovation_statistics(innovation_mean, forecast_obs_spread, obs_variance: float) -> dict[str, float]:
    """Consistency of the filter's innovations (per window and location, from the analysis diagnostics).

    For a consistent filter the innovation ``d = y - mean Hx`` has zero mean and variance
    ``var(Hx) + R``, so the normalised innovation squared ``NIS = mean d^2 / (spread^2 + R)`` is about 1
    (> 1: the ensemble is under-dispersed, < 1: over-dispersed).

    Parameters
    ----------
    innovation_mean, forecast_obs_spread : array-like, same shape (e.g. (window, location))
        ``AnalysisResult.innovation_mean`` and ``.forecast_obs_spread`` stacked over windows.
    obs_variance : float
        The R the filter used (> 0).

    Returns
    -------
    dict with ``innovation_mean`` (mean d), ``innovation_rms`` (sqrt mean d^2) and ``innovation_nis``.
    """
    innovation = _as_array("innovation_mean", innovation_mean, (1, 2))
    spread = _as_array("forecast_obs_spread", forecast_obs_spread, (1, 2))
    if innovation.shape != spread.shape:
        raise AssimilationError(
            f"innovation_mean {innovation.shape} and forecast_obs_spread {spread.shape} must have the same shape"
        )
    if not (np.isfinite(obs_variance) and obs_variance > 0):
        raise AssimilationError(f"obs_variance must be the positive R the filter used, got {obs_variance!r}")
    return {
        "innovation_mean": float(innovation.mean()),
        "innovation_rms": math.sqrt(float(np.mean(innovation**2))),
        "innovation_nis": float(np.mean(innovation**2 / (spread**2 + obs_variance))),
    }


# ----------------------------------------------------------------------------------------------
# everything at once


def _json_float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@dataclass(frozen=True)
class FidelityMetrics:
    """All fidelity metrics of one run; arrays for the store's ``/metrics`` variables plus scalars.

    Attributes
    ----------
    region_r, region_r_lag1, region_r_best : ndarray (region,) or None
        Re-simulation vs observed, lag 0, lag 1 TR and the better of the two.
    fc_empirical, fc_simulated : ndarray (region, region) or None
    scalars : dict
        Scalar metrics by their twin-store names (see :func:`summarize`).
    """

    region_r: np.ndarray | None = None
    region_r_lag1: np.ndarray | None = None
    region_r_best: np.ndarray | None = None
    fc_empirical: np.ndarray | None = None
    fc_simulated: np.ndarray | None = None
    scalars: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The scalars as JSON types (NaN becomes None, the rank histogram a list of ints)."""
        out: dict[str, Any] = {}
        for key, value in self.scalars.items():
            if isinstance(value, np.ndarray):
                out[key] = [int(v) for v in value]
            elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                out[key] = int(value)
            else:
                out[key] = _json_float(value)
        return out


def _input_mask(input_regions, n_regions: int) -> np.ndarray:
    if input_regions is None:
        return np.ones(n_regions, dtype=bool)
    mask = np.asarray(input_regions)
    if mask.dtype != bool:
        indices = mask.astype(np.int64)
        if indices.ndim != 1 or (indices < 0).any() or (indices >= n_regions).any():
            raise AssimilationError(f"input_regions must be a bool mask or indices of the {n_regions} regions")
        mask = np.zeros(n_regions, dtype=bool)
        mask[indices] = True
    if mask.shape != (n_regions,) or not mask.any():
        raise AssimilationError(
            f"input_regions must select at least one of the {n_regions} regions (bool mask of shape ({n_regions},))"
        )
    return mask


def compute_fidelity(
    observed,
    *,
    resimulated=None,
    forecast_ensemble=None,
    input_regions=None,
    warmup_frames: int = 0,
    heldout_forecast=None,
    heldout_start: int | None = None,
    innovations=None,
    innovation_spread=None,
    obs_variance: float | None = None,
) -> FidelityMetrics:
    """Compute every metric whose inputs are given.

    Parameters
    ----------
    observed : array-like, shape (T, region)
        Observed BOLD (as the filter saw it, i.e. scaled) of all regions.
    resimulated : array-like, shape (T, region), optional
        BOLD of the re-simulation on the same frames -> ``region_r``, FC metrics and the
        ``resim_*`` scalars.
    forecast_ensemble : array-like, shape (T, member, region), optional
        Per-window forecast BOLD of the ensemble -> ``forecast_r``, ``rmse``, ``spread``, ``crps``,
        ``rank_histogram`` over the input (assimilated) regions.
    input_regions : bool mask (region,) or int indices, optional
        The assimilated/input regions; default all.
    warmup_frames : int
        Leading frames (warm-up windows) left out of every score.
    heldout_forecast : array-like, shape (T_h, region), optional
        Free forecast of frames ``heldout_start ..`` -> ``heldout_r``, ``persistence_r``,
        ``climatology_r`` (anomaly correlations) and their RMSEs.
    heldout_start : int, optional
        First held-out frame (required with ``heldout_forecast``).
    innovations, innovation_spread : array-like, shape (window, location), optional
        The analysis diagnostics ``innovation_mean`` and ``forecast_obs_spread`` of the analysed
        windows, with ``obs_variance`` (R) -> ``innovation_mean``, ``innovation_rms``,
        ``innovation_nis`` (:func:`innovation_statistics`).
    """
    obs = _as_array("observed", observed, 2)
    n_frames, n_regions = obs.shape
    mask = _input_mask(input_regions, n_regions)
    start = _drop_warmup(warmup_frames, n_frames)
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}

    if resimulated is not None:
        resim = _as_array("resimulated", resimulated, 2)
        _same_shape("resimulated", resim, "observed", obs)
        corr = region_correlation(resim, obs, warmup_frames=start)
        arrays.update(region_r=corr.r_lag0, region_r_lag1=corr.r_lag1, region_r_best=corr.best)
        scalars["resim_region_r"] = _nanmean(corr.r_lag0)
        scalars["resim_region_r_best"] = _nanmean(corr.best)
        scalars["resim_input_r"] = _nanmean(corr.r_lag0[mask])
        if not mask.all():
            scalars["resim_noninput_r"] = _nanmean(corr.r_lag0[~mask])
        if n_regions >= 2:
            fc_emp = functional_connectivity(obs, warmup_frames=start)
            fc_sim = functional_connectivity(resim, warmup_frames=start)
            arrays.update(fc_empirical=fc_emp, fc_simulated=fc_sim)
            scalars["fc_similarity"] = fc_similarity(fc_sim, fc_emp)
            scalars["fnorm"] = fc_frobenius_distance(fc_sim, fc_emp)

    if forecast_ensemble is not None:
        ens = _as_array("forecast_ensemble", forecast_ensemble, 3)
        if ens.shape[0] != n_frames or ens.shape[2] != n_regions:
            raise AssimilationError(
                f"forecast_ensemble {ens.shape} must be (time, member, region) with time and regions of "
                f"observed {obs.shape}"
            )
        ens_in, obs_in = ens[start:, :, mask], obs[start:, mask]
        scalars["forecast_r"] = _nanmean(pearson_columns(ens_in.mean(axis=1), obs_in))
        scalars["rmse"], scalars["spread"] = ensemble_rmse_spread(ens_in, obs_in)
        scalars["crps"] = float(crps_ensemble(ens_in, obs_in).mean())
        scalars["rank_histogram"] = rank_histogram(ens_in, obs_in)

    if heldout_forecast is not None:
        if heldout_start is None:
            raise AssimilationError("heldout_start (first held-out frame) is required with heldout_forecast")
        skill = heldout_skill(heldout_forecast, obs, heldout_start, warmup_frames=start)
        scalars.update(
            heldout_r=skill.forecast_r,
            persistence_r=skill.persistence_r,
            climatology_r=skill.climatology_r,
            heldout_rmse=skill.forecast_rmse,
            persistence_rmse=skill.persistence_rmse,
            climatology_rmse=skill.climatology_rmse,
        )
    if innovations is not None:
        if innovation_spread is None or obs_variance is None:
            raise AssimilationError("innovation_spread and obs_variance are required with innovations")
        scalars.update(innovation_statistics(innovations, innovation_spread, obs_variance))
    return FidelityMetrics(**arrays, scalars=scalars)


def summarize(observed, **inputs) -> dict[str, Any]:
    """JSON-safe scalar metrics with the twin-store names (``/metrics`` attrs).

    Takes the arguments of :func:`compute_fidelity`. Keys present depend on the inputs given:

    - re-simulation: ``resim_region_r`` (mean lag-0 r over all regions), ``resim_region_r_best``
      (mean of the better of lag 0/1), ``resim_input_r``, ``resim_noninput_r`` (when some regions are
      not inputs), ``fc_similarity``, ``fnorm``;
    - forecast ensemble (input regions): ``forecast_r`` (mean r of the ensemble-mean forecast),
      ``rmse``, ``spread``, ``crps``, ``rank_histogram`` (list of M + 1 counts);
    - held-out forecast: ``heldout_r``, ``persistence_r``, ``climatology_r`` (anomaly correlations),
      ``heldout_rmse``, ``persistence_rmse``, ``climatology_rmse``;
    - innovations: ``innovation_mean``, ``innovation_rms``, ``innovation_nis``.

    Undefined values (NaN) are None.
    """
    return compute_fidelity(observed, **inputs).to_json()
