"""Anatomy stage: T1w (or a GM probability map) -> grey-matter volume per voxel of a target MNI grid.

Steps (each one function, each on nibabel images):

1. :func:`target_grid` - the MNI152 2009a template of nilearn on a ``grid_mm`` grid (default 3 mm).
2. :func:`native_brain_mask` - dipy ``median_otsu`` on a native T1w (skull removed before registration).
3. :func:`register_to_template` - dipy affine registration (centre of mass, translation, rigid, affine;
   mutual information) followed by SyN (cross-correlation) onto the template at ``work_mm``. Images that
   are already normalised (``space-MNI*``) are only resampled, with nilearn.
4. The subject's brain mask: the median_otsu mask warped to the template, within the template's brain
   mask (which removes what median_otsu keeps of the skull), and pulled back onto the native grid;
   :meth:`Registration.jacobian` - the Jacobian determinant of the template -> native map.
5. :func:`dtb.preproc.tissue.segment_grey_matter` - dipy ``TissueClassifierHMRF`` (3 classes, MAP-MRF,
   seeded background noise: repeatable bit for bit) inside the subject's mask; the partial-volume
   estimate of the middle-intensity class (T1w: CSF < GM < WM) is the GM probability, and in the deep
   grey nuclei the template's GM prior. A given ``label-GM_probseg`` skips this step.
6. :func:`grey_matter_volume_on_grid` - GM volume [mm^3] of every target voxel: the GM map times the
   Jacobian (the subject's native volume; "modulated", as in voxel-based morphometry) resampled
   (nilearn, linear) onto equal sub-voxels of each target voxel and integrated (volume conserving).
   Without a registration (input already in MNI space) the volume is the template-space one.

Neuron counts per voxel (docs/model.md §3.1) are computed from the result by :mod:`dtb.preproc.anat_stage`.

Cost (2 cores, one shared): on the 1 mm MNI T1 (197 x 233 x 189) with the default ``work_mm = 2``,
registration about a minute, HMRF about 30 s, aggregation under a second, peak memory below 2 GB; see
docs/imaging.md for the measured numbers.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from dtb.errors import InputDataError, ParameterError
from dtb.io.bids import ValidatedSubject
from dtb.preproc.tissue import segment_grey_matter
from dtb.validation import check_bool, check_choice, check_in_range, check_positive

__all__ = [
    "AnatSettings",
    "AnatomyResult",
    "TEMPLATE_SPACE",
    "target_grid",
    "template_brain_mask",
    "native_brain_mask",
    "Registration",
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
    deep_grey_prior : take the GM probability of the deep grey nuclei from the template's tissue prior
        (:mod:`dtb.preproc.tissue`); an intensity classifier reads the pallidum as white matter.
    """

    grid_mm: float = 3.0
    work_mm: float = 2.0
    registration: str = "auto"
    hmrf_beta: float = 0.1
    hmrf_max_iter: int = 20
    syn_level_iters: tuple[int, ...] = (10, 10, 5)
    deep_grey_prior: bool = True

    def __post_init__(self):
        for name in ("grid_mm", "work_mm"):
            check_in_range(getattr(self, name), name, 0.5, 20.0, requirement="a voxel size between 0.5 and 20 mm")
        check_choice(self.registration, "registration", _REGISTRATIONS)
        check_in_range(self.hmrf_beta, "hmrf_beta", 0.0, 10.0)
        check_positive(self.hmrf_max_iter, "hmrf_max_iter", integer=True)
        check_bool(self.deep_grey_prior, "deep_grey_prior")


@dataclass(frozen=True)
class AnatomyResult:
    """Outputs of :func:`run_anatomy`, all on the target grid.

    Attributes
    ----------
    grid : the template on the target grid (its affine and shape define the grid).
    brain_mask : the subject's brain mask on the target grid (uint8): median_otsu of the T1w (warped
        to the template), within the template's brain mask; the template's mask only when there is no T1w.
    gm_volume : GM volume of each voxel [mm^3] (float32): the subject's native GM volume that the voxel
        stands for (GM probability x Jacobian determinant of the template -> native map, integrated) when
        the T1w was registered; the template-space volume otherwise (``volume_space``).
    gm_fraction : GM probability of each voxel in template space, in [0, 1] (not modulated).
    native_brain_mask : the subject's brain mask on the native T1w grid (uint8), or None (no registration).
    volume_space : ``"native"`` (Jacobian-modulated) or ``"template"`` (input already normalised).
    grey_matter_mm3 : ``gm_volume`` summed [mm^3].
    brain_mm3 : volume of ``native_brain_mask`` [mm^3], or None.
    space : template name (``MNI152NLin2009aSym``).
    steps : what was done, in order (for the sidecars and the log).
    timings : wall time of each step [s].
    """

    grid: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    gm_volume: nib.Nifti1Image
    gm_fraction: nib.Nifti1Image
    native_brain_mask: nib.Nifti1Image | None = None
    volume_space: str = "template"
    grey_matter_mm3: float = 0.0
    brain_mm3: float | None = None
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


