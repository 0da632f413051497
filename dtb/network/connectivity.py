"""Long-range connectivity from the structural connectome (docs/model.md §3.3).

``P_vw = D_vw / sum_w D_vw`` after zeroing the diagonal: the probability that a long-range
input of voxel v comes from voxel w.  Voxels without any long-range input cannot be
wired and are dropped (with a warning, recorded by the caller).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dtb.errors import NetworkError

__all__ = ["as_connectome", "unconnected_voxels", "row_normalised"]


def as_connectome(connectome, n_voxels: int) -> sp.csr_matrix:
    """Validate a connectome (dense numpy or scipy.sparse, shape (n_voxels, n_voxels)) and
    return it as CSR float64 with a zero diagonal.

    Parameters
    ----------
    connectome : array-like or scipy.sparse matrix
        Streamline counts (or any non-negative connection strength) from row voxel's
        perspective: ``D[v, w]`` is the strength of the connection between target v and source w.
    n_voxels : int
        Number of voxels (or regions) of the neuron counts.
    """
    if sp.issparse(connectome):
        matrix = sp.csr_matrix(connectome, dtype=np.float64)
    else:
        dense = np.asarray(connectome, dtype=np.float64)
        if dense.ndim != 2:
            raise NetworkError(f"connectome must be a 2-D (voxel x voxel) matrix, got {dense.ndim} dimension(s)")
        matrix = sp.csr_matrix(dense)
    if matrix.shape != (n_voxels, n_voxels):
        raise NetworkError(
            f"connectome has shape {matrix.shape} but there are {n_voxels} voxels/regions in neuron_counts; "
            f"give a ({n_voxels}, {n_voxels}) matrix in the same voxel order"
        )
    data = matrix.data
    if data.size and (not np.all(np.isfinite(data)) or data.min() < 0):
        raise NetworkError("connectome has negative or NaN entries; give non-negative finite streamline counts")
    matrix = matrix.tolil()
    matrix.setdiag(0.0)
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def unconnected_voxels(matrix: sp.csr_matrix, keep: np.ndarray) -> np.ndarray:
    """Voxels (among ``keep``) with no long-range input from any other kept voxel.

    Dropping voxels can disconnect others, so this is iterated until stable.

    Returns
    -------
    ndarray of bool, shape (n_voxels,)
        True where a voxel must be dropped for lack of connections (``keep`` False stays False).
    """
    keep = keep.copy()
    dropped = np.zeros_like(keep)
    while True:
        row_sum = np.asarray(matrix @ keep.astype(np.float64)).ravel()
        newly = keep & (row_sum <= 0)
        if not newly.any():
            return dropped
        dropped |= newly
        keep &= ~newly


def row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """``P_vw = D_vw / sum_w D_vw`` (every row must have a positive sum)."""
    row_sum = np.asarray(matrix.sum(axis=1)).ravel()
    if np.any(row_sum <= 0):
        raise NetworkError("internal: row_normalised needs every row to have long-range input")
    return sp.csr_matrix(sp.diags(1.0 / row_sum) @ matrix)
