"""Functional stage: BOLD -> cleaned voxel time series on the target grid and region time series.

Steps, over the BOLD series read in blocks of ``volumes_per_chunk`` volumes:

1. Motion correction (raw BOLD only; a ``desc-preproc`` BOLD is taken as corrected): every volume is
   registered rigidly to the first volume with dipy's ``register_series`` (translation, then rigid;
   mutual information). The six motion parameters are kept and regressed out as confounds.
2. Spatial normalisation: a BOLD already in ``space-MNI*`` is used as is; a native BOLD gets one affine
   (dipy, mutual information) from its mean volume to the MNI template, applied by changing the image
   affine (no extra resampling).
3. Extraction: voxel time series on the target grid inside the voxel mask (nilearn ``NiftiMasker``;
   resampling to the grid in world coordinates) and, given an atlas, region means (nilearn
   ``NiftiLabelsMasker``).
4. Cleaning, per block of voxels (``nilearn.signal.clean``): linear detrend, confound regression (the
   confounds table and the motion parameters), Butterworth band-pass ``high_pass_hz``-``low_pass_hz``
   (default 0.01-0.1 Hz). Signals keep their scale (no z-scoring).

Memory bound: one block of the input (``volumes_per_chunk x X x Y x Z x 8`` bytes, about 3 copies
during motion correction) plus the outputs (``n_volumes x (n_voxels + n_regions) x 4`` bytes) plus one
cleaning block (``n_volumes x voxels_per_chunk x 8`` bytes, a few copies). The input series is never
loaded whole.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd

from dtb.errors import InputDataError, ParameterError
from dtb.io.bids import ValidatedSubject
from dtb.validation import check_choice, check_positive

__all__ = ["FuncSettings", "FunctionalResult", "MOTION_COLUMNS", "read_confounds", "clean_signals", "run_functional"]

log = logging.getLogger("dtb.preproc.func")

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: fMRIPrep confound columns used when present (otherwise every numeric column is used).
_FMRIPREP_CONFOUNDS = (*MOTION_COLUMNS, "white_matter", "csf")
_CHOICES = ("auto", "on", "off")
#: scipy's sosfiltfilt pads by 3 x (2 x sections + 1) samples; nilearn's order-5 band-pass has 5 sections
_MIN_VOLUMES_FILTERED = 33


@dataclass(frozen=True, kw_only=True)
class FuncSettings:
    """Settings of the functional stage.

    Attributes
    ----------
    high_pass_hz, low_pass_hz : band-pass edges [Hz] (None disables one side).
    detrend : remove a linear trend.
    motion_correction : ``"auto"`` (raw BOLD only), ``"on"`` or ``"off"``.
    normalisation : ``"auto"`` (affine to MNI for a BOLD not in ``space-MNI*``), ``"on"`` or ``"off"``
        (the BOLD is taken as already in MNI space).
    volumes_per_chunk : BOLD volumes read at once.
    voxels_per_chunk : voxels cleaned at once.
    """

    high_pass_hz: float | None = 0.01
    low_pass_hz: float | None = 0.1
    detrend: bool = True
    motion_correction: str = "auto"
    normalisation: str = "auto"
    volumes_per_chunk: int = 64
    voxels_per_chunk: int = 4096

    def __post_init__(self):
        for name in ("high_pass_hz", "low_pass_hz"):
            check_positive(
                getattr(self, name), name, allow_none=True, requirement="a positive frequency in Hz (or None)"
            )
        if self.high_pass_hz is not None and self.low_pass_hz is not None and self.high_pass_hz >= self.low_pass_hz:
            raise ParameterError(
                f"high_pass_hz ({self.high_pass_hz}) must be below low_pass_hz ({self.low_pass_hz}) for a band-pass"
            )
        for name in ("motion_correction", "normalisation"):
            check_choice(getattr(self, name), name, _CHOICES)
        for name in ("volumes_per_chunk", "voxels_per_chunk"):
            check_positive(getattr(self, name), name, integer=True)


@dataclass(frozen=True)
class FunctionalResult:
    """Outputs of :func:`run_functional`.

    Attributes
    ----------
    repetition_time : TR [s].
    voxel_timeseries : float32 array (time, voxel), cleaned BOLD of the mask voxels (scanner units).
    voxel_indices : int array (voxel, 3), (i, j, k) of each voxel on the grid of ``voxel_mask``.
    voxel_mask : the mask image defining the grid and the voxels (C order of ``np.nonzero``).
    region_timeseries : DataFrame (time x region label) of cleaned region means, or None.
    motion : DataFrame (time x MOTION_COLUMNS) [mm, rad] when motion correction ran, else None.
    steps : what was done, in order.
    timings : wall time of each step [s].
    """

    repetition_time: float
    voxel_timeseries: np.ndarray
    voxel_indices: np.ndarray
    voxel_mask: nib.Nifti1Image
    region_timeseries: pd.DataFrame | None = None
    motion: pd.DataFrame | None = None
    steps: tuple[str, ...] = ()
    timings: dict = field(default_factory=dict)

    @property
    def times(self) -> np.ndarray:
        """Acquisition time of each volume [s] (volume index x TR)."""
        return np.arange(self.voxel_timeseries.shape[0]) * self.repetition_time


def read_confounds(path, n_volumes: int) -> pd.DataFrame:
    """Read a confounds table (TSV with a header, ``n/a`` for missing values).

    fMRIPrep tables contribute the six motion parameters, ``white_matter`` and ``csf``; other tables
    contribute every numeric column. Missing values (first rows of derivative columns) are filled with
    the column mean.

    Raises
    ------
    InputDataError
        Unreadable table, no numeric column, or a row count other than ``n_volumes``.
    """
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: cannot read the confounds table ({exc}); give a TSV with a header row") from None
    chosen = [c for c in _FMRIPREP_CONFOUNDS if c in table.columns]
    table = table[chosen] if chosen else table.select_dtypes("number")
    if table.shape[1] == 0:
        raise InputDataError(f"{path}: no numeric confound column; give a TSV of confound regressors")
    if len(table) != n_volumes:
        raise InputDataError(f"{path}: {len(table)} rows but the BOLD has {n_volumes} volumes; give one row per volume")
    return table.fillna(table.mean()).fillna(0.0)


def _check_length(n_volumes: int, settings: FuncSettings) -> None:
    filtering = settings.low_pass_hz is not None or settings.high_pass_hz is not None
    if filtering and n_volumes <= _MIN_VOLUMES_FILTERED:
        raise InputDataError(
            f"the BOLD has {n_volumes} volumes; the Butterworth band-pass needs more than "
            f"{_MIN_VOLUMES_FILTERED} (its padding); give a longer series or switch the filter off "
            "(--high-pass 0 --low-pass 0)"
        )


def clean_signals(
    signals: np.ndarray,
    repetition_time: float,
    settings: FuncSettings,
    confounds: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Detrend, regress confounds and band-pass ``signals`` (time, n) with ``nilearn.signal.clean``.

    Parameters
    ----------
    signals : array (time, n) in any unit.
    repetition_time : sampling interval [s].
    settings : band edges and detrending.
    confounds : array (time, k) or None.
    out : float32 array (time, n) to write into (may be ``signals`` itself: blocks are independent).

    Returns
    -------
    float32 array (time, n), same scale as the input (no z-scoring), zero mean.
    """
    from nilearn.signal import clean

    _check_length(signals.shape[0], settings)
    out = np.empty(signals.shape, dtype=np.float32) if out is None else out
    step = settings.voxels_per_chunk
    for start in range(0, signals.shape[1], step):
        block = signals[:, start : start + step].astype(np.float64)
        out[:, start : start + step] = clean(
            block,
            detrend=settings.detrend,
            standardize=None,
            confounds=confounds,
            low_pass=settings.low_pass_hz,
            high_pass=settings.high_pass_hz,
            t_r=repetition_time,
            # vectorised filtering of the whole block (nilearn's in-place default loops over columns,
            # about 1000x slower); the copy is bounded by voxels_per_chunk
            butterworth__copy=True,
        )
    return out


