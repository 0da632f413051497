"""BIDS finder and validation on small datasets built from real files (nibabel example4d, nitime fmri1,
nilearn MNI template, dipy small_64D): TR rules, inherited sidecars, every validation error path, and
no partial derivatives after an error."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from dtb.errors import InputDataError
from dtb.io.bids import find_subject_inputs, inherited_sidecar, parse_entities, validate_subject
from dtb.io.derivatives import DerivativesWriter, bids_name
from tests.imaging_data import (
    bids_root,
    bids_with_bold,
    bids_with_dwi,
    bids_with_t1w,
    copy_nifti,
    example4d_path,
    files_under,
    fmri1_image,
    mni_t1,
    write_json,
)


def test_tr_of_example4d_is_2_s_from_json_and_from_its_ms_header(tmp_path):
    bold = nib.load(example4d_path())
    with_json = bids_with_bold(tmp_path / "a", bold, 2.0)
    subject = validate_subject(find_subject_inputs(tmp_path / "a", "01"), require=("func",))
    assert subject.repetition_time == 2.0 and subject.n_volumes == 2
    assert with_json.exists()
    # header only: pixdim[4] = 2000 labelled seconds (FSL 3.3) is read as ms, with a warning and a note
    bids_with_bold(tmp_path / "b", bold, None)
    with pytest.warns(UserWarning, match="no RepetitionTime"):
        subject = validate_subject(find_subject_inputs(tmp_path / "b", "sub-01"), require=("func",))
    assert subject.repetition_time == pytest.approx(2.0)
    assert any("written in ms" in note for note in subject.notes)


@pytest.mark.parametrize("where", ["file", "subject", "root"])
def test_tr_of_nitime_fmri1_is_1p35_s_from_an_inherited_sidecar(tmp_path, where):
    bids_with_bold(tmp_path, fmri1_image(), 1.35, where=where)
    inputs = find_subject_inputs(tmp_path, "01")
    assert inputs.bold_metadata["RepetitionTime"] == 1.35 and len(inputs.bold_sidecars) == 1
    subject = validate_subject(inputs, require=("func",))
    assert subject.repetition_time == pytest.approx(1.35)
    # fmri1 is LSP: reoriented to RAS, and said so
    assert any("reoriented from LSP to RAS" in note for note in subject.notes)
    start, block = next(subject.bold_chunks(16))
    assert start == 0 and nib.aff2axcodes(block.affine) == ("R", "A", "S") and block.shape[3] == 16


def test_nearest_sidecar_wins_and_entities_must_match(tmp_path):
    bold = bids_with_bold(tmp_path, fmri1_image(), 3.0, where="root")
    write_json(tmp_path / "task-rest_bold.json", {"RepetitionTime": 3.0, "Manufacturer": "root"})
    write_json(tmp_path / "sub-01" / "sub-01_task-rest_bold.json", {"RepetitionTime": 2.0, "EchoTime": 0.03})
    write_json(bold.with_name("sub-01_task-rest_bold.json"), {"RepetitionTime": 1.35})
    write_json(tmp_path / "task-other_bold.json", {"RepetitionTime": 9.0, "Manufacturer": "other task"})
    metadata, sources = inherited_sidecar(bold, tmp_path)
    assert metadata == {"RepetitionTime": 1.35, "Manufacturer": "root", "EchoTime": 0.03}
    assert [p.name for p in sources] == [
        "task-rest_bold.json",
        "sub-01_task-rest_bold.json",
        "sub-01_task-rest_bold.json",
    ]
    assert parse_entities(bold) == ({"sub": "01", "task": "rest"}, "bold", ".nii.gz")


def test_finder_prefers_preprocessed_inputs_and_finds_all_modalities(tmp_path):
    bids_with_t1w(tmp_path, mni_t1(4))
    bids_with_dwi(tmp_path)
    bids_with_bold(tmp_path, fmri1_image(), 1.35)
    prep = tmp_path / "derivatives" / "fmriprep" / "sub-01"
    space = "space-MNI152NLin2009cAsym"
    bold = copy_nifti(fmri1_image(), prep / "func" / f"sub-01_task-rest_{space}_desc-preproc_bold.nii.gz")
    write_json(bold.with_name(f"sub-01_task-rest_{space}_desc-preproc_bold.json"), {"RepetitionTime": 1.35})
    copy_nifti(
        nib.Nifti1Image(np.ones((10, 10, 18), np.uint8), fmri1_image().affine),
        prep / "func" / f"sub-01_task-rest_{space}_desc-brain_mask.nii.gz",
    )
    (prep / "func" / "sub-01_task-rest_desc-confounds_timeseries.tsv").write_text("trans_x\n" + "0.1\n" * 40)
    gm = copy_nifti(
        nib.Nifti1Image(np.full((10, 10, 10), 0.5, np.float32), np.eye(4)),
        prep / "anat" / f"sub-01_{space}_label-GM_probseg.nii.gz",
    )
    (prep / "dwi").mkdir(parents=True)
    (prep / "dwi" / "sub-01_atlas-AAL2_relmat.tsv").write_text("a\tb\n0\t1\n1\t0\n")
    inputs = find_subject_inputs(tmp_path, "01")
    assert inputs.bold == bold and inputs.bold_preprocessed and inputs.bold_space == "MNI152NLin2009cAsym"
    assert inputs.bold_mask.name.endswith("desc-brain_mask.nii.gz") and inputs.confounds is not None
    assert inputs.gm_probseg == gm and inputs.gm_probseg_space == "MNI152NLin2009cAsym"
    assert inputs.t1w.name == "sub-01_T1w.nii.gz" and inputs.connectome.name.endswith("relmat.tsv")
    assert inputs.dwi.name == "sub-01_dwi.nii.gz" and inputs.bval.suffix == ".bval" and inputs.bvec.suffix == ".bvec"
    subject = validate_subject(inputs, require=("anat", "dwi", "func"))
    assert subject.bvals.shape == (65,) and subject.bvecs.shape == (65, 3)
    assert subject.repetition_time == pytest.approx(1.35)


def test_missing_dataset_subject_and_modality_are_named(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        find_subject_inputs(tmp_path / "nope", "01")
    bids_with_t1w(tmp_path, mni_t1(4))
    with pytest.raises(InputDataError, match="sub-02 does not exist; subjects in .*sub-01"):
        find_subject_inputs(tmp_path, "02")
    with pytest.raises(InputDataError, match="func: no .*_bold"):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))


def test_missing_tr_everywhere_is_an_error_never_a_guess(tmp_path):
    img = fmri1_image()
    img.header.set_xyzt_units(xyz="mm", t="unknown")
    bids_with_bold(tmp_path, img, None)
    with pytest.raises(InputDataError, match=r"no repetition time.*add \"RepetitionTime\""):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))


def test_tr_mismatch_between_json_and_header_warns_and_json_wins(tmp_path):
    bids_with_bold(tmp_path, fmri1_image(), 2.0)
    with pytest.warns(UserWarning, match="RepetitionTime 2 s in the JSON differs from the header TR 1.35 s"):
        subject = validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))
    assert subject.repetition_time == 2.0


def test_bval_and_bvec_counts_must_match_the_dwi_volumes(tmp_path):
    bids_with_dwi(tmp_path)
    folder = tmp_path / "sub-01" / "dwi"
    bval = folder / "sub-01_dwi.bval"
    good = bval.read_text()
    bval.write_text(" ".join(good.split()[:-1]) + "\n")
    with pytest.raises(InputDataError, match=r"64 gradient entries but sub-01_dwi.nii.gz has 65 volumes"):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("dwi",))
    bval.write_text(good)
    bvec = folder / "sub-01_dwi.bvec"
    np.savetxt(bvec, np.loadtxt(bvec).T)
    with pytest.raises(InputDataError, match="expected 3 rows.*transpose it"):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("dwi",))


def test_bad_affine_and_missing_orientation_are_refused(tmp_path):
    t1 = mni_t1(4)
    singular = t1.affine.copy()
    singular[2, 2] = 0.0
    broken = nib.Nifti1Image(t1.get_fdata(), None)
    broken.set_qform(None, code=0)
    broken.set_sform(singular, code=1)
    bids_with_t1w(tmp_path / "a", broken)
    with pytest.raises(InputDataError, match="affine is singular"):
        validate_subject(find_subject_inputs(tmp_path / "a", "01"), require=("anat",))
    no_codes = nib.Nifti1Image(t1.get_fdata(), t1.affine)
    no_codes.set_qform(None, code=0)
    no_codes.set_sform(None, code=0)
    bids_with_t1w(tmp_path / "b", no_codes)
    with pytest.raises(InputDataError, match="qform_code and sform_code are both 0"):
        validate_subject(find_subject_inputs(tmp_path / "b", "01"), require=("anat",))


def test_non_ras_image_is_reoriented_and_keeps_its_world_coordinates(tmp_path):
    t1 = mni_t1(4)
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = t1.shape[0] - 1
    las = nib.Nifti1Image(t1.get_fdata()[::-1], t1.affine @ flip)
    assert nib.aff2axcodes(las.affine) == ("L", "A", "S")
    bids_with_t1w(tmp_path, las)
    subject = validate_subject(find_subject_inputs(tmp_path, "01"), require=("anat",))
    assert nib.aff2axcodes(subject.t1w.affine) == ("R", "A", "S")
    np.testing.assert_allclose(subject.t1w.affine, t1.affine, atol=1e-5)
    np.testing.assert_allclose(subject.t1w.get_fdata(), t1.get_fdata())
    assert any("reoriented from LAS to RAS" in note for note in subject.notes)


def test_nans_are_refused_with_their_location(tmp_path):
    data = fmri1_image().get_fdata()
    data[1, 2, 3, 30] = np.nan
    header = fmri1_image().header.copy()
    header.set_data_dtype(np.float32)
    bids_with_bold(tmp_path, nib.Nifti1Image(data, fmri1_image().affine, header), 1.35)
    with pytest.raises(InputDataError, match=r"1 NaN/inf value\(s\) \(first at voxel \(1, 2, 3, 30\)\)"):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))


def test_3d_bold_and_4d_t1w_are_refused(tmp_path):
    bids_with_bold(tmp_path / "a", nib.load(example4d_path()).slicer[..., 0], 2.0)
    with pytest.raises(InputDataError, match="BOLD has 3 dimensions.*give the whole BOLD series"):
        validate_subject(find_subject_inputs(tmp_path / "a", "01"), require=("func",))
    bids_with_t1w(tmp_path / "b", nib.load(example4d_path()))
    with pytest.raises(InputDataError, match="T1w image has 4 dimensions.*must be one 3-D volume"):
        validate_subject(find_subject_inputs(tmp_path / "b", "01"), require=("anat",))


def test_bold_mask_on_another_grid_is_refused(tmp_path):
    bold = fmri1_image()
    bids_with_bold(tmp_path, bold, 1.35)
    folder = tmp_path / "sub-01" / "func"
    shape = nib.as_closest_canonical(bold).shape[:3]
    shifted = nib.as_closest_canonical(bold).affine.copy()
    shifted[0, 3] += 1e-3
    mask = folder / "sub-01_task-rest_desc-brain_mask.nii.gz"
    copy_nifti(nib.Nifti1Image(np.ones(shape, np.uint8), shifted), mask)
    with pytest.raises(InputDataError, match="affine differs from .* by up to 0.00(1|0999) mm"):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))
    copy_nifti(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), shifted), mask)
    with pytest.raises(InputDataError, match=r"grid \(4, 4, 4\) differs"):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",))
    # within tolerance (1e-6 mm) is the same grid
    shifted[0, 3] -= 1e-3 - 1e-6
    copy_nifti(nib.Nifti1Image(np.ones(shape, np.uint8), shifted), mask)
    assert validate_subject(find_subject_inputs(tmp_path, "01"), require=("func",)).bold_mask is not None


def test_derivatives_writer_leaves_nothing_after_an_error_and_writes_sidecars(tmp_path):
    bids = bids_root(tmp_path / "bids")
    t1w = bids_with_t1w(bids, mni_t1(4))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="stage failed"):
        with DerivativesWriter(out, "01", bids) as writer:
            writer.nifti(mni_t1(4), "anat", {"space": "MNI152NLin2009aSym"}, "T1w", sources=[t1w])
            raise RuntimeError("stage failed")
    assert files_under(out) == []
    with DerivativesWriter(out, "01", bids) as writer:
        final = writer.nifti(mni_t1(4), "anat", {"space": "MNI152NLin2009aSym", "res": "4mm"}, "T1w", sources=[t1w])
    assert final.name == "sub-01_space-MNI152NLin2009aSym_res-4mm_T1w.nii.gz" and final.exists()
    sidecar = json.loads(final.with_name("sub-01_space-MNI152NLin2009aSym_res-4mm_T1w.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    description = json.loads((out / "dtb" / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "dtb"
    assert not list((out / "dtb").rglob(".*tmp-*")) and not list((out / "dtb").rglob("*.lock"))  # no staging, no lock
    assert (
        bids_name({"sub": "01", "desc": "x", "task": "rest"}, "bold", ".nii.gz")
        == "sub-01_task-rest_desc-x_bold.nii.gz"
    )


def test_ambiguous_files_only_block_the_stage_that_needs_them(tmp_path):
    bids_with_t1w(tmp_path, mni_t1(4))
    truth = tmp_path / "derivatives" / "phantom-truth" / "sub-01" / "dwi"
    truth.mkdir(parents=True)
    for desc in ("strength", "length"):
        (truth / f"sub-01_atlas-x_desc-{desc}_relmat.tsv").write_text("a\tb\n0\t1\n1\t0\n")
    inputs = find_subject_inputs(tmp_path, "01")
    assert inputs.connectome is None and "connectome" in inputs.ambiguous
    assert validate_subject(inputs, require=("anat",)).t1w is not None
    with pytest.raises(InputDataError, match=r"more than one connectome \(relmat.tsv\) found"):
        validate_subject(inputs, require=("dwi",))


def test_constant_t1w_is_refused_with_the_dtype_hint(tmp_path):
    t1 = mni_t1(4)
    truncated = nib.Nifti1Image(t1.get_fdata().astype(np.uint8), t1.affine)  # the [0, 1] template becomes 0
    bids_with_t1w(tmp_path, truncated)
    with pytest.raises(InputDataError, match="T1w is constant .* save it as float32"):
        validate_subject(find_subject_inputs(tmp_path, "01"), require=("anat",))


def test_relative_dataset_path_is_accepted(tmp_path, monkeypatch):
    """A dataset given relative to the working directory (as Snakemake rules do) is found."""
    from dtb.io.bids import find_subject_inputs

    root = tmp_path / "ds"
    sub = root / "sub-01" / "anat"
    sub.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    (root / "task-rest_bold.json").write_text('{"RepetitionTime": 2.0}')
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), sub / "sub-01_T1w.nii.gz")
    monkeypatch.chdir(tmp_path)
    inputs = find_subject_inputs("ds", "01")
    assert inputs.t1w is not None and inputs.t1w.name == "sub-01_T1w.nii.gz"


@pytest.mark.parametrize("cut", [1, 4, 8, 9])
def test_a_nii_gz_cut_inside_its_gzip_trailer_is_refused(tmp_path, cut):
    """nibabel reads only the bytes it needs: losing the end of the gzip stream must still be caught."""
    from dtb.io.bids import _load

    path = tmp_path / "sub-x_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(1000, dtype=np.float32).reshape(10, 10, 10), np.eye(4)), path)
    _load(path, "T1w")  # whole: accepted
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(InputDataError, match=r"sub-x_T1w\.nii\.gz.*truncated"):
        _load(path, "T1w")
