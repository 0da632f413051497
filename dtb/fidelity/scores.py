"""Scores of predictions against held-out frames.

- :func:`region_skill`: per-region R^2 (``1 - SSE / SST``, SST about the held-out mean, as
  ``sklearn.metrics.r2_score``) and Pearson r of a forecast.
- :func:`fc_scores`: FC similarity (r of the upper triangles) and normalised Frobenius distance,
  from :mod:`dtb.assim.metrics`.
- :func:`fcd_values`, :func:`fcd_ks`: functional-connectivity dynamics (sliding-window FC; the
  upper triangle of the correlation between windows' FC vectors) and the Kolmogorov-Smirnov
  distance between two FCD distributions (as Zhang et al. 2024 score pFIC).
- :func:`identification`: fingerprinting accuracy (Finn et al. 2015).
- :func:`paired_wilcoxon`: a model's per-subject scores against a baseline's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtb.assim.metrics import fc_frobenius_distance, fc_similarity, functional_connectivity, pearson_columns
from dtb.errors import ParameterError

__all__ = [
    "FCD_WINDOW_S",
    "RegionSkill",
    "region_skill",
    "fc",
    "fc_scores",
    "fcd_values",
    "fcd_ks",
    "identification",
    "paired_wilcoxon",
]

#: Sliding window of the FCD [s] (about 83 frames at TR 0.72 s; Zhang et al. 2024 use 83), step 1 frame.
FCD_WINDOW_S = 60.0


@dataclass(frozen=True)
class RegionSkill:
    """Per-region skill of a forecast (each (region,)); ``r2_mean``/``r_mean`` average over regions."""

    r2: np.ndarray
    r: np.ndarray

    @property
    def r2_mean(self) -> float:
        return float(np.nanmean(self.r2))

    @property
    def r_mean(self) -> float:
        """Mean r over regions; NaN when r is undefined everywhere (a constant forecast)."""
        return float(np.nanmean(self.r)) if np.isfinite(self.r).any() else float("nan")


def region_skill(prediction, truth) -> RegionSkill:
    """R^2 and Pearson r per region of ``prediction`` vs ``truth`` (both (frame, region)).

    A constant prediction (climatology) has r NaN and R^2 <= 0.
    """
    pred = np.asarray(prediction, dtype=np.float64)
    true = np.asarray(truth, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[0] < 3:
        raise ParameterError(f"prediction {pred.shape} and truth {true.shape} must be equal (frame >= 3, region)")
    sst = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - ((true - pred) ** 2).sum(axis=0) / sst
    return RegionSkill(r2=r2, r=pearson_columns(pred, true))


def fc(bold) -> np.ndarray:
    """Pearson FC (region, region) of a (frame, region) series."""
    return functional_connectivity(bold)


def fc_scores(fc_predicted, fc_target) -> dict[str, float]:
    """``{"fc_r": ..., "fc_fnorm": ...}``: upper-triangle r and normalised Frobenius distance."""
    return {"fc_r": fc_similarity(fc_predicted, fc_target), "fc_fnorm": fc_frobenius_distance(fc_predicted, fc_target)}


def fcd_values(bold, tr_s: float, *, window_s: float = FCD_WINDOW_S) -> np.ndarray:
    """Upper-triangle values of the FCD matrix of a (frame, region) series.

    Windows of ``round(window_s / tr_s)`` frames advance one frame at a time; each window's FC upper
    triangle is a vector, and the FCD is the Pearson correlation between these vectors.
    """
    y = np.asarray(bold, dtype=np.float64)
    width = int(round(window_s / tr_s))
    n_windows = y.shape[0] - width + 1
    if width < 3 or n_windows < 3:
        raise ParameterError(
            f"an FCD with {window_s:g} s windows at TR {tr_s:g} s needs >= {width + 2} frames, got {y.shape[0]}"
        )
    rows, cols = np.triu_indices(y.shape[1], k=1)
    windows = np.lib.stride_tricks.sliding_window_view(y, width, axis=0)  # (window, region, width)
    anomalies = windows - windows.mean(axis=2, keepdims=True)
    anomalies /= np.sqrt((anomalies**2).sum(axis=2, keepdims=True))
    vectors = np.matmul(anomalies, anomalies.transpose(0, 2, 1))[:, rows, cols]
    fcd = np.corrcoef(vectors)
    return fcd[np.triu_indices(n_windows, k=1)]


def fcd_ks(fcd_a, fcd_b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic between two sets of FCD values (0 = same distribution)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.ravel(fcd_a), np.ravel(fcd_b)).statistic)


def identification(predicted_fcs, target_fcs) -> float:
    """Fraction of subjects i whose predicted FC is closer (higher FC r) to target i than to any other target.

    ``predicted_fcs``, ``target_fcs``: sequences of (region, region) matrices, one per subject in the
    same order. Chance is 1 / n_subjects.
    """
    n = len(predicted_fcs)
    if n < 2 or len(target_fcs) != n:
        raise ParameterError(f"identification needs >= 2 subjects with one target each, got {n} and {len(target_fcs)}")
    sim = np.array([[fc_similarity(p, t) for t in target_fcs] for p in predicted_fcs])
    return float(np.mean(np.argmax(sim, axis=1) == np.arange(n)))


def paired_wilcoxon(model, baseline, *, higher_is_better: bool = True) -> dict:
    """Paired two-sided Wilcoxon signed-rank test of a model's per-subject scores against a baseline's.

    Returns ``n`` (finite pairs), ``n_better`` (subjects where the model beats the baseline),
    ``mean_difference`` (model - baseline) and ``p`` (None with < 2 pairs or all differences zero).
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(model, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    better = (a > b) if higher_is_better else (a < b)
    out = {
        "n": int(a.size),
        "n_better": int(better.sum()),
        "mean_difference": float(np.mean(a - b)) if a.size else None,
    }
    out["p"] = float(wilcoxon(a, b).pvalue) if a.size >= 2 and np.any(a != b) else None
    return out
