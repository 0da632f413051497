"""Diffusion stage: tensor and CSD on dipy's real crops, connectomes from known streamlines, input errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dtb.errors import InputDataError
from dtb.preproc.dwi import (
    DwiSettings,
    brain_mask,
    fit_csd,
    fit_tensor,
    load_gradients,
    region_connectome,
    reorient_to_ras,
    voxel_connectome,
)
from dtb.preproc.dwi_stage import find_dwi, run_dwi_stage

ROOT = Path(__file__).resolve().parents[2]


def _crop(name: str):
    from dipy.data import get_fnames

    image, bval, bvec = (Path(p) for p in get_fnames(name=name))
    return nib.load(image), bval, bvec


@pytest.fixture
def small_bids(tmp_path) -> Path:
    """A one-subject BIDS dataset holding dipy's small_64D crop."""
    img, bval, bvec = _crop("small_64D")
    folder = tmp_path / "bids" / "sub-01" / "dwi"
    folder.mkdir(parents=True)
    nib.save(img, folder / "sub-01_dwi.nii.gz")
    shutil.copy(bval, folder / "sub-01_dwi.bval")
    directions = np.loadtxt(bvec)  # dipy ships it as one row per volume (FSL accepts both)
    np.savetxt(folder / "sub-01_dwi.bvec", directions if directions.shape[0] == 3 else directions.T, fmt="%.8g")
    (tmp_path / "bids" / "dataset_description.json").write_text('{"Name": "crop", "BIDSVersion": "1.9.0"}')
    return tmp_path / "bids"


def test_tensor_fa_and_md_on_small_64d_lie_in_the_documented_ranges():
    img, bval, bvec = _crop("small_64D")
    gtab = load_gradients(bval, bvec, img.shape[3])
    img, gtab, note = reorient_to_ras(img, gtab)
    assert note is not None and "RAS" in note  # the crop is stored PLS
    data = np.asarray(img.dataobj, dtype=np.float32)
    fa, md = fit_tensor(data, gtab, np.ones(img.shape[:3], bool))
    # docs/dwi.md, "Checks": the data plan quoted FA median about 0.29, 90th percentile about 0.77,
    # MD about 1.0e-3 mm^2/s (whole crop);
    # measured here: 0.345, 0.758, 0.84e-3 (median; mean 1.28e-3)
    assert 0.25 < np.median(fa) < 0.40
    assert 0.70 < np.percentile(fa, 90) < 0.85
    assert 0.7e-3 < np.median(md) < 1.3e-3
    assert np.all((fa >= 0) & (fa <= 1))


def test_reorientation_to_ras_keeps_the_tensor_physics():
    img, bval, bvec = _crop("small_64D")
    gtab = load_gradients(bval, bvec, img.shape[3])
    full = np.ones(img.shape[:3], bool)
    fa_native, md_native = fit_tensor(img.get_fdata(), gtab, full)
    ras, ras_gtab, _ = reorient_to_ras(img, gtab)
    fa_ras, md_ras = fit_tensor(ras.get_fdata(), ras_gtab, full)
    ornt = nib.orientations.io_orientation(img.affine)
    expected = nib.orientations.apply_orientation(fa_native, ornt)
    np.testing.assert_allclose(fa_ras, expected, atol=1e-5)
    np.testing.assert_allclose(md_ras, nib.orientations.apply_orientation(md_native, ornt), rtol=1e-5, atol=1e-9)


def test_csd_fits_fibre_distributions_on_multishell_small_101d():
    img, bval, bvec = _crop("small_101D")
    gtab = load_gradients(bval, bvec, img.shape[3])
    img, gtab, _ = reorient_to_ras(img, gtab)
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = brain_mask(data, gtab)
    fa, _ = fit_tensor(data, gtab, mask)
    settings = DwiSettings(sh_order_max=8)
    sh, response, order = fit_csd(data, gtab, mask, fa, settings)
    fitted = mask & (fa >= settings.stop_fa)
    assert order == 8 and sh.shape == img.shape[:3] + (45,)
    assert np.all(np.isfinite(sh)) and np.abs(sh[fitted]).sum(axis=1).min() > 0
    assert np.all(sh[~fitted] == 0)
    evals = response[0]
    assert evals[0] > evals[1] > 0  # prolate single-fibre response [mm^2/s]


def _line(a, b, n=20):
    return np.linspace(np.asarray(a, float), np.asarray(b, float), n)


