"""Partitioner, Gamma gains and the memory estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtb.errors import MemoryBudgetError, NetworkError
from dtb.network.build import build_network
from dtb.network.gains import gamma_gains
from dtb.network.memory import GIB, check_fits, estimate_rank_memory, plan_ranks
from dtb.network.partition import partition_populations
from tests.network_fixtures import small_layout


@pytest.mark.parametrize("n_ranks", [1, 2, 4, 8, 16])
def test_partition_balances_synapses_within_ten_percent(n_ranks):
    rng = np.random.default_rng(1)
    sizes = rng.integers(200, 5000, 400)
    indegrees = rng.integers(48, 123, 400)
    part = partition_populations(sizes, indegrees, n_ranks)
    assert part.imbalance <= 1.1
    assert part.id_ranges[0] == 0 and part.id_ranges[-1] == sizes.sum()
    assert np.all(np.diff(part.population_ranges) >= 1)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    assert set(part.id_ranges.tolist()) <= set(offsets.tolist()), "ranks must own whole populations"


def test_partition_refuses_more_ranks_than_populations():
    with pytest.raises(NetworkError, match="use fewer ranks"):
        partition_populations([10, 10], [5, 5], 3)


def test_gamma_gains_have_mean_one_variance_point_two_and_depend_only_on_id():
    ids = np.arange(200_000)
    gains = gamma_gains(5, ids)
    assert gains.mean() == pytest.approx(1.0, abs=0.005)
    assert gains.var() == pytest.approx(0.2, abs=0.005)
    assert np.all(gains > 0)
    np.testing.assert_array_equal(gamma_gains(5, ids[1000:1010][::-1]), gains[1000:1010][::-1])
    assert not np.array_equal(gamma_gains(6, ids[:10]), gains[:10])
    assert not np.array_equal(gamma_gains(5, ids[:10], parameter_index=1), gains[:10])


def _measured_bytes(sim) -> int:
    seen, total = set(), 0

    def add(obj):
        nonlocal total
        if isinstance(obj, torch.Tensor):
            ptr = obj.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                total += obj.untyped_storage().nbytes()
        elif isinstance(obj, np.ndarray):
            ptr = obj.__array_interface__["data"][0]
            if ptr not in seen:
                seen.add(ptr)
                total += obj.nbytes
        elif isinstance(obj, (tuple, list)):
            for item in obj:
                add(item)

    net = sim.network
    for arr in (net.indptr, net.targets, net.weights):
        add(arr)
    for holder in (sim._graph, sim.state, sim.params):
        for value in vars(holder).values():
            add(value)
    add(sim._drive)
    add(sim._gain)
    return total


@pytest.mark.parametrize("members", [1, 3])
def test_memory_estimate_is_within_ten_percent_of_the_cpu_arrays(members):
    from dtb.sim.engine import Ensemble, Simulation
    from dtb.sim.params import ModelParams, NeuronParams

    layout = small_layout("ei", n_voxels=3, per_voxel=1500)
    net = build_network(layout)
    params = {name: NeuronParams().with_values(**g) for name, g in layout.population_parameters().items()}
    model = ModelParams(params)
    sim = Simulation(net, model, ensemble=Ensemble(tuple(range(members))))
    measured = _measured_bytes(sim)
    est = estimate_rank_memory(
        net.n_neurons,
        net.n_synapses,
        n_members=members,
        delay_steps=model.delay_steps,
        n_populations=len(net.populations),
    )
    predicted = est.host - est.recording
    assert abs(predicted - measured) / measured < 0.10


def test_a_run_that_does_not_fit_is_refused_with_the_fix():
    est = estimate_rank_memory(10**8, 10**10, n_members=30, device="cuda")
    with pytest.raises(MemoryBudgetError, match="more ranks/GPUs.*fewer ensemble members.*smaller in-degree"):
        check_fits(est, 80 * GIB)
    check_fits(estimate_rank_memory(1000, 100_000), 1 * GIB)


def test_plan_finds_the_fewest_gpus_that_fit():
    n_gpus, est = plan_ranks(10**8, 10**11, 80 * GIB, n_members=1, device="cuda")
    assert n_gpus > 1
    assert est.device <= 80 * GIB
    smaller = estimate_rank_memory(
        int(np.ceil(1.1e8 / (n_gpus - 1))), int(np.ceil(1.1e11 / (n_gpus - 1))), device="cuda"
    )
    assert smaller.device > 80 * GIB
