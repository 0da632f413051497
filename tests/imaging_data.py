"""Small BIDS datasets built from real files (docs/data.md, docs/imaging.md) for the imaging tests.

* nibabel's ``tests/data/example4d.nii.gz`` (128 x 96 x 24 x 2, TR 2 s, header TR written in ms);
* nitime's ``data/fmri1.nii.gz`` (10 x 10 x 18 x 40, TR 1.35 s, LSP orientation), read from the nitime
  wheel (``pip download --no-deps nitime==0.12.1``, cached under ``~/.cache/dtb/wheels``; nitime is not
  installed);
* nilearn's MNI152 2009a T1 and GM templates at low resolution;
* dipy's ``small_64D`` DWI crop.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

NITIME_VERSION = "0.12.1"
WHEEL_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dtb" / "wheels"


def example4d_path() -> Path:
    return Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"


def fmri1_image() -> nib.Nifti1Image:
    """nitime's fmri1.nii.gz from the nitime wheel (downloaded once with pip, then cached)."""
    wheels = sorted(WHEEL_CACHE.glob(f"nitime-{NITIME_VERSION}-*.whl"))
    if not wheels:
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            f"nitime=={NITIME_VERSION}",
            "-d",
            str(WHEEL_CACHE),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        wheels = sorted(WHEEL_CACHE.glob(f"nitime-{NITIME_VERSION}-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"nitime wheel not available offline: {result.stderr.strip()[-200:]}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        raw = gzip.decompress(wheel.read("nitime/data/fmri1.nii.gz"))
    return nib.Nifti1Image.from_bytes(raw)


def mni_t1(resolution: int = 4) -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_template

    img = load_mni152_template(resolution=int(resolution))
    return nib.Nifti1Image(img.get_fdata().astype(np.float32), img.affine)


def mni_gm(resolution: int) -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_gm_template

    return load_mni152_gm_template(resolution=int(resolution))


def copy_nifti(img: nib.Nifti1Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def bids_root(root: Path) -> Path:
    write_json(root / "dataset_description.json", {"Name": "test", "BIDSVersion": "1.9.0"})
    return root


def bids_with_bold(root: Path, bold: nib.Nifti1Image, tr: float | None, label: str = "01", where: str = "file") -> Path:
    """A dataset with one rest BOLD; its TR in a sidecar at ``where`` (file, subject, root) or none."""
    bids_root(root)
    bold_path = copy_nifti(bold, root / f"sub-{label}" / "func" / f"sub-{label}_task-rest_bold.nii.gz")
    if tr is not None:
        sidecar = {
            "file": bold_path.parent / f"sub-{label}_task-rest_bold.json",
            "subject": root / f"sub-{label}" / f"sub-{label}_task-rest_bold.json",
            "root": root / "task-rest_bold.json",
        }[where]
        write_json(sidecar, {"RepetitionTime": tr, "TaskName": "rest"})
    return bold_path


def bids_with_t1w(root: Path, t1w: nib.Nifti1Image, label: str = "01") -> Path:
    bids_root(root)
    return copy_nifti(t1w, root / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz")


def bids_with_dwi(root: Path, label: str = "01") -> Path:
    """dipy's small_64D crop as ``sub-<label>/dwi`` with its bval/bvec."""
    from dipy.data import get_fnames

    bids_root(root)
    dwi_file, bval_file, bvec_file = get_fnames(name="small_64D")
    folder = root / f"sub-{label}" / "dwi"
    dwi = copy_nifti(nib.load(dwi_file), folder / f"sub-{label}_dwi.nii.gz")
    bvals = np.loadtxt(bval_file)
    bvecs = np.loadtxt(bvec_file)
    bvecs = bvecs if bvecs.shape[0] == 3 else bvecs.T
    np.savetxt(folder / f"sub-{label}_dwi.bval", bvals[None, :], fmt="%g")
    np.savetxt(folder / f"sub-{label}_dwi.bvec", bvecs, fmt="%.6f")
    return dwi


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []
