"""The cuda_ext C++/OpenMP CPU kernels agree with the torch reference backend.

Skipped, with the build error as reason, where the extension cannot be built (no compiler).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dtb.network import Network, Population
from dtb.philox import philox4x32
from dtb.sim import ModelParams, NeuronParams, RecordSpec, Simulation
from tests.helpers import (
    PHILOX_KNOWN_ANSWERS,
    QUIET,
    RECORD,
    feed_forward,
    require_backend,
    small_model,
    small_network,
    spike_table,
    unconnected,
)


@pytest.fixture(scope="module")
def ext():
    require_backend("cuda_ext")
    from cuda_ext.loader import load_cpu_extension

    return load_cpu_extension()


def run(net, model, backend, duration, seed=1, record=None, **kw):
    sim = Simulation(net, model, seed=seed, record=record or RecordSpec(), backend=backend, **kw)
    return sim.run(duration, progress=False)


def both(net, model, duration, **kw):
    require_backend("cuda_ext")
    return run(net, model, "torch", duration, **kw), run(net, model, "cuda_ext", duration, **kw)


def test_philox_known_answers_through_the_cpp_path(ext):
    """Random123 kat_vectors for philox4x32_10, and agreement with dtb.philox on random counters."""
    cases = PHILOX_KNOWN_ANSWERS
    counter = torch.tensor([c for c, _, _ in cases], dtype=torch.int64)
    key = torch.tensor([k for _, k, _ in cases], dtype=torch.int64)
    expected = torch.tensor([e for _, _, e in cases], dtype=torch.int64)
    assert torch.equal(ext.philox(counter, key), expected)
    rng = np.random.default_rng(3)
    counter = torch.from_numpy(rng.integers(0, 2**32, size=(1000, 4), dtype=np.int64))
    key = torch.from_numpy(rng.integers(0, 2**32, size=(1000, 2), dtype=np.int64))
    reference = torch.stack(philox4x32(tuple(counter.T), tuple(key.T)), dim=1)
    assert torch.equal(ext.philox(counter, key), reference)


@pytest.mark.parametrize("integrator", ["exponential_euler", "forward_euler"])
@pytest.mark.parametrize(
    "neuron",
    [
        NeuronParams(**QUIET, i_ext=1.2),  # constant current
        NeuronParams(ou_mu=0.8, ou_sigma=0.2),  # OU noise on
        NeuronParams(**QUIET, poisson_rate_hz=2000.0, poisson_weight=60),  # Poisson on
        NeuronParams(ou_mu=0.5, ou_sigma=0.1, poisson_rate_hz=800.0, poisson_weight=80, i_ext=0.1),
    ],
    ids=["constant", "ou", "poisson", "ou+poisson"],
)
def test_single_neurons_spike_identically(neuron, integrator):
    model = ModelParams({"P": neuron}, integrator=integrator)
    record = RecordSpec(sample_neurons=(0, 3, 3, 7), sample_every_ms=0.3)
    a, b = both(unconnected(8), model, 200.0, seed=4, record=record)
    assert spike_table(a).shape[0] > 10
    np.testing.assert_array_equal(spike_table(a), spike_table(b))
    for name in ("V", "J", "I_syn", "I_bg", "I_ext"):
        np.testing.assert_array_equal(a["samples"][name].values, b["samples"][name].values, err_msg=name)


@pytest.mark.parametrize("delay_ms", [0.1, 1.0, 1.5])
def test_feed_forward_network_spikes_identically(delay_ms):
    drive = NeuronParams(ou_mu=0.8, ou_sigma=0.15, poisson_rate_hz=300.0, poisson_weight=50)
    relay = NeuronParams(ou_mu=0.65, ou_sigma=0.05)
    model = ModelParams({"A": drive, "B": relay, "C": relay}, delay_ms=delay_ms)
    record = RecordSpec(sample_neurons=(0, 45, 65), sample_every_ms=0.5)
    a, b = both(feed_forward(), model, 100.0, seed=7, record=record)
    table = spike_table(a)
    assert np.count_nonzero(table[:, 2] >= 40) > 20  # the relay layers fire
    np.testing.assert_array_equal(table, spike_table(b))
    np.testing.assert_array_equal(a["samples"]["V"].values, b["samples"]["V"].values)


def test_recurrent_network_exact_first_20ms_and_same_rates_after():
    model = small_model(poisson_hz=100.0)
    a, b = both(small_network(), model, 150.0, seed=5, record=RECORD)
    ta, tb = spike_table(a), spike_table(b)
    first = 200  # steps = 20 ms
    np.testing.assert_array_equal(ta[ta[:, 0] < first], tb[tb[:, 0] < first])
    na, nb = len(ta), len(tb)
    assert na > 500
    assert abs(na - nb) < 4 * np.sqrt(na + nb)  # Poisson-like counts: 4 sigma


def test_openmp_threads_do_not_change_spikes():
    require_backend("cuda_ext")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = run(small_network(), small_model(poisson_hz=100.0), "cuda_ext", 60.0, seed=8, record=RECORD)
        torch.set_num_threads(2)
        b = run(small_network(), small_model(poisson_hz=100.0), "cuda_ext", 60.0, seed=8, record=RECORD)
    finally:
        torch.set_num_threads(before)
    assert spike_table(a).shape[0] > 250
    np.testing.assert_array_equal(spike_table(a), spike_table(b))
    np.testing.assert_array_equal(a["samples"]["V"].values, b["samples"]["V"].values)


@pytest.mark.parametrize(
    ("M", "threads", "D"),
    [(3, 1, 10), (3, 2, 10), (1, 2, 10), (1, 3, 1)],
    ids=["serial", "threads-own-members", "threads-own-planes", "atomic-adds"],
)
def test_deliver_matches_torch_reference(ext, M, threads, D):
    """Every path of the C++ delivery: one thread; threads owning members or (slot, kind) planes; atomics."""
    require_backend("cuda_ext")
    from dtb.sim.backends import get_backend

    sim = Simulation(small_network(), small_model(), seed=1, backend="torch")
    graph = sim._graph
    rng = np.random.default_rng(2)
    N = 500
    spikes = torch.from_numpy(
        np.stack([rng.integers(0, D, 4000), rng.integers(0, M, 4000), rng.integers(0, N, 4000)], axis=1)
    )  # 4000 spikes x ~75 synapses: above the 20,000 edges where delivery goes parallel
    ref = torch.zeros((D, 2, M, N), dtype=torch.int32)
    get_backend("torch").deliver(spikes, graph, ref)
    out = torch.zeros_like(ref)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        get_backend("cuda_ext").deliver(spikes, graph, out)
    finally:
        torch.set_num_threads(before)
    assert int(ref.sum()) > 0
    assert torch.equal(out, ref)


def test_cuda_device_is_refused_clearly():
    import cuda_ext
    from dtb.errors import BackendUnavailableError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/sim/test_kernels_cuda.py covers the CUDA kernels")
    with pytest.raises(BackendUnavailableError, match="CPU-only build|sees no CUDA GPU|nvcc"):
        cuda_ext.load_backend("cuda")


def test_a_failed_build_names_the_kernels_the_folder_the_compiler_output_and_the_fix(tmp_path, monkeypatch, caplog):
    """A torch extension that does not compile: one line before the compiler, one message after."""
    import logging

    from dtb.errors import BackendUnavailableError
    from dtb.kernel_build import KernelBuild, build_folder, load_torch_extension

    monkeypatch.setenv("DTB_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "broken.cpp"
    source.write_text("int broken(\n")
    build = KernelBuild(
        slug="test-broken", what="the test kernels", label="test", fix="Use backend 'torch'.", sources=(source,)
    )
    folder = build_folder(build)
    with pytest.raises(BackendUnavailableError) as caught, caplog.at_level(logging.INFO, logger="dtb"):
        load_torch_extension(build)
    message = str(caught.value)
    assert message.startswith(f"the test kernels could not be built in {folder}: ")
    assert "broken" in message and message.endswith("Use backend 'torch'.")
    # the build really started (the compiler ran), and the line before it said so
    assert [r.getMessage() for r in caplog.records if "building kernels" in r.getMessage()] == [
        f"building kernels (test), about 30 s, once; cached in {folder}"
    ]
    assert not (folder / "built.json").exists()  # nothing marks the failed build as done


def test_the_cpu_kernels_load_from_the_one_build_path_with_the_contract_flags(ext, caplog):
    """The loaded module is the cached build of cpu_build(); loading it again builds nothing."""
    import logging

    from cuda_ext.loader import CPU_SOURCES, cpu_build, flavour
    from dtb.kernel_build import CONTRACT_CFLAGS, build_folder, ensure_built, included_files

    build = cpu_build()
    assert set(CONTRACT_CFLAGS) <= set(build.cflags) and "-ffast-math" not in build.cflags
    assert ("-march=x86-64-v3" in build.cflags) == (flavour() == "x86-64-v3") == ext.has_avx2()
    names = {p.name for p in included_files(build.sources, build.include_dirs)}
    assert {"cpu_kernels.h", "lif_common.h", "cpu_block.h", "balloon.h"} <= names
    # kernels and binding are separate files; only the binding sees torch
    kernels, binding = (p.read_text() for p in CPU_SOURCES)
    kernels += CPU_SOURCES[0].with_suffix(".h").read_text()
    assert "torch/" not in kernels and "ATen/" not in kernels and "torch/extension.h" in binding
    assert "PYBIND11_MODULE" in binding and "PYBIND11_MODULE" not in kernels
    with caplog.at_level(logging.INFO, logger="dtb"):
        library, name, module = ensure_built(build)
    assert module is None and library.parent == build_folder(build) and Path(ext.__file__).name == library.name
    assert not [r for r in caplog.records if "building kernels" in r.getMessage()]


def test_exp_contract_is_bitwise_the_torch_recipe(ext):
    from dtb.sim.backends.base import exp_contract

    rng = np.random.default_rng(5)
    x = torch.from_numpy(
        np.concatenate([rng.uniform(-90, 90, 300_001), rng.uniform(-0.2, 0, 100_000), [-87, 88, 0, -1e-30]])
    ).to(torch.float32)
    assert torch.equal(ext.exp_contract(x).view(torch.int32), exp_contract(x).view(torch.int32))


def test_poisson_threshold_counts_match_the_float64_inversion(ext):
    from dtb.philox import uniform_from_uint32
    from dtb.sim.backends.poisson_tables import poisson_tables
    from dtb.sim.backends.torch_backend import poisson_by_inversion

    lam = torch.tensor([[1e-3, 0.08, 0.8, 5.0, 60.0]], dtype=torch.float64)
    tables = poisson_tables(lam, torch.exp(-lam), 250, (1, 5))
    rng = np.random.default_rng(11)
    n = 100_003
    column = torch.from_numpy(rng.integers(0, 5, n))
    words = torch.from_numpy(rng.integers(0, 2**32, n))
    rows = tables.index[0, column]
    got = ext.poisson_counts(words, rows, tables.base, tables.length, tables.thresholds)
    expected = poisson_by_inversion(uniform_from_uint32(words), lam[0, column], torch.exp(-lam[0, column]), 250)
    assert torch.equal(got, expected)
    assert int(expected.max()) > 60


@pytest.mark.parametrize("integrator", ["exponential_euler", "forward_euler"])
def test_vector_blocks_spike_like_the_reference_without_sampling(integrator):
    """No sampled neurons: every full block of 8 runs the AVX2 path (where built), the tail of 5 the scalar one."""
    neuron = NeuronParams(ou_mu=0.5, ou_sigma=0.1, poisson_rate_hz=800.0, poisson_weight=80, i_ext=0.1)
    model = ModelParams({"P": neuron}, integrator=integrator)
    a, b = both(unconnected(37), model, 150.0, seed=9)
    assert spike_table(a).shape[0] > 100
    np.testing.assert_array_equal(spike_table(a), spike_table(b))


def test_blocks_straddling_populations_with_different_poisson_rates():
    """8-neuron blocks that mix populations gather each lane's Poisson table; uniform blocks broadcast one."""
    pops = [Population("A", 13, "E"), Population("B", 7, "E"), Population("C", 20, "I")]
    net = Network.from_edges(pops, np.zeros(0, np.int64), np.zeros(0, np.int64), 255)
    model = ModelParams(
        {
            "A": NeuronParams(poisson_rate_hz=800.0, poisson_weight=80),
            "B": NeuronParams(poisson_rate_hz=2500.0, poisson_weight=60),
            "C": NeuronParams(poisson_rate_hz=300.0, poisson_weight=200),
        }
    )
    a, b = both(net, model, 150.0, seed=4)
    table = spike_table(a)
    assert all(np.isin(np.arange(lo, hi), table[:, 2]).any() for lo, hi in ((0, 13), (13, 20), (20, 40)))
    np.testing.assert_array_equal(table, spike_table(b))


