"""bench/ensemble.py on a small Brunel-COBA: the invariants its numbers rest on.

The benchmark's ratios are only meaningful if the ensemble run and the separate runs simulate
the same members: checked here as the script checks it (members bitwise equal to their
separate runs, equal spike totals, in one process and across whole processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require_backend

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("DTB_PEERS") or "/nonexistent")  # the peers' folder (not in this repository)


@pytest.mark.skipif(not (PEERS / "brunel_common.py").exists(), reason="DTB_PEERS (the peers' folder) not set")
def test_ensemble_benchmark_compares_the_same_members(tmp_path):
    require_backend("cuda_ext")
    out = tmp_path / "ensemble.jsonl"
    cmd = [
        sys.executable, str(ROOT / "bench" / "ensemble.py"), "--N", "400", "--K", "20", "--T", "20",
        "--members", "3", "--check", "3", "--threads", "1", "--processes", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text().splitlines()[-1])
    assert result["members"] == 3 and result["members_bitwise_equal_to_separate_runs"] == [True, True, True]
    assert result["spikes_ensemble"] == result["spikes_separate_total"] > 0
    for name in ("update_only", "update_with_noise"):
        assert 0 < result[f"floor_{name}_over_separate"] < 10
        assert 0 < result[f"floor_one_member_{name}_over_separate"] < 10
    processes = result["processes"]
    assert processes["spikes_equal"] and processes["spikes_ensemble"] == result["spikes_ensemble"]
    assert processes["rates_separate_Hz"] == processes["rates_ensemble_Hz"]
    assert processes["wall_separate_total_s"] > 0 and processes["wall_ensemble_s"] > 0
