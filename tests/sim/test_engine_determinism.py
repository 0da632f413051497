"""Determinism by construction: seeds, ensembles, split runs, resume, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtb.io.store import open_tree
from dtb.sim import Ensemble, Simulation
from tests.helpers import RECORD, require_backend, small_model, small_network, spike_table

BACKENDS = pytest.mark.parametrize("backend", ["torch", "cuda_ext"])


def simulate(seed=5, duration=60.0, model=None, **kw):
    sim = Simulation(small_network(), model or small_model(), seed=seed, record=RECORD, **kw)
    return sim, sim.run(duration, progress=False)


def test_network_is_active_enough_for_these_tests_to_mean_something():
    _, tree = simulate()
    assert tree["spikes"].sizes["spike"] > 250  # ~10 Hz


@BACKENDS
def test_same_seed_gives_identical_spikes_and_traces(backend):
    require_backend(backend)
    _, a = simulate(seed=5, backend=backend)
    _, b = simulate(seed=5, backend=backend)
    np.testing.assert_array_equal(spike_table(a), spike_table(b))
    np.testing.assert_array_equal(a["samples"]["V"].values, b["samples"]["V"].values)


def test_different_seed_gives_different_spikes():
    _, a = simulate(seed=5)
    _, b = simulate(seed=6)
    assert not np.array_equal(spike_table(a), spike_table(b))


@BACKENDS
def test_ensemble_member_equals_single_run_bitwise(backend):
    """Members differ in seed and per-population hyperparameters; each equals its own single run."""
    require_backend(backend)
    seeds = (5, 9, 13)
    hyper = {
        "g_AMPA": np.array([[6.16e-3, 6.16e-3], [7.0e-3, 6.0e-3], [5.0e-3, 6.5e-3]]),
        "i_ext": np.array([[0.0, 0.0], [0.05, 0.0], [0.1, 0.02]]),
        "ou_mu": np.array([[0.66, 0.66], [0.60, 0.70], [0.66, 0.62]]),
        "poisson_rate_hz": np.array([[0.0, 0.0], [200.0, 0.0], [50.0, 100.0]]),
    }
    gains = np.random.default_rng(0).gamma(5.0, 1 / 5.0, size=500)
    model = small_model(poisson_hz=0.0)
    ensemble_sim = Simulation(
        small_network(), model, ensemble=Ensemble(seeds, hyper), record=RECORD, ext_gain=gains, backend=backend
    )
    together = spike_table(ensemble_sim.run(60.0, progress=False))
    for m, seed in enumerate(seeds):
        single = Simulation(
            small_network(),
            model,
            ensemble=Ensemble((seed,), {k: v[m : m + 1] for k, v in hyper.items()}),
            record=RECORD,
            ext_gain=gains,
            backend=backend,
        )
        alone = spike_table(single.run(60.0, progress=False))
        mine = together[together[:, 1] == m]
        mine[:, 1] = 0
        assert alone.shape[0] > 50
        np.testing.assert_array_equal(mine, alone)


@BACKENDS
@pytest.mark.parametrize("delay_ms", [1.0, 1.5])
def test_split_run_equals_one_run(delay_ms, backend):
    """Runs that stop mid-interval (D = 15 steps, chunks of 2.5 ms) continue exactly."""
    require_backend(backend)
    model = small_model(delay_ms=delay_ms, poisson_hz=100.0)
    one = Simulation(small_network(), model, seed=3, record=RECORD, backend=backend)
    whole = spike_table(one.run(40.0, progress=False))
    split = Simulation(small_network(), model, seed=3, record=RECORD, backend=backend)
    parts = [spike_table(split.run(2.5 if i % 2 else 7.5, progress=False)) for i in range(8)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@BACKENDS
def test_resume_from_state_dict_equals_uninterrupted_run(backend):
    require_backend(backend)
    model = small_model(delay_ms=1.5, poisson_hz=100.0)
    reference = Simulation(small_network(), model, seed=3, record=RECORD, backend=backend)
    whole = spike_table(reference.run(50.0, progress=False))
    first = Simulation(small_network(), model, seed=3, record=RECORD, backend=backend)
    head = spike_table(first.run(20.5, progress=False))
    saved = first.state_dict()
    resumed = Simulation(small_network(), model, seed=3, record=RECORD, backend=backend)
    resumed.load_state_dict(saved)
    tail = spike_table(resumed.run(29.5, progress=False))
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)


def test_threads_do_not_change_spikes():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, a = simulate(seed=8)
        torch.set_num_threads(2)
        _, b = simulate(seed=8)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(spike_table(a), spike_table(b))


def test_streaming_to_zarr_equals_in_memory_records(tmp_path):
    _, memory = simulate(seed=4, duration=30.0)
    sim = Simulation(small_network(), small_model(), seed=4, record=RECORD)
    store = tmp_path / "run.zarr"
    sim.run(12.0, store=store, chunk_ms=5.0, progress=False)
    sim.run(18.0, store=store, chunk_ms=5.0, progress=False)  # a second call appends
    streamed = open_tree(store)
    np.testing.assert_array_equal(spike_table(streamed), spike_table(memory))
    for group, var in (("population_counts", "spike_count"), ("samples", "V"), ("samples", "I_syn")):
        np.testing.assert_array_equal(streamed[group][var].values, memory[group][var].values)
    np.testing.assert_allclose(streamed["population_counts"]["time"].values, memory["population_counts"]["time"].values)
    assert streamed.attrs["seeds"] == [4] and streamed.attrs["simulated_ms"] == 30.0
    assert streamed["samples"]["V"].attrs["units"] == "mV"
    assert streamed["population_counts"]["time"].attrs["units"] == "s"


def test_existing_store_is_not_overwritten_by_accident(tmp_path):
    store = tmp_path / "run.zarr"
    Simulation(small_network(), small_model(), seed=4, record=RECORD).run(2.0, store=store, progress=False)
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(ValueError, match="already exists"):
        Simulation(small_network(), small_model(), seed=4, record=RECORD).run(2.0, store=store, progress=False)
    assert sorted(p.name for p in store.rglob("*")) == before
