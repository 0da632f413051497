"""Write the phantom subject: a small valid BIDS dataset plus its known answers.

Layout (``<out>`` = the BIDS root)::

    dataset_description.json, participants.tsv, README
    sub-phantom/anat/sub-phantom_T1w.nii.gz (+ .json)
    sub-phantom/dwi/sub-phantom_dwi.nii.gz, .bval, .bvec (+ .json)
    sub-phantom/func/sub-phantom_task-rest_bold.nii.gz (+ .json with RepetitionTime)
    derivatives/phantom-truth/dataset_description.json, truth.json
    derivatives/phantom-truth/sub-phantom/anat/
        sub-phantom_atlas-phantom_dseg.nii.gz (+ _dseg.tsv labels, .json)
        sub-phantom_atlas-phantom_desc-neuroncount_stats.tsv (+ .json)
    derivatives/phantom-truth/sub-phantom/dwi/
        sub-phantom_atlas-phantom_desc-{strength,volume,length}_relmat.tsv (+ .json)
        sub-phantom_desc-bundles_table.tsv (+ .json)
    derivatives/phantom-truth/sub-phantom/func/
        sub-phantom_task-rest_atlas-phantom_timeseries.tsv (+ .json)   noise-free region BOLD
        sub-phantom_task-rest_desc-input_timeseries.tsv (+ .json)       h(t) and region rates

Everything is written to a hidden temporary folder next to ``<out>`` and renamed into place
at the end, so an error never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from dtb import __version__
from dtb.errors import InputDataError
from dtb.io.store import json_safe
from dtb.phantom.anatomy import Anatomy, make_anatomy
from dtb.phantom.bold import simulate_region_bold
from dtb.phantom.bundles import bundle_matrix, bundle_pairs, true_connectome, voxelise_bundles
from dtb.phantom.diffusion import gradient_scheme, simulate_dwi
from dtb.phantom.settings import SUBJECT, PhantomSettings
from dtb.philox import Stream, standard_normals

__all__ = ["generate_phantom", "phantom_paths", "BOLD_BASELINE", "ATLAS_NAME"]

log = logging.getLogger("dtb")

#: Signal of the BOLD image at zero BOLD change (image = baseline * (1 + y + noise) in the brain).
BOLD_BASELINE = 1000.0
#: ``atlas-`` entity of the phantom atlas.
ATLAS_NAME = "phantom"
_TRUTH = "phantom-truth"
_PURPOSE_BOLD_NOISE = 2
_BIDS_VERSION = "1.9.0"


def phantom_paths(root: str | Path) -> dict[str, Path]:
    """Paths of the phantom's files under BIDS root ``root`` (whether or not they exist yet)."""
    root = Path(root)
    sub = f"sub-{SUBJECT}"
    truth = root / "derivatives" / _TRUTH / sub
    return {
        "t1w": root / sub / "anat" / f"{sub}_T1w.nii.gz",
        "dwi": root / sub / "dwi" / f"{sub}_dwi.nii.gz",
        "bval": root / sub / "dwi" / f"{sub}_dwi.bval",
        "bvec": root / sub / "dwi" / f"{sub}_dwi.bvec",
        "bold": root / sub / "func" / f"{sub}_task-rest_bold.nii.gz",
        "atlas": truth / "anat" / f"{sub}_atlas-{ATLAS_NAME}_dseg.nii.gz",
        "atlas_labels": truth / "anat" / f"{sub}_atlas-{ATLAS_NAME}_dseg.tsv",
        "neuron_counts": truth / "anat" / f"{sub}_atlas-{ATLAS_NAME}_desc-neuroncount_stats.tsv",
        "strength": truth / "dwi" / f"{sub}_atlas-{ATLAS_NAME}_desc-strength_relmat.tsv",
        "volume": truth / "dwi" / f"{sub}_atlas-{ATLAS_NAME}_desc-volume_relmat.tsv",
        "length": truth / "dwi" / f"{sub}_atlas-{ATLAS_NAME}_desc-length_relmat.tsv",
        "bundles": truth / "dwi" / f"{sub}_desc-bundles_table.tsv",
        "region_bold": truth / "func" / f"{sub}_task-rest_atlas-{ATLAS_NAME}_timeseries.tsv",
        "input": truth / "func" / f"{sub}_task-rest_desc-input_timeseries.tsv",
        "truth": root / "derivatives" / _TRUTH / "truth.json",
    }


def _json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(content), indent=2) + "\n")


