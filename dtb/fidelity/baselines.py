"""Linear and trivial forecasters of preprocessed BOLD: the baselines a twin must beat.

Each forecaster is fitted on the assimilated frames of a (time, region) series and predicts frame
``t`` from frames ``<= t - k`` (a k-step forecast; origins may lie in the held-out part, whose
frames are then history, never training data). Linear models on HCP rest are hard to beat
(Nozari et al. 2024, Nat Biomed Eng: linear AR models beat every nonlinear model they tried).

- :func:`persistence`: ``y[t] = y[t - k]``.
- :func:`climatology`: the assimilated frames' mean per region.
- :func:`fit_ar1`: per-region AR(1) ``y[t] = c + a y[t - 1]`` by least squares.
- :func:`fit_var`: ridge VAR(p) fitted *directly* for horizon k,
  ``y[t] = c + sum_{j<p} A_j y[t - k - j]`` (one model per horizon: an iterated VAR(2) with a weak
  penalty blows up by k = 5), the ridge penalty chosen by blocked cross-validation on the
  assimilated frames (R^2 at that horizon averaged over regions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtb.errors import ParameterError

__all__ = [
    "RIDGE_ALPHAS",
    "LinearForecaster",
    "persistence",
    "climatology",
    "fit_ar1",
    "fit_var",
    "fit_ridge",
]

#: Ridge penalties tried by cross-validation, relative to the number of training frames.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-6, 2, 17))


def _targets(n_frames: int, targets, k: int, lags: int) -> np.ndarray:
    idx = np.asarray(targets, dtype=np.int64)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"forecast horizon k must be a positive number of frames, got {k!r}")
    if idx.size and (idx.min() - k - lags + 1 < 0 or idx.max() >= n_frames):
        raise ParameterError(
            f"targets must lie in [{k + lags - 1}, {n_frames}) for a {k}-step forecast from {lags} lag(s); "
            f"got {idx.min()}..{idx.max()}"
        )
    return idx


def persistence(series, targets, k: int) -> np.ndarray:
    """k-step persistence forecast ``series[t - k]`` of every target frame t, (target, region)."""
    y = np.asarray(series, dtype=np.float64)
    return y[_targets(y.shape[0], targets, k, 1) - k]


def climatology(series, n_train: int, targets) -> np.ndarray:
    """The mean of ``series[:n_train]`` for every target frame, (target, region)."""
    y = np.asarray(series, dtype=np.float64)
    return np.broadcast_to(y[:n_train].mean(axis=0), (len(np.asarray(targets)), y.shape[1])).copy()


@dataclass(frozen=True)
class LinearForecaster:
    """A fitted linear autoregression ``y[t] = intercept + sum_j coefs[j] @ y[t - horizon - j]``.

    ``horizon`` 1 is an ordinary VAR, iterated for longer forecasts; a model with ``horizon`` k > 1
    was fitted directly for k-step forecasts and only makes those.

    Attributes
    ----------
    name : ``"AR(1)"``, ``"VAR(1)"``, ``"VAR(2)"``.
    intercept : (region,).
    coefs : (lags, region, region); diagonal for a per-region AR model.
    alpha : ridge penalty used (0 for least squares), relative to the training frames.
    cv_r2 : mean over regions of the cross-validated 1-step R^2 at ``alpha`` (NaN if not
        cross-validated).
    """

    name: str
    intercept: np.ndarray
    coefs: np.ndarray
    alpha: float
    cv_r2: float
    horizon: int = 1

    @property
    def lags(self) -> int:
        return int(self.coefs.shape[0])

    def forecast(self, series, targets, k: int) -> np.ndarray:
        """k-step forecasts (target, region) of frames ``targets`` from frames ``<= t - k``, iterating the model."""
        y = np.asarray(series, dtype=np.float64)
        idx = _targets(y.shape[0], targets, k, self.lags)
        if self.horizon != 1 and k != self.horizon:
            raise ParameterError(f"{self.name} was fitted for {self.horizon}-step forecasts, not {k}-step ones")
        # history[:, j] = y[origin - j], origin = t - k
        history = np.stack([y[idx - k - j] for j in range(self.lags)], axis=1)
        for _ in range(k // self.horizon):
            step = self.intercept + np.einsum("jrs,njs->nr", self.coefs, history)
            history = np.concatenate([step[:, None], history[:, :-1]], axis=1)
        return history[:, 0]


def _lagged(y: np.ndarray, lags: int, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Design (frame, lags * region) of y[t-h], ..., y[t-h-lags+1] and the targets y[t], t >= h + lags - 1."""
    first = horizon + lags - 1
    X = np.concatenate([y[first - horizon - j : y.shape[0] - horizon - j] for j in range(lags)], axis=1)
    return X, y[first:]


