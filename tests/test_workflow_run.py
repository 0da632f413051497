"""Real runs through Snakemake: region-level inputs to network and plan, a failing stage, MPI."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.workflow_helpers import (
    REGIONS,
    copy_workflow,
    job_counts,
    region_config,
    snakemake,
    write_config,
    write_region_inputs,
)


# ------------------------------------------------------------------ real runs
def test_region_inputs_to_network_and_plan_run_end_to_end(tmp_path):
    from dtb.network.store import store_info

    work = copy_workflow(tmp_path)
    inputs = tmp_path / "inputs"
    write_region_inputs(inputs, "01")
    write_region_inputs(inputs, "02", seed=1)  # present in the inputs but not asked for
    settings = {"rho": 0.5, "input_regions": ["Thalamus_L", "Thalamus_R"]}
    config = write_config(
        work, region_config(inputs, subjects=("01",), assimilation={"members": 4, "settings": settings})
    )
    targets = ["results/sub-01/network/sub-01_plan.json", "results/sub-01/twin/sub-01_settings.yaml"]
    run = snakemake(work, *targets, "--cores", "2", "--configfile", str(config))
    assert run.returncode == 0, run.stdout
    assert job_counts(run.stdout) == {"network": 1, "twin_settings": 1, "plan": 1, "total": 3}
    written = yaml.safe_load((work / "results" / "sub-01" / "twin" / "sub-01_settings.yaml").read_text())
    assert written == settings
    assert not (work / "results" / "sub-02").exists()
    for subject in ("01",):
        base = work / "results" / f"sub-{subject}" / "network"
        info = store_info(base / f"sub-{subject}_network.zarr")
        assert info["n_neurons"] == 500 * len(REGIONS)
        assert len(info["populations"]) == 2 * len(REGIONS)  # one E and one I population per region
        plan = json.loads((base / f"sub-{subject}_plan.json").read_text())
        assert plan["neurons"] == 500 * len(REGIONS) and plan["members"] == 4 and plan["gpus_needed"] == 1
        for rule in ("network", "plan"):
            assert (work / "results" / "logs" / rule / f"sub-{subject}.log").exists()
    # a finished run has nothing left to do
    again = snakemake(work, *targets, "-n", "--configfile", str(config))
    assert "Nothing to be done" in again.stdout


@pytest.mark.mpi
def test_mpi_rule_runs_two_ranks_through_the_workflow_launcher(tmp_path):
    work = copy_workflow(tmp_path)
    run = snakemake(work, "--cores", "2", "mpi_check")
    assert run.returncode == 0, run.stdout
    greetings = (work / "results" / "checks" / "mpi_helloworld.txt").read_text().splitlines()
    assert sorted(line.split(" on ")[0] for line in greetings) == [
        "Hello, World! I am process 0 of 2",
        "Hello, World! I am process 1 of 2",
    ]
