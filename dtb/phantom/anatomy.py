"""Phantom anatomy: the MNI152 template on a coarse grid and an atlas of spherical grey-matter regions.

The template images come from nilearn's shipped MNI152 2009 files
(``load_mni152_template``, ``load_mni152_gm_template``, ``load_mni152_brain_mask``),
resampled by nilearn to ``grid_mm``.  Region ``k`` is the set of brain voxels within
``region_radius_mm`` of a cortical centre (:data:`REGION_CENTRES_MM`, snapped to the nearest
voxel with grey-matter probability >= 0.5) whose grey-matter probability is >= 0.2;
regions 2k and 2k+1 are left/right homologues.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from dtb.errors import ParameterError
from dtb.phantom.settings import PhantomSettings

__all__ = ["REGION_CENTRES_MM", "Anatomy", "make_anatomy"]

#: (name, MNI x, y, z [mm]) of the candidate region centres, left/right pairs.
REGION_CENTRES_MM = (
    ("L_middle_frontal", -40, 30, 25),
    ("R_middle_frontal", 40, 30, 25),
    ("L_inferior_parietal", -40, -55, 45),
    ("R_inferior_parietal", 40, -55, 45),
    ("L_superior_temporal", -55, -25, 0),
    ("R_superior_temporal", 55, -25, 0),
    ("L_occipital", -20, -90, 5),
    ("R_occipital", 20, -90, 5),
    ("L_precentral", -35, -10, 55),
    ("R_precentral", 35, -10, 55),
    ("L_orbitofrontal", -25, 40, -15),
    ("R_orbitofrontal", 25, 40, -15),
)


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Images and regions of the phantom on one grid.

    Attributes
    ----------
    t1w : T1-weighted image (MNI152 template, float32 intensities).
    grey_matter : GM probability [0, 1].
    brain : bool brain mask.
    atlas : int16 label image, 0 = background, k + 1 = region k.
    names : region names.
    centres_mm : (R, 3) world coordinates of the (snapped) region centres [mm].
    """

    t1w: nib.Nifti1Image
    grey_matter: np.ndarray
    brain: np.ndarray
    atlas: nib.Nifti1Image
    names: tuple[str, ...]
    centres_mm: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        return self.t1w.affine

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(x) for x in self.t1w.shape[:3])

    def region_grey_matter_mm3(self) -> np.ndarray:
        """Grey-matter volume of every region [mm^3] (sum of GM probability x voxel volume)."""
        labels = np.asarray(self.atlas.dataobj)
        voxel_mm3 = float(abs(np.linalg.det(self.affine[:3, :3])))
        return np.array([self.grey_matter[labels == k + 1].sum() * voxel_mm3 for k in range(len(self.names))])


@functools.lru_cache(maxsize=4)
def _template(resolution_mm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 T1 (float32, arbitrary units), GM probability, brain mask and affine at ``resolution_mm`` (nilearn; cached,
    the arrays are read-only)."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_gm_template, load_mni152_template

    t1 = load_mni152_template(resolution=resolution_mm)
    # nilearn's template is float in [0, ~0.93]: keep it float (an integer cast gives all zeros)
    t1_data = np.asarray(t1.get_fdata(), dtype=np.float32) * 1000.0
    brain = np.asarray(load_mni152_brain_mask(resolution=resolution_mm).dataobj) > 0
    gm = np.clip(np.asarray(load_mni152_gm_template(resolution=resolution_mm).dataobj, dtype=np.float64), 0, 1) * brain
    for array in (t1_data, gm, brain):
        array.setflags(write=False)
    return t1_data, gm, brain, np.asarray(t1.affine)


def make_anatomy(settings: PhantomSettings) -> Anatomy:
    """Template images and the region atlas for ``settings.grid_mm`` and ``settings.n_regions``."""
    res = int(settings.grid_mm)
    t1_data, gm, brain, affine = _template(res)
    t1w = nib.Nifti1Image(t1_data.copy(), affine)
    t1w.header.set_xyzt_units("mm")
    ijk = np.indices(gm.shape).reshape(3, -1).T
    world = nib.affines.apply_affine(affine, ijk)
    labels = np.zeros(gm.shape, dtype=np.int16)
    names, centres = [], []
    gm_flat = gm.ravel()
    for k, (name, *xyz) in enumerate(REGION_CENTRES_MM[: settings.n_regions]):
        candidates = np.flatnonzero(gm_flat >= 0.5)
        nearest = candidates[np.argmin(np.linalg.norm(world[candidates] - np.asarray(xyz, float), axis=1))]
        centre = world[nearest]
        inside = (
            (np.linalg.norm(world - centre, axis=1) <= settings.region_radius_mm) & (gm_flat >= 0.0) & brain.ravel()
        )
        inside &= labels.ravel() == 0
        if inside.sum() < 2:
            raise ParameterError(
                f"region {name} holds {int(inside.sum())} voxel(s) at {res} mm; raise region_radius_mm or lower grid_mm"
            )
        labels.ravel()[inside] = k + 1
        names.append(name)
        centres.append(centre)
    atlas = nib.Nifti1Image(labels, affine)
    atlas.header.set_xyzt_units("mm")
    return Anatomy(
        t1w=t1w, grey_matter=gm, brain=brain, atlas=atlas, names=tuple(names), centres_mm=np.asarray(centres)
    )
