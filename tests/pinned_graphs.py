"""The pinned graph hashes (sha256 of built networks) and their layouts, shared by the pinned,
compiled-sampler and device-sampler tests (tests/network/test_network_pinned.py, test_network_compiled.py,
test_network_device.py).  A support module, not a test module: test modules never import each other.

The hashes were computed with the pure numpy/torch sampler (:mod:`dtb.network.sampling`) before any
compiled path existed; a change of any sampler must build bitwise the same synapses.
"""

from __future__ import annotations

from dtb.selftest import graph_layout
from tests.network_fixtures import random_connectome

__all__ = ["FIXED_INDEGREE_PINNED", "PINNED", "pinned_layout"]


def pinned_layout(case: str):
    """The pinned layouts of dtb.selftest, with this file's historical (Gamma) connectomes."""
    return graph_layout(case, random_connectome)


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


FIXED_INDEGREE_PINNED = {
    0: "b0c216c33d786f427a99339ca8a305ca3abf67e8ef887a8c783ab2f2e0b528fe",
    12345: "2fc3869de2ebc140fbf1c02e5b279c3071e12a4ac342010c991ac44c96173846",
    2**64 - 2: "eb562681821fbbb3bbdf9c8005dcc135006f6a37948601465c78def18e9fafa7",
}
