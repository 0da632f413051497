"""Forecast skill of a twin beside the field's baselines, from a run store's groups (docs/fidelity.md).

Two cases:

- a store written under the held-out protocol (:mod:`dtb.twin.heldout`) holds ``bold_lead``: the
  twin's k-step forecasts from the analysis state. Every baseline (persistence, climatology,
  AR(1), ridge VAR(1)/VAR(2)) is fitted on the frames before the first scored frame and all are
  scored on the same held-out frames, k = 1, 2, 5 TR;
- any other store: the twin's 1-step forecasts over the analysed windows (each made before its
  frame was seen) beside persistence on the same frames (k = 1 only); the fitted baselines would
  be in-sample there and are left out.

FC: the twin's re-simulation over the scored frames and the split-half ceiling (the run's own
earlier frames) against the scored frames' FC. The group template needs other subjects
(bench/fidelity/baselines.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dtb.fidelity.baselines import climatology, fit_ar1, fit_var, persistence
from dtb.fidelity.protocol import HORIZONS
from dtb.fidelity.scores import fc, fc_scores, region_skill

__all__ = ["SkillTable", "forecast_skill"]


@dataclass(frozen=True)
class SkillTable:
    """Mean-over-regions R^2 per model and horizon, and what it was computed on.

    ``r2[model][k]``; ``heldout`` is True for held-out frames (protocol store); ``fc`` maps a row
    name to FC r against the scored frames' FC; ``losses`` lists the baselines the twin loses to
    at k = 1.
    """

    horizons: tuple[int, ...]
    r2: dict[str, dict[int, float]]
    frames: int
    heldout: bool
    fc: dict[str, float] = field(default_factory=dict)
    losses: tuple[str, ...] = ()


def forecast_skill(observed: np.ndarray, assimilation, resimulated: np.ndarray | None = None) -> SkillTable | str:
    """Skill table of a store's twin, or a sentence saying why there is none.

    ``observed`` (time, region): what the filter saw; ``assimilation``: the store's
    ``/assimilation`` dataset; ``resimulated`` (time, region): the re-simulation, optional.
    """
    warm = int(np.asarray(assimilation["warmup"].values).sum())
    if "bold_lead" in assimilation:
        lead = np.asarray(assimilation["bold_lead"].values, dtype=np.float64)
        made = np.flatnonzero(np.isfinite(lead).all(axis=(1, 2)))
        if made.size == 0:
            return "the store has no lead forecasts"
        start = int(made[0]) + lead.shape[1]
        targets = np.arange(start, observed.shape[0])
        horizons = tuple(k for k in HORIZONS if k <= lead.shape[1])
        twin = {k: lead[targets - k, k - 1] for k in horizons}
        heldout = True
    else:
        start = warm + 1
        targets = np.arange(start, observed.shape[0])
        held = assimilation["heldout"].values if "heldout" in assimilation else np.zeros(observed.shape[0])
        analysed = ~np.asarray(held, dtype=bool)
        targets = targets[analysed[targets]]
        horizons = (1,)
        twin = {1: np.asarray(assimilation["bold_forecast"].values, dtype=np.float64).mean(axis=1)[targets]}
        heldout = False
    if targets.size < 10:
        return f"only {targets.size} frames to score (at least 10 are needed)"
    r2: dict[str, dict[int, float]] = {"twin": {}, "persistence": {}}
    for k in horizons:
        keep = np.isfinite(twin[k]).all(axis=1)
        truth = observed[targets[keep]]
        r2["twin"][k] = region_skill(twin[k][keep], truth).r2_mean
        r2["persistence"][k] = region_skill(persistence(observed, targets[keep], k), truth).r2_mean
    if heldout:
        train = observed[warm:start]
        r2.update({"climatology": {}, "AR(1)": {}, "VAR(1)": {}, "VAR(2)": {}})
        ar1 = fit_ar1(train)
        for k in horizons:
            keep = np.isfinite(twin[k]).all(axis=1)
            t, truth = targets[keep], observed[targets[keep]]
            r2["climatology"][k] = region_skill(climatology(observed, start, t), truth).r2_mean
            r2["AR(1)"][k] = region_skill(ar1.forecast(observed, t, k), truth).r2_mean
            for lags in (1, 2):
                try:
                    var = fit_var(train, lags, horizon=k)
                except ValueError:  # too few frames for its cross-validation
                    continue
                r2[var.name][k] = region_skill(var.forecast(observed, t, k), truth).r2_mean
    scores_fc = {}
    scored = observed[targets]
    if heldout and start - warm >= 10:
        scores_fc["ceiling (the run's own assimilated frames)"] = fc_scores(fc(observed[warm:start]), fc(scored))[
            "fc_r"
        ]
    if resimulated is not None and resimulated.shape == observed.shape:
        scores_fc["twin re-simulation"] = fc_scores(fc(resimulated[targets]), fc(scored))["fc_r"]
    losses = tuple(name for name, by_k in r2.items() if name != "twin" and by_k.get(1, -np.inf) > r2["twin"][1])
    return SkillTable(horizons, r2, int(targets.size), heldout, scores_fc, losses)
