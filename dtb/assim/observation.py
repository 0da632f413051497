"""Observation preparation for Vw-dHMDA: cleaning of empirical BOLD and its scaling to the model's
BOLD range, as an explicit, recorded and replaceable step (docs/model.md §5).

Cleaning (:func:`clean_bold`) is nilearn's :func:`nilearn.signal.clean`: linear detrending and a
Butterworth band-pass (0.01-0.1 Hz by default), no standardisation.

Scaling maps cleaned BOLD (arbitrary units) onto the model's dimensionless BOLD range. The DTB used a
hard-coded min-max map to [0.02, 0.05] (rest) or [0.05, 0.08] (task); here every scaling is an object
with one small protocol (:class:`ObservationScaling`)::

    fitted = get_scaling("minmax", low=0.02, high=0.05).fit(bold_clean)   # learns data range
    observed = fitted.apply(bold_clean)                                   # what the filter sees
    back = fitted.inverse(model_bold)                                     # model BOLD in data units
    provenance = fitted.describe()                                        # JSON dict for the store

and :func:`scaling_from_description` rebuilds the fitted scaling from that dict, so a report or a
re-simulation can invert exactly what the assimilation used.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from dtb.errors import ConfigError, InputDataError, ParameterError
from dtb.validation import check_bool, check_in_range, check_number, check_positive, check_unknown_keys, unknown_keys

__all__ = [
    "clean_bold",
    "ObservationScaling",
    "MinMaxScaling",
    "ZScoreScaling",
    "IdentityScaling",
    "SCALINGS",
    "get_scaling",
    "scaling_from_description",
]


def _as_bold(bold, name: str = "bold") -> np.ndarray:
    """Validate a (time, region) BOLD array: 2-D, float, finite."""
    array = np.asarray(bold, dtype=np.float64)
    if array.ndim != 2:
        raise InputDataError(
            f"{name} must be a 2-D array (time, region), got shape {array.shape}; "
            "reshape a single region's series with bold[:, None]"
        )
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))
        t, region = (int(i) for i in bad[0])
        raise InputDataError(
            f"{name} contains {len(bad)} NaN or infinite value(s) (first at time index {t}, region {region}); "
            "drop or interpolate those frames/regions before assimilation"
        )
    return array


# ----------------------------------------------------------------------------------------------
# cleaning


def clean_bold(
    bold,
    tr_s: float,
    *,
    low_hz: float | None = 0.01,
    high_hz: float | None = 0.1,
    detrend: bool = True,
) -> np.ndarray:
    """Detrend and band-pass BOLD time series with :func:`nilearn.signal.clean`.

    Parameters
    ----------
    bold : array-like, shape (time, region)
        Raw BOLD series (any units), one column per region or voxel.
    tr_s : float
        Repetition time in seconds (> 0).
    low_hz : float or None
        High-pass cut-off in Hz (0.01 by default); None = no high-pass.
    high_hz : float or None
        Low-pass cut-off in Hz (0.1 by default), below the Nyquist frequency 1 / (2 tr_s);
        None = no low-pass.
    detrend : bool
        Remove a linear trend first (nilearn's ``detrend``).

    Returns
    -------
    numpy.ndarray, shape (time, region), float64
        Cleaned series, not standardised (same units as ``bold``, mean removed by the filter).

    Raises
    ------
    InputDataError
        NaN/inf values, wrong shape, or too few time points for the filter.
    ParameterError
        TR <= 0, cut-offs not positive, inverted or above the Nyquist frequency.
    """
    array = _as_bold(bold)
    if isinstance(tr_s, bool) or not isinstance(tr_s, (int, float, np.number)) or not np.isfinite(tr_s) or tr_s <= 0:
        raise ParameterError(f"tr_s (repetition time) must be a positive number of seconds, got {tr_s!r}")
    nyquist = 0.5 / float(tr_s)
    for name, value in (("low_hz", low_hz), ("high_hz", high_hz)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ParameterError(f"{name} must be a positive frequency in Hz or None, got {value!r}")
        if value is not None and value >= nyquist:
            raise ParameterError(
                f"{name} = {value} Hz is not below the Nyquist frequency {nyquist:.4g} Hz of TR = {tr_s} s; "
                f"lower it or pass {name}=None to skip that side of the band-pass"
            )
    if low_hz is not None and high_hz is not None and not low_hz < high_hz:
        raise ParameterError(f"band-pass needs low_hz < high_hz, got low_hz={low_hz}, high_hz={high_hz}")
    if array.shape[0] < 3:
        raise InputDataError(f"bold has {array.shape[0]} time points; cleaning needs at least 3")

    from nilearn.signal import clean  # nilearn is heavy to import; only the cleaning step needs it

    try:
        return clean(
            array,
            detrend=detrend,
            standardize=None,
            filter="butterworth" if (low_hz is not None or high_hz is not None) else False,
            low_pass=high_hz,
            high_pass=low_hz,
            t_r=float(tr_s),
        )
    except ValueError as exc:
        match = re.search(r"padlen, which is (\d+)", str(exc))
        if match is None:
            raise
        raise InputDataError(
            f"bold has {array.shape[0]} time points, too few for the {low_hz}-{high_hz} Hz Butterworth "
            f"band-pass (it needs more than {match.group(1)}); use a longer run or widen/skip the band "
            "(low_hz=None or high_hz=None)"
        ) from exc


# ----------------------------------------------------------------------------------------------
# scalings


@runtime_checkable
class ObservationScaling(Protocol):
    """The protocol every observation scaling follows (all arrays (time, region))."""

    name: ClassVar[str]

    def fit(self, bold) -> ObservationScaling:
        """Return a copy fitted to ``bold`` (the data the filter will see)."""

    def apply(self, bold) -> np.ndarray:
        """Map data-unit BOLD to model units."""

    def inverse(self, bold) -> np.ndarray:
        """Map model-unit BOLD back to data units."""

    def describe(self) -> dict[str, Any]:
        """JSON dict: ``method``, its parameters and, once fitted, the fitted values."""


def _check_fitted(scaling, fitted_value, n_regions: int) -> None:
    if fitted_value is None:
        raise ParameterError(
            f"scaling {scaling.name!r} is not fitted; call fitted = scaling.fit(bold) and use the returned object"
        )
    if fitted_value.shape[0] not in (1, n_regions):
        raise InputDataError(
            f"scaling {scaling.name!r} was fitted to {fitted_value.shape[0]} regions, got bold with {n_regions}; "
            "apply it to the same regions it was fitted on"
        )


def _constant_regions(spread: np.ndarray) -> None:
    constant = np.flatnonzero(spread <= 0)
    if constant.size:
        raise InputDataError(
            f"bold region(s) {constant[:10].tolist()} are constant over time and cannot be scaled; "
            "drop them from the observed regions (or use per_region=False)"
        )


def _fitted_array(value) -> np.ndarray | None:
    return None if value is None else np.atleast_1d(np.asarray(value, dtype=np.float64))


@dataclass(frozen=True)
class MinMaxScaling:
    """Min-max map of each region's (or the global) data range onto ``[low, high]`` (DTB rest: 0.02, 0.05).

    Parameters
    ----------
    low, high : float
        Model BOLD range (dimensionless), ``low < high``.
    per_region : bool
        True (default): each region's own min and max; False: one min and max over all regions.
    data_min, data_max : array or None
        Fitted data range, shape (region,) or (1,) for global; None until :meth:`fit`.
    """

    name: ClassVar[str] = "minmax"
    low: float = 0.02
    high: float = 0.05
    per_region: bool = True
    data_min: np.ndarray | None = field(default=None, repr=False, compare=False)
    data_max: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = f"scaling {self.name!r}:"
        low = check_number(self.low, f"{owner} low", error=ConfigError)
        check_in_range(self.high, f"{owner} high", low, low_open=True, error=ConfigError, fix="it needs low < high")
        check_bool(self.per_region, f"{owner} per_region", error=ConfigError)
        object.__setattr__(self, "data_min", _fitted_array(self.data_min))
        object.__setattr__(self, "data_max", _fitted_array(self.data_max))

    def fit(self, bold) -> MinMaxScaling:
        array = _as_bold(bold)
        axis = 0 if self.per_region else None
        data_min = np.atleast_1d(array.min(axis=axis))
        data_max = np.atleast_1d(array.max(axis=axis))
        _constant_regions(data_max - data_min)
        return dataclasses.replace(self, data_min=data_min, data_max=data_max)

    def apply(self, bold) -> np.ndarray:
        array = _as_bold(bold)
        _check_fitted(self, self.data_min, array.shape[1])
        return self.low + (self.high - self.low) * (array - self.data_min) / (self.data_max - self.data_min)

    def inverse(self, bold) -> np.ndarray:
        array = _as_bold(bold)
        _check_fitted(self, self.data_min, array.shape[1])
        return self.data_min + (array - self.low) * (self.data_max - self.data_min) / (self.high - self.low)

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "low": float(self.low),
            "high": float(self.high),
            "per_region": bool(self.per_region),
            "data_min": None if self.data_min is None else self.data_min.tolist(),
            "data_max": None if self.data_max is None else self.data_max.tolist(),
        }


@dataclass(frozen=True)
class ZScoreScaling:
    """Affine map: z-score each region (or globally), then give it the model's mean and SD.

    ``model = target_mean + target_std * (data - data_mean) / data_std`` (sample SD, ddof = 1).
    Unlike min-max it is not set by two extreme frames, so one spike in the data does not squash
    the rest of the series.

    Parameters
    ----------
    target_mean, target_std : float
        Mean and standard deviation of the model BOLD (dimensionless); defaults 0.035 and 0.005
        (centre of the DTB rest range [0.02, 0.05], +-3 SD spanning it).
    per_region : bool
        Per-region (default) or global mean and SD.
    data_mean, data_std : array or None
        Fitted values, shape (region,) or (1,); None until :meth:`fit`.
    """

    name: ClassVar[str] = "zscore"
    target_mean: float = 0.035
    target_std: float = 0.005
    per_region: bool = True
    data_mean: np.ndarray | None = field(default=None, repr=False, compare=False)
    data_std: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = f"scaling {self.name!r}:"
        check_number(self.target_mean, f"{owner} target_mean", error=ConfigError)
        check_positive(self.target_std, f"{owner} target_std", error=ConfigError)
        check_bool(self.per_region, f"{owner} per_region", error=ConfigError)
        object.__setattr__(self, "data_mean", _fitted_array(self.data_mean))
        object.__setattr__(self, "data_std", _fitted_array(self.data_std))

    def fit(self, bold) -> ZScoreScaling:
        array = _as_bold(bold)
        if array.shape[0] < 2:
            raise InputDataError("bold needs at least 2 time points to fit a z-score scaling")
        axis = 0 if self.per_region else None
        data_mean = np.atleast_1d(array.mean(axis=axis))
        data_std = np.atleast_1d(array.std(axis=axis, ddof=1))
        _constant_regions(data_std)
        return dataclasses.replace(self, data_mean=data_mean, data_std=data_std)

    def apply(self, bold) -> np.ndarray:
        array = _as_bold(bold)
        _check_fitted(self, self.data_mean, array.shape[1])
        return self.target_mean + self.target_std * (array - self.data_mean) / self.data_std

    def inverse(self, bold) -> np.ndarray:
        array = _as_bold(bold)
        _check_fitted(self, self.data_mean, array.shape[1])
        return self.data_mean + (array - self.target_mean) * self.data_std / self.target_std

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "target_mean": float(self.target_mean),
            "target_std": float(self.target_std),
            "per_region": bool(self.per_region),
            "data_mean": None if self.data_mean is None else self.data_mean.tolist(),
            "data_std": None if self.data_std is None else self.data_std.tolist(),
        }


@dataclass(frozen=True)
class IdentityScaling:
    """No scaling: the data are already in model units (twin experiments with synthetic BOLD)."""

    name: ClassVar[str] = "identity"

    def fit(self, bold) -> IdentityScaling:
        _as_bold(bold)
        return self

    def apply(self, bold) -> np.ndarray:
        return _as_bold(bold).copy()

    def inverse(self, bold) -> np.ndarray:
        return _as_bold(bold).copy()

    def describe(self) -> dict[str, Any]:
        return {"method": self.name}


#: Scalings by the name a config string uses.
SCALINGS: dict[str, type] = {cls.name: cls for cls in (MinMaxScaling, ZScoreScaling, IdentityScaling)}

_FITTED_FIELDS = {"data_min", "data_max", "data_mean", "data_std"}


def get_scaling(name: str, **parameters) -> ObservationScaling:
    """An unfitted scaling by registry name (``"minmax"``, ``"zscore"``, ``"identity"``).

    Parameters
    ----------
    name : str
        Registry key (see :data:`SCALINGS`).
    **parameters
        The scaling's parameters (e.g. ``low=0.05, high=0.08`` for task data).

    Raises
    ------
    ConfigError
        Unknown name or parameter; the message lists the accepted ones.
    """
    if name not in SCALINGS:
        raise ConfigError(f"unknown observation scaling {name!r}; choose one of {sorted(SCALINGS)}")
    cls = SCALINGS[name]
    accepted = [f.name for f in dataclasses.fields(cls) if f.name not in _FITTED_FIELDS]
    unknown = unknown_keys(parameters, accepted)
    if unknown:
        raise ConfigError(f"observation scaling {name!r} has no parameter(s) {unknown}; accepted: {accepted}")
    return cls(**parameters)


def scaling_from_description(description: dict[str, Any]) -> ObservationScaling:
    """Rebuild a (fitted) scaling from the dict :meth:`ObservationScaling.describe` returned.

    Raises
    ------
    ConfigError
        The dict has no known ``method`` or unknown keys.
    """
    if not isinstance(description, dict) or "method" not in description:
        raise ConfigError(f"a scaling description must be a dict with a 'method' key, got {description!r}")
    values = dict(description)
    name = values.pop("method")
    if name not in SCALINGS:
        raise ConfigError(f"unknown observation scaling {name!r} in description; choose one of {sorted(SCALINGS)}")
    accepted = {f.name for f in dataclasses.fields(SCALINGS[name])}
    check_unknown_keys(values, accepted, where=f"in the scaling description for {name!r}")
    return SCALINGS[name](**values)
