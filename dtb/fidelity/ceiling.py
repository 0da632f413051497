"""How much of the rest of the brain can the input regions explain? A data-only ceiling for protocol A.

A twin assimilated in the input regions only learns their BOLD; every other region's BOLD in the
re-simulation is whatever the network makes of the inputs plus its own noise, which knows nothing
of the subject's spontaneous activity there. If the non-input regions followed the inputs through
the best possible *linear* map, the re-simulation of region j could correlate with the data at most
about as well as the best linear prediction of BOLD_j from the input regions' BOLD, and the twin's
FC would be that of ``B x + independent noise``. This module measures both on the data alone:

- ``noninput_r_insample``: multiple correlation R_j of each non-input region on the input regions
  (least squares over the scored frames), averaged over regions; an optimistic ceiling;
- ``noninput_r_heldout``: the same map fitted on the first 2/3 of the frames and scored on the
  last 1/3 (Pearson r); an honest ceiling;
- ``fc_ceiling``: FC similarity (upper triangle r) of the model covariance
  ``B S_x B' + diag(residual variance)`` (inputs' own block exact) with the empirical FC.

Used by ``bench/fidelity/ceiling.py`` over the 12 dev subjects (docs/twin.md).
"""

from __future__ import annotations

import numpy as np

from dtb.assim.metrics import fc_similarity, functional_connectivity, pearson_columns

__all__ = ["linear_ceiling"]


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), x])


def linear_ceiling(bold: np.ndarray, inputs: list[int]) -> dict:
    """The ceilings of the module docstring for a cleaned (time, region) series and input columns."""
    n = bold.shape[1]
    others = [j for j in range(n) if j not in set(inputs)]
    x, y = bold[:, inputs], bold[:, others]
    coef, *_ = np.linalg.lstsq(_design(x), y, rcond=None)
    fitted = _design(x) @ coef
    r_in = pearson_columns(fitted, y)
    split = (2 * len(bold)) // 3
    coef_tr, *_ = np.linalg.lstsq(_design(x[:split]), y[:split], rcond=None)
    r_out = pearson_columns(_design(x[split:]) @ coef_tr, y[split:])
    # model covariance: inputs exact, others = B x + independent residual noise
    xc = x - x.mean(axis=0)
    sx = xc.T @ xc / (len(x) - 1)
    b = coef[1:]  # (inputs, others)
    resid = y - fitted
    cov = np.zeros((n, n))
    cov[np.ix_(inputs, inputs)] = sx
    cov[np.ix_(others, inputs)] = b.T @ sx
    cov[np.ix_(inputs, others)] = sx @ b
    cov[np.ix_(others, others)] = b.T @ sx @ b + np.diag(resid.var(axis=0, ddof=1))
    sd = np.sqrt(np.diag(cov))
    fc_model = cov / np.outer(sd, sd)
    return {
        "n_inputs": len(inputs),
        "noninput_r_insample": float(np.nanmean(r_in)),
        "noninput_r_heldout": float(np.nanmean(r_out)),
        "fc_ceiling": fc_similarity(fc_model, functional_connectivity(bold)),
    }