def test_counts_and_members_agree_with_the_reference():
    """Population counts (made from the kernel's spike rows) and a 3-member ensemble."""
    from dtb.sim import Ensemble

    model = small_model(poisson_hz=100.0)
    record = RecordSpec(population_counts=True, count_bin_ms=1.0)
    kw = dict(ensemble=Ensemble((1, 2, 3)), record=record)
    a, b = both(small_network(), model, 20.0, seed=None, **kw)
    counts = a["population_counts"]["spike_count"].values
    assert counts.sum() > 100
    np.testing.assert_array_equal(counts, b["population_counts"]["spike_count"].values)
    np.testing.assert_array_equal(spike_table(a), spike_table(b))


@pytest.mark.slow
def test_generic_build_computes_the_same_bits(tmp_path):
    """The scalar-only build (CPUs without AVX2) against this machine's build, in a fresh process."""
    import json
    import os
    import subprocess
    import sys

    require_backend("cuda_ext")
    script = (
        "import json, numpy as np, torch\n"
        "from tests.test_kernels_cpu import run\n"
        "from tests.test_engine_determinism import small_network, small_model, RECORD\n"
        "from tests.helpers import spike_table\n"
        "from cuda_ext.loader import load_cpu_extension\n"
        "ext = load_cpu_extension()\n"
        "tree = run(small_network(), small_model(poisson_hz=100.0), 'cuda_ext', 30.0, seed=3, record=RECORD)\n"
        "print(json.dumps({'avx2': ext.has_avx2(), 'spikes': spike_table(tree).tolist(),\n"
        "                  'V': tree['samples']['V'].values.ravel().tolist()}))\n"
    )
    out = {}
    for flavour in ("generic", ""):
        env = dict(os.environ, DTB_CPU_KERNELS=flavour)
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[flavour] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["generic"]["avx2"] is False
    assert len(out["generic"]["spikes"]) > 50
    assert out["generic"]["spikes"] == out[""]["spikes"]
    assert out["generic"]["V"] == out[""]["V"]


