"""Fixed in-degree sampling: in-degrees, splits, distinct sources, statistics, partition invariance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dtb.network.build import assemble_network, build_block, build_network, even_ranges
from dtb.network.layout import NetworkConfig, make_layout
from tests.network_fixtures import random_connectome, small_layout


def _incoming(net):
    """(targets, sources) of all synapses, sorted by target then source."""
    sources = np.repeat(np.arange(net.n_neurons), np.diff(net.indptr))
    targets = net.targets.astype(np.int64)
    order = np.lexsort((sources, targets))
    return targets[order], sources[order]


@pytest.mark.parametrize("model", ["ei", "laminar"])
@pytest.mark.parametrize("split", ["exact", "multinomial"])
def test_every_neuron_receives_its_population_indegree(model, split):
    layout = small_layout(model, split=split, per_voxel=3000)
    net = build_network(layout)
    indeg = net.in_degrees()
    expected = np.repeat(layout.indegrees, np.diff(layout.offsets))
    assert net.metadata["dropped_duplicate_synapses"] == 0
    np.testing.assert_array_equal(indeg, expected)


def test_laminar_indegrees_at_k100_follow_the_table():
    layout = small_layout("laminar", n_voxels=2)
    cortical = [i for i, p in enumerate(layout.populations) if p.name.startswith("v0:")]
    assert layout.indegrees[cortical].tolist() == [122, 61, 99, 57, 120, 52, 107, 48]
    params = layout.population_parameters()
    assert params["v0:L5I"]["g_AMPA"] == pytest.approx(1.647e-2)
    assert params["v1:L6E"]["g_GABA_A"] == pytest.approx(0.0692)


def test_laminar_cortex_with_ei_subcortex():
    layout = make_layout(
        np.full(3, 2000),
        random_connectome(3),
        NetworkConfig(model="laminar", min_excitatory=1, min_inhibitory=1),
        cortical=[True, False, True],
    )
    names = [p.name for p in layout.populations]
    assert "v1:E" in names and "v1:I" in names and "v0:L4E" in names and "v2:L2/3I" in names
    net = build_network(layout)
    np.testing.assert_array_equal(net.in_degrees(), np.repeat(layout.indegrees, np.diff(layout.offsets)))


def test_ei_split_is_57_local_e_14_local_i_29_long_range():
    layout = small_layout("ei", n_voxels=3, per_voxel=2000)
    net = build_network(layout)
    targets, sources = _incoming(net)
    voxel_of = np.repeat(layout.population_voxel, np.diff(layout.offsets))
    kind_of = net.is_inhibitory()
    same = voxel_of[sources] == voxel_of[targets]
    for column, mask in {"E": same & ~kind_of[sources], "I": same & kind_of[sources], "outer": ~same}.items():
        counts = np.bincount(targets[mask], minlength=net.n_neurons)
        assert set(counts.tolist()) == {{"E": 57, "I": 14, "outer": 29}[column]}
    assert not kind_of[sources[~same]].any(), "long-range inputs must be excitatory"


@pytest.mark.parametrize("split", ["exact", "multinomial"])
def test_no_autapses_and_no_duplicate_source_within_a_population(split):
    # small populations (80 E, 20 I): duplicates are frequent and must all be redrawn
    layout = small_layout("ei", n_voxels=3, per_voxel=100, split=split)
    net = build_network(layout)
    targets, sources = _incoming(net)
    assert not np.any(targets == sources)
    pairs = targets * net.n_neurons + sources
    assert np.unique(pairs).size == pairs.size


def test_dense_column_is_a_random_subset_without_self():
    # one voxel of 60 E + 15 I: local E and I columns take most of their pool (subset path)
    layout = make_layout([75], None, NetworkConfig(indegree=100, min_excitatory=1, min_inhibitory=1))
    net = build_network(layout)
    targets, sources = _incoming(net)
    assert not np.any(targets == sources)
    assert np.unique(targets * net.n_neurons + sources).size == sources.size


def test_tiny_network_of_100_neurons_builds():
    layout = make_layout(
        [50, 50], np.array([[0, 1], [1, 0]]), NetworkConfig(indegree=10, min_excitatory=1, min_inhibitory=1)
    )
    net = build_network(layout)
    assert net.n_neurons == 100
    assert net.n_synapses == 1000


def test_multinomial_source_population_frequencies_match_the_table():
    layout = make_layout(
        [20000], None, NetworkConfig(model="laminar", split="multinomial", seed=3, min_excitatory=1, min_inhibitory=1)
    )
    net = build_network(layout)
    targets, sources = _incoming(net)
    pop = net.population_index()
    probs = layout.column_probabilities[:, :8]
    for a in range(8):
        mask = pop[targets] == a
        observed = np.bincount(pop[sources[mask]], minlength=8)
        expected = mask.sum() * probs[a] / probs[a].sum()
        keep = expected > 0
        assert observed[~keep].sum() == 0
        assert stats.chisquare(observed[keep], expected[keep]).pvalue > 1e-4


def test_long_range_sources_follow_the_row_normalised_connectome():
    n_voxels = 12
    connectome = random_connectome(n_voxels, density=0.7, seed=5)
    layout = make_layout(
        np.full(n_voxels, 3000), connectome, NetworkConfig(seed=11, min_excitatory=1, min_inhibitory=1)
    )
    net = build_network(layout)
    targets, sources = _incoming(net)
    voxel_of = np.repeat(layout.population_voxel, np.diff(layout.offsets))
    tv, sv = voxel_of[targets], voxel_of[sources]
    outer = tv != sv
    observed = np.zeros((n_voxels, n_voxels))
    np.add.at(observed, (tv[outer], sv[outer]), 1)
    p = connectome / connectome.sum(axis=1, keepdims=True)
    expected = p * observed.sum(axis=1, keepdims=True)
    off = ~np.eye(n_voxels, dtype=bool)
    assert observed[~off].sum() == 0
    assert np.corrcoef(observed[off], expected[off])[0, 1] > 0.99


@pytest.mark.parametrize("model", ["ei", "laminar"])
def test_one_two_four_partitions_give_the_identical_graph(model):
    layout = small_layout(model, n_voxels=3, per_voxel=1500, split="multinomial")
    nets = [build_network(layout, n_parts=k) for k in (1, 2, 4)]
    # and an uneven split that cuts through populations
    cuts = [0, 7, 500, 501, layout.n_neurons]
    blocks = [build_block(layout, a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    nets.append(assemble_network(layout.populations, blocks))
    for other in nets[1:]:
        np.testing.assert_array_equal(other.indptr, nets[0].indptr)
        np.testing.assert_array_equal(other.targets, nets[0].targets)
        np.testing.assert_array_equal(other.weights, nets[0].weights)


def test_block_depends_only_on_its_target_ids():
    layout = small_layout("ei", n_voxels=2, per_voxel=500)
    whole = build_block(layout, 0, layout.n_neurons)
    part = build_block(layout, 300, 420)
    np.testing.assert_array_equal(part.sources, whole.sources[whole.indptr[300] : whole.indptr[420]])


def test_seed_changes_the_graph_and_weights_are_the_configured_constant():
    a = build_network(small_layout("ei", n_voxels=2, seed=1, weight=200))
    b = build_network(small_layout("ei", n_voxels=2, seed=2, weight=200))
    assert not np.array_equal(a.targets, b.targets)
    assert set(np.unique(a.weights).tolist()) == {200}


def test_even_ranges_cover_all_ids():
    ranges = even_ranges(10, 4)
    assert ranges[0][0] == 0 and ranges[-1][1] == 10
    assert all(r[1] == s[0] for r, s in zip(ranges[:-1], ranges[1:]))


def test_laminar_long_range_sources_come_from_e_layers_by_neuron_share():
    layout = make_layout(
        np.full(4, 4000),
        random_connectome(4),
        NetworkConfig(model="laminar", seed=2, min_excitatory=1, min_inhibitory=1),
    )
    net = build_network(layout)
    targets, sources = _incoming(net)
    voxel_of = np.repeat(layout.population_voxel, np.diff(layout.offsets))
    layer_of = np.repeat(layout.population_local, np.diff(layout.offsets))
    outer = voxel_of[targets] != voxel_of[sources]
    observed = np.bincount(layer_of[sources[outer]], minlength=8)
    weights = layout.models[-1].output_weights
    assert observed[weights == 0].sum() == 0
    expected = outer.sum() * weights[weights > 0]
    assert stats.chisquare(observed[weights > 0], expected).pvalue > 1e-4


def test_per_voxel_indegree_scale_multiplies_k():
    layout = make_layout(
        [1000, 1000],
        np.array([[0, 1], [1, 0]]),
        NetworkConfig(min_excitatory=1, min_inhibitory=1),
        indegree_scale=[0.5, 1.5],
    )
    assert layout.indegrees.tolist() == [50, 50, 150, 150]
    net = build_network(layout)
    np.testing.assert_array_equal(net.in_degrees(), np.repeat(layout.indegrees, np.diff(layout.offsets)))
