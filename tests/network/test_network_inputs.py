"""Bad inputs give clear errors or warnings naming the parameter and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dtb.errors import NetworkError
from dtb.network.build import build_network
from dtb.network.layout import NetworkConfig, make_layout
from dtb.network.populations import neuron_counts_from_grey_matter
from tests.network_fixtures import random_connectome

TINY = NetworkConfig(min_excitatory=1, min_inhibitory=1)


@pytest.mark.parametrize("bad", [[100, -5, 100], [100, np.nan, 100]])
def test_negative_or_nan_counts_name_the_parameter(bad):
    with pytest.raises(NetworkError, match="neuron_counts.*negative or NaN.*voxel 1"):
        make_layout(bad, random_connectome(3), TINY)


def test_negative_grey_matter_is_refused_and_counts_follow_grey_matter():
    with pytest.raises(NetworkError, match="grey_matter"):
        neuron_counts_from_grey_matter([1.0, -1.0], 100)
    counts = neuron_counts_from_grey_matter([1.0, 3.0, 0.0], 1000)
    assert counts.tolist() == [250, 750, 0]


def test_connectome_shape_mismatch_says_the_expected_shape():
    with pytest.raises(NetworkError, match=r"connectome has shape \(3, 3\).*give a \(4, 4\) matrix"):
        make_layout([100] * 4, np.ones((3, 3)), TINY)


def test_negative_connectome_is_refused():
    c = random_connectome(3)
    c[0, 1] = -1
    with pytest.raises(NetworkError, match="connectome has negative or NaN"):
        make_layout([100] * 3, c, TINY)


def test_missing_connectome_for_several_voxels_is_refused():
    with pytest.raises(NetworkError, match="a connectome is needed for 2 voxels"):
        make_layout([100, 100], None, TINY)


def test_unconnected_and_empty_voxels_are_dropped_with_a_warning_and_recorded():
    c = random_connectome(5)
    c[3, :] = 0  # voxel 3 receives nothing
    with pytest.warns(UserWarning) as record:
        layout = make_layout([100, 100, 0, 100, 100], sp.csr_matrix(c), TINY)
    messages = " ".join(str(w.message) for w in record)
    assert "no neurons" in messages and "no long-range connections" in messages
    assert layout.metadata["dropped_voxels_no_neurons"] == [2]
    assert 3 in layout.metadata["dropped_voxels_no_connections"]
    assert not any(p.name.startswith(("v2:", "v3:")) for p in layout.populations)
    net = build_network(layout)
    assert 3 in net.metadata["dropped_voxels_no_connections"]


def test_indegree_larger_than_a_population_drops_the_surplus_and_records_it():
    with pytest.warns(UserWarning, match="surplus"):
        layout = make_layout(
            [20, 20], np.array([[0, 1], [1, 0]]), NetworkConfig(indegree=100, min_excitatory=1, min_inhibitory=1)
        )
    surplus = layout.metadata["surplus_dropped_per_neuron"]
    assert surplus["v0:E"] == (57 - 15) + (14 - 4)  # 16 E (15 others) and 4 I neurons
    net = build_network(layout)
    assert np.all(net.in_degrees() <= 4 + 15 + 29)


def test_bad_config_values_are_refused():
    with pytest.raises(NetworkError, match="indegree"):
        NetworkConfig(indegree=0)
    with pytest.raises(NetworkError, match="model must be one of"):
        NetworkConfig(model="columns")
    with pytest.raises(NetworkError, match="weight"):
        NetworkConfig(weight=300)


def test_floors_apply_per_population():
    layout = make_layout([100], None, NetworkConfig())
    assert [p.size for p in layout.populations] == [200, 50]
    assert layout.metadata["floor_added_neurons"] == 150
