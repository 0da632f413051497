"""Anatomy stage on nilearn's MNI T1 at low resolution: GM from dipy's HMRF follows nilearn's MNI GM
template, GM volume is conserved on the grid, neuron counts sum to the request, and dtb anat writes
BIDS derivatives (nothing after an error)."""

from __future__ import annotations

import json
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dtb.cli import main
from dtb.errors import InputDataError, ParameterError
from dtb.io.bids import find_subject_inputs, validate_subject
from dtb.preproc.anat import AnatSettings, grey_matter_volume_on_grid, run_anatomy, target_grid
from tests.imaging_data import bids_with_t1w, files_under, mni_gm, mni_t1


def _correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_gm_volume_from_the_mni_t1_correlates_with_the_mni_gm_template(tmp_path):
    bids_with_t1w(tmp_path, mni_t1(4))
    subject = validate_subject(find_subject_inputs(tmp_path, "01"), require=("anat",))
    result = run_anatomy(subject, AnatSettings(grid_mm=3.0, work_mm=4.0, registration="none"))
    template_gm = mni_gm(3).get_fdata()
    assert result.gm_volume.shape == template_gm.shape
    np.testing.assert_allclose(result.gm_volume.affine, target_grid(3.0).affine)
    r = _correlation(result.gm_volume.get_fdata(), template_gm)
    print(f"r(GM volume from HMRF on the 4 mm MNI T1, nilearn MNI GM) on the 3 mm grid = {r:.3f}")
    assert r > 0.8
    fraction = result.gm_fraction.get_fdata()
    assert fraction.min() >= 0 and fraction.max() <= 1 + 1e-5


def test_gm_volume_on_grid_conserves_total_volume():
    gm = mni_gm(1)
    total_mm3 = float(gm.get_fdata().sum())  # 1 mm voxels
    for grid_mm in (3.0, 2.5, 4.0):
        volume = grey_matter_volume_on_grid(gm, target_grid(grid_mm)).get_fdata()
        assert volume.sum() == pytest.approx(total_mm3, rel=0.01), grid_mm
        assert volume.max() <= grid_mm**3 * (1 + 1e-5)


def test_a_given_gm_probseg_skips_segmentation(tmp_path):
    bids_with_t1w(tmp_path, mni_t1(4))
    gm_path = tmp_path / "sub-01" / "anat" / "sub-01_space-MNI152NLin2009aSym_label-GM_probseg.nii.gz"
    nib.save(mni_gm(2), gm_path)
    subject = validate_subject(find_subject_inputs(tmp_path, "01"), require=("anat",))
    result = run_anatomy(subject, AnatSettings(grid_mm=3.0, work_mm=4.0))
    assert not any("segmentation" in step for step in result.steps)
    assert _correlation(result.gm_volume.get_fdata(), mni_gm(3).get_fdata()) > 0.95


def test_settings_are_validated():
    with pytest.raises(ParameterError, match="grid_mm"):
        AnatSettings(grid_mm=0)
    with pytest.raises(ParameterError, match="registration"):
        AnatSettings(registration="rigid")
    with pytest.raises(ParameterError, match="deep_grey_prior"):
        AnatSettings(deep_grey_prior="yes")


def test_dtb_anat_writes_counts_that_sum_to_the_request_and_follow_gm(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids_with_t1w(bids, mni_t1(4))
    out = tmp_path / "out"
    args = ["anat", "--bids", str(bids), "--participant-label", "01", "--out", str(out), "--total-neurons", "100000"]
    assert main([*args, "--registration", "none", "--work-mm", "4"]) == 0
    folder = out / "dtb" / "sub-01" / "anat"
    stem = "sub-01_space-MNI152NLin2009aSym_res-3mm"
    counts = nib.load(folder / f"{stem}_desc-neuroncount_stats.nii.gz").get_fdata()
    assert counts.sum() == 100000 and counts.min() >= 0
    table = pd.read_csv(folder / f"{stem}_desc-neuroncount_stats.tsv", sep="\t")
    assert table["neuron_count"].sum() == 100000 and (table["neuron_count"] > 0).all()
    assert counts[tuple(table[["i", "j", "k"]].to_numpy().T)].sum() == 100000
    r = _correlation(counts, mni_gm(3).get_fdata())
    print(f"r(neuron counts, nilearn MNI GM) on the 3 mm grid = {r:.3f}")
    assert r > 0.8
    sidecar = json.loads((folder / f"{stem}_desc-neuroncount_stats.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"] and sidecar["TotalNeurons"] == 100000
    assert (out / "dtb" / "dataset_description.json").exists()
    assert (folder / f"{stem}_label-GM_probseg.nii.gz").exists() and (
        folder / f"{stem}_desc-brain_mask.nii.gz"
    ).exists()


def test_dtb_anat_error_is_one_line_and_leaves_no_output(tmp_path, capsys):
    t1 = mni_t1(4)
    data = t1.get_fdata()
    data[10, 10, 10] = np.nan
    bids_with_t1w(tmp_path / "bids", nib.Nifti1Image(data, t1.affine))
    out = tmp_path / "out"
    argv = ["anat", "--bids", str(tmp_path / "bids"), "--participant-label", "01", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "sub-01_T1w.nii.gz" in err and "NaN" in err and "Traceback" not in err
    assert [p for p in files_under(out) if p.name != "dataset_description.json"] == []


def test_anat_help_documents_every_option():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    help_text = subprocess.run(
        [sys.executable, "-m", "dtb.cli", "anat", "--help"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--bids",
        "--participant-label",
        "--out",
        "--grid-mm",
        "--total-neurons",
        "--registration",
        "--work-mm",
    ):
        assert option in help_text


@pytest.mark.slow
def test_native_t1w_is_registered_with_syn_and_still_matches_the_template(tmp_path):
    bids_with_t1w(tmp_path, mni_t1(4))
    subject = validate_subject(find_subject_inputs(tmp_path, "01"), require=("anat",))
    result = run_anatomy(subject, AnatSettings(grid_mm=3.0, work_mm=4.0, registration="syn"))
    assert _correlation(result.gm_volume.get_fdata(), mni_gm(3).get_fdata()) > 0.85


def test_anat_without_t1w_or_gm_names_the_folder(tmp_path):
    (tmp_path / "sub-01" / "func").mkdir(parents=True)
    with pytest.raises(InputDataError, match="anat: no .*_T1w"):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("anat",))
