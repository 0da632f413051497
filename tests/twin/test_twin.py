"""`dtb twin` end to end on a small region-level subject: store groups, metrics, report, config errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dtb.errors import ConfigError
from dtb.io import twin_store
from dtb.io.region_inputs import write_region_subject
from dtb.io.store import open_tree
from dtb.twin.config import load_twin_config, resolve_input_regions
from tests.helpers import TWIN_LABELS
from tests.helpers import small_twin_subject as _subject

ROOT = Path(__file__).resolve().parents[2]
LABELS = TWIN_LABELS


def _config(tmp_path: Path, **assimilation) -> Path:
    cfg = {
        "seed": 3,
        "neurons_total": 200,
        "threads": 1,
        "model": {"indegree": 10, "dt_ms": 1.0, "min_excitatory": 4, "min_inhibitory": 1},
        "assimilation": {"members": 3, "warmup_windows": 4, "checkpoint_every": 5, **assimilation},
        "observation": {"low_hz": None, "high_hz": 0.2},
        "resimulation": {"record_seconds": 2.0},
    }
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _dtb(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dtb.cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


def test_dtb_twin_writes_store_metrics_and_report(tmp_path):
    inputs = tmp_path / "inputs"
    write_region_subject(inputs, _subject())
    out = tmp_path / "out"
    res = _dtb(
        "twin", "--config", _config(tmp_path, heldout_fraction=0.25), "--inputs", inputs,
        "--participant-label", "synth01", "--out", out, "--progress", "none",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    store = out / "sub-synth01_twin.zarr"
    tree = open_tree(store)
    for group in (
        "observation",
        "network",
        "assimilation",
        "resimulation",
        "resimulation_spikes",
        "resimulation_counts",
        "metrics",
    ):
        assert group in tree.children, group
    assert tree.attrs["complete"] is True and tree.attrs["subject"] == "synth01"
    assert twin_store.check_store(store) == []  # every group, variable and root attribute is in the schema
    a = tree["assimilation"]
    assert a.sizes["time"] == 40 and int(a["heldout"].values.sum()) == 10 and int(a["warmup"].values.sum()) == 4
    obs = tree["observation"]["bold"].values
    assert obs.min() >= 0.02 - 1e-12 and obs.max() <= 0.05 + 1e-12  # min-max scaling to the DTB rest range
    m = tree["metrics"].attrs
    for key in (
        "forecast_r",
        "resim_region_r",
        "resim_input_r",
        "resim_noninput_r",
        "fc_similarity",
        "fnorm",
        "heldout_r",
        "persistence_r",
    ):
        assert key in m, key
    assert "warnings" not in m, m.get("warnings")  # the haemodynamics stayed physiological
    assert tree["resimulation"]["bold"].shape == (40, 4)
    assert tree["resimulation_counts"]["spike_count"].shape[0] == 2000  # record_seconds of 1 ms bins
    html = (out / "sub-synth01_report.html").read_text()
    assert "Assimilation" in html and "Fidelity" in html and "Thalamus_L" in html
    # 3 members: valid, but measured to fit badly; the store and the report say so
    assert [w.split(":")[0] for w in tree.attrs["warnings"]] == ["assimilation.members is 3"]
    assert "assimilation.members is 3" in html and "assimilation.members is 3" in res.stderr


def test_fit_warnings_name_too_few_members_only():
    from dtb.twin.config import MIN_RELIABLE_MEMBERS, fit_warnings

    assert fit_warnings(load_twin_config({"assimilation": {"members": MIN_RELIABLE_MEMBERS}})) == []
    (warning,) = fit_warnings(load_twin_config({"assimilation": {"members": MIN_RELIABLE_MEMBERS - 1}}))
    assert (
        warning.startswith(f"assimilation.members is {MIN_RELIABLE_MEMBERS - 1}")
        and "set assimilation.members" in warning
    )


def test_dtb_twin_no_report_writes_the_complete_store_and_no_report(tmp_path, monkeypatch, caplog):
    import logging

    import dtb.report.html
    from dtb.cli import main

    def no_report(*args, **kwargs):
        raise AssertionError("--no-report must not build the report")

    monkeypatch.setattr(dtb.report.html, "build_report", no_report)
    inputs = tmp_path / "inputs"
    write_region_subject(inputs, _subject())
    out = tmp_path / "out"
    argv = ["twin", "--config", str(_config(tmp_path, n_frames=24)), "--inputs", str(inputs)]
    argv += ["--participant-label", "synth01", "--out", str(out), "--progress", "none", "--no-report"]
    with caplog.at_level(logging.INFO, logger="dtb"):
        assert main(argv) == 0
    store = out / "sub-synth01_twin.zarr"
    assert sorted(p.name for p in out.iterdir()) == [store.name]  # no HTML file, no figures/
    tree = open_tree(store)
    assert tree.attrs["complete"] is True
    for group in ("observation", "network", "assimilation", "resimulation", "resimulation_counts", "metrics"):
        assert group in tree.children, group
    assert tree["resimulation"]["bold"].shape == (24, 4) and "fc_similarity" in tree["metrics"].attrs
    assert "report skipped: --no-report" in caplog.text
    # an older report beside the store is named as out of date, not silently left
    (out / "sub-synth01_report.html").write_text("<html>old</html>")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dtb"):
        assert main([*argv, "--overwrite"]) == 0
    assert "was not rewritten (--no-report)" in caplog.text


def test_config_errors_are_one_line(tmp_path):
    inputs = tmp_path / "inputs"
    write_region_subject(inputs, _subject())
    bad = tmp_path / "bad.yaml"
    bad.write_text("assimilation: {membres: 4}\n")
    res = _dtb(
        "assimilate",
        "--config",
        bad,
        "--inputs",
        inputs,
        "--participant-label",
        "synth01",
        "--out",
        tmp_path / "x.zarr",
    )
    assert res.returncode == 2
    assert "membres" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_config_validation_and_input_sets():
    with pytest.raises(ConfigError, match="unknown key"):
        load_twin_config({"sed": 1})
    with pytest.raises(ConfigError, match="members"):
        load_twin_config({"assimilation": {"members": 1}})
    with pytest.raises(ConfigError, match="input_regions"):
        load_twin_config({"assimilation": {"input_regions": "brainstem"}})
    with pytest.raises(
        ConfigError, match=r"assimilation.balloon_update .*'linear', 'log', 'bounded', 'none'.*did you mean 'log'"
    ):
        load_twin_config({"assimilation": {"balloon_update": "logs"}})
    assert load_twin_config({"assimilation": {"balloon_update": "log"}}).hmda.balloon_update == "log"
    cfg = load_twin_config({"assimilation": {"input_regions": "thalamus"}})
    assert resolve_input_regions(cfg, LABELS) == [0, 1]
    with pytest.raises(ConfigError, match="not among"):
        resolve_input_regions(load_twin_config({"assimilation": {"input_regions": "interoceptive"}}), LABELS)
    assert resolve_input_regions(load_twin_config({"assimilation": {"input_regions": "all"}}), LABELS) == [0, 1, 2, 3]
    for bad in (0, -5, "60", 12.5, True):
        with pytest.raises(ConfigError, match=r"assimilation.n_frames must be a whole number >= 1 .* or null"):
            load_twin_config({"assimilation": {"n_frames": bad}})
    assert load_twin_config({"assimilation": {"n_frames": 60}}).n_frames == 60


def test_a_held_out_part_of_one_frame_is_refused_before_the_run(tmp_path):
    from dtb.errors import AssimilationError
    from dtb.twin.run import assimilate_subject

    config = yaml.safe_load(_config(tmp_path, heldout_fraction=0.03).read_text())  # round(0.03 * 40) = 1 frame
    with pytest.raises(AssimilationError, match="heldout_fraction 0.03 holds out 1 of 40 frames"):
        assimilate_subject(_subject(), config, tmp_path / "run.zarr", progress="none")
    assert not (tmp_path / "run.zarr").exists()
