"""The ``dtb func`` stage: find and validate a subject's BOLD in a BIDS dataset, run
:func:`~dtb.preproc.func.run_functional` on the voxels that hold neurons (from ``dtb anat``), and write
the BIDS derivatives (all or nothing, :func:`write_func_outputs`).

Outputs under ``<out>/dtb/sub-<L>/func/`` (each with a JSON sidecar with ``RepetitionTime`` [s] and
``Sources``)::

    sub-<L>_task-<T>_space-MNI152NLin2009aSym_res-<grid>mm_desc-gm_timeseries.zarr   bold(time, voxel)
    sub-<L>_task-<T>_atlas-<A>_timeseries.tsv        region time series (with an atlas)
    sub-<L>_task-<T>_desc-motion_timeseries.tsv      motion parameters (when motion was corrected)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from dtb.io import bids
from dtb.io.atlases import load_label_atlas
from dtb.io.bids import SubjectInputs, find_subject_inputs
from dtb.io.derivatives import DerivativesWriter, derivative_path
from dtb.preproc.anat import TEMPLATE_SPACE, target_grid
from dtb.preproc.anat_stage import grid_entities
from dtb.preproc.func import FuncSettings, FunctionalResult, run_functional

__all__ = ["FuncStageResult", "run_func_stage", "voxel_mask", "write_func_outputs"]

log = logging.getLogger("dtb.preproc.func_stage")


@dataclass(frozen=True)
class FuncStageResult:
    """What :func:`run_func_stage` computed (``functional``) and wrote (``written``, final paths)."""

    functional: FunctionalResult
    written: tuple[Path, ...]


def voxel_mask(out: str | Path, label: str, grid_mm: float) -> nib.Nifti1Image:
    """The voxels holding neurons (``dtb anat``'s ``desc-neuroncount_stats.nii.gz`` > 0 in ``out``); without
    it, nilearn's MNI GM template > 0.2 on the grid (with a warning)."""
    counts = derivative_path(
        out,
        {"sub": label, **grid_entities(TEMPLATE_SPACE, grid_mm), "desc": "neuroncount"},
        "anat",
        "stats",
        ".nii.gz",
    )
    if counts.exists():
        img = nib.load(counts)
        return nib.Nifti1Image((np.asarray(img.dataobj) > 0).astype(np.uint8), img.affine)
    from nilearn.datasets import load_mni152_gm_template
    from nilearn.image import resample_to_img

    log.warning("%s not found (run dtb anat first); using nilearn's MNI GM template > 0.2 as the voxel mask", counts)
    grid = target_grid(grid_mm)
    gm = resample_to_img(load_mni152_gm_template(resolution=1), grid, copy_header=True, force_resample=True)
    return nib.Nifti1Image((gm.get_fdata() > 0.2).astype(np.uint8), grid.affine)


def write_func_outputs(
    out: str | Path,
    inputs: SubjectInputs,
    result: FunctionalResult,
    settings: FuncSettings,
    *,
    task: str,
    grid_mm: float,
    names: dict | None = None,
    atlas_path: Path | None = None,
    atlas_name: str | None = None,
) -> tuple[Path, ...]:
    """Write every output of the stage through one :class:`~dtb.io.derivatives.DerivativesWriter`
    (all files appear together, or none). Returns the final paths."""
    import xarray as xr

    names = names or {}
    tr = result.repetition_time
    sources = [p for p in (inputs.bold, *inputs.bold_sidecars, inputs.confounds, inputs.bold_mask) if p is not None]
    grid = grid_entities(TEMPLATE_SPACE, grid_mm)
    meta = {"RepetitionTime": tr, "Steps": list(result.steps), "TimingsSeconds": result.timings}
    meta.update({"HighPassHz": settings.high_pass_hz or 0, "LowPassHz": settings.low_pass_hz or 0, "TaskName": task})
    voxels = xr.Dataset(
        {"bold": (("time", "voxel"), result.voxel_timeseries, {"units": "scanner units", "long_name": "cleaned BOLD"})},
        coords={
            "time": ("time", result.times, {"units": "s", "long_name": "volume onset"}),
            "voxel_ijk": (("voxel", "axis"), result.voxel_indices, {"long_name": "voxel index on the grid"}),
        },
        attrs={"grid_affine": result.voxel_mask.affine, "grid_shape": list(result.voxel_mask.shape)},
    )
    entities = {"task": task}
    with DerivativesWriter(out, inputs.label, inputs.root) as writer:
        writer.zarr(voxels, "func", {**entities, **grid, "desc": "gm"}, "timeseries", sources=sources, metadata=meta)
        if result.region_timeseries is not None:
            regions = result.region_timeseries.rename(columns=lambda c: names.get(c, c))
            writer.tsv(
                regions,
                "func",
                {**entities, "atlas": atlas_name},
                "timeseries",
                sources=[*sources, atlas_path],
                metadata={
                    **meta,
                    "Columns": list(regions.columns),
                    "LabelIndex": list(result.region_timeseries.columns),
                },
            )
        if result.motion is not None:
            writer.tsv(
                result.motion,
                "func",
                {**entities, "desc": "motion"},
                "timeseries",
                sources=sources,
                metadata={"RepetitionTime": tr},
            )
    return tuple(writer.written)


def run_func_stage(
    bids_root: str | Path,
    label: str,
    out: str | Path,
    *,
    settings: FuncSettings | None = None,
    task: str = "rest",
    grid_mm: float = 3.0,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    atlas_name: str | None = None,
) -> FuncStageResult:
    """Run the functional stage for one participant and write its derivatives.

    Parameters
    ----------
    bids_root : BIDS dataset root.
    label : participant label (with or without ``sub-``).
    out : derivatives root; files go to ``<out>/dtb/sub-<label>/func/``; the voxel set comes from
        ``dtb anat``'s outputs there (:func:`voxel_mask`).
    settings : :class:`~dtb.preproc.func.FuncSettings`.
    task : task label of the BOLD run.
    grid_mm : voxel size of the target MNI grid [mm].
    atlas, atlas_labels, atlas_name : optional integer label image (MNI world space), its
        ``index``/``name`` TSV and the ``atlas-<name>`` entity.

    Raises
    ------
    InputDataError
        Bad inputs (named), before anything is written.
    """
    settings = settings or FuncSettings()
    atlas_img, names, entity = load_label_atlas(atlas, atlas_labels, atlas_name)
    inputs = find_subject_inputs(bids_root, label, task=task)
    subject = bids.validate_subject(inputs, require=("func",))
    mask = voxel_mask(out, inputs.label, grid_mm)
    result = run_functional(subject, mask, settings, atlas=atlas_img, template=target_grid(2.0))
    written = write_func_outputs(
        out,
        inputs,
        result,
        settings,
        task=task,
        grid_mm=grid_mm,
        names=names,
        atlas_path=None if atlas is None else Path(atlas),
        atlas_name=entity,
    )
    for note in subject.notes:
        log.info(note)
    return FuncStageResult(functional=result, written=written)
