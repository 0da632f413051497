"""Brunel-COBA, the peer benchmark network (NEST 3.10 / Brian2 2.11; their scripts are not part of this
repository: set DTB_PEERS to their folder to compare the graph too).

Peers measured at N = 10,000, seed 1234 (bench/README.md, bench/results/brunel_peers.md):
K = 100: NEST 10.8-10.9 Hz, Brian2 11.2-11.3 Hz; K = 1000: NEST 10.0 Hz, Brian2 9.9 Hz.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from dtb.sim import RecordSpec, Simulation
from dtb.sim.analysis import isi_cv, population_rates
from dtb.sim.reference_models import brunel_coba

PEERS = Path(os.environ.get("DTB_PEERS") or "/nonexistent")  # the peers' folder, when given
PEER_RATE_HZ = {100: (10.85 + 11.25) / 2, 1000: (10.0 + 9.9) / 2}


def run_brunel(K: int, T_ms: float = 1000.0):
    b = brunel_coba(N=10_000, K=K, seed=1234)
    sim = Simulation(b.network, b.model, seed=1235, initial_V=b.V0, record=RecordSpec(), current_unit="pA")
    tree = sim.run(T_ms, progress=False)
    counts = tree["population_counts"].to_dataset()
    rates = population_rates(counts).isel(member=0)
    mean_rate = float((counts["spike_count"].sum() / 10_000 / (T_ms / 1000.0)).values)
    cv = isi_cv(tree["spikes"].to_dataset(), start_s=0.1)
    return mean_rate, rates, cv


def check_asynchronous_irregular(K: int, mean_rate, rates, cv):
    assert abs(mean_rate - PEER_RATE_HZ[K]) < 1.0, f"mean rate {mean_rate:.2f} Hz vs peers {PEER_RATE_HZ[K]:.2f} Hz"
    for pop in ("E", "I"):
        assert abs(float(rates.sel(population=pop)) - PEER_RATE_HZ[K]) < 1.5
    assert 0.8 < np.mean(cv) < 1.2, f"CV of ISI {np.mean(cv):.2f}: activity is not irregular"


def test_brunel_coba_k100_rates_match_nest_and_brian2():
    check_asynchronous_irregular(100, *run_brunel(100))


@pytest.mark.slow
def test_brunel_coba_k1000_rates_match_nest_and_brian2():
    check_asynchronous_irregular(1000, *run_brunel(1000))


@pytest.mark.skipif(not (PEERS / "brunel_common.py").exists(), reason="DTB_PEERS (the peers' folder) not set")
def test_graph_and_initial_state_are_identical_to_the_peers():
    spec = importlib.util.spec_from_file_location("brunel_common", PEERS / "brunel_common.py")
    common = importlib.util.module_from_spec(spec)
    sys.modules["brunel_common"] = common
    spec.loader.exec_module(common)
    import argparse

    parser = argparse.ArgumentParser()
    common.add_common_args(parser)
    P = common.resolve_params(parser.parse_args(["--N", "2000", "--K", "100"]))
    src_E, tgt_E, src_I, tgt_I, V0 = common.make_graph(P)
    ours = brunel_coba(N=2000, K=100, seed=P["seed"])
    np.testing.assert_array_equal(ours.V0, V0)
    sources = np.concatenate([src_E, src_I])
    targets = np.concatenate([tgt_E, tgt_I])
    expected = np.lexsort((targets, sources))
    net = ours.network
    our_sources = np.repeat(np.arange(net.n_neurons), np.diff(net.indptr))
    got = np.lexsort((net.targets, our_sources))
    np.testing.assert_array_equal(our_sources[got], sources[expected])
    np.testing.assert_array_equal(net.targets[got], targets[expected])
    assert ours.params["w_E"] == pytest.approx(P["w_E"]) and ours.params["w_I"] == pytest.approx(P["w_I"])
