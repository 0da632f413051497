"""The ensemble Kalman filter of Vw-dHMDA, alone: it knows nothing about neurons (docs/model.md §5).

The driver hands it, per TR window, the forecast ensemble of states ``(member, location,
component)`` and of predicted observations ``(member, location)``, plus the observed values
``(location,)``; it returns the analysed states and diagnostics.  Each location (voxel or
region) is updated from its own scalar observation only (a scalar EnKF per location), then
the increments are blended with their network average (the "diffusion" of Vw-dHMDA)::

    increment_v = rho * local_increment_v + (1 - rho) * mean_u local_increment_u

Two variants of the local update:

``"perturbed"``
    the stochastic EnKF with perturbed observations (Burgers, van Leeuwen & Evensen 1998),
    ``x_m += K (y + sqrt(R) eps_m - Hx_m)``, as in the DTB;
``"sqrt"``
    the serial ensemble square-root filter of Whitaker & Hamill (2002, MWR 130, 1913): the mean
    moves by ``K (y - mean Hx)`` and the anomalies by ``-alpha K (Hx_m - mean Hx)`` with
    ``alpha = 1 / (1 + sqrt(R / (var Hx + R)))``; no random numbers, and the analysed
    ensemble has exactly the Kalman posterior covariance of the given forecast ensemble.

Hyperparameters are estimated in an unbounded space ``h~`` with the bounded-logit transform
``h = l + (u - l) sigmoid(h~ / scale)`` and evolve by a Gaussian random walk between windows.

Every random number comes from :func:`dtb.philox.standard_normals` keyed by
``(settings.seed, Stream.ASSIMILATION, purpose, window)`` with the member index as row and the
location (or hyperparameter) index as column, so a resumed run repeats them bitwise and the
result of a window does not depend on which windows were computed before it.

All tensors are float64 torch tensors with the ensemble axis first; they may live on any device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch

from dtb import fpmath
from dtb.errors import AssimilationError, ParameterError
from dtb.philox import Stream, standard_normals
from dtb.validation import (
    check_choice,
    check_in_range,
    check_non_negative,
    check_positive,
    check_seed,
    check_unknown_keys,
)

__all__ = [
    "EnKFSettings",
    "AnalysisResult",
    "NoisePurpose",
    "to_bounded",
    "to_unbounded",
    "initial_ensemble",
    "random_walk",
    "analysis",
]

_VARIANTS = ("perturbed", "sqrt")


class NoisePurpose(enum.IntEnum):
    """Purpose tags of the filter's random streams (counter word c3 = ASSIMILATION + 16 * purpose)."""

    RANDOM_WALK = 0  #: random-walk process noise of h~ (row = member, column = hyperparameter)
    OBSERVATION = 1  #: observation perturbations (row = member, column = location)
    INITIAL_SHUFFLE = 2  #: shuffling of the initial ensemble (row = member, column = hyperparameter)


@dataclass(frozen=True, kw_only=True)
class EnKFSettings:
    """Named knobs of the filter (validated on construction).

    Parameters
    ----------
    obs_variance : float
        Observation-error variance R (BOLD units squared); DTB default 1e-8. Must be > 0.
    rho : float
        Diffusion blend in [0, 1]: 1 = purely local update, 0 = every location gets the
        network-average increment. DTB: 0.8 (rest), 0.5 (task).
    inflation : float
        Multiplicative factor (>= 1) applied to the forecast anomalies (of states and predicted
        observations) before the update; 1 = no inflation.
    random_walk_std : float
        Standard deviation sqrt(sigma_hp) of the random-walk step of h~ per window (in h~ units,
        dimensionless); >= 0.
    variant : {"perturbed", "sqrt"}
        Stochastic EnKF with perturbed observations, or the deterministic serial square-root filter.
    seed : int
        Key of the filter's random streams, in [0, 2**64).
    """

    obs_variance: float = 1e-8
    rho: float = 0.8
    inflation: float = 1.0
    random_walk_std: float = 1.0
    variant: Literal["perturbed", "sqrt"] = "perturbed"
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(
            self.obs_variance,
            "EnKF setting obs_variance (R)",
            fix="use a small positive value such as 1e-8 for nearly exact observations",
        )
        check_in_range(self.rho, "EnKF setting rho", 0.0, 1.0)
        check_in_range(self.inflation, "EnKF setting inflation", 1.0, fix="1 = no inflation")
        check_non_negative(self.random_walk_std, "EnKF setting random_walk_std")
        check_choice(self.variant, "EnKF setting variant", _VARIANTS)
        check_seed(self.seed, "EnKF setting seed")

    @classmethod
    def from_mapping(cls, values: dict) -> EnKFSettings:
        """Build from a config mapping (e.g. the ``assimilation.filter`` section of the YAML).

        Raises
        ------
        ConfigError
            For keys that are not settings (the message lists the accepted ones).
        ParameterError
            For out-of-range values.
        """
        check_unknown_keys(values, [f.name for f in fields(cls)], what="EnKF setting")
        return cls(**values)


