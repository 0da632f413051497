"""Known fibre bundles of the phantom: which regions they connect, how strongly, and their voxels.

A bundle joins the centres of two regions by a straight cylinder whose radius grows with its
``strength`` (1, 2, 3: radius 1, 1.5, 2 voxels), so its cross-section and its volume are
known.  With white-matter seeding, a tractogram's streamline count between two regions is
proportional to the bundle's volume (seeds inside it), and count / mean length to its
cross-section.  Pairs (for R regions, 2k / 2k+1 = left / right homologues): callosal pairs
(4m, 4m+1), and within each hemisphere a chain (2k, 2k+2) and (2k+1, 2k+3), so every region
has at least one bundle.  Strengths cycle through 3, 1, 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

__all__ = ["Bundle", "bundle_pairs", "bundle_matrix", "tube_radius_mm", "voxelise_bundles", "true_connectome"]

_STRENGTH_CYCLE = (3, 1, 2)


@dataclass(frozen=True)
class Bundle:
    """One fibre bundle between regions ``a`` and ``b`` with ``strength`` parallel tubes."""

    a: int
    b: int
    strength: int


def bundle_pairs(n_regions: int) -> tuple[Bundle, ...]:
    """The phantom's bundles for ``n_regions`` (even) regions; see the module docstring."""
    pairs = [(2 * m, 2 * m + 1) for m in range(0, n_regions // 2, 2)]
    for k in range(n_regions // 2 - 1):
        pairs += [(2 * k, 2 * k + 2), (2 * k + 1, 2 * k + 3)]
    return tuple(Bundle(a, b, _STRENGTH_CYCLE[i % len(_STRENGTH_CYCLE)]) for i, (a, b) in enumerate(pairs))


def true_connectome(bundles, n_regions: int) -> np.ndarray:
    """Symmetric (R, R) matrix of bundle strengths, zero where no bundle."""
    return bundle_matrix(bundles, [b.strength for b in bundles], n_regions)


def bundle_matrix(bundles, values, n_regions: int) -> np.ndarray:
    """Symmetric (R, R) matrix with ``values[i]`` at bundle i's region pair, zero elsewhere."""
    matrix = np.zeros((n_regions, n_regions))
    for bundle, value in zip(bundles, values):
        matrix[bundle.a, bundle.b] = matrix[bundle.b, bundle.a] = value
    return matrix


def tube_radius_mm(strength: int, voxel_mm: float) -> float:
    """Radius of a bundle of ``strength`` [mm]: ``voxel_mm * (1 + strength) / 2`` (1, 1.5, 2 voxels)."""
    return voxel_mm * (1 + strength) / 2


def voxelise_bundles(
    bundles, centres_mm: np.ndarray, affine: np.ndarray, shape, brain: np.ndarray
) -> tuple[dict[tuple[int, int, int], list[np.ndarray]], np.ndarray]:
    """Voxels of every bundle and their fibre directions.

    A bundle is the set of brain voxels whose centre lies within :func:`tube_radius_mm` of
    the segment joining its two region centres (a straight cylinder with flat ends); its
    fibres run along the segment.

    Returns
    -------
    fibres : voxel (i, j, k) -> list of unit fibre directions in world axes, one per
        bundle through the voxel (world axes = voxel axes on the RAS template grid).
    voxels_per_bundle : int array (n_bundles,), voxels each bundle occupies.
    """
    voxel_mm = float(abs(np.linalg.det(affine[:3, :3]))) ** (1 / 3)
    ijk = np.argwhere(brain)
    world = nib.affines.apply_affine(affine, ijk)
    fibres: dict[tuple[int, int, int], list[np.ndarray]] = {}
    counts = np.zeros(len(bundles), dtype=np.int64)
    for index, bundle in enumerate(bundles):
        start, stop = centres_mm[bundle.a], centres_mm[bundle.b]
        length = float(np.linalg.norm(stop - start))
        direction = (stop - start) / length
        along = (world - start) @ direction
        radial = np.linalg.norm((world - start) - along[:, None] * direction, axis=1)
        inside = (along >= 0) & (along <= length) & (radial <= tube_radius_mm(bundle.strength, voxel_mm) + 1e-6)
        for v in map(tuple, ijk[inside]):
            fibres.setdefault(v, []).append(direction)
        counts[index] = int(inside.sum())
    return fibres, counts
