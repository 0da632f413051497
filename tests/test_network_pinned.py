"""Pinned graphs: sha256 of built networks, computed with the reference numpy/torch sampler.

Any change of the sampler (a compiled or device path, a refactor) must build bitwise the
same synapses for the same (layout, seed, target ids); these hashes were computed with the
pure numpy/torch implementation of ``dtb.network.build`` before any compiled path existed.
The cases cover the E/I and laminar models, both splits, connectome or none, the dense
local-column subset draw, duplicate redraws, surplus drops, the redraw limit, inhibitory
weights and per-voxel in-degree scales.  The Gamma gains are pinned in dtb.selftest (run on every
machine by ``dtb selftest``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dtb.network.build import build_block
from dtb.network.layout import NetworkConfig, make_layout
from dtb.selftest import GAIN_CASES, REFERENCE, gains_of_case
from tests.network_fixtures import random_connectome

_TINY = dict(min_excitatory=1, min_inhibitory=1)


def _layout(case: str):
    """The layouts whose graphs are pinned (small: each builds in well under a second)."""
    if case == "ei_exact":
        return make_layout(np.full(4, 1000), random_connectome(4), NetworkConfig(seed=7, **_TINY))
    if case == "ei_exact_seed_2_64":
        return make_layout(np.full(3, 800), random_connectome(3, seed=1), NetworkConfig(seed=2**64 - 5, **_TINY))
    if case == "ei_multinomial_small":  # populations of 80/20: surplus drops and many redraws
        return make_layout(np.full(3, 100), random_connectome(3), NetworkConfig(seed=3, split="multinomial", **_TINY))
    if case == "ei_single_voxel_subset":  # no connectome, dense local columns (random-subset draw)
        return make_layout([75], None, NetworkConfig(indegree=100, seed=5, **_TINY))
    if case == "ei_redraw_limit":  # one redraw round: duplicates left after it are dropped
        return make_layout(
            np.full(3, 60), random_connectome(3, density=0.6, seed=4), NetworkConfig(seed=9, max_redraws=1, **_TINY)
        )
    if case == "ei_outer_surplus":  # 24-neuron E source, 29 long-range draws: surplus dropped
        connectome = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1e-3], [1.0, 1.0, 0.0]])
        return make_layout(np.array([30, 1000, 1000]), connectome, NetworkConfig(seed=21, **_TINY))
    if case == "ei_weights_scale":
        return make_layout(
            np.array([700, 0, 900, 500]),
            random_connectome(4, seed=2),
            NetworkConfig(seed=11, weight=133, weight_inhibitory=255, **_TINY),
            indegree_scale=[0.5, 1.0, 1.5, 1.2],
        )
    if case == "laminar_exact":
        return make_layout(
            np.full(3, 2000),
            random_connectome(3, seed=6),
            NetworkConfig(model="laminar", seed=13, **_TINY),
            cortical=[True, False, True],
        )
    if case == "laminar_multinomial_l5e":
        return make_layout(
            np.full(3, 1500),
            random_connectome(3, seed=8),
            NetworkConfig(model="laminar", seed=17, split="multinomial", long_range_sources="l5e", **_TINY),
        )
    if case == "laminar_single_voxel":
        return make_layout([3000], None, NetworkConfig(model="laminar", seed=19, indegree=60, **_TINY))
    raise KeyError(case)


def graph_digest(block) -> str:
    """sha256 over the block's CSR-by-target arrays (little-endian) and its drop count."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(block.indptr, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(block.sources, dtype="<u4").tobytes())
    h.update(np.ascontiguousarray(block.weights, dtype="u1").tobytes())
    h.update(str(int(block.dropped_duplicates)).encode())
    return h.hexdigest()


PINNED = {
    "ei_exact": "01eac40a9307534a1c1183b2edc768003bf1e815512ef93bdb3b0f13111e23be",
    "ei_exact_seed_2_64": "0581d59c6a842d3220a90b401b1df7f88fbb1a3257f67f1d766189e67a1e4cfd",
    "ei_multinomial_small": "4278e0fc5461ed98a21c1b54ee26e01a3ebb288484a981be6cd285c730eeafec",
    "ei_single_voxel_subset": "9bacfd43051568fa21fcbbab4ca517d892027d337234c6a216b982a0307a59ed",
    "ei_outer_surplus": "8fd61c25aedaa710871d5e9d0a283978d97bc598ddb561c31fa2ca94641de9b1",
    "ei_redraw_limit": "22f0e9692eb75117b363c6b1e9334f8840fa9be895892b6942aa71c0d9a8c37c",
    "ei_weights_scale": "d6e46178a235da7bff29fd3ab46ad394d850e9854d9e8434026eefb56dc884ed",
    "laminar_exact": "26717433d8216ac9e5e0f35b0818397041561a57044a0ab767f98785a072f31c",
    "laminar_multinomial_l5e": "62128acb41083e3a9372a4f957d8ebeb97bd042609bb4d79fb332300861ac9b6",
    "laminar_single_voxel": "26aa12fae1a1f8888050ad909e430c2af35b89e8d205b130bcb505b9c84695be",
}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_built_graph_matches_its_pinned_hash(case):
    layout = _layout(case)
    block = build_block(layout, 0, layout.n_neurons)
    assert graph_digest(block) == PINNED[case], f"graph of case {case!r} changed"


@pytest.mark.parametrize("case", GAIN_CASES)
def test_gamma_gains_match_their_pinned_hash(case):
    """Pinned in dtb.selftest.REFERENCE (float64 from dtb.fpmath: the same bits on every machine)."""
    digest = hashlib.sha256(np.ascontiguousarray(gains_of_case(case), dtype="<f8").tobytes()).hexdigest()
    assert digest == REFERENCE["gains:" + ",".join(map(str, case))]


def network_digest(net) -> str:
    """sha256 over a Network's CSR-by-source arrays (little-endian)."""
    h = hashlib.sha256()
    for array, dtype in ((net.indptr, "<i8"), (net.targets, "<u4"), (net.weights, "u1")):
        h.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return h.hexdigest()


#: connect_fixed_indegree (network description files): E 4000 / I 1000, K_E 400, K_I 100
FIXED_INDEGREE_PINNED = {
    0: "b0c216c33d786f427a99339ca8a305ca3abf67e8ef887a8c783ab2f2e0b528fe",
    12345: "2fc3869de2ebc140fbf1c02e5b279c3071e12a4ac342010c991ac44c96173846",
    2**64 - 2: "eb562681821fbbb3bbdf9c8005dcc135006f6a37948601465c78def18e9fafa7",
}


def fixed_indegree_case(seed: int):
    from dtb.network.fixed_indegree import Projection
    from dtb.network.graph import Population

    pops = [Population("E", 4000, "E"), Population("I", 1000, "I")]
    projections = [
        Projection("E", "E", 400, 200),
        Projection("E", "I", 400),
        Projection("I", "E", 100, 30),
        Projection("I", "I", 100, autapses=True),
    ]
    return pops, projections, seed


@pytest.mark.parametrize("seed", sorted(FIXED_INDEGREE_PINNED))
def test_fixed_indegree_projections_match_their_pinned_hash(seed):
    from dtb.network.fixed_indegree import connect_fixed_indegree

    assert network_digest(connect_fixed_indegree(*fixed_indegree_case(seed))) == FIXED_INDEGREE_PINNED[seed]