@dataclass(frozen=True)
class AnalysisResult:
    """Output of :func:`analysis` for one window.

    Attributes
    ----------
    state : torch.Tensor, shape (member, location, component)
        Analysed states (forecast after inflation plus the blended increment).
    increment : torch.Tensor, shape (member, location, component)
        The blended increment that was added.
    innovation_mean : torch.Tensor, shape (location,)
        Observed value minus the ensemble mean of the predicted observation.
    forecast_obs_spread : torch.Tensor, shape (location,)
        Ensemble standard deviation (ddof = 1) of the predicted observations, after inflation.
    gain : torch.Tensor, shape (location, component)
        Local Kalman gain ``cov(x, Hx) / (var(Hx) + R)`` per location and state component.
    """

    state: torch.Tensor
    increment: torch.Tensor
    innovation_mean: torch.Tensor
    forecast_obs_spread: torch.Tensor
    gain: torch.Tensor


# --------------------------------------------------------------------------------------------
# bounded-logit transform


def _bounds(lower, upper, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lower_t = torch.as_tensor(lower, dtype=torch.float64, device=like.device)
    upper_t = torch.as_tensor(upper, dtype=torch.float64, device=like.device)
    if not (torch.isfinite(lower_t).all() and torch.isfinite(upper_t).all()):
        raise ParameterError(f"hyperparameter bounds must be finite, got lower={lower!r}, upper={upper!r}")
    if not bool((lower_t < upper_t).all()):
        raise ParameterError(f"hyperparameter bounds need lower < upper, got lower={lower!r}, upper={upper!r}")
    return lower_t, upper_t


def _check_scale(scale: float) -> None:
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ParameterError(f"transform scale must be a positive number, got {scale!r}")


def to_bounded(h_tilde, lower, upper, scale: float = 10.0) -> torch.Tensor:
    """Map unbounded ``h~`` to a hyperparameter value ``h = l + (u - l) sigmoid(h~ / scale)``.

    Parameters
    ----------
    h_tilde : array-like, shape (..., P)
        Unbounded values (dimensionless).
    lower, upper : float or array-like broadcastable to (P,)
        Bounds ``l < u`` in the hyperparameter's units (e.g. current units for I_ext).
    scale : float
        Logit scale (10 in the DTB).

    Returns
    -------
    torch.Tensor (float64)
        ``h`` in (l, u), in the hyperparameter's units.
    """
    h_tilde = torch.as_tensor(h_tilde, dtype=torch.float64)
    _check_scale(scale)
    lower_t, upper_t = _bounds(lower, upper, h_tilde)
    return lower_t + (upper_t - lower_t) * fpmath.sigmoid(h_tilde / scale)


def to_unbounded(h, lower, upper, scale: float = 10.0) -> torch.Tensor:
    """Inverse of :func:`to_bounded`: ``h~ = scale * logit((h - l) / (u - l))``.

    Raises
    ------
    ParameterError
        If any value of ``h`` is not strictly inside ``(l, u)`` (the logit is infinite there).
    """
    h = torch.as_tensor(h, dtype=torch.float64)
    _check_scale(scale)
    lower_t, upper_t = _bounds(lower, upper, h)
    inside = (h > lower_t) & (h < upper_t)
    if not bool(inside.all()):
        h_b, inside_b = torch.broadcast_tensors(h, inside)
        bad = h_b[~inside_b]
        raise ParameterError(
            f"hyperparameter values must lie strictly inside the bounds (lower={lower!r}, upper={upper!r}) "
            f"to be transformed; got e.g. {float(bad.flatten()[0])!r}; widen the bounds or clip the values"
        )
    fraction = (h - lower_t) / (upper_t - lower_t)
    return scale * fpmath.logit(fraction)


# --------------------------------------------------------------------------------------------
# ensemble generation and process noise


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or not 0 <= int(window) < 2**32:
        raise AssimilationError(f"window must be an integer index in [0, 2**32), got {window!r}")
    return int(window)


def initial_ensemble(n_members: int, lower, upper, seed: int, scale: float = 10.0) -> torch.Tensor:
    """Initial unbounded ensemble ``h~`` of shape (member, P).

    For each hyperparameter the members take values evenly spaced (``linspace``, end points
    included) over the middle third ``[l + (u - l)/3, u - (u - l)/3]`` of its bounds, in h units,
    in an order shuffled independently per hyperparameter by Philox numbers keyed by ``seed``
    (deterministic), then mapped to h~ with :func:`to_unbounded`.

    Parameters
    ----------
    n_members : int
        Ensemble size M (>= 2).
    lower, upper : float or array-like of shape (P,)
        Bounds of each hyperparameter (its units); a scalar pair means P = 1.
    seed : int
        Key of the shuffle, in [0, 2**64).
    scale : float
        Logit scale of the transform.
    """
    if isinstance(n_members, bool) or not isinstance(n_members, (int, np.integer)) or n_members < 2:
        raise AssimilationError(f"n_members must be an integer >= 2 for an ensemble filter, got {n_members!r}")
    lower_t = torch.atleast_1d(torch.as_tensor(lower, dtype=torch.float64))
    upper_t = torch.atleast_1d(torch.as_tensor(upper, dtype=torch.float64))
    if lower_t.ndim != 1 or lower_t.shape != upper_t.shape:
        raise ParameterError(
            f"lower and upper must be scalars or 1-D arrays of equal length (one per hyperparameter), "
            f"got shapes {tuple(lower_t.shape)} and {tuple(upper_t.shape)}"
        )
    lower_t, upper_t = _bounds(lower_t, upper_t, lower_t)
    n_params = lower_t.shape[0]
    width = upper_t - lower_t
    even = torch.linspace(0.0, 1.0, int(n_members), dtype=torch.float64)[:, None]
    grid = lower_t + width / 3.0 + even * (width / 3.0)  # (M, P), each column ascending
    keys = standard_normals(int(seed), Stream.ASSIMILATION, NoisePurpose.INITIAL_SHUFFLE, 0, (int(n_members), n_params))
    order = torch.argsort(keys, dim=0, stable=True)
    shuffled = torch.gather(grid, 0, order)
    return to_unbounded(shuffled, lower_t, upper_t, scale)


def random_walk(h_tilde, settings: EnKFSettings, window: int) -> torch.Tensor:
    """Random-walk forecast of the unbounded hyperparameters: ``h~ + random_walk_std * N(0, 1)``.

    Parameters
    ----------
    h_tilde : torch.Tensor, shape (member, P)
        Unbounded hyperparameters (dimensionless).
    settings : EnKFSettings
        Uses ``random_walk_std`` and ``seed``.
    window : int
        Index of the TR window (keys the random numbers).

    Returns
    -------
    torch.Tensor, shape (member, P), float64, on the input's device.
    """
    h_tilde = _as_tensor("h_tilde", h_tilde, 2)
    window = _check_window(window)
    noise = standard_normals(settings.seed, Stream.ASSIMILATION, NoisePurpose.RANDOM_WALK, window, h_tilde.shape)
    return h_tilde + settings.random_walk_std * noise.to(h_tilde.device)


# --------------------------------------------------------------------------------------------
# analysis


def _as_tensor(name: str, value, ndim: int, device: torch.device | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float64, device=device)
    if tensor.ndim != ndim:
        raise AssimilationError(f"{name} must be a {ndim}-D array, got shape {tuple(tensor.shape)}")
    # one cheap reduction first: any NaN or inf makes the sum non-finite; the exact count (which
    # also rules out a mere overflow of the sum) only runs then
    if tensor.numel() and not bool(torch.isfinite(tensor.sum())):
        count = int((~torch.isfinite(tensor)).sum())
    else:
        count = 0
    if count:
        raise AssimilationError(
            f"{name} contains {count} NaN or infinite value(s); check the input (e.g. clean and scale the "
            "BOLD, or a diverged ensemble member) before the analysis"
        )
    return tensor


def analysis(state, predicted_obs, observed, settings: EnKFSettings, window: int) -> AnalysisResult:
    """One Vw-dHMDA analysis step: per-location scalar EnKF updates, blended with their average.

    Parameters
    ----------
    state : torch.Tensor, shape (M, L, S)
        Forecast states: per member, per observed location, S components (e.g. the driver packs
        [h~, rate, s, f, v, q, y]). Only these components are updated.
    predicted_obs : torch.Tensor, shape (M, L)
        Forecast of each location's observation (e.g. its BOLD) per member.
    observed : array-like, shape (L,)
        Observed values (same units as ``predicted_obs``).
    settings : EnKFSettings
        Filter settings.
    window : int
        Index of the TR window (keys the observation perturbations).

    Returns
    -------
    AnalysisResult

    Notes
    -----
    With forecast anomalies (after inflation ``lambda``) ``X'_m = lambda (x_m - mean x)`` and
    ``Y'_m = lambda (Hx_m - mean Hx)``, per location v::

        K_v = sum_m X'_m Y'_m / (M - 1) / (sum_m Y'_m^2 / (M - 1) + R)
        perturbed: local_m = K_v (y_v + sqrt(R) eps_mv - Hx_m)
        sqrt:      local_m = K_v (y_v - mean Hx) - alpha_v K_v Y'_m,
                   alpha_v = 1 / (1 + sqrt(R / (var Hx + R)))

    then ``increment_v = rho local_v + (1 - rho) mean_u local_u`` and
    ``x_a = mean x + X' + increment``. The driver clips physical states (e.g. f, v, q >= 1e-5)
    and decides what to write back; the filter does not.
    """
    state_t = _as_tensor("state", state, 3)
    device = state_t.device
    predicted_t = _as_tensor("predicted_obs", predicted_obs, 2, device)
    observed_t = _as_tensor("observed", observed, 1, device)
    window = _check_window(window)
    n_members, n_locations, _ = state_t.shape
    if n_members < 2:
        raise AssimilationError(f"the ensemble needs at least 2 members, got {n_members}; increase n_members")
    if predicted_t.shape != (n_members, n_locations):
        raise AssimilationError(
            f"predicted_obs must have shape (member, location) = {(n_members, n_locations)} to match state "
            f"{tuple(state_t.shape)}, got {tuple(predicted_t.shape)}"
        )
    if observed_t.shape != (n_locations,):
        raise AssimilationError(
            f"observed must have shape (location,) = ({n_locations},) to match state {tuple(state_t.shape)}, "
            f"got {tuple(observed_t.shape)}"
        )

    # sums over members and locations in index order (fpmath.ordered_sum), never a library
    # reduction or matrix product: their order, and so the last bits, depend on the machine
    state_mean = fpmath.ordered_mean(state_t, 0)  # (L, S)
    obs_mean = fpmath.ordered_mean(predicted_t, 0)  # (L,)
    state_anom = state_t - state_mean  # (M, L, S)
    obs_anom = predicted_t - obs_mean  # (M, L)
    forecast = state_t
    if settings.inflation != 1.0:
        state_anom *= settings.inflation
        obs_anom *= settings.inflation
        forecast = state_mean + state_anom

    obs_var = fpmath.ordered_sum(obs_anom * obs_anom, 0) / (n_members - 1)  # (L,)
    cross_cov = fpmath.ordered_sum(state_anom * obs_anom[:, :, None], 0) / (n_members - 1)  # (L, S)
    total_var = obs_var + settings.obs_variance
    gain = cross_cov / total_var[:, None]  # (L, S)
    innovation_mean = observed_t - obs_mean  # (L,)

    if settings.variant == "perturbed":
        eps = standard_normals(
            settings.seed, Stream.ASSIMILATION, NoisePurpose.OBSERVATION, window, (n_members, n_locations)
        ).to(device)
        perturbed = observed_t + np.sqrt(settings.obs_variance) * eps  # (M, L)
        member_innovation = perturbed - (obs_mean + obs_anom)  # (M, L)
        local = gain[None] * member_innovation[:, :, None]
    else:
        alpha = 1.0 / (1.0 + torch.sqrt(settings.obs_variance / total_var))  # (L,)
        local = gain[None] * (innovation_mean[None, :, None] - alpha[None, :, None] * obs_anom[:, :, None])

    network_mean = fpmath.ordered_mean(local, 1)[:, None, :]  # (M, 1, S)
    # two products and a sum, each rounded: torch's add_(alpha=) is a fused multiply-add on AVX2/AVX-512
    # and not on other CPUs, so its last bit depends on the machine
    increment = settings.rho * local + (1.0 - settings.rho) * network_mean
    return AnalysisResult(
        state=forecast + increment,
        increment=increment,
        innovation_mean=innovation_mean,
        forecast_obs_spread=torch.sqrt(obs_var),
        gain=gain,
    )