def _motion_parameters(affines: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    matrices = np.moveaxis(affines, -1, 0)
    rotations = Rotation.from_matrix(matrices[:, :3, :3]).as_euler("xyz")
    return np.column_stack([matrices[:, :3, 3], rotations])


def _motion_correct(block: nib.Nifti1Image, reference: np.ndarray) -> tuple[nib.Nifti1Image, np.ndarray]:
    from dipy.align import register_series

    data = np.asarray(block.dataobj, dtype=np.float64)
    corrected, affines = register_series(
        data,
        reference,
        pipeline=["translation", "rigid"],
        series_affine=block.affine,
        ref_affine=block.affine,
        level_iters=[100, 10],
    )
    return nib.Nifti1Image(corrected.astype(np.float32), block.affine), _motion_parameters(affines)


def _to_template(mean_volume: nib.Nifti1Image, template: nib.Nifti1Image) -> np.ndarray:
    """Affine A (template world -> BOLD world) from dipy affine registration of the mean BOLD."""
    from dipy.align import affine_registration

    _, affine = affine_registration(
        np.asarray(mean_volume.dataobj, dtype=np.float64),
        np.asarray(template.dataobj, dtype=np.float64),
        moving_affine=mean_volume.affine,
        static_affine=template.affine,
        pipeline=["center_of_mass", "translation", "rigid", "affine"],
        level_iters=[200, 50, 10],
        sigmas=[3.0, 1.0, 0.0],
        factors=[4, 2, 1],
    )
    return affine


def run_functional(
    subject: ValidatedSubject,
    voxel_mask: nib.Nifti1Image,
    settings: FuncSettings | None = None,
    atlas: nib.Nifti1Image | None = None,
    template: nib.Nifti1Image | None = None,
) -> FunctionalResult:
    """Run the functional stage on a validated subject (see the module docstring).

    Parameters
    ----------
    subject : from :func:`dtb.io.bids.validate_subject` with ``require=("func",)``.
    voxel_mask : 3-D mask on the target grid (e.g. voxels holding neurons); defines the voxel order.
    settings : :class:`FuncSettings`.
    atlas : integer label image (0 = background) for region time series, or None.
    template : MNI template used for normalising a native BOLD (needed only then).

    Returns
    -------
    FunctionalResult
    """
    from nilearn.maskers import NiftiLabelsMasker, NiftiMasker

    settings = settings or FuncSettings()
    inputs = subject.inputs
    tr, n_volumes = subject.repetition_time, subject.n_volumes
    _check_length(n_volumes, settings)
    steps: list[str] = []
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def done(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = round(timings.get(step, 0.0) + now - clock, 3)
        clock = now
        if step not in steps:
            steps.append(step)

    mask_data = np.asarray(voxel_mask.dataobj) > 0
    if mask_data.ndim != 3 or not mask_data.any():
        raise InputDataError("the voxel mask must be a non-empty 3-D image on the target grid (run dtb anat first)")
    voxel_mask = nib.Nifti1Image(mask_data.astype(np.uint8), voxel_mask.affine)
    voxel_masker = NiftiMasker(mask_img=voxel_mask, standardize=None).fit()
    motion_on = settings.motion_correction == "on" or (
        settings.motion_correction == "auto" and not inputs.bold_preprocessed
    )
    in_template = inputs.bold_space is not None and inputs.bold_space.startswith("MNI")
    normalise = settings.normalisation == "on" or (settings.normalisation == "auto" and not in_template)
    if normalise and template is None:
        raise ParameterError("normalising a native BOLD needs the MNI template image (template=...)")

    voxel_series = np.empty((n_volumes, int(mask_data.sum())), dtype=np.float32)
    region_series: np.ndarray | None = None
    labels_masker = None
    motion = np.zeros((n_volumes, 6)) if motion_on else None
    reference = None
    to_template = None
    for start, block in subject.bold_chunks(settings.volumes_per_chunk):
        stop = start + block.shape[3]
        if motion_on:
            if reference is None:
                reference = np.asarray(block.dataobj[..., 0], dtype=np.float64)
            block, motion[start:stop] = _motion_correct(block, reference)
            done("motion correction (dipy register_series, rigid to volume 0)")
        if normalise:
            if to_template is None:
                mean = nib.Nifti1Image(np.asarray(block.dataobj).mean(axis=3), block.affine)
                to_template = _to_template(mean, template)
                done("normalisation of the mean BOLD to MNI (dipy affine)")
            block = nib.Nifti1Image(np.asarray(block.dataobj), np.linalg.inv(to_template) @ block.affine)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="imgs are being resampled to the mask_img resolution")
            voxel_series[start:stop] = voxel_masker.transform(block)
        done("voxel extraction on the target grid (nilearn NiftiMasker)")
        if atlas is not None:
            if labels_masker is None:
                labels_masker = NiftiLabelsMasker(labels_img=atlas, standardize=None, strategy="mean").fit(block)
            values = labels_masker.transform(block)
            if region_series is None:
                region_series = np.empty((n_volumes, values.shape[1]), dtype=np.float32)
            region_series[start:stop] = values
            done("region extraction (nilearn NiftiLabelsMasker)")
        log.info("func sub-%s: volumes %d-%d of %d extracted", inputs.label, start, stop - 1, n_volumes)

    confound_blocks = []
    if inputs.confounds is not None:
        confound_blocks.append(read_confounds(inputs.confounds, n_volumes).to_numpy(dtype=np.float64))
    if motion is not None:
        confound_blocks.append(motion)
    confounds = np.column_stack(confound_blocks) if confound_blocks else None
    if confounds is not None:
        confounds = confounds[:, np.ptp(confounds, axis=0) > 0] if np.any(np.ptp(confounds, axis=0) > 0) else None
    voxel_series = clean_signals(voxel_series, tr, settings, confounds, out=voxel_series)  # in place
    regions = None
    if region_series is not None:
        region_ids = [int(i) for i in np.asarray(labels_masker.labels_, dtype=float) if i != 0][
            : region_series.shape[1]
        ]
        cleaned = clean_signals(region_series, tr, settings, confounds)
        regions = pd.DataFrame(cleaned, columns=[str(i) for i in region_ids])
    done("detrend, confound regression and band-pass (nilearn.signal.clean)")
    return FunctionalResult(
        repetition_time=tr,
        voxel_timeseries=voxel_series,
        voxel_indices=np.column_stack(np.nonzero(mask_data)),
        voxel_mask=voxel_mask,
        region_timeseries=regions,
        motion=pd.DataFrame(motion, columns=MOTION_COLUMNS) if motion is not None else None,
        steps=tuple(steps),
        timings=timings,
    )
