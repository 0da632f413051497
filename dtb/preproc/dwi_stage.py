"""The ``dtb dwi`` stage: find a subject's DWI in a BIDS dataset, run :func:`~dtb.preproc.dwi.process_dwi`,
write BIDS derivatives (all or nothing).

Outputs under ``<out>/dtb/sub-<L>/dwi/`` (each with a JSON sidecar listing ``Sources``)::

    sub-<L>_space-dwi_desc-brain_mask.nii.gz        brain mask (median_otsu)
    sub-<L>_space-dwi_desc-FA_dwimap.nii.gz         fractional anisotropy [1]
    sub-<L>_space-dwi_desc-MD_dwimap.nii.gz         mean diffusivity [mm^2/s]
    sub-<L>_space-dwi_desc-csd_tractography.trk     streamlines (RAS mm)
    sub-<L>_desc-streamlines_connectome.npz         voxel x voxel counts (scipy.sparse), target grid in JSON
    sub-<L>_desc-length_connectome.npz              voxel x voxel mean lengths [mm]
    sub-<L>_atlas-<A>_desc-streamlines_relmat.tsv   region x region counts (with --atlas)
    sub-<L>_atlas-<A>_desc-length_relmat.tsv        region x region mean lengths [mm]

A relmat TSV has a first column ``region`` and one column per region (the region-level input
format of ``dtb fetch``/``dtb assimilate``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from dtb import __version__
from dtb.errors import InputDataError
from dtb.io import bids
from dtb.io.atlases import atlas_entity, read_label_table
from dtb.io.atomic import staged_output
from dtb.io.derivatives import derivatives_lock
from dtb.io.store import json_safe
from dtb.preproc.dwi import DwiResult, DwiSettings, load_gradients, process_dwi

__all__ = ["find_dwi", "read_atlas_labels", "run_dwi_stage"]

log = logging.getLogger("dtb")


def find_dwi(bids_root: str | Path, label: str) -> tuple[Path, Path, Path]:
    """The DWI image and its .bval/.bvec of participant ``label`` (one run; sessions allowed).

    Raises
    ------
    InputDataError
        No or several DWI images, or a missing gradient file (the message names the path).
    """
    root = Path(bids_root)
    if not root.is_dir():
        raise InputDataError(f"--bids {root} is not a folder; give the root of a BIDS dataset")
    label = label.removeprefix("sub-")
    subject = root / f"sub-{label}"
    if not subject.is_dir():
        raise InputDataError(f"{subject}: no such participant folder; check --participant-label {label}")
    images = sorted(p for p in subject.glob("**/dwi/*_dwi.nii*") if p.name.endswith((".nii", ".nii.gz")))
    if not images:
        raise InputDataError(f"{subject}: no dwi/*_dwi.nii[.gz]; add the diffusion series")
    if len(images) > 1:
        raise InputDataError(f"{subject}: {len(images)} DWI series ({', '.join(p.name for p in images)}); keep one")
    image = images[0]
    stem = image.name.removesuffix(".gz").removesuffix(".nii")
    gradients = []
    for ext in (".bval", ".bvec"):
        path = image.with_name(stem + ext)
        if not path.is_file():
            raise InputDataError(f"{path}: missing; write the {ext} file next to {image.name}")
        gradients.append(path)
    return image, gradients[0], gradients[1]


def read_atlas_labels(path: str | Path | None) -> dict[int, str] | None:
    """Region names from a labels TSV with columns ``index`` and ``name`` (BIDS dseg.tsv; docs/data.md)."""
    if path is None:
        return None
    table = read_label_table(path, "--atlas-labels")
    return {int(i): str(n) for i, n in zip(table["index"], table["name"])}


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(json_safe(content), indent=2) + "\n")


def _save_outputs(folder: Path, label: str, result: DwiResult, sources: list[str], atlas_name: str | None) -> None:
    from dipy.io.stateful_tractogram import Space, StatefulTractogram
    from dipy.io.streamline import save_tractogram

    sub = f"sub-{label}"
    folder.mkdir(parents=True, exist_ok=True)
    base = {"Sources": sources, "dtb_version": __version__}
    notes = {"ProcessingNotes": list(result.notes)} if result.notes else {}
    images = {
        "desc-brain_mask": (result.mask.astype(np.uint8), {"Type": "Brain", "Description": "dipy median_otsu"}),
        "desc-FA_dwimap": (result.fa.astype(np.float32), {"Description": "tensor FA (dipy TensorModel)", "Units": "1"}),
        "desc-MD_dwimap": (result.md.astype(np.float32), {"Description": "tensor MD", "Units": "mm^2/s"}),
    }
    for name, (data, meta) in images.items():
        nib.save(nib.Nifti1Image(data, result.affine), folder / f"{sub}_space-dwi_{name}.nii.gz")
        _write_json(folder / f"{sub}_space-dwi_{name}.json", {**base, **notes, **meta})
    reference = nib.Nifti1Image(result.mask.astype(np.uint8), result.affine)
    trk = folder / f"{sub}_space-dwi_desc-csd_tractography.trk"
    save_tractogram(StatefulTractogram(result.streamlines, reference, Space.RASMM), str(trk), bbox_valid_check=False)
    _write_json(
        trk.with_suffix(".json"),
        {
            **base,
            "Description": "deterministic CSD tractography (dipy LocalTracking)",
            "Count": len(result.streamlines),
        },
    )
    grid = {
        "GridShape": list(result.grid_shape),
        "GridAffine": np.asarray(result.grid_affine).tolist(),
        "VoxelIndex": "row = numpy.ravel_multi_index((i, j, k), GridShape) (C order)",
        "Symmetric": True,
    }
    for desc, matrix, units in (
        ("streamlines", result.voxel_counts, "streamlines"),
        ("length", result.voxel_mean_length_mm, "mm"),
    ):
        path = folder / f"{sub}_desc-{desc}_connectome.npz"
        sp.save_npz(path, matrix.tocsr())
        _write_json(path.with_suffix(".json"), {**base, **grid, "Units": units})
    if result.regions is not None:
        names = list(result.regions.names)
        for desc, matrix, units in (
            ("streamlines", result.regions.counts, "streamlines"),
            ("length", result.regions.mean_length_mm, "mm"),
        ):
            path = folder / f"{sub}_atlas-{atlas_name}_desc-{desc}_relmat.tsv"
            frame = pd.DataFrame(matrix, index=pd.Index(names, name="region"), columns=names)
            frame.to_csv(path, sep="\t", float_format="%.10g")
            _write_json(
                path.with_suffix(".json"),
                {**base, "Units": units, "AtlasLabels": result.regions.labels.tolist(), "Symmetric": True},
            )


def run_dwi_stage(
    bids_root: str | Path,
    label: str,
    out: str | Path,
    *,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    atlas_name: str | None = None,
    target_grid: str | Path | None = None,
    settings: DwiSettings | None = None,
) -> Path:
    """Run the diffusion stage for one participant and write its derivatives.

    Parameters
    ----------
    bids_root : BIDS dataset root.
    label : participant label (with or without ``sub-``).
    out : derivatives root; files go to ``<out>/dtb/sub-<label>/dwi/``.
    atlas, atlas_labels : optional label image (same world space as the DWI) and its
        ``index``/``name`` TSV.
    atlas_name : the ``atlas-<name>`` entity of the region files (default: from the atlas file
        name, :func:`dtb.io.atlases.atlas_entity`).
    target_grid : optional image whose grid the voxel connectome uses (default: the DWI grid).
    settings : DwiSettings.

    Returns
    -------
    The output folder.
    """
    settings = settings or DwiSettings()
    bids_root = Path(bids_root)
    given, label = label, label.removeprefix("sub-")
    # the shared BIDS validation first (readable, 4-D, affine, no NaN/inf, one gradient per volume), so a
    # bad input stops here with a message naming the file, before any processing or output
    inputs = bids.find_subject_inputs(bids_root, given)
    if inputs.dwi is None:
        find_dwi(bids_root, label)  # raises: no DWI, or several (named)
        raise InputDataError(
            f"{bids_root / f'sub-{label}'}: no raw dwi/sub-{label}[_<entity>-<value>]_dwi.nii[.gz] (without space-"
            "or desc- entities); add the diffusion series"
        )
    bids.validate_subject(inputs, require=("dwi",))
    image_path, bval, bvec = inputs.dwi, inputs.bval, inputs.bvec
    dwi = nib.load(image_path)
    if dwi.ndim != 4:
        raise InputDataError(f"{image_path}: the DWI must be 4-D (x, y, z, volume), got shape {dwi.shape}")
    gtab = load_gradients(bval, bvec, dwi.shape[3], settings.b0_threshold)
    atlas_img = names = None
    if atlas is not None:
        atlas = Path(atlas)
        if not atlas.is_file():
            raise InputDataError(f"--atlas {atlas}: file not found")
        atlas_img = nib.load(atlas)
        names = read_atlas_labels(atlas_labels)
    grid_img = None
    if target_grid is not None:
        if not Path(target_grid).is_file():
            raise InputDataError(f"--target-grid {target_grid}: file not found")
        grid_img = nib.load(target_grid)
    result = process_dwi(dwi, gtab, settings=settings, atlas=atlas_img, atlas_names=names, target_grid=grid_img)

    def uri(path: Path) -> str:
        path = Path(path).resolve()
        root = bids_root.resolve()
        return f"bids:raw:{path.relative_to(root).as_posix()}" if root in path.parents else path.as_uri()

    sources = [uri(image_path), uri(bval), uri(bvec)] + ([uri(atlas)] if atlas is not None else [])
    out = Path(out)
    final = out / "dtb" / f"sub-{label}" / "dwi"
    (out / "dtb").mkdir(parents=True, exist_ok=True)
    description = out / "dtb" / "dataset_description.json"
    # the folder is written beside its final name and renamed into place whole, under its lock
    with derivatives_lock(final), staged_output(final, folder=True, keep_existing=True, stage="dwi") as staging:
        _save_outputs(staging, label, result, sources, atlas_entity(atlas, atlas_name) if atlas is not None else None)
    if not description.exists():
        _write_json(
            description,
            {
                "Name": "dtb imaging derivatives",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "dtb", "Version": __version__}],
            },
        )
    log.info("dwi: %d streamlines; outputs in %s", len(result.streamlines), final)
    return final
