"""Config errors stop the workflow before any job with one message naming the key and the fix;
a stage that fails on bad input leaves no output and points to its log."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.workflow_helpers import (
    copy_workflow,
    region_config,
    snakemake,
    write_config,
    write_region_inputs,
)

SCHEMA = Path(__file__).resolve().parents[2] / "pipeline" / "schemas" / "config.schema.yaml"


# ------------------------------------------------------------------ config errors
def _assert_config_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    output = result.stdout
    assert result.returncode != 0, output
    assert "dtb workflow config:" in output, output
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"
    assert "Job stats" not in output and "Traceback" not in output
    message_lines = [line for line in output.splitlines() if "dtb workflow config:" in line]
    assert len(message_lines) == 1, output


def test_unknown_key_is_named_with_the_keys_allowed(tmp_path):
    work = copy_workflow(tmp_path)
    config = write_config(work, {"compute": {"thread": 2}})
    result = snakemake(work, "--cores", "1", "--configfile", str(config))
    _assert_config_error(result, "['thread']", "at compute", "threads")
    assert not (work / "results").exists()


def test_wrong_type_names_the_key_and_what_it_holds(tmp_path):
    work = copy_workflow(tmp_path)
    config = write_config(work, {"compute": {"ranks": "two"}, "results": 3})
    result = snakemake(work, "--cores", "1", "--configfile", str(config))
    _assert_config_error(result, "compute.ranks: 'two' is not of type 'integer'", "results: 3")
    assert not (work / "results").exists()


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"region": {"total_neurons": 2000}}, "write `neurons_total: N` instead"),
        ({"voxel": {"total_neurons": 2000}}, "write `neurons_total: N` instead"),
        ({"network": {"indegree": 50}}, "`model: {indegree: 100, dt_ms: 0.1}` instead of"),
        ({"assimilation": {"settings": {"neurons_total": 900}}}, ".assimilation.KEY -> assimilation.KEY"),
        ({"model": {"in_degree": 50}}, "['in_degree'] in config section 'model'"),  # twin keys: dtb's own check
        ({"assimilation": {"members": 1}}, "assimilation.members must be an integer >= 2"),
    ],
)
def test_old_spellings_and_twin_keys_are_refused_with_what_to_write(config, needle):
    """One spelling: the twin's keys as in a twin config; the keys of earlier versions name their replacement."""
    from dtb.cli.workflow_config import check_workflow_config
    from dtb.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        check_workflow_config(config, SCHEMA)
    message = str(caught.value)
    assert message.startswith("dtb workflow config: ") and needle in message and "\n" not in message, message


def test_missing_inputs_are_reported_before_any_job(tmp_path):
    work = copy_workflow(tmp_path)
    missing = tmp_path / "no-such-inputs"
    result = snakemake(work, "--cores", "1", "--configfile", str(write_config(work, region_config(missing))))
    _assert_config_error(result, f"region.inputs: folder {missing} does not exist")

    inputs = tmp_path / "inputs"
    write_region_inputs(inputs, "01")
    config = write_config(work, region_config(inputs, subjects=("01", "02")))
    _assert_config_error(snakemake(work, "--cores", "1", "--configfile", str(config)), "subject(s) ['02']")

    bids = write_config(work, {"entry": "voxel", "voxel": {"bids": str(tmp_path / "no-bids")}}, "bids.yaml")
    _assert_config_error(snakemake(work, "-n", "--configfile", str(bids)), "voxel.bids", "does not exist")
    assert not (work / "results").exists()


def test_bad_participants_table_names_the_line(tmp_path):
    work = copy_workflow(tmp_path)
    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\n02\t31\n")
    config = write_config(work, {"entry": "voxel", "subjects": [], "voxel": {"bids": str(bids)}})
    _assert_config_error(snakemake(work, "-n", "--configfile", str(config)), "participants.tsv, line 3", "sub-")


# ------------------------------------------------------------------ a stage that fails
def test_network_rule_failure_leaves_no_output_and_points_to_the_log(tmp_path):
    work = copy_workflow(tmp_path)
    inputs = tmp_path / "inputs"
    write_region_inputs(inputs, "01")
    relmat = inputs / "sub-01" / "dwi" / "sub-01_atlas-AAL2_desc-streamlines_relmat.tsv"
    relmat.write_text(relmat.read_text().splitlines()[0] + "\n")  # header only: not a square matrix
    config = write_config(work, region_config(inputs))
    run = snakemake(work, "results/sub-01/network/sub-01_plan.json", "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0
    assert "results/logs/network/sub-01.log" in run.stdout
    assert not (work / "results" / "sub-01" / "network" / "sub-01_network.zarr").exists()
    assert "relmat" in (work / "results" / "logs" / "network" / "sub-01.log").read_text()


def test_voxel_settings_are_checked_before_any_job(tmp_path):
    work = copy_workflow(tmp_path)
    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    no_atlas = write_config(work, {"entry": "voxel", "subjects": ["01"], "voxel": {"bids": str(bids)}})
    _assert_config_error(snakemake(work, "-n", "--configfile", str(no_atlas)), "voxel.atlas is null", "atlas_labels")
    too_short = write_config(work, {"entry": "voxel", "voxel": {"phantom": {"volumes": 8, "tr": 2}}}, "short.yaml")
    _assert_config_error(
        snakemake(work, "-n", "--configfile", str(too_short)),
        "unknown key(s) ['tr'] at voxel.phantom",
        "voxel.phantom.volumes: 8 is less than the minimum of 20",
    )
    assert not (work / "results").exists()
