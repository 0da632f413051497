"""Anatomy stage: T1w (or a GM probability map) -> grey-matter volume per voxel of a target MNI grid.

Steps (each one function, each on nibabel images):

1. :func:`target_grid` - the MNI152 2009a template of nilearn on a ``grid_mm`` grid (default 3 mm).
2. :func:`native_brain_mask` - dipy ``median_otsu`` on a native T1w (skull removed before registration).
3. :func:`register_to_template` - dipy affine registration (centre of mass, translation, rigid, affine;
   mutual information) followed by SyN (cross-correlation) onto the template at ``work_mm``. Images that
   are already normalised (``space-MNI*``) are only resampled, with nilearn.
4. :func:`segment_grey_matter` - dipy ``TissueClassifierHMRF`` (3 classes, MAP-MRF) inside the template
   brain mask; the partial-volume estimate of the middle-intensity class (T1w: CSF < GM < WM) is the GM
   probability. A given ``label-GM_probseg`` skips this step.
5. :func:`grey_matter_volume_on_grid` - GM volume [mm^3] of every target voxel: the GM map resampled
   (nilearn, linear) onto equal sub-voxels of each target voxel and integrated (volume conserving).

Neuron counts per voxel (docs/model.md §3.1) are computed from the result by
``dtb.network.populations.neuron_counts_from_grey_matter`` (called by the ``dtb anat`` command, as
``dtb.preproc`` may not import ``dtb.network``).

Cost (2 cores, one shared): on the 1 mm MNI T1 (197 x 233 x 189) with the default ``work_mm = 2``,
registration about a minute, HMRF about 30 s, aggregation under a second, peak memory below 2 GB; see
docs/imaging.md for the measured numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from dtb.errors import InputDataError, ParameterError
from dtb.io.bids import ValidatedSubject

__all__ = [
    "AnatSettings",
    "AnatomyResult",
    "TEMPLATE_SPACE",
    "target_grid",
    "template_brain_mask",
    "native_brain_mask",
    "register_to_template",
    "segment_grey_matter",
    "grey_matter_volume_on_grid",
    "run_anatomy",
]

log = logging.getLogger("dtb.preproc.anat")

#: BIDS name of the template nilearn ships (ICBM 152 2009a nonlinear symmetric).
TEMPLATE_SPACE = "MNI152NLin2009aSym"
_REGISTRATIONS = ("auto", "syn", "affine", "none")


@dataclass(frozen=True, kw_only=True)
class AnatSettings:
    """Settings of the anatomy stage.

    Attributes
    ----------
    grid_mm : voxel size of the target MNI grid [mm] (network voxels).
    work_mm : voxel size [mm] at which registration and segmentation run (finer = slower).
    registration : ``"auto"`` (SyN for native images, resampling for ``space-MNI*`` ones), ``"syn"``
        (affine + SyN), ``"affine"`` (affine only), or ``"none"`` (the T1w is taken as already in MNI space).
    hmrf_beta : MRF smoothness of dipy's HMRF classifier (dimensionless; 0.1 is dipy's example value).
    hmrf_max_iter : maximum ICM/EM iterations of the classifier.
    syn_level_iters : SyN iterations per scale (coarse to fine).
    """

    grid_mm: float = 3.0
    work_mm: float = 2.0
    registration: str = "auto"
    hmrf_beta: float = 0.1
    hmrf_max_iter: int = 20
    syn_level_iters: tuple[int, ...] = (10, 10, 5)

    def __post_init__(self):
        for name in ("grid_mm", "work_mm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and 0.5 <= value <= 20):
                raise ParameterError(f"{name} must be a voxel size between 0.5 and 20 mm, got {value!r}")
        if self.registration not in _REGISTRATIONS:
            raise ParameterError(f"registration must be one of {_REGISTRATIONS}, got {self.registration!r}")
        if not (0 <= self.hmrf_beta <= 10):
            raise ParameterError(f"hmrf_beta must lie in [0, 10], got {self.hmrf_beta!r}")
        if int(self.hmrf_max_iter) != self.hmrf_max_iter or self.hmrf_max_iter < 1:
            raise ParameterError(f"hmrf_max_iter must be a positive integer, got {self.hmrf_max_iter!r}")


@dataclass(frozen=True)
class AnatomyResult:
    """Outputs of :func:`run_anatomy`, all on the target grid.

    Attributes
    ----------
    grid : the template on the target grid (its affine and shape define the grid).
    brain_mask : template brain mask on the target grid (uint8).
    gm_volume : GM volume of each voxel [mm^3] (float32).
    gm_fraction : ``gm_volume`` / voxel volume (a GM probability map on the target grid).
    space : template name (``MNI152NLin2009aSym``).
    steps : what was done, in order (for the sidecars and the log).
    timings : wall time of each step [s].
    """

    grid: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    gm_volume: nib.Nifti1Image
    gm_fraction: nib.Nifti1Image
    space: str = TEMPLATE_SPACE
    steps: tuple[str, ...] = ()
    timings: dict = field(default_factory=dict)


def _on_grid(loader, grid_mm: float, interpolation: str) -> nib.Nifti1Image:
    from nilearn.image import resample_img

    if float(grid_mm).is_integer():
        return loader(resolution=int(grid_mm))
    fine = loader(resolution=1)
    affine = fine.affine.copy()
    affine[:3, :3] = np.diag([grid_mm] * 3)
    shape = tuple(int(np.ceil(n / grid_mm)) for n in fine.shape[:3])
    return resample_img(
        fine,
        target_affine=affine,
        target_shape=shape,
        interpolation=interpolation,
        copy_header=True,
        force_resample=True,
    )


def target_grid(grid_mm: float = 3.0) -> nib.Nifti1Image:
    """nilearn's MNI152 2009a T1 template on an isotropic ``grid_mm`` grid [mm] (origin of the 1 mm one)."""
    from nilearn.datasets import load_mni152_template

    return _on_grid(load_mni152_template, grid_mm, "continuous")


