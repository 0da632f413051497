"""Grey-matter probability in template space: dipy's HMRF classifier, made repeatable, plus the
template's tissue prior in the deep grey nuclei.

* :func:`segment_grey_matter` - dipy ``TissueClassifierHMRF`` (3 classes) on a T1w on the template's
  working grid. dipy replaces every exact zero of the image by ``0.001 + N(0, 1e-4)`` drawn from an
  unseeded generator (``dipy.sims.voxel.add_noise``), and the ICM iterations amplify that noise (two runs
  on the same image differed by up to 0.14 in a voxel's GM probability). Here the zeros are replaced by
  the same distribution from a generator with a fixed seed before dipy sees the image, so dipy finds no
  zero and the result is bitwise repeatable.
* :func:`deep_grey_weight` - a smooth [0, 1] weight that is 1 inside ellipsoids around the caudate,
  putamen, pallidum and thalamus (:data:`DEEP_GREY_NUCLEI_MM`, MNI mm) and falls to 0 over a few mm.
  On a T1w the pallidum and parts of the putamen and thalamus are almost as bright as white matter, so
  an intensity classifier reads them as WM (on a real MPRAGE the pallidum got 0.08-0.12 of the
  template's GM). As in prior-driven pipelines, the GM probability there is taken from the template's
  tissue prior (nilearn's ICBM 2009a GM map), which follows the subject through the registration
  (and, for volumes, through the Jacobian): ``p = w p_prior + (1 - w) p_hmrf``.
"""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np

from dtb.errors import InputDataError

__all__ = [
    "DEEP_GREY_NUCLEI_MM",
    "HMRF_BACKGROUND_SEED",
    "deep_grey_weight",
    "segment_grey_matter",
    "template_grey_matter",
]

#: (name, centre (|x|, y, z) [MNI mm], semi-axes (x, y, z) [mm]) of the deep grey nuclei of each hemisphere:
#: centres of AAL2's caudate, putamen, pallidum and thalamus, semi-axes about 2.2 standard deviations of
#: their voxel coordinates (an ellipsoid of uniform density has sd = semi-axis / sqrt(5)).
DEEP_GREY_NUCLEI_MM = (
    ("caudate", (13.0, 10.0, 8.0), (9.0, 20.0, 20.0)),
    ("putamen", (26.0, 3.0, 1.0), (10.0, 21.0, 14.0)),
    ("pallidum", (19.5, -1.0, -1.0), (9.0, 11.0, 7.5)),
    ("thalamus", (12.0, -19.0, 7.0), (11.0, 14.0, 12.0)),
)
#: seed of the fixed background noise handed to the HMRF classifier (see the module docstring).
HMRF_BACKGROUND_SEED = 20261207
#: width [mm] (Gaussian sigma) of the edge of the deep grey weight.
_EDGE_MM = 2.0


