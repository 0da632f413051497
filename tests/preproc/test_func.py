"""Functional stage: the band-pass removes out-of-band power, block processing does not change the
result, region extraction keeps shapes and labels, TR propagates to the derivatives (nitime fmri1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.image import resample_img

from dtb.cli import main
from dtb.errors import InputDataError, ParameterError
from dtb.io.bids import find_subject_inputs, validate_subject
from dtb.io.store import open_tree
from dtb.preproc.func import FuncSettings, clean_signals, read_confounds, run_functional
from tests.imaging_data import bids_with_bold, example4d_path, files_under, fmri1_image


def _fmri1_subject(tmp_path):
    bids_with_bold(tmp_path, fmri1_image(), 1.35, where="root")
    return validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))


def _atlas_and_mask(tmp_path):
    ras = nib.as_closest_canonical(fmri1_image())
    labels = np.zeros(ras.shape[:3], np.int16)
    labels[:5], labels[5:, :5], labels[5:, 5:, :9], labels[5:, 5:, 9:] = 3, 7, 8, 9
    atlas = nib.Nifti1Image(labels, ras.affine)
    box = nib.Nifti1Image(np.ones(ras.shape[:3], np.uint8), ras.affine)
    mask = resample_img(
        box, target_affine=np.diag([3.0, 3.0, 3.0]), interpolation="nearest", copy_header=True, force_resample=True
    )
    atlas_path = tmp_path / "atlas-toy_dseg.nii.gz"
    nib.save(atlas, atlas_path)
    return atlas, atlas_path, mask


def _band_power(x, tr, low, high):
    freqs = np.fft.rfftfreq(x.shape[0], tr)
    power = np.abs(np.fft.rfft(x, axis=0)) ** 2
    band = (freqs >= low) & (freqs <= high)
    return power[band].sum(axis=0), power[~band & (freqs > 0)].sum(axis=0)


def test_band_pass_keeps_an_in_band_sine_and_removes_out_of_band_ones():
    tr, n = 0.72, 1200
    t = np.arange(n) * tr
    slow, inside, fast = (np.sin(2 * np.pi * f * t) for f in (0.003, 0.05, 0.25))
    signals = np.column_stack([slow + inside + fast, inside])
    cleaned = clean_signals(signals, tr, FuncSettings())
    amplitude = {f: 2 * np.abs(np.exp(-2j * np.pi * f * t) @ cleaned[:, 0]) / n for f in (0.003, 0.05, 0.25)}
    assert amplitude[0.05] == pytest.approx(1.0, abs=0.1)
    assert amplitude[0.003] < 0.1 and amplitude[0.25] < 0.01
    middle = slice(n // 5, -n // 5)  # filtfilt edge effects aside
    np.testing.assert_allclose(cleaned[middle, 0], cleaned[middle, 1], atol=0.1)


def test_band_pass_on_real_bold_leaves_little_out_of_band_power(tmp_path):
    subject = _fmri1_subject(tmp_path)
    atlas, _, mask = _atlas_and_mask(tmp_path)
    raw = run_functional(
        subject,
        mask,
        FuncSettings(high_pass_hz=None, low_pass_hz=None, normalisation="off", motion_correction="off"),
        atlas=atlas,
    )
    filtered = run_functional(subject, mask, FuncSettings(normalisation="off", motion_correction="off"), atlas=atlas)
    tr = subject.repetition_time
    for result in (raw, filtered):
        assert result.repetition_time == pytest.approx(1.35)
    inside_raw, outside_raw = _band_power(raw.region_timeseries.to_numpy(), tr, 0.01, 0.1)
    inside, outside = _band_power(filtered.region_timeseries.to_numpy(), tr, 0.01, 0.1)
    fraction_before = outside_raw / (inside_raw + outside_raw)
    fraction_after = outside / (inside + outside)
    print("out-of-band power fraction before/after:", fraction_before.round(3), fraction_after.round(3))
    assert np.all(fraction_after < 0.5 * fraction_before)


def test_block_size_does_not_change_the_time_series_and_shapes_follow_the_inputs(tmp_path):
    subject = _fmri1_subject(tmp_path)
    atlas, _, mask = _atlas_and_mask(tmp_path)
    off = {"normalisation": "off", "motion_correction": "off"}
    whole = run_functional(subject, mask, FuncSettings(**off, volumes_per_chunk=40), atlas=atlas)
    blocks = run_functional(subject, mask, FuncSettings(**off, volumes_per_chunk=7, voxels_per_chunk=50), atlas=atlas)
    np.testing.assert_allclose(blocks.voxel_timeseries, whole.voxel_timeseries, rtol=1e-5, atol=1e-4)
    pd.testing.assert_frame_equal(blocks.region_timeseries, whole.region_timeseries)
    n_mask = int(mask.get_fdata().sum())
    assert whole.voxel_timeseries.shape == (40, n_mask) and whole.voxel_indices.shape == (n_mask, 3)
    assert list(whole.region_timeseries.columns) == ["3", "7", "8", "9"] and whole.region_timeseries.shape == (40, 4)
    np.testing.assert_allclose(whole.times[:3], [0, 1.35, 2.7])


def test_motion_correction_estimates_a_known_shift(tmp_path):
    img = nib.as_closest_canonical(fmri1_image())
    data = img.get_fdata()[..., :6].copy()
    data[..., 3:] = np.roll(data[..., 3:], 1, axis=1)  # move volumes 3-5 by one voxel along y
    shifted = nib.Nifti1Image(data.astype(np.float32), img.affine)
    shifted.header.set_xyzt_units("mm", "sec")
    shifted.header.set_zooms((*img.header.get_zooms()[:3], 1.35))
    bids_with_bold(tmp_path, shifted, 1.35)
    subject = validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))
    _, _, mask = _atlas_and_mask(tmp_path)
    result = run_functional(
        subject, mask, FuncSettings(normalisation="off", motion_correction="on", high_pass_hz=None, low_pass_hz=None)
    )
    translation = result.motion[["trans_x", "trans_y", "trans_z"]].to_numpy()
    voxel_y = float(np.abs(img.affine[:3, 1]).max())
    assert np.abs(translation[:3]).max() < 0.2
    # a one-voxel roll of a 10 x 10 x 18 crop (edges wrap around): the median shift is within 25 % of a voxel
    assert abs(np.median(np.linalg.norm(translation[3:], axis=1)) - voxel_y) < 0.25 * voxel_y


def test_confounds_table_must_have_one_row_per_volume(tmp_path):
    table = tmp_path / "confounds.tsv"
    table.write_text("trans_x\tcsf\tother\n" + "n/a\t1\t2\n" + "0.1\t2\t3\n" * 9)
    confounds = read_confounds(table, 10)
    assert list(confounds.columns) == ["trans_x", "csf"] and not confounds.isna().any().any()
    with pytest.raises(InputDataError, match="10 rows but the BOLD has 40 volumes"):
        read_confounds(table, 40)


def test_settings_are_validated():
    with pytest.raises(ParameterError, match="below low_pass_hz"):
        FuncSettings(high_pass_hz=0.2, low_pass_hz=0.1)
    with pytest.raises(ParameterError, match="volumes_per_chunk"):
        FuncSettings(volumes_per_chunk=0)


def test_dtb_func_writes_tr_into_every_sidecar_and_zarr(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids_with_bold(bids, fmri1_image(), 1.35, where="root")
    _, atlas_path, _ = _atlas_and_mask(tmp_path)
    labels = tmp_path / "labels.tsv"
    labels.write_text("index\tname\n3\tleft\n7\tfront\n8\tlow\n9\thigh\n")
    out = tmp_path / "out"
    argv = ["func", "--bids", str(bids), "--participant-label", "01", "--out", str(out), "--normalisation", "off"]
    argv += ["--motion-correction", "off"]
    assert main([*argv, "--atlas", str(atlas_path), "--atlas-labels", str(labels), "--chunk-volumes", "16"]) == 0
    folder = out / "dtb" / "sub-01" / "func"
    regions = pd.read_csv(folder / "sub-01_task-rest_atlas-toy_timeseries.tsv", sep="\t")
    assert list(regions.columns) == ["left", "front", "low", "high"] and len(regions) == 40
    for sidecar in folder.glob("*.json"):
        assert json.loads(sidecar.read_text())["RepetitionTime"] == pytest.approx(1.35), sidecar
    stem = "sub-01_task-rest_space-MNI152NLin2009aSym_res-3mm_desc-gm_timeseries"
    tree = open_tree(folder / f"{stem}.zarr")
    assert tree["bold"].dims == ("time", "voxel") and tree.attrs["RepetitionTime"] == pytest.approx(1.35)
    np.testing.assert_allclose(tree["time"].values[:2], [0.0, 1.35])
    assert not (folder / "sub-01_task-rest_desc-motion_timeseries.tsv").exists()


def test_dtb_func_error_leaves_no_output_and_help_lists_options(tmp_path, capsys):
    img = fmri1_image()
    img.header.set_xyzt_units(xyz="mm", t="unknown")
    bids_with_bold(tmp_path / "bids", img, None)
    out = tmp_path / "out"
    argv = ["func", "--bids", str(tmp_path / "bids"), "--participant-label", "01", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "RepetitionTime" in err and "Traceback" not in err
    assert files_under(out) == []
    root = Path(__file__).resolve().parents[2]
    help_text = subprocess.run(
        [sys.executable, "-m", "dtb.cli", "func", "--help"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--bids",
        "--participant-label",
        "--out",
        "--atlas",
        "--atlas-labels",
        "--grid-mm",
        "--chunk-volumes",
    ):
        assert option in help_text


def test_too_short_series_for_the_band_pass_is_a_clear_error(tmp_path):
    bids_with_bold(tmp_path, nib.load(example4d_path()), 2.0)
    subject = validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))
    _, _, mask = _atlas_and_mask(tmp_path)
    settings = FuncSettings(normalisation="off", motion_correction="off")
    with pytest.raises(InputDataError, match="has 2 volumes; the Butterworth band-pass needs more than 33"):
        run_functional(subject, mask, settings)
    unfiltered = FuncSettings(normalisation="off", motion_correction="off", high_pass_hz=None, low_pass_hz=None)
    assert run_functional(subject, mask, unfiltered).voxel_timeseries.shape[0] == 2