def _ridge(X: np.ndarray, Y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with an unpenalised intercept; alpha scaled by the number of rows."""
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - x_mean, Y - y_mean
    gram = Xc.T @ Xc + alpha * X.shape[0] * np.eye(X.shape[1])
    B = np.linalg.solve(gram, Xc.T @ Yc)
    return y_mean - x_mean @ B, B


def _r2(pred: np.ndarray, truth: np.ndarray) -> float:
    sst = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - ((truth - pred) ** 2).sum(axis=0) / sst))


def fit_ridge(train, lags: int, alpha: float, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Ridge VAR(lags) for ``horizon`` on a (time, region) series: intercept (region,), coefs (lags, region, region)."""
    y = np.asarray(train, dtype=np.float64)
    X, Y = _lagged(y, lags, horizon)
    c, B = _ridge(X, Y, alpha)
    R = y.shape[1]
    return c, B.T.reshape(R, lags, R).transpose(1, 0, 2)


def fit_var(train, lags: int, *, horizon: int = 1, alphas=RIDGE_ALPHAS, folds: int = 5) -> LinearForecaster:
    """Ridge VAR(``lags``) for ``horizon``-step forecasts fitted on ``train`` (the assimilated frames).

    The frames are cut into ``folds`` contiguous blocks; each block is predicted ``horizon`` steps
    ahead by a model fitted on the other blocks (rows sharing frames with the test block are dropped
    from training), and the alpha with the best mean R^2 over regions and blocks is refitted on all
    of ``train``. Only ``train`` is read.
    """
    y = np.asarray(train, dtype=np.float64)
    reach = lags + horizon - 1
    if lags < 1 or horizon < 1 or y.shape[0] < folds * (reach + 10):
        raise ParameterError(
            f"VAR({lags}) for {horizon}-step forecasts with {folds}-fold CV needs >= {folds * (reach + 10)} "
            f"frames, got {y.shape[0]}"
        )
    X, Y = _lagged(y, lags, horizon)
    n = X.shape[0]
    edges = np.linspace(0, n, folds + 1).astype(int)
    scores = []
    for alpha in alphas:
        fold_scores = []
        for a, b in zip(edges[:-1], edges[1:]):
            keep = np.ones(n, dtype=bool)
            keep[max(0, a - reach) : min(n, b + reach)] = False  # the test block and rows sharing its frames
            c, B = _ridge(X[keep], Y[keep], alpha)
            fold_scores.append(_r2(c + X[a:b] @ B, Y[a:b]))
        scores.append(float(np.mean(fold_scores)))
    best = int(np.nanargmax(scores))
    c, coefs = fit_ridge(y, lags, alphas[best], horizon)
    return LinearForecaster(f"VAR({lags})", c, coefs, float(alphas[best]), scores[best], horizon)


def fit_ar1(train) -> LinearForecaster:
    """Per-region AR(1) ``y[t] = c + a y[t - 1]`` by least squares on ``train`` (time, region)."""
    y = np.asarray(train, dtype=np.float64)
    x, z = y[:-1], y[1:]
    xm, zm = x.mean(axis=0), z.mean(axis=0)
    a = ((x - xm) * (z - zm)).sum(axis=0) / ((x - xm) ** 2).sum(axis=0)
    coefs = np.zeros((1, y.shape[1], y.shape[1]))
    coefs[0][np.diag_indices(y.shape[1])] = a
    return LinearForecaster("AR(1)", zm - a * xm, coefs, 0.0, float("nan"))
