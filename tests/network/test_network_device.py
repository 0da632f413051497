"""The torch sampler on a device builds the identical graph; the GPU memory estimate holds.

The torch path runs on the CPU here (same code as on a GPU); the ``gpu`` tests compare a
CUDA build with the CPU build and the estimator with ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtb.errors import NetworkError
from dtb.network.build import build_block, build_network
from dtb.network.device import build_block_on_device, resolve_device
from dtb.network.layout import NetworkConfig, make_layout
from dtb.selftest import graph_digest
from tests.network_fixtures import random_connectome
from tests.pinned_graphs import PINNED
from tests.pinned_graphs import pinned_layout as _layout

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_FAST_CASES = [
    "ei_exact",
    "ei_multinomial_small",
    "ei_outer_surplus",
    "ei_redraw_limit",
    "ei_single_voxel_subset",
    "laminar_multinomial_l5e",
    "laminar_single_voxel",
]


def _same_block(a, b) -> None:
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.sources, b.sources)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.dropped_duplicates == b.dropped_duplicates


@pytest.mark.parametrize("case", _FAST_CASES)
def test_torch_sampler_builds_the_pinned_graph(case):
    layout = _layout(case)
    block = build_block_on_device(layout, 0, layout.n_neurons, "cpu")
    assert graph_digest(block) == PINNED[case]


def test_torch_sampler_does_not_depend_on_the_chunk_size_or_the_range():
    layout = _layout("ei_multinomial_small")
    whole = build_block_on_device(layout, 0, layout.n_neurons, "cpu")
    _same_block(build_block_on_device(layout, 0, layout.n_neurons, "cpu", chunk_words=4096), whole)
    part = build_block_on_device(layout, 37, 211, "cpu", chunk_words=1000)
    _same_block(part, build_block(layout, 37, 211, method="numpy"))


def test_device_names_are_checked_with_the_fix():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(NetworkError, match="device"):
        resolve_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(NetworkError, match="no CUDA GPU.*--device cpu"):
            build_block(_layout("ei_single_voxel_subset"), 0, 10, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(PINNED))
def test_cuda_build_is_the_pinned_cpu_graph(case):
    layout = _layout(case)
    block = build_block(layout, 0, layout.n_neurons, device="cuda")
    assert graph_digest(block) == PINNED[case]


@pytest.mark.gpu
def test_cuda_build_of_a_larger_network_equals_the_compiled_cpu_build():
    layout = make_layout(
        np.full(8, 20000), random_connectome(8, density=0.8, seed=3), NetworkConfig(model="laminar", seed=23)
    )
    gpu = build_block(layout, 0, layout.n_neurons, device="cuda")
    cpu = build_block(layout, 0, layout.n_neurons, threads=2)
    _same_block(gpu, cpu)
    # and a multi-process style split on the GPU gives the same network
    cuts = [0, 12345, 70000, layout.n_neurons]
    for a, b in zip(cuts[:-1], cuts[1:]):
        part = build_block(layout, a, b, device="cuda:0")
        np.testing.assert_array_equal(part.sources, cpu.sources[cpu.indptr[a] : cpu.indptr[b]])


@pytest.mark.gpu
def test_gpu_memory_estimate_is_within_ten_percent_of_max_memory_allocated():
    """Graph-dominated network (K = 4000, quiet weights): build, simulate 20 ms on the GPU, compare.

    The estimate counts what the engine holds; the torch backend's per-interval temporaries
    (Philox words of D x M x N int64, ~80 B per neuron and step of the interval) are not in
    it, so the network is chosen with the graph (20 kB per neuron) far larger than them.
    """
    from dtb.network.memory import estimate_rank_memory
    from dtb.sim.engine import Ensemble, Simulation
    from dtb.sim.params import ModelParams, NeuronParams

    layout = make_layout(
        np.full(2, 10000),
        random_connectome(2),
        NetworkConfig(indegree=4000, seed=4, weight=1, min_excitatory=1, min_inhibitory=1),
    )
    net = build_network(layout, threads=2)
    params = {name: NeuronParams().with_values(**g) for name, g in layout.population_parameters().items()}
    model = ModelParams(params)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    sim = Simulation(net, model, ensemble=Ensemble((0,)), device="cuda")
    sim.run(20.0, progress="none")
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - before
    est = estimate_rank_memory(
        net.n_neurons,
        net.n_synapses,
        n_members=1,
        delay_steps=model.delay_steps,
        n_populations=len(net.populations),
        device="cuda",
        chunk_ms=20.0,
    )
    assert abs(est.device - measured) / measured < 0.10, (est.as_dict(), measured)


def test_philox_puts_integer_words_on_the_device_of_the_tensors():
    # 'meta' checks devices as CUDA does: a CPU word broadcast to a tensor would be refused
    ids = torch.arange(4, device="meta").view(-1, 1)
    draws = torch.arange(3, device="meta").view(1, -1)
    from dtb.philox import philox4x32

    words = philox4x32((ids & 0xFFFFFFFF, ids >> 32, draws, 2), (1, 2))
    assert all(w.device.type == "meta" and w.shape == (4, 3) for w in words)