@functools.lru_cache(maxsize=8)
def _template_arrays(grid_mm: float) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    from nilearn.datasets import load_mni152_template

    img = _on_grid(load_mni152_template, grid_mm, "continuous")
    data, affine = np.asarray(img.dataobj), np.array(img.affine)
    data.setflags(write=False)
    affine.setflags(write=False)
    return data, affine, img.header


def target_grid(grid_mm: float = 3.0) -> nib.Nifti1Image:
    """nilearn's MNI152 2009a T1 template on an isotropic ``grid_mm`` grid [mm] (origin of the 1 mm one).

    Resampled once per process and grid (nilearn resamples the 1 mm file on every call, seconds);
    the returned image's voxels are read-only.
    """
    data, affine, header = _template_arrays(float(grid_mm))
    return nib.Nifti1Image(data, affine.copy(), header.copy())


@functools.lru_cache(maxsize=8)
def _template_mask_array(shape: tuple[int, ...], affine_bytes: bytes) -> np.ndarray:
    from nilearn.datasets import load_mni152_brain_mask

    affine = np.frombuffer(affine_bytes, dtype=np.float64).reshape(4, 4)
    reference = nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), affine)
    mask = _resample(load_mni152_brain_mask(resolution=1), reference, "nearest")
    data = (mask.get_fdata() > 0.5).astype(np.uint8)
    data.setflags(write=False)
    return data


