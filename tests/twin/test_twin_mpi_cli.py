"""`dtb assimilate --ranks 2` and `dtb resimulate --ranks 2` write bitwise the stores of one process.

The commands re-execute themselves under the pip mpich ``mpiexec`` (as `dtb simulate --ranks`
does); the assimilation spreads its members over the ranks, the re-simulation the neurons of its
one brain. Bad rank settings are refused before any launch, with nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dtb.cli import main
from dtb.io.region_inputs import write_region_subject
from dtb.io.store import open_tree
from dtb.selftest import synthetic_region_subject

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["Thalamus_L", "Thalamus_R", "Precentral_L", "Precentral_R"]


def _arrays(store: Path, group: str) -> dict[str, np.ndarray]:
    ds = open_tree(store)[group].to_dataset()
    return {k: ds[k].values for k in ds.data_vars}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mpi_twin")
    subject = synthetic_region_subject(
        "s01", LABELS, [100, 100, 150, 150], n_frames=20, tr_s=0.5, kernel=np.exp(-np.arange(8) / 3.0), pad=10
    )
    write_region_subject(tmp / "inputs", subject)
    config = tmp / "twin.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seed": 5,
                "neurons_total": 200,
                "threads": 1,
                "backend": "auto",  # cuda_ext where it builds (the lean window), else torch: the same bits
                "model": {"indegree": 10, "dt_ms": 1.0, "min_excitatory": 4, "min_inhibitory": 1},
                "assimilation": {"members": 4, "warmup_windows": 3, "checkpoint_every": 4},
                "observation": {"low_hz": None, "high_hz": 0.2},
                "resimulation": {"record_seconds": 0.5},
            }
        )
    )
    common = ["--config", str(config), "--inputs", str(tmp / "inputs"), "--participant-label", "s01"]
    one = tmp / "one.zarr"
    assert main(["assimilate", *common, "--progress", "none", "--out", str(one)]) == 0
    assert main(["resimulate", str(one), "--progress", "none"]) == 0
    return {"tmp": tmp, "common": common, "one": one}


def _dtb(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for name in ("DTB_MPI_CHILD", "DTB_MPI_LAUNCHER", "SLURM_JOB_ID"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "dtb.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.mpi
def test_two_rank_assimilation_and_resimulation_equal_one_process(setup):
    two = setup["tmp"] / "two.zarr"
    result = _dtb("assimilate", *setup["common"], "--ranks", "2", "--progress", "none", "--out", str(two))
    assert result.returncode == 0, result.stderr[-3000:]
    result = _dtb("resimulate", str(two), "--ranks", "2", "--progress", "none")
    assert result.returncode == 0, result.stderr[-3000:]
    for group in (
        "assimilation",
        "observation",
        "network",
        "resimulation",
        "resimulation_counts",
        "resimulation_spikes",
    ):
        a, b = _arrays(setup["one"], group), _arrays(two, group)
        assert a.keys() == b.keys(), group
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{group}/{k}")
    assert open_tree(two).attrs["distributed"] == {"n_ranks": 2, "layout": "members"}


@pytest.mark.mpi
def test_bad_rank_settings_are_refused_before_any_launch(setup, capsys):
    out = setup["tmp"] / "never.zarr"
    assert main(["assimilate", *setup["common"], "--ranks", "5", "--out", str(out)]) == 2
    assert "at least one member per rank (4 member(s) < --ranks 5)" in capsys.readouterr().err
    assert main(["twin", *setup["common"], "--ranks", "2", "--out", str(setup["tmp"] / "twin")]) == 2
    assert "dtb assimilate --ranks 2" in capsys.readouterr().err
    assert not out.exists() and not (setup["tmp"] / "twin").exists()
