"""A twin assimilated on several MPI ranks gives bitwise the store of one process.

The ensemble is spread over 2 and 4 ranks by members and by neurons (``mpiexec -n N``; 4 ranks
oversubscribe a 2-core machine, which only slows them); every rank
runs the filter on the gathered observations, rank 0 writes. The h tracks, forecasts, rates and
innovations equal the single-process run bit for bit, also after a kill and ``resume``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dtb.errors import AssimilationError
from dtb.io.store import open_tree
from tests.twin_distributed_cases import assimilation, calibration

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
ARRAYS = ("h_members", "h_forecast_mean", "h_analysis_mean", "bold_forecast", "rate_forecast", "innovation")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    hmda, observed = assimilation()
    return hmda.run(observed, tmp_path_factory.mktemp("one") / "one.zarr", progress="none")


def _ranks(out: Path, n: int) -> Path:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for name in ("DTB_MPI_CHILD", "DTB_MPI_LAUNCHER", "DTB_INJECT_FAULT", "SLURM_JOB_ID"):
        env.pop(name, None)
    result = subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, "-m", "tests.twin_distributed_worker", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _ranks(tmp_path_factory.mktemp("two"), 2)


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    return _ranks(tmp_path_factory.mktemp("four"), 4)


@pytest.mark.mpi
@pytest.mark.parametrize("run", ["members", "neurons", "resumed"])
@pytest.mark.parametrize("ranks", ["two_ranks", "four_ranks"])
def test_two_and_four_ranks_give_the_single_process_store_bitwise(single, ranks, run, request):
    n = {"two_ranks": 2, "four_ranks": 4}[ranks]
    one = open_tree(single)["assimilation"]
    many = open_tree(request.getfixturevalue(ranks) / f"{run}.zarr")
    assert many.attrs["complete"] and many.attrs["engine"]["distributed"]["n_ranks"] == n
    for name in ARRAYS:
        np.testing.assert_array_equal(one[name].values, many["assimilation"][name].values, err_msg=name)


@pytest.mark.mpi
def test_a_distributed_checkpoint_is_not_resumed_on_one_process(two_ranks, tmp_path):
    import shutil

    from dtb.assim.hmda import CHECKPOINT_NAME

    store = tmp_path / "copy.zarr"
    shutil.copytree(two_ranks / "members.zarr", store)
    root_attrs = store / "zarr.json"
    text = root_attrs.read_text().replace('"complete": true', '"complete": false')
    root_attrs.write_text(text)
    assert (store / CHECKPOINT_NAME).exists()
    hmda, observed = assimilation()
    with pytest.raises(AssimilationError, match=r"2 rank\(s\) and this one has 1.*--ranks 2"):
        hmda.run(observed, store, progress="none", resume=True)


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", ["two_ranks", "four_ranks"])
def test_h_calibration_on_ranks_measures_the_bounds_of_one_process(ranks, request):
    """``h_bounds: calibrated`` under --ranks: the calibration ensemble spread by neurons gives the same bits."""
    one = calibration().describe()
    measured = json.loads((request.getfixturevalue(ranks) / "calibration.json").read_text())
    assert measured == json.loads(json.dumps(one))
    assert one["lower"] < one["upper"]
