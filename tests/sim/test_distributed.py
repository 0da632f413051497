"""One simulation over MPI ranks: bitwise identical to one process, failures end all ranks.

The MPI runs go through the pip ``mpich`` launcher (``mpiexec -n N``) in subprocesses;
oversubscribing the cores is fine, the networks are tiny.  Each rank count is launched
once (module fixture) and runs every case of :mod:`tests.distributed_cases`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dtb.errors import BackendUnavailableError
from dtb.sim import Simulation
from dtb.sim.backends import available_backends
from dtb.sim.distributed import block_from_network, read_spikes
from dtb.sim.mpi_launch import launcher_command
from tests.distributed_cases import CASES, network, new_hyperparameters, records, simulation_kwargs

pytestmark = pytest.mark.mpi

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
RANK_COUNTS = (1, 2, pytest.param(4, marks=pytest.mark.slow))  # 4 ranks on 2 cores: minutes
TIMEOUT_S = 400


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    for name in ("DTB_MPI_CHILD", "DTB_MPI_LAUNCHER", "DTB_INJECT_FAULT", "SLURM_JOB_ID"):
        if name not in extra:
            env.pop(name, None)
    return env


def _mpiexec(n: int, args: list[str], timeout: float = TIMEOUT_S, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, *args],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory):
    """A function: rank count -> folder with one .npz of gathered records per case
    (each rank count is launched once, when a test first needs it)."""
    folders: dict[int, Path] = {}

    def folder_for(n: int) -> Path:
        if n not in folders:
            folder = tmp_path_factory.mktemp(f"ranks{n}")
            result = _mpiexec(n, ["-m", "tests.distributed_worker", str(folder)])
            assert result.returncode == 0, result.stderr[-3000:]
            folders[n] = folder
        return folders[n]

    return folder_for


def _single_process(case: dict) -> dict[str, np.ndarray]:
    kwargs = simulation_kwargs(case)
    sim = Simulation(kwargs.pop("network"), kwargs.pop("model"), **kwargs)
    if not case.get("resume"):
        return records([sim.run(case["total_ms"], progress=False)])
    first = sim.run(case["first_ms"], progress=False)
    sim.set_hyperparameters(**new_hyperparameters(case["members"]))
    return records([first, sim.run(case["total_ms"] - case["first_ms"], progress=False)])


@pytest.mark.parametrize("n_ranks", RANK_COUNTS)
@pytest.mark.parametrize("case_name", list(CASES))
def test_ranks_give_bitwise_identical_spikes_counts_and_traces(distributed_runs, case_name, n_ranks):
    case = CASES[case_name]
    reason = available_backends()[case["backend"]]
    if reason is not None:
        pytest.skip(f"backend {case['backend']} unavailable: {reason}")
    if case["layout"] == "members" and n_ranks > case["members"]:
        pytest.skip("members layout needs a member per rank")
    expected = _single_process(case)
    got = np.load(distributed_runs(n_ranks) / f"{case_name}.npz")
    assert expected["spikes"].shape[0] > 300  # the network is active: the comparison means something
    assert len(np.unique(expected["spikes"][:, 1])) == case["members"]
    np.testing.assert_array_equal(got["spikes"], expected["spikes"])
    np.testing.assert_array_equal(got["counts"], expected["counts"])
    np.testing.assert_array_equal(got["neuron"], expected["neuron"])
    np.testing.assert_array_equal(got["V"], expected["V"])


def test_block_from_network_keeps_every_incoming_synapse_once():
    net = network()
    blocks = [block_from_network(net, a, b) for a, b in ((0, 200), (200, 350), (350, net.n_neurons))]
    assert sum(b.n_synapses for b in blocks) == net.n_synapses
    for b in blocks:
        np.testing.assert_array_equal(np.diff(b.indptr), net.in_degrees()[b.start : b.stop])
    pairs = {(int(s), int(t)) for b in blocks for s, t in zip(b.sources, b.targets())}
    sources = np.repeat(np.arange(net.n_neurons), np.diff(net.indptr))
    assert pairs == set(zip(sources.tolist(), net.targets.astype(np.int64).tolist()))


def _cli(args: list[str], launcher_env: dict | None = None, timeout: float = TIMEOUT_S):
    return subprocess.run(
        [sys.executable, "-m", "dtb.cli", *args],
        cwd=ROOT,
        env=_env(**(launcher_env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_cli_ranks_writes_the_single_process_counts_and_spikes(tmp_path):
    example = str(ROOT / "examples" / "ei_network.yaml")
    common = ["--duration", "30", "--members", "2", "--progress", "none"]
    single = _cli(["simulate", example, "--out", str(tmp_path / "one.zarr"), *common])
    assert single.returncode == 0, single.stderr[-2000:]
    split = _cli(["simulate", example, "--out", str(tmp_path / "two.zarr"), "--ranks", "2", *common])
    assert split.returncode == 0, split.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "two.zarr" / "spikes").iterdir() if p.is_dir()) == [
        "rank_00000",
        "rank_00001",
    ]
    from dtb.io.store import open_tree

    one, two = open_tree(tmp_path / "one.zarr"), open_tree(tmp_path / "two.zarr")
    np.testing.assert_array_equal(
        two["population_counts"]["spike_count"].values, one["population_counts"]["spike_count"].values
    )
    np.testing.assert_array_equal(two["samples"]["V"].values, one["samples"]["V"].values)
    merged, reference = read_spikes(tmp_path / "two.zarr"), read_spikes(tmp_path / "one.zarr")
    for name in ("step", "member", "neuron"):
        np.testing.assert_array_equal(merged[name].values, reference[name].values)
    assert two.attrs["distributed"]["n_ranks"] == 2


def test_a_failing_rank_ends_every_rank_with_a_message_naming_it(tmp_path):
    example = str(ROOT / "examples" / "ei_network.yaml")
    result = _cli(
        ["simulate", example, "--out", str(tmp_path / "x.zarr"), "--ranks", "2", "--duration", "50"],
        {"DTB_INJECT_FAULT": "1:5"},
        timeout=240,
    )
    assert result.returncode != 0
    assert "rank 1 of 2 failed" in result.stderr
    assert "InjectedFault" in result.stderr and "interval 5" in result.stderr


def test_missing_mpi4py_gives_the_install_hint(tmp_path):
    fake = tmp_path / "site"
    (fake / "mpi4py").mkdir(parents=True)
    (fake / "mpi4py" / "__init__.py").write_text("raise ImportError('libmpi.so.12: cannot open shared object file')\n")
    code = "import sys; sys.path.insert(0, sys.argv[1]);from dtb.sim.distributed import mpi_world; mpi_world()"
    result = subprocess.run(
        [sys.executable, "-c", code, str(fake)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "pip install mpi4py mpich" in result.stderr


def test_missing_launcher_is_a_one_line_error_with_the_install_hint(tmp_path):
    example = str(ROOT / "examples" / "ei_network.yaml")
    result = _cli(
        ["simulate", example, "--out", str(tmp_path / "x.zarr"), "--ranks", "2"],
        {"DTB_MPI_LAUNCHER": "no-such-mpiexec-here"},
        timeout=120,
    )
    assert result.returncode == 2
    assert "no-such-mpiexec-here" in result.stderr and "pip install mpi4py mpich" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_launcher_choice_follows_option_environment_and_slurm(monkeypatch):
    monkeypatch.delenv("DTB_MPI_LAUNCHER", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert launcher_command(3)[-2:] == ["-n", "3"]
    assert Path(launcher_command(3)[0]).name == "mpiexec"
    monkeypatch.setenv("DTB_MPI_LAUNCHER", f"{MPIEXEC} -np {{n}}")
    assert launcher_command(5) == [MPIEXEC, "-np", "5"]
    monkeypatch.delenv("DTB_MPI_LAUNCHER")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    if shutil.which("srun"):
        # srun ends every rank when one exits with an error (no rank left spinning)
        assert launcher_command(2) == ["srun", "--kill-on-bad-exit=1", "-n", "2"]
        monkeypatch.setenv("DTB_MPI_LAUNCHER", "srun --mpi=pmi2 -K0")
        assert launcher_command(2) == ["srun", "--mpi=pmi2", "-K0", "-n", "2"]  # the user's choice stays
        monkeypatch.delenv("DTB_MPI_LAUNCHER")
    else:
        with pytest.raises(BackendUnavailableError, match="srun"):
            launcher_command(2)
    assert launcher_command(2, launcher=MPIEXEC) == [MPIEXEC, "-n", "2"]


def test_members_layout_with_fewer_members_than_ranks_is_refused_before_launch(tmp_path):
    example = str(ROOT / "examples" / "ei_network.yaml")
    result = _cli(
        ["simulate", example, "--out", str(tmp_path / "x.zarr"), "--ranks", "2", "--layout", "members"], timeout=120
    )
    assert result.returncode == 2
    assert "--layout members needs at least one member per rank" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_layout_is_a_config_error():
    from dtb.errors import ConfigError
    from dtb.sim.distributed import DistributedConfig

    with pytest.raises(ConfigError, match="neurons"):
        DistributedConfig(layout="voxels")


def test_a_job_launched_with_another_rank_count_says_how_to_launch_it(tmp_path):
    example = str(ROOT / "examples" / "ei_network.yaml")
    result = _mpiexec(
        2, ["-m", "dtb.cli", "simulate", example, "--out", str(tmp_path / "x.zarr"), "--ranks", "3"], timeout=240
    )
    assert result.returncode != 0
    assert "has 2 processes but --ranks is 3" in result.stderr
    assert not (tmp_path / "x.zarr").exists()


HUNG_INIT = """
import os, sys, time
from dtb.sim.distributed import init_watchdog
if os.environ.get("PMI_RANK") == "1":
    with init_watchdog(2.0, "MPI_Init"):  # stands in for an MPI_Init that never returns
        time.sleep(120)