def _sidecar(path: Path, content: dict) -> None:
    name = path.name
    for ext in (".nii.gz", ".tsv", ".bval", ".bvec"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    _json(path.with_name(name + ".json"), content)


def _nifti(path: Path, img: nib.Nifti1Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def _relmat(path: Path, matrix: np.ndarray, names, sidecar: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(matrix, index=pd.Index(names, name="region"), columns=list(names))
    frame.to_csv(path, sep="\t", float_format="%.10g")
    _sidecar(path, sidecar)


def _bold_image(anatomy: Anatomy, region_bold: np.ndarray, settings: PhantomSettings) -> nib.Nifti1Image:
    """Paint each region's BOLD into its voxels, add Gaussian noise (Philox, Stream.PHANTOM) in the brain."""
    labels = np.asarray(anatomy.atlas.dataobj)
    brain_ijk = np.argwhere(anatomy.brain)
    T = region_bold.shape[0]
    change = np.zeros((T, brain_ijk.shape[0]))
    brain_labels = labels[tuple(brain_ijk.T)]
    inside = brain_labels > 0
    change[:, inside] = region_bold[:, brain_labels[inside] - 1]
    if settings.bold_noise > 0:
        noise = standard_normals(settings.seed, Stream.PHANTOM, _PURPOSE_BOLD_NOISE, 0, change.shape).numpy()
        change += settings.bold_noise * noise
    data = np.zeros(anatomy.shape + (T,), dtype=np.float32)
    data[tuple(brain_ijk.T)] = (BOLD_BASELINE * (1.0 + change)).T
    img = nib.Nifti1Image(data, anatomy.affine)
    img.header.set_xyzt_units("mm", "sec")
    zooms = img.header.get_zooms()
    img.header.set_zooms(zooms[:3] + (settings.tr_s,))
    return img


def _write(root: Path, settings: PhantomSettings, progress) -> dict:
    paths = phantom_paths(root)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    anatomy = make_anatomy(settings)
    names = anatomy.names
    R = len(names)
    voxel_mm3 = float(settings.grid_mm) ** 3

    # dataset-level files
    _json(
        root / "dataset_description.json",
        {
            "Name": "dtb phantom subject",
            "BIDSVersion": _BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["dtb phantom generator"],
            "GeneratedBy": [{"Name": "dtb", "Version": __version__, "Description": "dtb phantom"}],
        },
    )
    (root / "participants.tsv").write_text("participant_id\n" + f"sub-{SUBJECT}\n")
    (root / "README").write_text(
        "Phantom subject generated by `dtb phantom` (T1w from the MNI152 template, DWI simulated with dipy from "
        "known fibre bundles, BOLD simulated by the dtb twin from a known input h(t)).\n"
        "The known answers are under derivatives/phantom-truth/.\n"
    )

    # anatomy + atlas
    _nifti(paths["t1w"], anatomy.t1w)
    _sidecar(paths["t1w"], {"Description": f"nilearn MNI152 template resampled to {settings.grid_mm} mm"})
    _json(
        root / "derivatives" / _TRUTH / "dataset_description.json",
        {
            "Name": "dtb phantom truth",
            "BIDSVersion": _BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "dtb", "Version": __version__}],
        },
    )
    _nifti(paths["atlas"], anatomy.atlas)
    pd.DataFrame({"index": np.arange(1, R + 1), "name": names}).to_csv(paths["atlas_labels"], sep="\t", index=False)
    _sidecar(
        paths["atlas"],
        {
            "Description": f"{R} spherical regions (radius {settings.region_radius_mm} mm) around grey-matter centres",
            "Sources": [f"bids:raw:sub-{SUBJECT}/anat/{paths['t1w'].name}"],
            "CentresMM": anatomy.centres_mm,
        },
    )

    # diffusion
    bundles = bundle_pairs(R)
    fibres, voxels_per_bundle = voxelise_bundles(
        bundles, anatomy.centres_mm, anatomy.affine, anatomy.shape, anatomy.brain
    )
    bvals, bvecs, gtab = gradient_scheme(settings.n_directions, settings.bvalue, settings.seed)
    dwi = nib.Nifti1Image(simulate_dwi(gtab, anatomy.brain, fibres, settings.snr, settings.seed), anatomy.affine)
    dwi.header.set_xyzt_units("mm", "sec")
    _nifti(paths["dwi"], dwi)
    np.savetxt(paths["bval"], bvals[None, :], fmt="%g")
    np.savetxt(paths["bvec"], bvecs.T, fmt="%.8f")
    _sidecar(paths["dwi"], {"PhaseEncodingDirection": "j", "Description": f"simulated with dipy, SNR {settings.snr:g}"})
    strength = true_connectome(bundles, R)
    lengths_mm = np.array([np.linalg.norm(anatomy.centres_mm[b.a] - anatomy.centres_mm[b.b]) for b in bundles])
    provenance = {"Sources": [f"bids:raw:sub-{SUBJECT}/dwi/{paths['dwi'].name}"]}
    _relmat(paths["strength"], strength, names, {**provenance, "Description": "bundle strength (radius class 1-3)"})
    _relmat(
        paths["volume"],
        bundle_matrix(bundles, voxels_per_bundle * voxel_mm3, R),
        names,
        {
            **provenance,
            "Description": "bundle volume [mm^3] (expected streamlines under uniform white-matter seeding)",
            "Units": "mm^3",
        },
    )
    _relmat(
        paths["length"],
        bundle_matrix(bundles, lengths_mm, R),
        names,
        {**provenance, "Description": "bundle length (distance between region centres)", "Units": "mm"},
    )
    pd.DataFrame(
        {
            "region_a": [names[b.a] for b in bundles],
            "region_b": [names[b.b] for b in bundles],
            "strength": [b.strength for b in bundles],
            "voxels": voxels_per_bundle,
            "volume_mm3": voxels_per_bundle * voxel_mm3,
            "length_mm": lengths_mm,
        }
    ).to_csv(paths["bundles"], sep="\t", index=False, float_format="%.6g")
    _sidecar(paths["bundles"], {**provenance, "Description": "the phantom's fibre bundles"})

    # function: the twin
    grey_matter = anatomy.region_grey_matter_mm3()
    region_bold = simulate_region_bold(settings, grey_matter, strength, names, progress=progress)
    bold = _bold_image(anatomy, region_bold.bold, settings)
    _nifti(paths["bold"], bold)
    _sidecar(
        paths["bold"], {"RepetitionTime": settings.tr_s, "TaskName": "rest", "Description": "simulated by the dtb twin"}
    )
    pd.DataFrame({"region": names, "neuron_count": region_bold.neuron_counts, "grey_matter_mm3": grey_matter}).to_csv(
        paths["neuron_counts"], sep="\t", index=False, float_format="%.6g"
    )
    _sidecar(paths["neuron_counts"], {"Sources": [f"bids:raw:sub-{SUBJECT}/anat/{paths['t1w'].name}"]})
    pd.DataFrame(region_bold.bold, columns=list(names)).to_csv(
        paths["region_bold"], sep="\t", index=False, float_format="%.8g"
    )
    _sidecar(
        paths["region_bold"],
        {"RepetitionTime": settings.tr_s, "Description": "noise-free region BOLD (fractional change)", "Units": "1"},
    )
    inputs = pd.DataFrame({"time_s": region_bold.times_s, "h": region_bold.h})
    for k, name in enumerate(names):
        inputs[f"rate_hz_{name}"] = region_bold.rate_hz[:, k]
    inputs.to_csv(paths["input"], sep="\t", index=False, float_format="%.8g")
    _sidecar(
        paths["input"],
        {
            "RepetitionTime": settings.tr_s,
            "Description": "h(t) in force during each TR (DTB current units) and mean rate per region [Hz]",
            "InputRegions": [names[r] for r in settings.input_regions],
        },
    )
    truth = {
        "dtb_version": __version__,
        "settings": asdict(settings),
        "subject": SUBJECT,
        "regions": list(names),
        "input_regions": [names[r] for r in settings.input_regions],
        "bold_baseline": BOLD_BASELINE,
        "simulation_backend": region_bold.backend,
        "n_neurons": int(region_bold.neuron_counts.sum()),
        "files": {key: str(path.relative_to(root)) for key, path in paths.items()},
    }
    _json(paths["truth"], truth)
    return truth


def generate_phantom(
    out: str | Path, settings: PhantomSettings | None = None, *, overwrite: bool = False, progress=None
) -> Path:
    """Generate the phantom BIDS dataset at ``out`` (see the module docstring for its files).

    Parameters
    ----------
    out : BIDS root to create; must not exist (or be empty) unless ``overwrite``.
    settings : PhantomSettings (default: the defaults).
    overwrite : replace an existing ``out``.
    progress : progress reporting of the twin simulation (see :class:`dtb.progress.Progress`).

    Returns
    -------
    Path of the dataset root.
    """
    settings = settings or PhantomSettings()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputDataError(f"--out {out} already exists and is not empty; choose a new folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        _write(staging, settings, progress)
        if out.exists():
            trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, trash / "old")
            os.replace(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("phantom dataset written to %s", out)
    return out
