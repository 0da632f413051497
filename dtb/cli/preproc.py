"""``dtb anat`` (T1w -> GM volume and neuron counts per MNI voxel) and ``dtb func`` (BOLD -> cleaned
voxel and region time series), both writing BIDS derivatives under ``<out>/dtb/sub-<label>/``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dtb.cli import options
from dtb.errors import InputDataError

if TYPE_CHECKING:  # imported where used: parsing (dtb --help) must stay fast
    import nibabel as nib
    import numpy as np
    import pandas as pd

__all__ = ["register", "run_anat", "run_func"]

log = logging.getLogger("dtb.cli.preproc")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bids", type=Path, required=True, metavar="DIR", help="BIDS dataset root (holds sub-<label>/)"
    )
    parser.add_argument("--participant-label", required=True, metavar="L", help="subject label, with or without 'sub-'")
    options.add_out(parser, "derivatives folder; files go to PATH/dtb/sub-<label>/")
    parser.add_argument(
        "--grid-mm", type=float, default=3.0, metavar="MM", help="voxel size of the target MNI grid in mm (default 3)"
    )


def register(sub) -> None:
    anat = sub.add_parser(
        "anat",
        help="T1w -> grey matter and neuron counts per voxel of an MNI grid",
        description=(
            "Find and validate the subject's T1w (or GM probability map), register it to the MNI152 2009a "
            "template (dipy affine + SyN; resampling only for space-MNI* inputs), segment grey matter (dipy "
            "HMRF), and write the GM volume and the neuron count of every voxel of the target grid "
            "(N_v = round(N_total gm_v / sum gm), docs/model.md §3.1) as BIDS derivatives."
        ),
    )
    _common(anat)
    anat.add_argument(
        "--total-neurons", type=int, default=1_000_000, metavar="N", help="neurons to distribute (default 1e6)"
    )
    anat.add_argument(
        "--work-mm",
        type=float,
        default=2.0,
        metavar="MM",
        help="grid of registration and segmentation in mm (default 2)",
    )
    anat.add_argument(
        "--registration",
        choices=("auto", "syn", "affine", "none"),
        default="auto",
        help="auto: SyN for native images, resampling for space-MNI* ones; none: the T1w is already in MNI space",
    )
    anat.add_argument(
        "--atlas",
        type=Path,
        metavar="NIFTI",
        help="integer label image (MNI world space); also writes neurons per region (atlas-<A>_desc-neuroncount_stats)",
    )
    anat.add_argument(
        "--atlas-labels", type=Path, metavar="TSV", help="TSV with columns index and name naming the atlas labels"
    )
    anat.add_argument(
        "--atlas-name",
        metavar="NAME",
        help="atlas-<NAME> entity of the region files (default: from the --atlas file name, "
        "AAL2zourioMazoyer2002 -> AAL2)",
    )
    anat.set_defaults(func=run_anat)

    func = sub.add_parser(
        "func",
        help="BOLD -> cleaned voxel and region time series",
        description=(
            "Find and validate the subject's rest BOLD (raw or fMRIPrep-preprocessed), correct motion (raw only, "
            "dipy), normalise a native BOLD to MNI (dipy affine), extract voxel time series on the target grid "
            "inside the voxels holding neurons (from dtb anat in --out) and region time series (--atlas), then "
            "detrend, regress confounds and band-pass (nilearn). Reads the series in blocks (bounded memory)."
        ),
    )
    _common(func)
    func.add_argument("--task", default="rest", help="task label of the BOLD run (default rest)")
    func.add_argument("--atlas", type=Path, metavar="NIFTI", help="integer label image for region time series")
    func.add_argument(
        "--atlas-labels", type=Path, metavar="TSV", help="TSV with columns index and name naming the atlas labels"
    )
    func.add_argument(
        "--atlas-name",
        metavar="NAME",
        help="atlas-<NAME> entity of the region files (default: from the --atlas file name, "
        "AAL2zourioMazoyer2002 -> AAL2)",
    )
    func.add_argument(
        "--high-pass",
        type=float,
        default=0.01,
        metavar="HZ",
        help="band-pass lower edge in Hz (default 0.01; 0 = no high-pass)",
    )
    func.add_argument(
        "--low-pass",
        type=float,
        default=0.1,
        metavar="HZ",
        help="band-pass upper edge in Hz (default 0.1; 0 = no low-pass)",
    )
    func.add_argument(
        "--motion-correction",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: only for a raw (not preproc) BOLD",
    )
    func.add_argument(
        "--normalisation",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: affine to MNI unless the BOLD is space-MNI*; off: the BOLD is already in MNI space",
    )
    func.add_argument(
        "--chunk-volumes", type=int, default=64, metavar="N", help="BOLD volumes held in memory at once (default 64)"
    )
    func.set_defaults(func=run_func)


def _grid_entities(space: str, grid_mm: float) -> dict:
    return {"space": space, "res": f"{grid_mm:g}mm".replace(".", "p")}


def _exact_total(rounded: np.ndarray, grey_matter: np.ndarray, total: int) -> np.ndarray:
    """Adjust ``round(N gm / sum gm)`` by one neuron in the voxels with the largest rounding remainders
    (largest-remainder apportionment) so that the counts sum to ``total`` exactly."""
    import numpy as np

    exact = total * grey_matter / grey_matter.sum()
    residual = int(total - rounded.sum())
    counts = rounded.copy()
    if residual > 0:
        counts[np.argsort(rounded - exact)[:residual]] += 1
    elif residual < 0:
        counts[np.argsort(exact - rounded)[:-residual]] -= 1
    return counts


def run_anat(args: argparse.Namespace) -> int:
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from dtb.io.bids import find_subject_inputs, validate_subject
    from dtb.io.derivatives import DerivativesWriter
    from dtb.network.populations import neuron_counts_from_grey_matter
    from dtb.preproc.anat import AnatSettings, run_anatomy

    if args.total_neurons < 1:
        raise InputDataError(f"--total-neurons must be a positive integer, got {args.total_neurons}")
    atlas, names, atlas_name = _atlas(args)
    settings = AnatSettings(grid_mm=args.grid_mm, work_mm=args.work_mm, registration=args.registration)
    subject = validate_subject(find_subject_inputs(args.bids, args.participant_label), require=("anat",))
    result = run_anatomy(subject, settings)
    volume = result.gm_volume.get_fdata()
    holding = volume > 0
    counts = np.zeros(volume.shape, dtype=np.int32)
    counts[holding] = _exact_total(
        neuron_counts_from_grey_matter(volume[holding], args.total_neurons), volume[holding], args.total_neurons
    )
    ijk = np.column_stack(np.nonzero(counts > 0))
    xyz = nib.affines.apply_affine(result.grid.affine, ijk)
    table = pd.DataFrame(
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
    sources = [p for p in (subject.inputs.t1w, subject.inputs.gm_probseg) if p is not None]
    grid = _grid_entities(result.space, args.grid_mm)
    provenance = {"Steps": list(result.steps), "TimingsSeconds": result.timings, "GridMM": args.grid_mm}
    with DerivativesWriter(args.out, subject.inputs.label, subject.inputs.root) as writer:
        writer.nifti(
            result.gm_fraction, "anat", {**grid, "label": "GM"}, "probseg", sources=sources, metadata=provenance
        )
        writer.nifti(result.brain_mask, "anat", {**grid, "desc": "brain"}, "mask", sources=sources)
        writer.nifti(
            nib.Nifti1Image(counts, result.grid.affine),
            "anat",
            {**grid, "desc": "neuroncount"},
            "stats",
            sources=sources,
            metadata={"Units": "neurons", "TotalNeurons": int(counts.sum()), "RequestedNeurons": args.total_neurons},
        )
        writer.tsv(
            table,
            "anat",
            {**grid, "desc": "neuroncount"},
            "stats",
            sources=sources,
            metadata={
                "i": {"Description": "voxel index along x of the grid"},
                "gm_volume_mm3": {"Description": "grey-matter volume of the voxel", "Units": "mm^3"},
                "neuron_count": {"Description": "neurons in the voxel (docs/model.md §3.1)", "Units": "neurons"},
                "TotalNeurons": int(counts.sum()),
            },
        )
        if atlas is not None:
            regions = _region_counts(atlas, names, counts, volume, result.grid)
            writer.tsv(
                regions,
                "anat",
                {"atlas": atlas_name, "desc": "neuroncount"},
                "stats",
                sources=[*sources, args.atlas],
                metadata={
                    "region": {"Description": "atlas region (label name, else its index)"},
                    "neuron_count": {
                        "Description": "neurons in the region's voxels (docs/model.md §3.1)",
                        "Units": "neurons",
                    },
                    "grey_matter_mm3": {"Description": "grey-matter volume of the region", "Units": "mm^3"},
                    "nvoxel": {"Description": "voxels of the grid in the region"},
                },
            )
    for note in subject.notes:
        log.info(note)
    print(f"dtb anat: {len(table)} voxels, {int(counts.sum())} neurons -> {Path(args.out) / 'dtb'}")
    return 0


def _region_counts(
    atlas: nib.Nifti1Image, names: dict, counts: np.ndarray, gm_volume: np.ndarray, grid: nib.Nifti1Image
) -> pd.DataFrame:
    """Neurons, grey-matter volume [mm^3] and voxels of every atlas label on the twin's grid.

    The atlas is resampled to the grid by nearest neighbour (labels stay labels); a label that
    covers no voxel of the grid is an error, since the twin would get a region without neurons.
    """
    import numpy as np
    import pandas as pd
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


def _voxel_mask(out: Path, label: str, grid_mm: float) -> nib.Nifti1Image:
    import nibabel as nib
    import numpy as np

    from dtb.io.derivatives import derivative_path
    from dtb.preproc.anat import TEMPLATE_SPACE, target_grid

    counts = derivative_path(
        out,
        {"sub": label, **_grid_entities(TEMPLATE_SPACE, grid_mm), "desc": "neuroncount"},
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


def _atlas(args) -> tuple[nib.Nifti1Image | None, dict, str | None]:
    import nibabel as nib
    import numpy as np

    from dtb.io.atlases import atlas_entity, read_label_table

    if args.atlas is None:
        if args.atlas_labels is not None:
            raise InputDataError("--atlas-labels needs --atlas (the label image it names)")
        return None, {}, None
    if not args.atlas.exists():
        raise InputDataError(f"--atlas {args.atlas} does not exist; give an integer label NIfTI")
    atlas = nib.load(args.atlas)
    data = np.asarray(atlas.dataobj)
    if atlas.ndim != 3 or not np.allclose(data, np.round(data)):
        raise InputDataError(f"--atlas {args.atlas}: must be a 3-D image of integer labels (0 = background)")
    names = {}
    if args.atlas_labels is not None:
        table = read_label_table(args.atlas_labels, "--atlas-labels")
        names = {str(int(i)): str(n) for i, n in zip(table["index"], table["name"])}
    atlas_name = atlas_entity(args.atlas, args.atlas_name)
    return atlas, names, atlas_name


def run_func(args: argparse.Namespace) -> int:
    import xarray as xr

    from dtb.io.bids import find_subject_inputs, validate_subject
    from dtb.io.derivatives import DerivativesWriter
    from dtb.preproc.anat import TEMPLATE_SPACE, target_grid
    from dtb.preproc.func import FuncSettings, run_functional

    settings = FuncSettings(
        high_pass_hz=args.high_pass or None,
        low_pass_hz=args.low_pass or None,
        motion_correction=args.motion_correction,
        normalisation=args.normalisation,
        volumes_per_chunk=args.chunk_volumes,
    )
    atlas, names, atlas_name = _atlas(args)
    inputs = find_subject_inputs(args.bids, args.participant_label, task=args.task)
    subject = validate_subject(inputs, require=("func",))
    mask = _voxel_mask(args.out, inputs.label, args.grid_mm)
    result = run_functional(subject, mask, settings, atlas=atlas, template=target_grid(2.0))
    tr = result.repetition_time
    sources = [p for p in (inputs.bold, *inputs.bold_sidecars, inputs.confounds, inputs.bold_mask) if p is not None]
    grid = _grid_entities(TEMPLATE_SPACE, args.grid_mm)
    meta = {"RepetitionTime": tr, "Steps": list(result.steps), "TimingsSeconds": result.timings}
    meta.update({"HighPassHz": args.high_pass, "LowPassHz": args.low_pass, "TaskName": args.task})
    voxels = xr.Dataset(
        {"bold": (("time", "voxel"), result.voxel_timeseries, {"units": "scanner units", "long_name": "cleaned BOLD"})},
        coords={
            "time": ("time", result.times, {"units": "s", "long_name": "volume onset"}),
            "voxel_ijk": (("voxel", "axis"), result.voxel_indices, {"long_name": "voxel index on the grid"}),
        },
        attrs={"grid_affine": result.voxel_mask.affine, "grid_shape": list(result.voxel_mask.shape)},
    )
    entities = {"task": args.task}
    with DerivativesWriter(args.out, inputs.label, inputs.root) as writer:
        writer.zarr(voxels, "func", {**entities, **grid, "desc": "gm"}, "timeseries", sources=sources, metadata=meta)
        if result.region_timeseries is not None:
            regions = result.region_timeseries.rename(columns=lambda c: names.get(c, c))
            writer.tsv(
                regions,
                "func",
                {**entities, "atlas": atlas_name},
                "timeseries",
                sources=[*sources, args.atlas],
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
    for note in subject.notes:
        log.info(note)
    print(
        f"dtb func: {result.voxel_timeseries.shape[0]} volumes (TR {tr:g} s), {result.voxel_timeseries.shape[1]} voxels"
    )
    return 0