from mpi4py import MPI
MPI.COMM_WORLD.Barrier()  # rank 0 waits here for a peer that never comes
"""


def test_a_rank_stuck_in_mpi_init_ends_the_whole_job_with_a_message(tmp_path):
    """The MPI_Init watchdog kills the stuck rank; the launcher then ends its peer: no hang."""
    script = tmp_path / "hung.py"
    script.write_text(HUNG_INIT)
    result = subprocess.run(
        [MPIEXEC, "-n", "2", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode != 0
    assert "MPI_Init did not finish within 2 s; ending it" in result.stderr
    assert "DTB_MPI_INIT_TIMEOUT" in result.stderr


def test_init_watchdog_is_silent_when_the_block_finishes_and_the_timeout_is_validated(monkeypatch, capfd):
    from dtb.errors import ConfigError
    from dtb.sim.distributed import init_watchdog
    from dtb.sim.mpi_launch import init_timeout_s

    with init_watchdog(30.0):
        pass  # the watcher is reaped on exit: no zombie, no message
    assert "did not finish" not in capfd.readouterr().err
    monkeypatch.setenv("DTB_MPI_INIT_TIMEOUT", "0")
    assert init_timeout_s() == 0.0
    monkeypatch.delenv("DTB_MPI_INIT_TIMEOUT")
    assert init_timeout_s() == 300.0
    monkeypatch.setenv("DTB_MPI_INIT_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="DTB_MPI_INIT_TIMEOUT must be a number of seconds >= 0"):
        init_timeout_s()