def template_brain_mask(reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """nilearn's MNI152 whole-brain mask resampled onto ``reference`` (nearest neighbour, uint8;
    once per process and grid, read-only voxels)."""
    affine = np.ascontiguousarray(reference.affine, dtype=np.float64)
    return nib.Nifti1Image(_template_mask_array(tuple(reference.shape[:3]), affine.tobytes()), affine.copy())


def native_brain_mask(t1w: nib.Nifti1Image) -> nib.Nifti1Image:
    """Brain mask of a native T1w by dipy's ``median_otsu`` (median filter radius 2, 2 passes)."""
    from dipy.segment.mask import median_otsu

    data = np.asarray(t1w.dataobj, dtype=np.float32)
    _, mask = median_otsu(data, median_radius=2, numpass=2)
    return nib.Nifti1Image(mask.astype(np.uint8), t1w.affine)


def _resample(img: nib.Nifti1Image, reference: nib.Nifti1Image, interpolation: str) -> nib.Nifti1Image:
    from nilearn.image import resample_to_img

    return resample_to_img(img, reference, interpolation=interpolation, copy_header=True, force_resample=True)


@dataclass(frozen=True, eq=False)
class Registration:
    """A native T1w registered to the template (dipy), as functions on images.

    Attributes
    ----------
    warped : the moving image on the template grid.
    warp : ``warp(img, interpolation="linear")`` - an image in the moving (native) space onto the
        template grid.
    unwarp : ``unwarp(img, interpolation="linear")`` - an image on the template grid back onto the
        moving image's grid.
    method : ``"affine"`` or ``"syn"``.
    """

    warped: nib.Nifti1Image
    warp: Callable[..., nib.Nifti1Image]
    unwarp: Callable[..., nib.Nifti1Image]
    method: str

    @classmethod
    def from_transform(cls, transform, moving: nib.Nifti1Image, template: nib.Nifti1Image, method: str) -> Registration:
        """From a dipy ``AffineMap`` or ``DiffeomorphicMap`` (static = template, moving = native)."""

        def warp(img, interpolation="linear"):
            out = transform.transform(np.asarray(img.dataobj, dtype=np.float64), interpolation=interpolation)
            return nib.Nifti1Image(out.astype(np.float32), template.affine)

        def unwarp(img, interpolation="linear"):
            out = transform.transform_inverse(np.asarray(img.dataobj, dtype=np.float64), interpolation=interpolation)
            return nib.Nifti1Image(out.astype(np.float32), moving.affine)

        return cls(warped=warp(moving), warp=warp, unwarp=unwarp, method=method)

    def jacobian(self, moving: nib.Nifti1Image) -> nib.Nifti1Image:
        """Jacobian determinant of the template -> native map on the template grid [native mm^3 per
        template mm^3]: the native volume a template voxel stands for, divided by its own volume.

        The native world coordinates of every template voxel are obtained by warping the three
        coordinate images of ``moving`` (exact: linear interpolation of a linear function); their
        central differences give the 3 x 3 Jacobian. Folded (negative) determinants are set to 0.
        """
        shape = moving.shape[:3]
        coordinates = nib.affines.apply_affine(moving.affine, np.indices(shape).reshape(3, -1).T)
        mapped = np.stack(
            [
                self.warp(nib.Nifti1Image(coordinates[:, axis].reshape(shape), moving.affine)).get_fdata()
                for axis in range(3)
            ],
            axis=-1,
        )
        grid = self.warped.affine[:3, :3]
        per_index = np.stack(np.gradient(mapped, axis=(0, 1, 2)), axis=-1)  # d native / d (i, j, k)
        determinant = np.linalg.det(per_index) / np.linalg.det(grid)
        return nib.Nifti1Image(np.clip(determinant, 0.0, None).astype(np.float32), self.warped.affine)


def register_to_template(
    moving: nib.Nifti1Image, template: nib.Nifti1Image, method: str = "syn", syn_level_iters=(10, 10, 5)
) -> Registration:
    """Register a T1w to the template with dipy.

    Parameters
    ----------
    moving : native T1w (brain-extracted works best).
    template : the template on the working grid (static image).
    method : ``"affine"`` or ``"syn"`` (affine, then symmetric diffeomorphic SyN with CC metric).
    syn_level_iters : SyN iterations per scale.

    Returns
    -------
    :class:`Registration` (``warp`` moves other images of the same native space, e.g. a GM map or a
    mask, onto the template grid; ``unwarp`` moves template-grid images back).

    Both dipy steps are deterministic (dense mutual information, no random sampling; same bits for
    1 and 2 OpenMP threads, ``tests/preproc/test_anat_native.py``).
    """
    from dipy.align import affine_registration, syn_registration
    from dipy.align.imaffine import AffineMap

    if method not in ("affine", "syn"):
        raise ParameterError(f"registration method must be 'affine' or 'syn', got {method!r}")
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
        transform = AffineMap(
            affine,
            domain_grid_shape=static.shape,
            domain_grid2world=template.affine,
            codomain_grid_shape=data.shape,
            codomain_grid2world=moving.affine,
        )
    else:
        _, transform = syn_registration(
            data,
            static,
            moving_affine=moving.affine,
            static_affine=template.affine,
            prealign=affine,
            level_iters=list(syn_level_iters),
        )

    return Registration.from_transform(transform, moving, template, method)


def grey_matter_volume_on_grid(
    gm_probability: nib.Nifti1Image, grid: nib.Nifti1Image, max_density: float = 1.0
) -> nib.Nifti1Image:
    """GM volume [mm^3] of every voxel of ``grid``.

    Each grid voxel is split into ``k^3`` equal sub-voxels no larger than a voxel of the map
    (``k = ceil(grid voxel size / map voxel size)``); the map is resampled onto the sub-voxel centres
    (nilearn, linear) and ``p x sub-voxel volume`` is summed per grid voxel. Every grid voxel thus
    integrates the same volume (no aliasing when the sizes are not multiples), and the total GM volume
    is conserved up to interpolation error.

    Parameters
    ----------
    gm_probability : GM probability in [0, 1] (3-D), or a GM density [mm^3 per mm^3] such as a
        Jacobian-modulated probability (then give ``max_density``).
    grid : image defining the target grid (affine and shape).
    max_density : values are clipped to [0, max_density] before integrating (1 for a probability).

    Returns
    -------
    float32 image on the grid [mm^3], values in [0, max_density x grid voxel volume].
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
    blocks = np.clip(sub, 0, max_density).reshape(shape[0], k, shape[1], k, shape[2], k)
    volume = blocks.sum(axis=(1, 3, 5), dtype=np.float64) * sub_volume
    return nib.Nifti1Image(volume.astype(np.float32), grid.affine)


def _is_template_space(space: str | None) -> bool:
    return space is not None and space.startswith("MNI")


def _mask_on_grid(mask: nib.Nifti1Image, grid: nib.Nifti1Image) -> nib.Nifti1Image:
    """A mask onto a coarser grid: voxels more than half inside (volume fraction by sub-voxels)."""
    import warnings

    as_float = nib.Nifti1Image(np.asarray(mask.dataobj, dtype=np.float32), mask.affine)
    with warnings.catch_warnings():  # linear on purpose: the fraction of each voxel inside the mask
        warnings.filterwarnings("ignore", message="Resampling binary images")
        fraction = grey_matter_volume_on_grid(as_float, grid).get_fdata() / abs(np.linalg.det(grid.affine[:3, :3]))
    return nib.Nifti1Image((fraction > 0.5).astype(np.uint8), grid.affine)


def _subject_mask_in_template(t1_work: nib.Nifti1Image, template_mask: nib.Nifti1Image) -> nib.Nifti1Image:
    """median_otsu of a T1w already on the working grid, within the template's brain mask (drops the
    scalp that median_otsu keeps on a T1w with skull)."""
    otsu = native_brain_mask(t1_work).get_fdata() > 0
    inside = otsu & (template_mask.get_fdata() > 0)
    return nib.Nifti1Image(inside.astype(np.uint8), t1_work.affine)


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
    template_mask = template_brain_mask(work)
    gm = subject.gm_probseg
    gm_native = gm is not None and not _is_template_space(inputs.gm_probseg_space)
    t1_native = subject.t1w is not None and not _is_template_space(inputs.t1w_space)
    method = settings.registration
    if method == "auto":
        method = "syn"
    needs_registration = (gm is None and t1_native) or gm_native
    jacobian = native_mask = None
    if needs_registration and method != "none":
        if subject.t1w is None:
            raise InputDataError(
                f"{inputs.gm_probseg}: a GM map in native space needs the subject's T1w to register it to MNI; "
                "add the T1w or give a space-MNI* GM map"
            )
        otsu = native_brain_mask(subject.t1w)
        done("native brain mask (dipy median_otsu)")
        stripped = nib.Nifti1Image(np.asarray(subject.t1w.dataobj, np.float32) * otsu.get_fdata(), subject.t1w.affine)
        registration = register_to_template(stripped, work, method, settings.syn_level_iters)
        t1_work = registration.warped
        done(
            f"registration to {TEMPLATE_SPACE} at {settings.work_mm:g} mm (dipy affine{' + SyN' if method == 'syn' else ''})"
        )
        within = template_mask.get_fdata() > 0
        mask_work = nib.Nifti1Image(
            ((registration.warp(otsu).get_fdata() > 0.5) & within).astype(np.uint8), work.affine
        )
        back = registration.unwarp(mask_work).get_fdata() > 0.5
        native_mask = nib.Nifti1Image((back & (otsu.get_fdata() > 0)).astype(np.uint8), subject.t1w.affine)
        jacobian = registration.jacobian(subject.t1w)
        done("subject brain mask (median_otsu within the template's mask) and Jacobian of the warp")
        if gm is not None:
            gm_work = registration.warp(gm, "linear")
            done("GM map warped to the template")
    else:
        # already normalised (or registration "none"): resample onto the working grid with nilearn
        t1_work = _resample(subject.t1w, work, "continuous") if subject.t1w is not None else None
        gm_work = gm
        mask_work = _subject_mask_in_template(t1_work, template_mask) if t1_work is not None else template_mask
        done("resampled to the working grid (nilearn, already normalised)")
    if gm is None:
        gm_work = segment_grey_matter(
            t1_work, mask_work, settings.hmrf_beta, settings.hmrf_max_iter, settings.deep_grey_prior
        )
        done(
            "tissue segmentation (dipy TissueClassifierHMRF, 3 classes"
            + (", template GM prior in the deep grey nuclei)" if settings.deep_grey_prior else ")")
        )
    same_grid = gm_work.shape[:3] == mask_work.shape and np.allclose(gm_work.affine, mask_work.affine)
    inside = (mask_work if same_grid else _resample(mask_work, gm_work, "nearest")).get_fdata() > 0
    probability = np.where(inside, np.clip(gm_work.get_fdata(), 0, 1), 0.0)
    fraction = grey_matter_volume_on_grid(nib.Nifti1Image(probability, gm_work.affine), grid).get_fdata()
    voxel = abs(np.linalg.det(grid.affine[:3, :3]))
    if jacobian is not None:
        density = nib.Nifti1Image(probability * jacobian.get_fdata(), work.affine)
        volume = grey_matter_volume_on_grid(density, grid, max_density=np.inf).get_fdata()
        native_voxel = abs(np.linalg.det(subject.t1w.affine[:3, :3]))
        brain_native = float(native_mask.get_fdata().sum() * native_voxel)
    else:
        volume = fraction
        brain_native = None
    brain_mask = _mask_on_grid(mask_work, grid)
    done(f"GM volume per {settings.grid_mm:g} mm voxel" + (" (Jacobian-modulated)" if jacobian is not None else ""))
    return AnatomyResult(
        grid=grid,
        brain_mask=brain_mask,
        gm_volume=nib.Nifti1Image(volume.astype(np.float32), grid.affine),
        gm_fraction=nib.Nifti1Image((fraction / voxel).astype(np.float32), grid.affine),
        native_brain_mask=native_mask,
        volume_space="native" if jacobian is not None else "template",
        grey_matter_mm3=float(volume.sum()),
        brain_mm3=brain_native,
        steps=tuple(steps),
        timings=timings,
    )