def template_brain_mask(reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """nilearn's MNI152 whole-brain mask resampled onto ``reference`` (nearest neighbour, uint8)."""
    from nilearn.datasets import load_mni152_brain_mask

    mask = _resample(load_mni152_brain_mask(resolution=1), reference, "nearest")
    return nib.Nifti1Image((mask.get_fdata() > 0.5).astype(np.uint8), reference.affine)


def native_brain_mask(t1w: nib.Nifti1Image) -> nib.Nifti1Image:
    """Brain mask of a native T1w by dipy's ``median_otsu`` (median filter radius 2, 2 passes)."""
    from dipy.segment.mask import median_otsu

    data = np.asarray(t1w.dataobj, dtype=np.float32)
    _, mask = median_otsu(data, median_radius=2, numpass=2)
    return nib.Nifti1Image(mask.astype(np.uint8), t1w.affine)


def _resample(img: nib.Nifti1Image, reference: nib.Nifti1Image, interpolation: str) -> nib.Nifti1Image:
    from nilearn.image import resample_to_img

    return resample_to_img(img, reference, interpolation=interpolation, copy_header=True, force_resample=True)


def register_to_template(
    moving: nib.Nifti1Image, template: nib.Nifti1Image, method: str = "syn", syn_level_iters=(10, 10, 5)
):
    """Register a T1w to the template with dipy and return a function that warps native images.

    Parameters
    ----------
    moving : native T1w (brain-extracted works best).
    template : the template on the working grid (static image).
    method : ``"affine"`` or ``"syn"`` (affine, then symmetric diffeomorphic SyN with CC metric).
    syn_level_iters : SyN iterations per scale.

    Returns
    -------
    warped : ``moving`` on the template grid.
    warp : callable ``warp(img, interpolation="linear") -> image on the template grid`` for other images
        in the same native space (e.g. a GM probability map or a mask).
    """
    from dipy.align import affine_registration, syn_registration
    from dipy.align.imaffine import AffineMap

    static = np.asarray(template.dataobj, dtype=np.float64)
    data = np.asarray(moving.dataobj, dtype=np.float64)
    _, affine = affine_registration(
        data,
        static,
        moving_affine=moving.affine,
        static_affine=template.affine,
        pipeline=["center_of_mass", "translation", "rigid", "affine"],
        level_iters=[200, 50, 10],
        sigmas=[3.0, 1.0, 0.0],
        factors=[4, 2, 1],
    )
    if method == "affine":
        affine_map = AffineMap(
            affine,
            domain_grid_shape=static.shape,
            domain_grid2world=template.affine,
            codomain_grid_shape=data.shape,
            codomain_grid2world=moving.affine,
        )

        def warp(img, interpolation="linear"):
            out = affine_map.transform(np.asarray(img.dataobj, dtype=np.float64), interpolation=interpolation)
            return nib.Nifti1Image(out.astype(np.float32), template.affine)

    elif method == "syn":
        _, mapping = syn_registration(
            data,
            static,
            moving_affine=moving.affine,
            static_affine=template.affine,
            prealign=affine,
            level_iters=list(syn_level_iters),
        )

        def warp(img, interpolation="linear"):
            out = mapping.transform(np.asarray(img.dataobj, dtype=np.float64), interpolation=interpolation)
            return nib.Nifti1Image(out.astype(np.float32), template.affine)

    else:
        raise ParameterError(f"registration method must be 'affine' or 'syn', got {method!r}")
    return warp(moving), warp


def segment_grey_matter(
    t1w: nib.Nifti1Image, brain_mask: nib.Nifti1Image, beta: float = 0.1, max_iter: int = 20
) -> nib.Nifti1Image:
    """GM probability of each voxel from dipy's HMRF tissue classifier (3 classes).

    Parameters
    ----------
    t1w : T1-weighted image (any intensity scale).
    brain_mask : same grid; the GM probability is set to 0 outside it. The classifier itself sees the
        whole image: dipy's uniform initialisation degenerates (empty classes, NaN) when most voxels
        are masked to 0.
    beta, max_iter : HMRF smoothness and iterations.

    Returns
    -------
    nibabel image (float32, in [0, 1]) on the grid of ``t1w``: the partial-volume estimate of the
    middle-intensity class (dipy sorts classes by mean intensity; on a T1w: CSF < GM < WM).
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
    _, _, pve = TissueClassifierHMRF(verbose=False).classify(image, 3, beta, max_iter=max_iter)
    gm = np.where(mask, pve[..., 1], 0.0)
    if not np.all(np.isfinite(gm)):
        raise InputDataError(
            "dipy's HMRF tissue classifier did not converge on this T1w (empty tissue class); give a GM "
            "probability map (*_label-GM_probseg.nii.gz) or check the T1w contrast"
        )
    return nib.Nifti1Image(np.clip(gm, 0, 1).astype(np.float32), t1w.affine)


def grey_matter_volume_on_grid(gm_probability: nib.Nifti1Image, grid: nib.Nifti1Image) -> nib.Nifti1Image:
    """GM volume [mm^3] of every voxel of ``grid``.

    Each grid voxel is split into ``k^3`` equal sub-voxels no larger than a voxel of the map
    (``k = ceil(grid voxel size / map voxel size)``); the map is resampled onto the sub-voxel centres
    (nilearn, linear) and ``p x sub-voxel volume`` is summed per grid voxel. Every grid voxel thus
    integrates the same volume (no aliasing when the sizes are not multiples), and the total GM volume
    is conserved up to interpolation error.

    Parameters
    ----------
    gm_probability : GM probability in [0, 1] (3-D).
    grid : image defining the target grid (affine and shape).

    Returns
    -------
    float32 image on the grid, values in [0, grid voxel volume].
    """
    from nilearn.image import resample_img

    shape = tuple(int(n) for n in grid.shape[:3])
    grid_size = np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0))
    map_size = np.sqrt((gm_probability.affine[:3, :3] ** 2).sum(axis=0))
    k = max(1, int(np.ceil(grid_size.max() / map_size.min() - 1e-6)))
    split = np.diag([1.0 / k, 1.0 / k, 1.0 / k, 1.0])
    split[:3, 3] = -0.5 + 0.5 / k
    sub_affine = grid.affine @ split
    sub = resample_img(
        gm_probability,
        target_affine=sub_affine,
        target_shape=tuple(n * k for n in shape),
        interpolation="linear",
        copy_header=True,
        force_resample=True,
    ).get_fdata(dtype=np.float32)
    sub_volume = abs(np.linalg.det(sub_affine[:3, :3]))
    blocks = np.clip(sub, 0, 1).reshape(shape[0], k, shape[1], k, shape[2], k)
    volume = blocks.sum(axis=(1, 3, 5), dtype=np.float64) * sub_volume
    return nib.Nifti1Image(volume.astype(np.float32), grid.affine)


def _is_template_space(space: str | None) -> bool:
    return space is not None and space.startswith("MNI")


def run_anatomy(subject: ValidatedSubject, settings: AnatSettings | None = None) -> AnatomyResult:
    """Run the anatomy stage on a validated subject: GM volume per voxel of the target MNI grid.

    Uses the subject's GM probability map when there is one (registered with the T1w when it is in
    native space), otherwise segments the T1w. See the module docstring for the steps.

    Parameters
    ----------
    subject : from :func:`dtb.io.bids.validate_subject` (with ``require=("anat",)``).
    settings : :class:`AnatSettings` (defaults: 3 mm grid, 2 mm working grid, automatic registration).

    Returns
    -------
    AnatomyResult
    """
    settings = settings or AnatSettings()
    inputs = subject.inputs
    steps: list[str] = []
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def done(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = round(now - clock, 3)
        clock = now
        steps.append(step)
        log.info("anat sub-%s: %s (%.1f s)", inputs.label, step, timings[step])

    grid = target_grid(settings.grid_mm)
    work = target_grid(settings.work_mm)
    work_mask = template_brain_mask(work)
    gm = subject.gm_probseg
    gm_native = gm is not None and not _is_template_space(inputs.gm_probseg_space)
    t1_native = subject.t1w is not None and not _is_template_space(inputs.t1w_space)
    method = settings.registration
    if method == "auto":
        method = "syn"
    needs_registration = (gm is None and t1_native) or gm_native
    if needs_registration and method != "none":
        if subject.t1w is None:
            raise InputDataError(
                f"{inputs.gm_probseg}: a GM map in native space needs the subject's T1w to register it to MNI; "
                "add the T1w or give a space-MNI* GM map"
            )
        native_mask = native_brain_mask(subject.t1w)
        done("native brain mask (dipy median_otsu)")
        stripped = nib.Nifti1Image(
            np.asarray(subject.t1w.dataobj, np.float32) * native_mask.get_fdata(), subject.t1w.affine
        )
        t1_work, warp = register_to_template(stripped, work, method, settings.syn_level_iters)
        done(
            f"registration to {TEMPLATE_SPACE} at {settings.work_mm:g} mm (dipy affine{' + SyN' if method == 'syn' else ''})"
        )
        if gm is not None:
            gm_work = warp(gm, "linear")
            done("GM map warped to the template")
    else:
        # already normalised (or registration "none"): resample onto the working grid with nilearn
        t1_work = _resample(subject.t1w, work, "continuous") if subject.t1w is not None else None
        gm_work = gm if gm is not None else None
        done("resampled to the working grid (nilearn, already normalised)")
    if gm is None:
        gm_work = segment_grey_matter(t1_work, work_mask, settings.hmrf_beta, settings.hmrf_max_iter)
        done("tissue segmentation (dipy TissueClassifierHMRF, 3 classes)")
    gm_volume = grey_matter_volume_on_grid(gm_work, grid)
    brain_mask = template_brain_mask(grid)
    volume = np.where(brain_mask.get_fdata() > 0, gm_volume.get_fdata(), 0.0).astype(np.float32)
    voxel = abs(np.linalg.det(grid.affine[:3, :3]))
    done(f"GM volume per {settings.grid_mm:g} mm voxel")
    return AnatomyResult(
        grid=grid,
        brain_mask=brain_mask,
        gm_volume=nib.Nifti1Image(volume, grid.affine),
        gm_fraction=nib.Nifti1Image((volume / voxel).astype(np.float32), grid.affine),
        steps=tuple(steps),
        timings=timings,
    )
