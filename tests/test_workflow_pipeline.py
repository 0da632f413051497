"""Whole pipelines through Snakemake: region inputs to twin report, the phantom's voxel path, and
an assimilation killed mid-run that resumes to the same result (all marked ``slow``).

Each test is skipped, naming what is missing, until the `dtb` stages it runs exist.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.workflow_helpers import (
    copy_workflow,
    missing_dtb_commands,
    region_config,
    snakemake,
    workflow_env,
    write_config,
    write_region_inputs,
)

pytestmark = pytest.mark.slow
TWIN_STAGES = ("network", "plan", "assimilate", "resimulate", "report")


def require(*commands: str) -> None:
    missing = missing_dtb_commands(*commands)
    if missing:
        pytest.skip(f"dtb {', '.join(missing)} not in this checkout yet")


def small_twin(tmp_path, work):
    inputs = tmp_path / "inputs"
    write_region_inputs(inputs, "01", n_frames=60, tr_s=0.72)
    return write_config(work, region_config(inputs, subjects=("01",), assimilation={"members": 2}))


def test_region_inputs_run_to_the_twin_report(tmp_path):
    require(*TWIN_STAGES)
    from dtb.io.store import open_tree

    work = copy_workflow(tmp_path)
    config = small_twin(tmp_path, work)
    run = snakemake(work, "--cores", "2", "--configfile", str(config), timeout=1800)
    assert run.returncode == 0, run.stdout
    base = work / "results" / "sub-01"
    tree = open_tree(base / "twin" / "sub-01_twin.zarr")
    for group in ("observation", "network", "assimilation", "resimulation", "metrics"):
        assert group in tree.children, f"/{group} missing from the twin store"
    assert tree.attrs["seed"] == 3 and tree.attrs["n_members"] == 2
    assert (base / "report" / "sub-01_report.html").stat().st_size > 1000
    assert list((base / "report" / "figures").glob("*.png"))
    assert not (base / "twin" / "work").exists() or not any((base / "twin" / "work").iterdir())


@pytest.mark.xfail(
    reason="voxel path not wired end to end yet: the phantom's default 16 volumes are too few for the "
    "func band-pass, and func does not wait for anat's GM mask (issue [workflow])",
    strict=False,
)
def test_voxel_path_runs_on_the_phantom_subject(tmp_path):
    require("phantom", "anat", "dwi", "func", *TWIN_STAGES)
    work = copy_workflow(tmp_path)
    config = write_config(
        work,
        {
            "entry": "voxel",
            "subjects": ["phantom"],
            "seed": 5,
            "voxel": {"grid_mm": 6, "total_neurons": 4000},
            "network": {"indegree": 20},
            "assimilation": {"members": 2},
            "compute": {"threads": 1, "mem_mb": 1000},
        },
    )
    run = snakemake(work, "--cores", "2", "--configfile", str(config), timeout=1800)
    assert run.returncode == 0, run.stdout
    for kind in ("anat", "dwi", "func"):
        assert any((work / "results" / "derivatives" / "dtb" / "sub-phantom" / kind).iterdir())
    assert (work / "results" / "sub-phantom" / "report" / "sub-phantom_report.html").exists()


def test_assimilation_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    require("network", "plan", "assimilate")
    from dtb.io.store import open_tree

    target = "results/sub-01/twin/sub-01_twin.zarr"
    reference = copy_workflow(tmp_path / "reference")
    run = snakemake(reference, target, "--cores", "2", "--configfile", str(small_twin(tmp_path, reference)))
    assert run.returncode == 0, run.stdout

    work = copy_workflow(tmp_path / "killed")
    config = small_twin(tmp_path, work)
    command = [sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile", str(config)]
    process = subprocess.Popen(
        command,
        cwd=work,
        env=workflow_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store = work / "results" / "sub-01" / "twin" / "work" / "run.zarr" / "assimilation"
    deadline = time.monotonic() + 900
    while not store.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # let a window or two land
    assert process.poll() is None, "the assimilation finished before it could be killed; use more frames"
    os.killpg(process.pid, signal.SIGKILL)  # like a walltime kill: Snakemake and its job die at once
    process.wait()
    assert not (work / target).exists()

    assert snakemake(work, "--unlock", "--configfile", str(config)).returncode == 0
    resumed = snakemake(work, target, "--cores", "2", "--rerun-incomplete", "--configfile", str(config))
    assert resumed.returncode == 0, resumed.stdout
    expected = open_tree(reference / target)["assimilation"].to_dataset()
    got = open_tree(work / target)["assimilation"].to_dataset()
    for name in ("h_analysis_mean", "h_members", "bold_forecast"):
        np.testing.assert_array_equal(got[name].values, expected[name].values, err_msg=name)
