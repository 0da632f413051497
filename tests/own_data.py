"""A small synthetic "own subject" with Schaefer-style labels, in the files docs/data.md says a user has.

``write_own_data(folder)`` writes, relative to ``folder``:

- ``my-inputs/``: the region-level input form without the neuron-count table (dataset_description,
  ``sub-01/dwi/sub-01_atlas-Schaefer2018_desc-streamlines_relmat.tsv`` + JSON,
  ``sub-01/func/sub-01_task-rest_atlas-Schaefer2018_timeseries.tsv`` + JSON with RepetitionTime);
- ``atlas-Schaefer2018_dseg.nii.gz``: an integer label image (12 regions, 4 mm, MNI-like affine);
- ``names.txt``: one region name per line, for the label values 1..12 in order;
- ``gm.nii.gz``: a grey-matter probability map on the atlas grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ATLAS = "Schaefer2018"
LABELS = (
    "7Networks_LH_Vis_1",
    "7Networks_LH_SomMot_1",
    "7Networks_LH_SalVentAttn_FrOperIns_1",
    "7Networks_LH_Limbic_OFC_1",
    "7Networks_LH_Default_PFC_1",
    "7Networks_RH_Vis_1",
    "7Networks_RH_SomMot_1",
    "7Networks_RH_SalVentAttn_FrOperIns_1",
    "7Networks_RH_Limbic_OFC_1",
    "7Networks_RH_Default_PFC_1",
    "Left-Thalamus",
    "Right-Thalamus",
)
TR_S = 1.0
N_FRAMES = 40


def atlas_image() -> nib.Nifti1Image:
    """12 slabs along x, 2 voxels wide each (4 mm voxels), on an MNI-like affine."""
    data = np.zeros((26, 10, 10), dtype=np.int16)
    for value in range(1, len(LABELS) + 1):
        data[1 + 2 * (value - 1) : 1 + 2 * value, 1:9, 1:9] = value
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = (-52.0, -20.0, -20.0)
    return nib.Nifti1Image(data, affine)


def grey_matter_image(atlas: nib.Nifti1Image) -> nib.Nifti1Image:
    """Grey-matter probability rising with the label value (0.2 .. 0.75), 0 in the background."""
    labels = np.asarray(atlas.dataobj)
    gm = np.where(labels > 0, 0.15 + 0.05 * labels, 0.0)
    return nib.Nifti1Image(gm.astype(np.float32), atlas.affine)


def write_own_data(folder: Path, seed: int = 11) -> None:
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    n = len(LABELS)
    root = folder / "my-inputs"
    sub = root / "sub-01"
    (sub / "dwi").mkdir(parents=True)
    (sub / "func").mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "my subject", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}, indent=2)
    )
    sc = rng.integers(5, 200, size=(n, n)).astype(float)
    sc = np.round((sc + sc.T) / 2)
    np.fill_diagonal(sc, 0.0)
    relmat = sub / "dwi" / f"sub-01_atlas-{ATLAS}_desc-streamlines_relmat.tsv"
    pd.DataFrame(sc, index=pd.Index(LABELS, name="region"), columns=LABELS).to_csv(relmat, sep="\t")
    relmat.with_suffix(".json").write_text(json.dumps({"Atlas": ATLAS, "Units": "streamlines"}))
    # slow shared fluctuation plus region noise, smoothed like a haemodynamic signal
    shared = np.convolve(rng.normal(size=N_FRAMES + 30), np.exp(-np.arange(15) / 4.0), mode="valid")[:N_FRAMES]
    noise = rng.normal(size=(N_FRAMES + 30, n))
    kernel = np.exp(-np.arange(15) / 3.0)
    own = np.stack([np.convolve(noise[:, i], kernel, mode="valid")[:N_FRAMES] for i in range(n)], axis=1)
    bold = 1000.0 + 5.0 * shared[:, None] + 3.0 * own
    series = sub / "func" / f"sub-01_task-rest_atlas-{ATLAS}_timeseries.tsv"
    pd.DataFrame(bold, columns=LABELS).to_csv(series, sep="\t", index=False, float_format="%.6f")
    series.with_suffix(".json").write_text(json.dumps({"RepetitionTime": TR_S, "Atlas": ATLAS}))
    atlas = atlas_image()
    nib.save(atlas, folder / f"atlas-{ATLAS}_dseg.nii.gz")
    nib.save(grey_matter_image(atlas), folder / "gm.nii.gz")
    (folder / "names.txt").write_text("\n".join(LABELS) + "\n")