def test_members_with_their_own_parameters_spike_like_the_reference():
    """Tables shared by all members are read once per neuron (member stride 0), the others per member.

    Three members: the third differs from the first two in its drive (i_ext), its Poisson
    rate and its E conductance; every table is then shared or per member as it should be,
    and the spikes are bitwise the torch reference's.
    """
    from cuda_ext.loader import CpuKernelBackend
    from dtb.sim import Ensemble

    require_backend("cuda_ext")
    model = small_model(poisson_hz=100.0)
    hyper = {
        "i_ext": np.array([[0.0, 0.0], [0.0, 0.0], [0.05, 0.02]]),
        "poisson_rate_hz": np.array([[100.0, 100.0], [100.0, 100.0], [140.0, 100.0]]),
        "g_AMPA": np.array([[1.0, 1.0], [1.0, 1.0], [1.2, 1.0]]) * model.populations["E"].g["AMPA"],
    }
    trees, sims = [], []
    for backend in ("torch", "cuda_ext"):
        sim = Simulation(
            small_network(), model, ensemble=Ensemble((4, 5, 6)), record=RecordSpec(), backend=backend, seed=None
        )
        sim.set_hyperparameters(**hyper)
        trees.append(sim.run(40.0, progress=False))
        sims.append(sim)
    np.testing.assert_array_equal(spike_table(trees[0]), spike_table(trees[1]))
    members = trees[0]["spikes"]["member"].values
    assert all((members == m).sum() > 50 for m in range(3))
    tables = CpuKernelBackend._expanded(sims[1].params, 3, 500)
    assert tables["g_L"].shape == (1, 500) and tables["ou_mu"].shape == (1, 500)  # same for all members
    assert (
        tables["i_ext"].shape == (3, 500) and tables["g"].shape[-2] == 3 and tables["poisson"].index.shape == (3, 500)
    )
    assert tables["member_strides"] == [0] * 9 + [500, 0, 500, 500]
