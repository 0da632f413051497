"""Largest-remainder apportionment: integers proportional to given shares that sum exactly to a total.

The one implementation of the package: network layouts split in-degrees over source columns with it
(``dtb.network.layout``, pinned graph digests), and the imaging stages share neurons out over voxels
(``dtb.preproc.anat_stage``) and regions (``dtb.preproc.atlas.region_neuron_counts``) with it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["largest_remainder"]


def largest_remainder(total: int, probabilities: np.ndarray) -> np.ndarray:
    """Integers summing to ``total``, proportional to ``probabilities`` (which sum to 1).

    Each entry is ``floor(total p)`` (with a 1e-9 guard against a product that falls just below an
    integer) plus one for the entries with the largest fractional parts, ties to the first (Hamilton's
    method); every entry is within 1 of ``total p``.

    Returns
    -------
    ndarray of int64, the shape of ``probabilities``.
    """
    exact = total * np.asarray(probabilities, dtype=np.float64)
    counts = np.floor(exact + 1e-9).astype(np.int64)
    rest = total - counts.sum()
    if rest > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:rest]] += 1
    return counts