def test_voxel_connectome_counts_streamline_endpoints_symmetrically():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    shape = (5, 5, 5)
    streamlines = [
        _line([0, 0, 0], [8, 0, 0]),  # voxel (0,0,0) -> (4,0,0), 8 mm
        _line([8.4, 0, 0], [0.3, 0, 0]),  # the same pair, reversed
        _line([0, 2, 0], [0, 2, 6]),  # (0,1,0) -> (0,1,3), 6 mm
        _line([0, 0, 0], [30, 0, 0]),  # leaves the grid: dropped
    ]
    counts, lengths = voxel_connectome(streamlines, shape, affine)
    v = lambda i, j, k: np.ravel_multi_index((i, j, k), shape)  # noqa: E731
    assert counts.shape == (125, 125)
    assert counts[v(0, 0, 0), v(4, 0, 0)] == counts[v(4, 0, 0), v(0, 0, 0)] == 2
    assert counts[v(0, 1, 0), v(0, 1, 3)] == 1
    assert counts.sum() == 2 * 3  # three kept streamlines, each counted at (i, j) and (j, i)
    assert lengths[v(0, 0, 0), v(4, 0, 0)] == pytest.approx((8.0 + 8.1) / 2)
    assert lengths[v(0, 1, 3), v(0, 1, 0)] == pytest.approx(6.0)


def test_region_connectome_counts_and_mean_lengths_between_atlas_labels():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.zeros((10, 4, 4), dtype=np.int16)
    labels[0:2] = 3
    labels[4:6] = 7
    labels[8:10] = 9
    atlas = nib.Nifti1Image(labels, affine)
    streamlines = [_line([1, 2, 2], [17, 2, 2]), _line([1, 4, 2], [9, 4, 2]), _line([9, 2, 2], [17, 2, 2])]
    streamlines.append(_line([2, 2, 2], [10, 2, 2]))
    result = region_connectome(streamlines, atlas, atlas, names={3: "a", 7: "b"})
    assert result.labels.tolist() == [3, 7, 9] and result.names == ("a", "b", "9")
    expected = np.array([[0, 2, 1], [2, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(result.counts, expected)
    assert result.mean_length_mm[0, 1] == pytest.approx(8.0)
    assert result.mean_length_mm[0, 2] == pytest.approx(16.0)


def test_bval_count_mismatch_names_the_file(small_bids):
    image, bval, bvec = find_dwi(small_bids, "01")
    values = bval.read_text().split()
    bval.write_text(" ".join(values[:-1]) + "\n")
    with pytest.raises(InputDataError, match=r"sub-01_dwi\.bval.*64 b-values.*65 volumes"):
        load_gradients(bval, bvec, nib.load(image).shape[3])


def test_bvec_count_mismatch_names_the_file(small_bids):
    image, bval, bvec = find_dwi(small_bids, "sub-01")
    rows = np.loadtxt(bvec)
    rows = rows if rows.shape[0] == 3 else rows.T  # BIDS: three rows x, y, z
    np.savetxt(bvec, rows[:, :-2])
    with pytest.raises(InputDataError, match=r"sub-01_dwi\.bvec.*63 gradient directions.*65 volumes"):
        load_gradients(bval, bvec, nib.load(image).shape[3])


def test_missing_gradient_file_names_it(small_bids):
    (small_bids / "sub-01" / "dwi" / "sub-01_dwi.bvec").unlink()
    with pytest.raises(InputDataError, match=r"sub-01_dwi\.bvec: missing"):
        find_dwi(small_bids, "01")
    with pytest.raises(InputDataError, match="no such participant"):
        find_dwi(small_bids, "02")


def test_cli_error_is_one_line_and_leaves_no_outputs(small_bids, tmp_path):
    bval = small_bids / "sub-01" / "dwi" / "sub-01_dwi.bval"
    bval.write_text(" ".join(bval.read_text().split()[:10]) + "\n")
    out = tmp_path / "derivatives"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dtb.cli",
            "dwi",
            "--bids",
            str(small_bids),
            "--participant-label",
            "01",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "sub-01_dwi.bval" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.rglob("*.nii.gz")) and not list(out.rglob("*.tsv")) and not list(out.rglob("*.npz"))


def test_stage_on_a_real_crop_writes_maps_connectome_and_sidecars(small_bids, tmp_path):
    import json

    import scipy.sparse as sp

    folder = run_dwi_stage(small_bids, "01", tmp_path / "out", settings=DwiSettings(seed_fa=0.2, min_length_mm=4))
    fa = nib.load(folder / "sub-01_space-dwi_desc-FA_dwimap.nii.gz")
    assert fa.shape == (10, 10, 10) and nib.aff2axcodes(fa.affine) == ("R", "A", "S")
    counts = sp.load_npz(folder / "sub-01_desc-streamlines_connectome.npz")
    meta = json.loads((folder / "sub-01_desc-streamlines_connectome.json").read_text())
    assert counts.shape == (1000, 1000) and meta["GridShape"] == [10, 10, 10]
    assert (counts != counts.T).nnz == 0
    assert meta["Sources"][0] == "bids:raw:sub-01/dwi/sub-01_dwi.nii.gz"
    assert not list((tmp_path / "out" / "dtb").rglob(".*tmp-*"))  # no staging folder left
