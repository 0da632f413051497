"""Bounds of h from the twin's own network (``assimilation.h_bounds: calibrated``; docs/twin.md,
"Calibrated h bounds").

The DTB's bounds of the external current, [0.01, 0.3], are the range over which *its* network's
BOLD spans the range that the observation is mapped onto (min-max to [0.02, 0.05]). Another
network (another in-degree, neuron count or step) has another transfer from h to BOLD: at K = 100
and 13 neurons per region the whole observation range lies below h = 0.03, and the prior's middle
third of [0.01, 0.3] starts every member in a 100 Hz state whose BOLD no longer moves with h.

:func:`calibrate_h_bounds` measures that transfer on the network the twin runs: one ensemble whose
members hold h at :data:`LEVEL_FRACTIONS` of the configured search range [lower, upper] in every
input region, simulated for :data:`SETTLE_MS` and then averaged over :data:`MEASURE_MS`; the
stationary BOLD per level, made non-decreasing, is inverted at the observation range's ends, and
the bounds are that h interval widened by :data:`MARGIN` of its width on each side (clipped to the
search range). The members run in batches of at most the twin's ensemble size (``members``), so the
calibration needs no more memory than the fit; member m's noise derives from the run seed
(``derive_seed(seed, "h_calibration", m)``) whatever its batch, and the gains are the twin's, so the
bounds are a function of the network and the config only (not of ``members``), and a resumed run
finds the same.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from dtb.assembly.forward import make_simulation
from dtb.errors import AssimilationError
from dtb.seeds import derive_seed

__all__ = ["HCalibration", "LEVEL_FRACTIONS", "MARGIN", "bounds_from_curve", "calibrate_h_bounds"]

log = logging.getLogger("dtb")

#: Levels of h, as fractions of the search range [lower, upper]: dense at the low end, where the
#: transfer of a strongly coupled network is steepest.
LEVEL_FRACTIONS = (0.0, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 1.0)
#: Simulated before the BOLD is averaged [ms] (network and Balloon transients).
SETTLE_MS = 4000.0
#: Span the stationary BOLD is averaged over [ms].
MEASURE_MS = 6000.0
#: Length of one simulated window [ms].
WINDOW_MS = 1000.0
#: The bounds are the h interval of the observation range widened by this fraction of its width per side.
MARGIN = 0.25


@dataclass(frozen=True)
class HCalibration:
    """The measured transfer from h to BOLD and the bounds taken from it.

    Attributes
    ----------
    levels : h of each calibration member (the hyperparameter's unit).
    bold : mean BOLD over the input regions and the measuring span, per level [1].
    rate_hz : mean firing rate of the input regions over the measuring span, per level [Hz].
    target : the observation's model range (low, high) [1] that the bounds must span.
    lower, upper : the bounds of h the filter uses.
    """

    levels: tuple[float, ...]
    bold: tuple[float, ...]
    rate_hz: tuple[float, ...]
    target: tuple[float, float]
    lower: float
    upper: float

    def describe(self) -> dict:
        return {**asdict(self), "settle_ms": SETTLE_MS, "measure_ms": MEASURE_MS, "margin": MARGIN}


def _crossing(levels: np.ndarray, curve: np.ndarray, value: float) -> float:
    """The h where the non-decreasing ``curve`` first reaches ``value`` (linear between levels)."""
    i = int(np.argmax(curve >= value))
    if i == 0:
        return float(levels[0])
    x0, x1, y0, y1 = levels[i - 1], levels[i], curve[i - 1], curve[i]
    return float(x0 + (x1 - x0) * (value - y0) / (y1 - y0))


def bounds_from_curve(levels, bold, target, margin: float = MARGIN) -> tuple[float, float]:
    """Bounds of h from a measured BOLD per level: the h interval where the non-decreasing envelope
    of ``bold`` spans ``target`` = (low, high), widened by ``margin`` of its width on each side and
    clipped to [levels[0], levels[-1]].

    Raises
    ------
    AssimilationError
        When the BOLD at the top level stays below ``target[1]`` (the search range is too narrow).
    """
    levels = np.asarray(levels, dtype=np.float64)
    envelope = np.maximum.accumulate(np.asarray(bold, dtype=np.float64))
    low, high = (float(x) for x in target)
    if not envelope[-1] >= high:
        raise AssimilationError(
            f"h calibration: the network's BOLD reaches only {envelope[-1]:.4g} at h = {levels[-1]:g}, below the "
            f"top of the observation range ({high:g}); raise assimilation.upper, or map the data onto a lower range "
            "(observation.scaling_params.high)"
        )
    h_low = _crossing(levels, envelope, low)
    h_high = _crossing(levels, envelope, high)
    width = max(h_high - h_low, (levels[-1] - levels[0]) / 1024.0)  # a cliff between two levels keeps a width
    lower = max(float(levels[0]), h_low - margin * width)
    upper = min(float(levels[-1]), h_high + margin * width)
    return lower, upper


def calibrate_h_bounds(region_model, input_regions, config, *, backend: str, comm=None) -> HCalibration:
    """Measure the network's BOLD against h over [config lower, upper] and take the bounds from it.

    ``region_model`` is the twin's network, ``input_regions`` the regions whose h is fitted,
    ``config`` the :class:`~dtb.twin.config.TwinConfig` (a calibrated config is min-max scaled, which
    TwinConfig checks: that range is the target). With ``comm`` (MPI) the calibration ensemble is spread over the
    ranks by neurons; every rank gets the same bounds.
    """
    settings = config.hmda
    levels = settings.lower + np.asarray(LEVEL_FRACTIONS) * (settings.upper - settings.lower)
    inputs = [int(r) for r in input_regions]
    n_settle, n_measure = round(SETTLE_MS / WINDOW_MS), round(MEASURE_MS / WINDOW_MS)
    bold = np.zeros(len(levels))
    rate = np.zeros(len(levels))
    # batches of at most the twin's own ensemble size: the calibration never needs more memory than the fit
    for first in range(0, len(levels), config.members):
        batch = slice(first, min(first + config.members, len(levels)))
        bold[batch], rate[batch] = _measure(
            region_model, inputs, levels, batch, config, backend, comm, n_settle, n_measure
        )
    target = (float(config.scaling_params.get("low", 0.02)), float(config.scaling_params.get("high", 0.05)))
    lower, upper = bounds_from_curve(levels, bold, target)
    log.info(
        "h calibration (%s): BOLD %s at h %s; bounds [%.4g, %.4g] for the observation range %s",
        settings.hyperparameter,
        np.round(bold, 4).tolist(),
        np.round(levels, 4).tolist(),
        lower,
        upper,
        target,
    )
    return HCalibration(
        levels=tuple(float(x) for x in levels),
        bold=tuple(float(x) for x in bold),
        rate_hz=tuple(float(x) for x in rate),
        target=target,
        lower=lower,
        upper=upper,
    )


def _measure(region_model, inputs, levels, batch: slice, config, backend, comm, n_settle: int, n_measure: int):
    """Mean BOLD and rate of the input regions for ``levels[batch]``: member m holds level m (its noise
    ``derive_seed(seed, "h_calibration", m)`` whatever the batch), ``n_settle`` windows simulated, then
    ``n_measure`` windows averaged."""
    levels = levels[batch]
    regional = make_simulation(
        region_model,
        n_members=len(levels),
        seed=config.seed,
        member_purpose="h_calibration",
        first_member=batch.start,
        gain_seed=derive_seed(config.seed, "gains"),
        backend=backend,
        device=config.device,
        comm=comm,
        layout="neurons",
    )
    name = config.hmda.hyperparameter
    regional.set_region_hyperparameter(name, inputs, np.repeat(levels[:, None], len(inputs), axis=1))
    bold = np.zeros(len(levels))
    rate = np.zeros(len(levels))
    for window in range(n_settle + n_measure):
        out = regional.advance(WINDOW_MS)
        if window >= n_settle:
            bold += out.bold.numpy()[:, inputs].mean(axis=1) / n_measure
            rate += out.rate_hz.numpy()[:, inputs].mean(axis=1) / n_measure
    return bold, rate