def nucleus_masks(reference: nib.Nifti1Image, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Boolean masks of both hemispheres' ellipsoids of each nucleus on the grid of ``reference``
    (template space), semi-axes multiplied by ``scale`` (< 1 gives the cores)."""
    shape = reference.shape[:3]
    xyz = nib.affines.apply_affine(reference.affine, np.indices(shape).reshape(3, -1).T).reshape(*shape, 3)
    masks = {}
    for name, (cx, cy, cz), axes in DEEP_GREY_NUCLEI_MM:
        inside = np.zeros(shape, dtype=bool)
        for side in (-1.0, 1.0):
            offset = (xyz - np.array([side * cx, cy, cz])) / (np.asarray(axes) * scale)
            inside |= (offset**2).sum(axis=-1) <= 1.0
        masks[name] = inside
    return masks


def _grid_key(reference: nib.Nifti1Image) -> tuple[tuple[int, ...], bytes]:
    return tuple(int(n) for n in reference.shape[:3]), np.ascontiguousarray(
        reference.affine, dtype=np.float64
    ).tobytes()


def _reference(key: tuple[tuple[int, ...], bytes]) -> nib.Nifti1Image:
    shape, affine = key
    return nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), np.frombuffer(affine, dtype=np.float64).reshape(4, 4))


@functools.lru_cache(maxsize=8)
def _deep_grey_weight(key: tuple[tuple[int, ...], bytes]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    reference = _reference(key)
    inside = np.zeros(reference.shape[:3], dtype=bool)
    for mask in nucleus_masks(reference).values():
        inside |= mask
    spacing = np.sqrt((reference.affine[:3, :3] ** 2).sum(axis=0))
    edge = gaussian_filter(inside.astype(np.float64), sigma=_EDGE_MM / spacing, mode="constant")
    weight = np.where(inside, 1.0, np.clip(2.0 * edge, 0.0, 1.0)).astype(np.float32)
    weight.setflags(write=False)
    return weight


def deep_grey_weight(reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """Weight of the template's GM prior on the grid of ``reference`` (template space), in [0, 1]:
    1 inside the nuclei's ellipsoids, a Gaussian edge of sigma 2 mm outside them (once per process and
    grid; read-only voxels)."""
    return nib.Nifti1Image(_deep_grey_weight(_grid_key(reference)), reference.affine.copy())


@functools.lru_cache(maxsize=8)
def _template_grey_matter(key: tuple[tuple[int, ...], bytes]) -> np.ndarray:
    from nilearn.datasets import load_mni152_gm_template
    from nilearn.image import resample_to_img

    gm = resample_to_img(
        load_mni152_gm_template(resolution=1),
        _reference(key),
        interpolation="linear",
        copy_header=True,
        force_resample=True,
    )
    data = np.clip(gm.get_fdata(), 0, 1).astype(np.float32)
    data.setflags(write=False)
    return data


def template_grey_matter(reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """nilearn's MNI152 2009a GM probability map resampled onto ``reference`` (linear, clipped to [0, 1];
    once per process and grid, read-only voxels)."""
    return nib.Nifti1Image(_template_grey_matter(_grid_key(reference)), reference.affine.copy())


def segment_grey_matter(
    t1w: nib.Nifti1Image,
    brain_mask: nib.Nifti1Image,
    beta: float = 0.1,
    max_iter: int = 20,
    deep_grey_prior: bool = True,
) -> nib.Nifti1Image:
    """GM probability of each voxel of a T1w on the template's grid (repeatable bit for bit).

    Parameters
    ----------
    t1w : T1-weighted image (any intensity scale) in template space.
    brain_mask : same grid; the GM probability is set to 0 outside it. The classifier itself sees the
        whole image: dipy's uniform initialisation degenerates (empty classes, NaN) when most voxels
        are masked to 0.
    beta, max_iter : HMRF smoothness and iterations.
    deep_grey_prior : blend in the template's GM prior in the deep grey nuclei (:func:`deep_grey_weight`).

    Returns
    -------
    nibabel image (float32, in [0, 1]) on the grid of ``t1w``: the partial-volume estimate of the
    middle-intensity class (dipy sorts classes by mean intensity; on a T1w: CSF < GM < WM), with the
    template's prior in the deep grey nuclei.
    """
    from dipy.segment.tissue import TissueClassifierHMRF

    data = np.asarray(t1w.dataobj, dtype=np.float64)
    mask = np.asarray(brain_mask.dataobj) > 0
    if data.shape != mask.shape:
        raise InputDataError(f"T1w grid {data.shape} and brain mask grid {mask.shape} differ")
    if mask.sum() < 27 or not np.any(data[mask] > 0):
        raise InputDataError(
            f"the brain mask holds {int(mask.sum())} voxels with signal; the T1w does not overlap the template "
            "brain (check its orientation and that it is a head image)"
        )
    scale = np.percentile(data[mask], 99.5)
    image = np.clip(data / scale, 0, 1)
    # dipy's own background noise (0.001 + N(0, 1e-4) where the image is 0) from a fixed seed
    zeros = image == 0
    noise = np.random.default_rng(HMRF_BACKGROUND_SEED).normal(0.0, 1e-4, size=int(zeros.sum()))
    image[zeros] = 0.001 + noise
    _, _, pve = TissueClassifierHMRF(verbose=False).classify(image, 3, beta, max_iter=max_iter)
    gm = pve[..., 1]
    if deep_grey_prior:
        weight = deep_grey_weight(t1w).get_fdata()
        gm = weight * template_grey_matter(t1w).get_fdata() + (1.0 - weight) * gm
    gm = np.where(mask, gm, 0.0)
    if not np.all(np.isfinite(gm)):
        raise InputDataError(
            "dipy's HMRF tissue classifier did not converge on this T1w (empty tissue class); give a GM "
            "probability map (*_label-GM_probseg.nii.gz) or check the T1w contrast"
        )
    return nib.Nifti1Image(np.clip(gm, 0, 1).astype(np.float32), t1w.affine)
