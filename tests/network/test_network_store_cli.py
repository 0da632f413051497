"""The zarr network store (per-rank blocks) and the ``dtb network build`` / ``dtb plan`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from dtb.cli import main
from dtb.errors import NetworkError
from dtb.network.build import build_block, build_network
from dtb.network.partition import partition_populations
from dtb.network.store import build_to_store, load_block, load_network, store_info
from tests.network_fixtures import network_build_cli_args as _cli_inputs
from tests.network_fixtures import random_connectome, small_layout


def test_store_round_trips_and_each_rank_reads_only_its_block(tmp_path):
    layout = small_layout("laminar", n_voxels=3, per_voxel=800)
    part = partition_populations([p.size for p in layout.populations], layout.indegrees, 3)
    path = tmp_path / "net.zarr"
    build_to_store(path, layout, part)
    loaded = load_network(path)
    built = build_network(layout)
    np.testing.assert_array_equal(loaded.indptr, built.indptr)
    np.testing.assert_array_equal(loaded.targets, built.targets)
    np.testing.assert_array_equal(loaded.weights, built.weights)
    assert loaded.population_names == built.population_names
    assert loaded.metadata["population_params"]["v0:L2/3E"]["g_AMPA"] == pytest.approx(6.60e-3)
    block = load_block(path, 1)
    expected = build_block(layout, *part.rank_range(1))
    np.testing.assert_array_equal(block.sources, expected.sources)
    info = store_info(path)
    json.dumps(info)  # attrs are plain JSON
    assert info["metadata"]["seed"] == layout.config.seed


def test_store_refuses_overwrite_and_unknown_ranks(tmp_path):
    layout = small_layout("ei", n_voxels=2, per_voxel=200)
    part = partition_populations([p.size for p in layout.populations], layout.indegrees, 2)
    path = tmp_path / "net.zarr"
    build_to_store(path, layout, part, ranks=[0])
    with pytest.raises(NetworkError, match="already exists"):
        build_to_store(path, layout, part)
    with pytest.raises(NetworkError, match="never written"):
        load_block(path, 1)
    with pytest.raises(NetworkError, match="out of range"):
        load_block(path, 5)


def test_cli_builds_rank_by_rank_like_all_at_once(tmp_path, capsys):
    counts, sc = tmp_path / "counts.npy", tmp_path / "sc.npz"
    np.save(counts, np.array([1500, 1000, 1200]))
    sp.save_npz(sc, sp.csr_matrix(random_connectome(3)))
    common = ["network", "build", "--counts", str(counts), "--connectome", str(sc), "--ranks", "2", "--seed", "4"]
    assert main([*common, "--out", str(tmp_path / "a.zarr")]) == 0
    assert main([*common, "--out", str(tmp_path / "b.zarr"), "--init-only"]) == 0
    for rank in (1, 0):
        assert main([*common, "--out", str(tmp_path / "b.zarr"), "--rank", str(rank)]) == 0
    a, b = load_network(tmp_path / "a.zarr"), load_network(tmp_path / "b.zarr")
    np.testing.assert_array_equal(a.targets, b.targets)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert summary["ranks"] == 2 and summary["synapses_written"] == a.n_synapses


def test_cli_reports_bad_inputs_without_traceback(tmp_path, capsys):
    counts = tmp_path / "counts.npy"
    np.save(counts, np.array([100.0, -1.0]))
    np.save(tmp_path / "sc.npy", np.ones((3, 3)))
    rc = main(
        [
            "network",
            "build",
            "--counts",
            str(counts),
            "--connectome",
            str(tmp_path / "sc.npy"),
            "--out",
            str(tmp_path / "x.zarr"),
        ]
    )
    assert rc == 2
    assert "neuron_counts" in capsys.readouterr().err


def test_plan_says_how_many_gpus_and_refuses_too_few(capsys):
    assert main(["plan", "--neurons", "1000000000", "--indegree", "100", "--members", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["gpus_needed"] > 1 and result["per_gpu_gib"] <= 79
    rc = main(["plan", "--neurons", "1000000000", "--gpus", "2"])
    assert rc == 2
    assert "more ranks/GPUs" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["network", "build", "--help"], ["plan", "--help"]])
def test_help_explains_every_option(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    text = capsys.readouterr().out
    assert "--out" in text or "--gpus" in text


def test_cli_build_refuses_a_network_that_would_not_fit_the_memory_given(tmp_path, capsys):
    np.save(tmp_path / "counts.npy", np.array([2000]))
    rc = main(
        [
            "network",
            "build",
            "--counts",
            str(tmp_path / "counts.npy"),
            "--memory-gib",
            "0.001",
            "--members",
            "10",
            "--out",
            str(tmp_path / "x.zarr"),
        ]
    )
    assert rc == 2
    assert "more ranks/GPUs" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


def test_cli_threads_sampler_and_device_store_the_identical_network(tmp_path):
    common = _cli_inputs(tmp_path)
    runs = {
        "reference": ["--sampler", "numpy"],
        "threads": ["--threads", "3"],
        "device_cpu": ["--device", "cpu", "--sampler", "compiled", "--threads", "2"],
    }
    nets = {}
    for name, extra in runs.items():
        assert main([*common, *extra, "--out", str(tmp_path / f"{name}.zarr")]) == 0
        nets[name] = load_network(tmp_path / f"{name}.zarr")
    for name in ("threads", "device_cpu"):
        np.testing.assert_array_equal(nets[name].indptr, nets["reference"].indptr)
        np.testing.assert_array_equal(nets[name].targets, nets["reference"].targets)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threads", "0"], "--threads"),
        (["--device", "tpu"], "device"),
    ],
)
def test_cli_refuses_bad_threads_and_devices_with_the_fix(tmp_path, capsys, extra, message):
    # --threads 0 is refused by the argument parser (exit 2), a bad device by the stage (return 2)
    try:
        rc = main([*_cli_inputs(tmp_path), *extra, "--out", str(tmp_path / "x.zarr")])
    except SystemExit as stop:
        rc = stop.code
    assert rc == 2
    assert not (tmp_path / "x.zarr").exists()
    assert message in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_cli_device_cuda_without_a_gpu_says_to_use_cpu(tmp_path, capsys):
    rc = main([*_cli_inputs(tmp_path), "--device", "cuda", "--out", str(tmp_path / "x.zarr")])
    assert rc == 2
    assert "--device cpu" in capsys.readouterr().err


@pytest.mark.gpu
def test_cli_device_cuda_stores_the_cpu_network(tmp_path):
    common = _cli_inputs(tmp_path)
    assert main([*common, "--out", str(tmp_path / "cpu.zarr")]) == 0
    assert main([*common, "--device", "cuda", "--out", str(tmp_path / "gpu.zarr")]) == 0
    a, b = load_network(tmp_path / "cpu.zarr"), load_network(tmp_path / "gpu.zarr")
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.targets, b.targets)
