"""The command line: dtb simulate on a description file, help, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from dtb.cli import main
from dtb.io.store import open_tree
from dtb.seeds import derive_seed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ei_network.yaml"


def test_simulate_example_writes_a_zarr_store(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    assert (
        main(["simulate", str(EXAMPLE), "--out", str(out), "--duration", "200", "--members", "2", "--progress", "none"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    tree = open_tree(out)
    counts = tree["population_counts"]["spike_count"]
    assert counts.shape == (200, 2, 4)
    # the file's seed 7 is the run seed; members' noise seeds derive from it (dtb.seeds), no longer 7 + m
    assert tree.attrs["seeds"] == [derive_seed(7, "member", m) for m in range(2)] and tree.attrs["n_neurons"] == 2000
    rates = np.array(summary["rate_mean_hz"])
    assert np.all((rates > 2) & (rates < 25)), f"example network should fire at about 10 Hz, got {rates}"
    assert set(tree["samples"]["neuron"].values) == {0, 1, 800, 1000}


def test_simulate_refuses_to_overwrite_and_reports_without_traceback(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    out.mkdir()
    assert main(["simulate", str(EXAMPLE), "--out", str(out), "--duration", "10", "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert main(["simulate", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_explains_every_option():
    result = subprocess.run(
        [sys.executable, "-m", "dtb.cli", "simulate", "--help"], capture_output=True, text=True, check=True
    )
    for option in (
        "--out",
        "--duration",
        "--seed",
        "--members",
        "--backend",
        "--device",
        "--threads",
        "--initial-v",
        "--chunk",
        "--no-spikes",
        "--overwrite",
        "--progress",
    ):
        assert option in result.stdout


def test_progress_log_mode_writes_plain_lines_with_eta(caplog):
    import logging

    from dtb.progress import Progress

    with caplog.at_level(logging.INFO, logger="dtb"):
        bar = Progress(100, "simulate", "log", unit_scale=0.1, unit="ms")
        for _ in range(10):
            bar.update(10)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and "100%" in lines[-1] and "ETA" in lines[0]
