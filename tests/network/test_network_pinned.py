"""Pinned graphs: sha256 of built networks, computed with the reference numpy/torch sampler.

Any change of the sampler (a compiled or device path, a refactor) must build bitwise the
same synapses for the same (layout, seed, target ids); these hashes were computed with the
pure numpy/torch implementation of ``dtb.network.build`` before any compiled path existed.
The cases cover the E/I and laminar models, both splits, connectome or none, the dense
local-column subset draw, duplicate redraws, surplus drops, the redraw limit, inhibitory
weights and per-voxel in-degree scales (the hashes: tests/pinned_graphs.py, shared with the
compiled and device sampler tests).  The Gamma gains are pinned in dtb.selftest (run on every
machine by ``dtb selftest``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dtb.network.build import build_block
from dtb.selftest import (
    GAIN_CASES,
    REFERENCE,
    fixed_indegree_case,
    gains_of_case,
    graph_digest,
    network_digest,
)
from tests.pinned_graphs import FIXED_INDEGREE_PINNED, PINNED
from tests.pinned_graphs import pinned_layout as _layout


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


@pytest.mark.parametrize("seed", sorted(FIXED_INDEGREE_PINNED))
def test_fixed_indegree_projections_match_their_pinned_hash(seed):
    from dtb.network.fixed_indegree import connect_fixed_indegree

    assert network_digest(connect_fixed_indegree(*fixed_indegree_case(seed))) == FIXED_INDEGREE_PINNED[seed]
