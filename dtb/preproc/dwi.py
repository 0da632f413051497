"""Diffusion stage: DWI -> tensor and CSD models -> tractography -> structural connectomes (dipy).

Steps (each a function, strung together by :func:`process_dwi`)::

    load_gradients   .bval/.bvec -> dipy GradientTable (counts checked against the DWI volumes)
    brain_mask       dipy median_otsu on the mean b = 0 volume
    fit_tensor       dipy TensorModel -> FA [1] and MD [mm^2/s]
    fit_csd          dipy response_from_mask_ssst + ConstrainedSphericalDeconvModel -> FODs
    track            dipy LocalTracking (deterministic maximum of the FODs) with an FA-threshold
                     stopping criterion, seeds in high-FA (white matter) voxels
    voxel_connectome streamline endpoints -> voxel x voxel scipy.sparse counts on a target grid
    region_connectome dipy connectivity_matrix on an atlas -> region x region counts + mean lengths [mm]

Coordinates: streamlines are in world (scanner / MNI) millimetres, so any target grid or
atlas in the same space can be used.  Images are reoriented to RAS
(``nibabel.as_closest_canonical``) with their gradient directions before any model is fitted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.sparse as sp

from dtb.errors import InputDataError
from dtb.preproc.dwi_settings import DwiSettings

__all__ = [
    "DwiSettings",
    "DwiResult",
    "RegionConnectome",
    "load_gradients",
    "reorient_to_ras",
    "brain_mask",
    "fit_tensor",
    "fit_csd",
    "track",
    "voxel_connectome",
    "region_connectome",
    "process_dwi",
]

log = logging.getLogger("dtb")


@dataclass(frozen=True, eq=False)
class RegionConnectome:
    """A region x region structural connectome.

    Attributes
    ----------
    labels : atlas label value of every row/column (int).
    names : region name of every row/column.
    counts : float array (R, R), streamlines with one end in each region (symmetric).
    mean_length_mm : float array (R, R), mean length of those streamlines [mm] (0 where none).
    """

    labels: np.ndarray
    names: tuple[str, ...]
    counts: np.ndarray
    mean_length_mm: np.ndarray


@dataclass(frozen=True, eq=False)
class DwiResult:
    """Everything the diffusion stage computes for one subject (images on the RAS DWI grid).

    Attributes
    ----------
    affine : 4x4 voxel -> world [mm] of the (RAS) DWI grid.
    mask : bool brain mask.
    fa : fractional anisotropy [1] (0 outside the mask).
    md : mean diffusivity [mm^2/s] (0 outside the mask).
    response : CSD response (eigenvalues [mm^2/s], mean b = 0 signal).
    streamlines : dipy Streamlines in world coordinates [mm].
    voxel_counts : scipy.sparse.csr_matrix (n, n) on ``grid_shape``/``grid_affine``.
    voxel_mean_length_mm : same sparsity, mean streamline length [mm].
    grid_shape, grid_affine : the target grid of the voxel connectome.
    regions : RegionConnectome or None (no atlas).
    notes : what was changed on the way (reorientation, ...).
    """

    affine: np.ndarray
    mask: np.ndarray
    fa: np.ndarray
    md: np.ndarray
    response: tuple
    streamlines: object
    voxel_counts: sp.csr_matrix
    voxel_mean_length_mm: sp.csr_matrix
    grid_shape: tuple[int, int, int]
    grid_affine: np.ndarray
    regions: RegionConnectome | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------- inputs
def load_gradients(bval_path, bvec_path, n_volumes: int, b0_threshold: float = 50.0):
    """Gradient table of a DWI series from BIDS/FSL ``.bval`` and ``.bvec`` files.

    Parameters
    ----------
    bval_path, bvec_path : paths of the b-values [s/mm^2] (one row) and the unit gradient
        directions (three rows x, y, z, in the image's voxel axes).
    n_volumes : number of volumes of the DWI image; both files must have that many entries.
    b0_threshold : b-values at or below this are b = 0 [s/mm^2].

    Returns
    -------
    dipy.core.gradients.GradientTable

    Raises
    ------
    InputDataError
        A file is missing or unreadable, or its entries do not match the volumes; the
        message names the file and the fix.
    """
    from dipy.core.gradients import gradient_table
    from dipy.io import read_bvals_bvecs

    for path, what in ((bval_path, "b-values (.bval)"), (bvec_path, "gradient directions (.bvec)")):
        if path is None or not Path(path).is_file():
            raise InputDataError(f"{path}: {what} file not found; put it next to the DWI image with the same stem")
    for path, what, per_volume in ((bval_path, "b-values", 1), (bvec_path, "gradient directions", 3)):
        try:
            table = np.loadtxt(path, ndmin=2)
        except ValueError as exc:
            raise InputDataError(f"{path}: not a table of numbers ({exc}); write plain numbers") from None
        entries = table.shape[1] if table.shape[0] == per_volume else table.size // per_volume
        if entries != n_volumes or table.size != per_volume * n_volumes:
            raise InputDataError(
                f"{path}: {entries} {what} but the DWI image has {n_volumes} volumes; give one per volume"
                + ("" if per_volume == 1 else " as three rows (x, y, z)")
            )
    try:
        bvals, bvecs = read_bvals_bvecs(str(bval_path), str(bvec_path))
    except (OSError, ValueError) as exc:
        raise InputDataError(
            f"{bval_path} / {bvec_path}: cannot read the gradient files ({exc}); write one row of b-values "
            "and three rows of directions as plain numbers"
        ) from None
    if bvals.ndim != 1 or bvals.size != n_volumes:
        raise InputDataError(
            f"{bval_path}: {bvals.size} b-values but the DWI image has {n_volumes} volumes; give one b-value per volume"
        )
    if bvecs.shape != (n_volumes, 3):
        raise InputDataError(
            f"{bvec_path}: {bvecs.shape[0]} gradient directions but the DWI image has {n_volumes} volumes; "
            "give one direction (x, y, z) per volume"
        )
    if not np.all(np.isfinite(bvals)) or np.any(bvals < 0):
        raise InputDataError(f"{bval_path}: b-values must be finite and >= 0; fix the file")
    weighted = bvals > b0_threshold
    if not np.all(np.isfinite(bvecs[weighted])):
        raise InputDataError(f"{bvec_path}: a diffusion-weighted direction is NaN or infinite; fix the file")
    bvecs = np.where(weighted[:, None], bvecs, np.nan_to_num(bvecs))
    norms = np.linalg.norm(bvecs[weighted], axis=1)
    if weighted.any() and np.any(np.abs(norms - 1) > 0.05):
        raise InputDataError(
            f"{bvec_path}: {int(np.sum(np.abs(norms - 1) > 0.05))} diffusion-weighted direction(s) are not unit "
            "vectors; normalise the directions"
        )
    if not weighted.any() or weighted.all():
        raise InputDataError(
            f"{bval_path}: need at least one b = 0 (<= {b0_threshold:g}) and one diffusion-weighted volume; "
            f"got b-values {np.unique(bvals).tolist()}"
        )
    return gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)


def reorient_to_ras(img: nib.Nifti1Image, gtab=None, b0_threshold: float = 50.0):
    """Reorient an image to RAS+ (``nibabel.as_closest_canonical``) with its gradient directions.

    Returns
    -------
    (image, gradient table or None, note or None)
        The note says what was done (None when the image was already RAS).
    """
    from dipy.core.gradients import gradient_table

    ornt = nib.orientations.io_orientation(img.affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return img, gtab, None
    canonical = nib.as_closest_canonical(img)
    note = f"reoriented from {''.join(nib.aff2axcodes(img.affine))} to RAS (nibabel.as_closest_canonical)"
    if gtab is None:
        return canonical, None, note
    bvecs = np.zeros_like(gtab.bvecs)
    for old_axis, (new_axis, flip) in enumerate(ornt):
        bvecs[:, int(new_axis)] = flip * gtab.bvecs[:, old_axis]
    return canonical, gradient_table(gtab.bvals, bvecs=bvecs, b0_threshold=b0_threshold), note


# ---------------------------------------------------------------------------- models
def brain_mask(data: np.ndarray, gtab, settings: DwiSettings = DwiSettings()) -> np.ndarray:
    """Brain mask by dipy ``median_otsu`` on the b = 0 volumes (bool, 3-D)."""
    from dipy.segment.mask import median_otsu

    _, mask = median_otsu(
        data, vol_idx=np.flatnonzero(gtab.b0s_mask), median_radius=settings.median_radius, numpass=settings.numpass
    )
    if not mask.any():
        raise InputDataError("the brain mask (median_otsu on the b = 0 volumes) is empty; check the DWI intensities")
    return mask.astype(bool)


def fit_tensor(data: np.ndarray, gtab, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion tensor fit (dipy ``TensorModel``, weighted least squares).

    Returns
    -------
    fa : fractional anisotropy in [0, 1] (0 outside the mask).
    md : mean diffusivity [mm^2/s] (b-values in s/mm^2; 0 outside the mask).
    """
    from dipy.reconst.dti import TensorModel

    fit = TensorModel(gtab).fit(data, mask=mask)
    fa = np.nan_to_num(np.clip(fit.fa, 0, 1)) * mask
    md = np.nan_to_num(fit.md) * mask
    return fa, md


def fit_csd(data: np.ndarray, gtab, mask: np.ndarray, fa: np.ndarray, settings: DwiSettings = DwiSettings()):
    """Constrained spherical deconvolution: fibre orientation distributions (FODs).

    The single-fibre response is estimated (dipy ``response_from_mask_ssst``) from brain
    voxels with FA above ``settings.response_fa`` (lowered in steps of 0.1, down to 0.3, when
    fewer than 10 voxels qualify).  FODs (dipy ``ConstrainedSphericalDeconvModel``) are fitted
    only where tracking can run (brain voxels with FA >= ``settings.stop_fa``); elsewhere they
    are 0.  The SH order is lowered when the shell has too few directions for it.

    Returns
    -------
    (sh_coefficients, response, sh_order_max)
        FOD coefficients (x, y, z, n_coefficients) in dipy's default real SH basis, the
        response (eigenvalues [mm^2/s], mean b = 0 signal) and the SH order used.
    """
    from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel, response_from_mask_ssst

    threshold = settings.response_fa
    while True:
        wm = mask & (fa > threshold)
        if wm.sum() >= 10 or threshold <= 0.3 + 1e-9:
            break
        threshold -= 0.1
    if wm.sum() < 1:
        raise InputDataError(
            f"no voxel with FA > {threshold:.1f} for the CSD response; the DWI holds no white matter "
            "(or the b-values are wrong)"
        )
    response, _ = response_from_mask_ssst(gtab, data, wm)
    n_directions = int(np.sum(~gtab.b0s_mask))
    order = settings.sh_order_max
    while order > 2 and (order + 1) * (order + 2) // 2 > n_directions:
        order -= 2
    if order != settings.sh_order_max:
        log.info(
            "CSD: sh_order_max lowered from %d to %d for %d directions", settings.sh_order_max, order, n_directions
        )
    model = ConstrainedSphericalDeconvModel(gtab, response, sh_order_max=order)
    fit = model.fit(data, mask=mask & (fa >= settings.stop_fa))
    return np.asarray(fit.shm_coeff), response, order


def track(
    sh_coefficients: np.ndarray,
    fa: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    settings: DwiSettings = DwiSettings(),
):
    """Deterministic local tracking on CSD FODs (dipy ``LocalTracking``).

    Directions: dipy ``DeterministicMaximumDirectionGetter`` (the FOD maximum within
    ``max_angle`` of the current direction).  Seeds: ``seeds_per_axis**3`` per brain voxel
    with FA > ``seed_fa`` (white matter).  Tracking stops where FA < ``stop_fa`` (dipy
    ``ThresholdStoppingCriterion``).  Streamlines shorter than ``min_length_mm`` are dropped.

    Returns
    -------
    dipy.tracking.streamline.Streamlines in world coordinates [mm].
    """
    from dipy.data import get_sphere
    from dipy.direction import DeterministicMaximumDirectionGetter
    from dipy.tracking import utils
    from dipy.tracking.local_tracking import LocalTracking
    from dipy.tracking.stopping_criterion import ThresholdStoppingCriterion
    from dipy.tracking.streamline import Streamlines

    seed_mask = mask & (fa > settings.seed_fa)
    if not seed_mask.any():
        raise InputDataError(f"no brain voxel has FA > {settings.seed_fa} to seed tractography; lower seed_fa")
    seeds = utils.seeds_from_mask(seed_mask, affine, density=[settings.seeds_per_axis] * 3)
    getter = DeterministicMaximumDirectionGetter.from_shcoeff(
        sh_coefficients,
        max_angle=settings.max_angle,
        sphere=get_sphere(name="repulsion724"),
        relative_peak_threshold=settings.relative_peak_threshold,
        min_separation_angle=settings.min_separation_angle,
    )
    stopping = ThresholdStoppingCriterion(np.where(mask, fa, 0.0), settings.stop_fa)
    tracker = LocalTracking(getter, stopping, seeds, affine, step_size=settings.step_size_mm, return_all=False)
    streamlines = Streamlines(tracker)
    if len(streamlines) == 0:
        return streamlines
    lengths = np.fromiter(utils.length(streamlines), dtype=np.float64, count=len(streamlines))
    kept = Streamlines([s for s, n in zip(streamlines, lengths) if n >= settings.min_length_mm])
    log.info("tracking: %d seeds -> %d streamlines >= %g mm", len(seeds), len(kept), settings.min_length_mm)
    return kept


# ---------------------------------------------------------------------------- connectomes
def _endpoint_voxels(streamlines, grid_shape, grid_affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (C-order) target-grid indices of both ends of every streamline, and a mask of
    streamlines whose two ends fall inside the grid."""
    n = len(streamlines)
    ends = np.empty((2 * n, 3))
    for k, s in enumerate(streamlines):
        ends[2 * k] = s[0]
        ends[2 * k + 1] = s[-1]
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(grid_affine), ends)).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(grid_shape)), axis=1)
    flat = np.ravel_multi_index(tuple(np.clip(ijk, 0, np.asarray(grid_shape) - 1).T), grid_shape)
    inside = inside[0::2] & inside[1::2]
    return flat[0::2], flat[1::2], inside


def _symmetric(values: np.ndarray, i: np.ndarray, j: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric sparse matrix from unordered pairs (each pair counted once at (i, j) and (j, i))."""
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    upper = sp.coo_matrix((values, (lo, hi)), shape=(n, n)).tocsr()
    upper.sum_duplicates()
    full = upper + upper.T - sp.diags(upper.diagonal())
    return full.tocsr()


def voxel_connectome(streamlines, grid_shape, grid_affine) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Voxel x voxel connectome of streamline endpoints on a target grid.

    Parameters
    ----------
    streamlines : sequence of (n_points, 3) arrays in world coordinates [mm].
    grid_shape : 3-tuple, the target grid; voxel ``(i, j, k)`` is row
        ``numpy.ravel_multi_index((i, j, k), grid_shape)`` (C order).
    grid_affine : 4x4 voxel -> world [mm] of the target grid.

    Returns
    -------
    counts : csr_matrix (n, n), n = prod(grid_shape); entry (v, w) counts the streamlines
        with one end in voxel v and the other in w (symmetric; a streamline with both ends
        in one voxel counts once on the diagonal).  Ends outside the grid are dropped.
    mean_length_mm : csr_matrix, same sparsity, mean length of those streamlines [mm].
    """
    from dipy.tracking.utils import length

    grid_shape = tuple(int(x) for x in grid_shape)
    n = int(np.prod(grid_shape))
    if len(streamlines) == 0:
        empty = sp.csr_matrix((n, n))
        return empty, empty.copy()
    a, b, inside = _endpoint_voxels(streamlines, grid_shape, np.asarray(grid_affine, dtype=np.float64))
    lengths = np.fromiter(length(streamlines), dtype=np.float64, count=len(streamlines))
    counts = _symmetric(np.ones(int(inside.sum())), a[inside], b[inside], n)
    total_length = _symmetric(lengths[inside], a[inside], b[inside], n)
    mean_length = total_length.copy()
    mean_length.data = total_length.data / counts[total_length.nonzero()].A1 if total_length.nnz else mean_length.data
    return counts, mean_length.tocsr()


def region_connectome(
    streamlines, atlas: nib.Nifti1Image, reference: nib.Nifti1Image, names: dict[int, str] | None = None
) -> RegionConnectome:
    """Region x region streamline counts and mean lengths on an atlas (dipy ``connectivity_matrix``).

    Parameters
    ----------
    streamlines : streamlines in world coordinates [mm].
    atlas : integer label image (0 = background) in the same world space; it is resampled
        to the ``reference`` grid with nearest-neighbour interpolation (nilearn).
    reference : an image on the grid the streamlines were tracked on.
    names : label value -> region name (default: the label value as text).

    Returns
    -------
    RegionConnectome over every non-zero label of the atlas, in increasing label order.
    """
    from dipy.tracking.utils import connectivity_matrix, length
    from nilearn.image import resample_to_img

    atlas_data = np.asarray(atlas.dataobj)
    if atlas_data.ndim != 3 or not np.allclose(atlas_data, np.rint(atlas_data)) or atlas_data.min() < 0:
        raise InputDataError("the atlas must be a 3-D image of non-negative integer labels (0 = background)")
    labels = np.unique(atlas_data.astype(np.int64))
    labels = labels[labels > 0]
    if labels.size == 0:
        raise InputDataError("the atlas holds no region (all labels are 0)")
    on_grid = resample_to_img(atlas, reference, interpolation="nearest", force_resample=True, copy_header=True)
    label_volume = np.rint(np.asarray(on_grid.dataobj)).astype(np.int64)
    R = labels.size
    counts = np.zeros((R, R))
    mean_length = np.zeros((R, R))
    if len(streamlines):
        matrix, grouping = connectivity_matrix(
            streamlines,
            reference.affine,
            label_volume,
            symmetric=True,
            return_mapping=True,
            mapping_as_streamlines=True,
        )
        index = {int(lab): k for k, lab in enumerate(labels)}
        for (la, lb), group in grouping.items():
            if la == 0 or lb == 0 or la not in index or lb not in index:
                continue
            a, b = index[int(la)], index[int(lb)]
            lengths = np.fromiter(length(group), dtype=np.float64)
            counts[a, b] = counts[b, a] = lengths.size
            mean_length[a, b] = mean_length[b, a] = lengths.mean()
    region_names = tuple((names or {}).get(int(lab), str(int(lab))) for lab in labels)
    return RegionConnectome(labels=labels, names=region_names, counts=counts, mean_length_mm=mean_length)


# ---------------------------------------------------------------------------- pipeline
def process_dwi(
    dwi: nib.Nifti1Image,
    gtab,
    *,
    settings: DwiSettings = DwiSettings(),
    atlas: nib.Nifti1Image | None = None,
    atlas_names: dict[int, str] | None = None,
    target_grid: nib.Nifti1Image | None = None,
) -> DwiResult:
    """Run the whole diffusion stage on one DWI series.

    Parameters
    ----------
    dwi : 4-D DWI image; reoriented to RAS first (with its gradients).
    gtab : its gradient table (:func:`load_gradients`).
    settings : DwiSettings.
    atlas, atlas_names : optional label image (any grid in the same world space) and names.
    target_grid : image whose grid the voxel connectome uses (default: the DWI grid).

    Returns
    -------
    DwiResult
    """
    if dwi.ndim != 4 or dwi.shape[3] != len(gtab.bvals):
        raise InputDataError(
            f"the DWI image must be 4-D with one volume per gradient ({len(gtab.bvals)}), got shape {dwi.shape}"
        )
    dwi, gtab, note = reorient_to_ras(dwi, gtab, settings.b0_threshold)
    notes = (note,) if note else ()
    if note:
        log.info("dwi: %s", note)
    data = np.asarray(dwi.dataobj, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise InputDataError("the DWI image contains NaN or infinite values; fix or mask them")
    mask = brain_mask(data, gtab, settings)
    fa, md = fit_tensor(data, gtab, mask)
    sh_coefficients, response, _ = fit_csd(data, gtab, mask, fa, settings)
    streamlines = track(sh_coefficients, fa, mask, dwi.affine, settings)
    grid = target_grid if target_grid is not None else dwi
    grid_shape = tuple(int(x) for x in grid.shape[:3])
    counts, lengths = voxel_connectome(streamlines, grid_shape, grid.affine)
    regions = None
    if atlas is not None:
        regions = region_connectome(streamlines, atlas, nib.Nifti1Image(mask.astype(np.uint8), dwi.affine), atlas_names)
    return DwiResult(
        affine=dwi.affine,
        mask=mask,
        fa=fa,
        md=md,
        response=response,
        streamlines=streamlines,
        voxel_counts=counts,
        voxel_mean_length_mm=lengths,
        grid_shape=grid_shape,
        grid_affine=np.asarray(grid.affine),
        regions=regions,
        notes=notes,
    )
