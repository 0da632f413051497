"""The ``dtb anat`` stage: find and validate a subject's T1w in a BIDS dataset, run
:func:`~dtb.preproc.anat.run_anatomy`, share the neurons out over the grid voxels, and write the
BIDS derivatives (all or nothing, :func:`write_anat_outputs`).

Outputs under ``<out>/dtb/sub-<L>/anat/`` (each with a JSON sidecar listing ``Sources``), with
``<G>`` = ``space-MNI152NLin2009aSym_res-<grid>mm``::

    sub-<L>_<G>_label-GM_probseg.nii.gz          GM probability in template space [0, 1]
    sub-<L>_<G>_desc-brain_mask.nii.gz           the subject's brain mask on the grid
    sub-<L>_desc-brain_mask.nii.gz               the subject's brain mask on the native T1w grid
                                                 (only when the T1w was registered)
    sub-<L>_<G>_desc-neuroncount_stats.nii.gz    neurons per voxel (int32)
    sub-<L>_<G>_desc-neuroncount_stats.tsv       one row per voxel holding neurons
    sub-<L>_atlas-<A>_desc-neuroncount_stats.tsv one row per atlas region (with an atlas)

``gm_volume_mm3`` is the subject's native GM volume a voxel stands for (Jacobian-modulated) when the
T1w was registered, the template-space volume when the input was already normalised; the sidecars
say which (``GreyMatterVolumeSpace``) and give the totals (``GreyMatterMM3``, ``BrainMM3``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from dtb.apportion import largest_remainder
from dtb.errors import InputDataError
from dtb.io import bids
from dtb.io.atlases import load_label_atlas
from dtb.io.bids import ValidatedSubject, find_subject_inputs
from dtb.io.derivatives import DerivativesWriter
from dtb.preproc.anat import AnatomyResult, AnatSettings, run_anatomy

__all__ = ["AnatStageResult", "grid_entities", "neuron_counts", "region_counts", "run_anat_stage", "write_anat_outputs"]

log = logging.getLogger("dtb.preproc.anat_stage")


@dataclass(frozen=True)
class AnatStageResult:
    """What :func:`run_anat_stage` computed and wrote.

    Attributes
    ----------
    anatomy : the :class:`~dtb.preproc.anat.AnatomyResult`.
    counts : int32 neurons per grid voxel (sums to the requested total).
    voxels : the per-voxel table written (``i j k x_mm y_mm z_mm gm_volume_mm3 neuron_count``).
    regions : the per-region table, or None without an atlas.
    written : the files written (final paths).
    """

    anatomy: AnatomyResult
    counts: np.ndarray
    voxels: pd.DataFrame
    regions: pd.DataFrame | None
    written: tuple[Path, ...]


def grid_entities(space: str, grid_mm: float) -> dict:
    """The ``space`` and ``res`` entities of a grid (``res-3mm``, ``res-2p5mm``)."""
    return {"space": space, "res": f"{grid_mm:g}mm".replace(".", "p")}


def neuron_counts(gm_volume: np.ndarray, total: int) -> np.ndarray:
    """Neurons per voxel in proportion to GM volume, summing exactly to ``total`` (docs/imaging.md,
    "Anatomy" step 7: largest remainder, :func:`dtb.apportion.largest_remainder`; every count is within 1
    of ``N gm_v / sum gm``)."""
    volume = np.asarray(gm_volume, dtype=np.float64)
    counts = np.zeros(volume.shape, dtype=np.int32)
    holding = volume > 0
    if not holding.any():
        raise InputDataError("no grid voxel holds grey matter; check the T1w (contrast, orientation) or the GM map")
    counts[holding] = largest_remainder(int(total), volume[holding] / volume[holding].sum())
    return counts


def region_counts(
    atlas: nib.Nifti1Image, names: dict, counts: np.ndarray, gm_volume: np.ndarray, grid: nib.Nifti1Image
) -> pd.DataFrame:
    """Neurons, grey-matter volume [mm^3] and voxels of every atlas label on the twin's grid.

    The atlas is resampled to the grid by nearest neighbour (labels stay labels); a label that
    covers no voxel of the grid is an error, since the twin would get a region without neurons.
    """
    from nilearn.image import resample_to_img

    on_grid = resample_to_img(atlas, grid, interpolation="nearest", copy_header=True, force_resample=True)
    labels = np.rint(np.asarray(on_grid.dataobj)).astype(np.int64)
    present = sorted(int(v) for v in np.unique(np.rint(np.asarray(atlas.dataobj))) if v > 0)
    if not present:
        raise InputDataError("--atlas holds no labels above 0; give an integer label image (0 = background)")
    rows = []
    for label in present:
        inside = labels == label
        if not inside.any():
            raise InputDataError(
                f"--atlas label {label} covers no voxel of the {grid.header.get_zooms()[0]:g} mm grid; "
                "use a smaller --grid-mm or an atlas with larger regions"
            )
        rows.append(
            {
                "region": names.get(str(label), str(label)),
                "neuron_count": int(counts[inside].sum()),
                "grey_matter_mm3": float(gm_volume[inside].sum()),
                "nvoxel": int(inside.sum()),
            }
        )
    table = pd.DataFrame(rows)
    if (table["neuron_count"] == 0).any():
        empty = table.loc[table["neuron_count"] == 0, "region"].tolist()
        raise InputDataError(
            f"--atlas regions {empty} hold no grey matter on the grid (0 neurons); raise --total-neurons, "
            "use a smaller --grid-mm, or drop those labels"
        )
    return table


def _voxel_table(result: AnatomyResult, counts: np.ndarray) -> pd.DataFrame:
    volume = result.gm_volume.get_fdata()
    ijk = np.column_stack(np.nonzero(counts > 0))
    xyz = nib.affines.apply_affine(result.grid.affine, ijk)
    return pd.DataFrame(
        {
            "i": ijk[:, 0],
            "j": ijk[:, 1],
            "k": ijk[:, 2],
            "x_mm": xyz[:, 0],
            "y_mm": xyz[:, 1],
            "z_mm": xyz[:, 2],
            "gm_volume_mm3": volume[counts > 0],
            "neuron_count": counts[counts > 0],
        }
    )


def write_anat_outputs(
    out: str | Path,
    subject: ValidatedSubject,
    result: AnatomyResult,
    counts: np.ndarray,
    voxels: pd.DataFrame,
    regions: pd.DataFrame | None,
    *,
    grid_mm: float,
    requested_neurons: int,
    atlas_path: Path | None = None,
    atlas_name: str | None = None,
) -> tuple[Path, ...]:
    """Write every output of the stage through one :class:`~dtb.io.derivatives.DerivativesWriter`
    (all files appear together, or none). Returns the final paths."""
    sources = [p for p in (subject.inputs.t1w, subject.inputs.gm_probseg) if p is not None]
    grid = grid_entities(result.space, grid_mm)
    volumes = {
        "GreyMatterVolumeSpace": result.volume_space,
        "GreyMatterMM3": round(result.grey_matter_mm3, 3),
        "BrainMM3": None if result.brain_mm3 is None else round(result.brain_mm3, 3),
    }
    provenance = {"Steps": list(result.steps), "TimingsSeconds": result.timings, "GridMM": grid_mm, **volumes}
    with DerivativesWriter(out, subject.inputs.label, subject.inputs.root) as writer:
        writer.nifti(
            result.gm_fraction, "anat", {**grid, "label": "GM"}, "probseg", sources=sources, metadata=provenance
        )
        mask_meta = {"Type": "Brain", "Description": "the subject's brain mask (median_otsu within the template's)"}
        writer.nifti(result.brain_mask, "anat", {**grid, "desc": "brain"}, "mask", sources=sources, metadata=mask_meta)
        if result.native_brain_mask is not None:
            writer.nifti(
                result.native_brain_mask,
                "anat",
                {"desc": "brain"},
                "mask",
                sources=sources,
                metadata={**mask_meta, "BrainMM3": volumes["BrainMM3"]},
            )
        totals = {"TotalNeurons": int(counts.sum()), "RequestedNeurons": requested_neurons}
        writer.nifti(
            nib.Nifti1Image(counts, result.grid.affine),
            "anat",
            {**grid, "desc": "neuroncount"},
            "stats",
            sources=sources,
            metadata={"Units": "neurons", **totals, **volumes},
        )
        writer.tsv(
            voxels,
            "anat",
            {**grid, "desc": "neuroncount"},
            "stats",
            sources=sources,
            metadata={
                "i": {"Description": "voxel index along x of the grid"},
                "gm_volume_mm3": {
                    "Description": f"grey-matter volume of the voxel, {result.volume_space} space "
                    "(native: Jacobian-modulated, the subject's volume)",
                    "Units": "mm^3",
                },
                "neuron_count": {"Description": "neurons in the voxel (docs/imaging.md)", "Units": "neurons"},
                "TotalNeurons": int(counts.sum()),
                **volumes,
            },
        )
        if regions is not None:
            writer.tsv(
                regions,
                "anat",
                {"atlas": atlas_name, "desc": "neuroncount"},
                "stats",
                sources=[*sources, atlas_path],
                metadata={
                    "region": {"Description": "atlas region (label name, else its index)"},
                    "neuron_count": {
                        "Description": "neurons in the region's voxels (docs/imaging.md)",
                        "Units": "neurons",
                    },
                    "grey_matter_mm3": {
                        "Description": f"grey-matter volume of the region, {result.volume_space} space",
                        "Units": "mm^3",
                    },
                    "nvoxel": {"Description": "voxels of the grid in the region"},
                },
            )
    return tuple(writer.written)


def run_anat_stage(
    bids_root: str | Path,
    label: str,
    out: str | Path,
    *,
    settings: AnatSettings | None = None,
    total_neurons: int = 1_000_000,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    atlas_name: str | None = None,
) -> AnatStageResult:
    """Run the anatomy stage for one participant and write its derivatives.

    Parameters
    ----------
    bids_root : BIDS dataset root.
    label : participant label (with or without ``sub-``).
    out : derivatives root; files go to ``<out>/dtb/sub-<label>/anat/``.
    settings : :class:`~dtb.preproc.anat.AnatSettings` (grid, working grid, registration).
    total_neurons : neurons to share out over the grid voxels (>= 1).
    atlas, atlas_labels, atlas_name : optional integer label image (MNI world space), its
        ``index``/``name`` TSV and the ``atlas-<name>`` entity (default: from the file name).

    Raises
    ------
    InputDataError
        Bad inputs (named), before anything is written.
    """
    settings = settings or AnatSettings()
    if isinstance(total_neurons, bool) or int(total_neurons) != total_neurons or total_neurons < 1:
        raise InputDataError(f"--total-neurons must be a positive integer, got {total_neurons}")
    atlas_img, names, entity = load_label_atlas(atlas, atlas_labels, atlas_name)
    subject = bids.validate_subject(find_subject_inputs(bids_root, label), require=("anat",))
    result = run_anatomy(subject, settings)
    volume = result.gm_volume.get_fdata()
    counts = neuron_counts(volume, int(total_neurons))
    voxels = _voxel_table(result, counts)
    regions = region_counts(atlas_img, names, counts, volume, result.grid) if atlas_img is not None else None
    written = write_anat_outputs(
        out,
        subject,
        result,
        counts,
        voxels,
        regions,
        grid_mm=settings.grid_mm,
        requested_neurons=int(total_neurons),
        atlas_path=None if atlas is None else Path(atlas),
        atlas_name=entity,
    )
    for note in subject.notes:
        log.info(note)
    return AnatStageResult(anatomy=result, counts=counts, voxels=voxels, regions=regions, written=written)
