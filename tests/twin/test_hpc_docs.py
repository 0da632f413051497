"""docs/hpc.md's 1e6-neuron twin recipe: its configs load, its network fits the memory it asks for,
and its projected hours are what dtb.twin.cost gives (cheap: all analytic)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from dtb.cli import main
from dtb.cli.workflow_config import check_workflow_config, twin_settings
from dtb.errors import ConfigError
from dtb.network.memory import GIB, estimate_rank_memory
from dtb.twin.config import load_twin_config
from dtb.twin.cost import estimate_twin_time

ROOT = Path(__file__).resolve().parents[2]
HPC = (ROOT / "docs" / "hpc.md").read_text()
TWIN = (ROOT / "docs" / "twin.md").read_text()
SCHEMA = ROOT / "pipeline" / "schemas" / "config.schema.yaml"
#: measured: peak RSS of the 1e5-neuron twin (0.97 GiB) less its estimate (0.23 GiB), bench/results/twin_1e5.json
PROCESS_GIB = 0.74


def _block(text: str, marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"no block after <!-- {marker} -->"
    return match.group(1)


def test_the_documented_twin_config_loads_and_is_the_same_in_both_pages():
    text = _block(HPC, "twin-1e6 config")
    assert _block(TWIN, "twin-1e6 config") == text
    config = load_twin_config(yaml.safe_load(text))
    assert config.neurons_total == 1_000_000 and config.model.indegree == 100 and config.model.dt_ms == 0.1
    assert config.members == 8 and config.n_frames is None and config.device == "cpu"


def test_the_cpu_job_fits_the_memory_it_asks_for():
    config = load_twin_config(yaml.safe_load(_block(HPC, "twin-1e6 config")))
    script = _block(HPC, "twin-1e6 sbatch")
    ranks = int(re.search(r"--ntasks=(\d+)", script).group(1))
    per_cpu = float(re.search(r"--mem-per-cpu=(\d+)G", script).group(1))
    assert f"--ranks {ranks} --layout neurons" in script and f"--ranks {ranks} --memory-gib {per_cpu:g}" in script
    share = 1.1 / ranks  # the partitioner's bound on the largest rank (dtb.network.memory.plan_ranks)
    neurons = int(config.neurons_total * share)
    rank = estimate_rank_memory(
        neurons, int(neurons * config.model.indegree), n_members=config.members, delay_steps=10, device="cpu"
    )
    whole = estimate_rank_memory(config.neurons_total, 0, n_members=config.members, delay_steps=10)
    rank0 = PROCESS_GIB + rank.total / GIB + (whole.state + whole.drive) / GIB  # + the gathered checkpoint
    assert rank0 <= per_cpu


def test_the_workflow_config_validates_and_members_layout_is_refused_beyond_the_members():
    config = yaml.safe_load(_block(HPC, "twin-1e6 workflow"))
    checked = check_workflow_config(copy.deepcopy(config), SCHEMA)
    assert checked["compute"]["layout"] == "neurons" and checked["compute"]["ranks"] == 64
    twin = load_twin_config(twin_settings(checked))
    assert twin.neurons_total == 1_000_000 and twin.model.indegree == 100
    bad = copy.deepcopy(config)
    bad["compute"]["layout"] = "members"
    with pytest.raises(ConfigError, match=r"compute.ranks: 64 ranks with compute.layout 'members'.*members is 8"):
        check_workflow_config(bad, SCHEMA)


def test_one_gpu_holds_the_documented_twin(capsys):
    assert main(["plan", "--neurons", "1000000", "--indegree", "100", "--members", "8", "--gpus", "1"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] and f'"per_gpu_gib_with_gpus": {plan["per_gpu_gib_with_gpus"]}' in HPC


def test_the_projection_table_is_what_the_cost_model_gives():
    rows = re.findall(
        r"^\| (1e\+0[5-7]) \| ([^|]+) \| (members|neurons) \|(?:[^|]*\|){3} \*\*([\d.]+)\*\* \|", HPC, re.M
    )
    assert len(rows) >= 8
    for neurons, hardware, layout, hours in rows:
        if "CPU" in hardware:
            kwargs = {"ranks": int(hardware.split()[0]), "device": "cpu"}
        else:
            from dtb.twin.cost import GPU_H100, GPU_H200

            kwargs = {"device": "cuda", "gpu": GPU_H100 if "H100" in hardware else GPU_H200}
        est = estimate_twin_time(int(float(neurons)), 100, 0.1, 8, 1200, **kwargs)
        assert est.layout == layout and est.hours == pytest.approx(float(hours), rel=0.01), (neurons, hardware)
