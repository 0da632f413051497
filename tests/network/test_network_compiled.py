"""The compiled (C++/OpenMP) synapse sampler builds bitwise the graph of the numpy reference."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dtb.errors import NetworkError
from dtb.network import compiled
from dtb.network.build import build_block, build_network
from dtb.selftest import graph_digest
from tests.pinned_graphs import PINNED
from tests.pinned_graphs import pinned_layout as _layout

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

needs_compiler = pytest.mark.skipif(
    compiled.compiled_error() is not None, reason=f"compiled sampler unavailable: {compiled.compiled_error()}"
)


def _same_block(a, b) -> None:
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.sources, b.sources)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.dropped_duplicates == b.dropped_duplicates


@needs_compiler
@pytest.mark.parametrize("case", sorted(PINNED))
def test_compiled_sampler_matches_the_pinned_graph_and_the_numpy_path(case):
    layout = _layout(case)
    fast = build_block(layout, 0, layout.n_neurons, method="compiled")
    assert graph_digest(fast) == PINNED[case]
    # a block that cuts through populations matches the reference block of the same ids
    a, b = layout.n_neurons // 3, min(layout.n_neurons, layout.n_neurons // 3 + 257)
    _same_block(build_block(layout, a, b, method="compiled"), build_block(layout, a, b, method="numpy"))


@needs_compiler
@pytest.mark.parametrize("case", ["ei_multinomial_small", "laminar_exact", "ei_redraw_limit"])
def test_any_thread_count_builds_the_identical_graph(case):
    layout = _layout(case)
    one = build_block(layout, 0, layout.n_neurons, threads=1, method="compiled")
    for threads in (2, 3, 8):
        _same_block(build_block(layout, 0, layout.n_neurons, threads=threads, method="compiled"), one)


@needs_compiler
def test_partitions_and_threads_give_the_identical_network():
    layout = _layout("laminar_multinomial_l5e")
    reference = build_network(layout, method="numpy")
    for parts, threads in ((1, 1), (2, 2), (4, 3)):
        net = build_network(layout, n_parts=parts, threads=threads, method="compiled")
        np.testing.assert_array_equal(net.indptr, reference.indptr)
        np.testing.assert_array_equal(net.targets, reference.targets)
        np.testing.assert_array_equal(net.weights, reference.weights)


@needs_compiler
def test_library_is_cached_by_source_hash():
    path = compiled.library_path()
    assert path.exists(), "the first use must have built the library into the cache"
    slug, _, key = path.parent.name.rpartition("-")
    assert slug == "graph_kernels" and len(key) == 20 and (path.parent / "built.json").is_file()
    assert compiled.max_threads() >= 1


def test_bad_threads_and_method_are_refused_with_the_parameter_named():
    layout = _layout("ei_single_voxel_subset")
    with pytest.raises(NetworkError, match="threads"):
        build_block(layout, 0, 10, threads=0)
    with pytest.raises(NetworkError, match="method"):
        build_block(layout, 0, 10, method="fortran")


def test_without_a_compiler_the_numpy_path_builds_the_same_graph_with_one_warning(tmp_path):
    """A fresh cache and no compiler on PATH: auto falls back (warning), compiled names the fix."""
    script = textwrap.dedent(
        """
        import warnings
        from dtb.errors import NetworkError
        from dtb.network.build import build_block
        from dtb.selftest import graph_digest
        from tests.pinned_graphs import PINNED, pinned_layout as _layout
        warnings.simplefilter("ignore", UserWarning)
        layout = _layout("ei_outer_surplus")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            first = build_block(layout, 0, layout.n_neurons)
            build_block(layout, 0, 100)
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "numpy sampler" in messages[0] and "g++" in messages[0], messages
        assert graph_digest(first) == PINNED["ei_outer_surplus"]
        try:
            build_block(layout, 0, 10, method="compiled")
        except NetworkError as exc:
            assert "no C++ compiler" in str(exc) and "method='numpy'" in str(exc), exc
        else:
            raise AssertionError("method='compiled' must fail without a compiler")
        print("ok")
        """
    )
    env = dict(os.environ, DTB_CACHE_DIR=str(tmp_path / "cache"), PATH=str(tmp_path), PYTHONPATH=str(Path.cwd()))
    env.pop("CXX", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    assert not any((tmp_path / "cache").rglob("*.so")) and not any((tmp_path / "cache").rglob("built.json"))


@needs_compiler
@pytest.mark.parametrize("case", ["ei_outer_surplus", "laminar_exact", "ei_single_voxel_subset"])
def test_compiled_join_into_csr_by_source_equals_the_sorted_join(case):
    from dtb.network.build import assemble_network, even_ranges

    layout = _layout(case)
    blocks = [build_block(layout, a, b) for a, b in even_ranges(layout.n_neurons, 3)]
    fast = assemble_network(layout.populations, blocks, method="compiled")
    reference = assemble_network(layout.populations, blocks[::-1], method="numpy")
    np.testing.assert_array_equal(fast.indptr, reference.indptr)
    np.testing.assert_array_equal(fast.targets, reference.targets)
    np.testing.assert_array_equal(fast.weights, reference.weights)
    assert fast.metadata == reference.metadata
    # every synapse of a block appears once, from its source to its target
    src = np.repeat(np.arange(fast.n_neurons), np.diff(fast.indptr))
    pairs = np.sort(src.astype(np.int64) * fast.n_neurons + fast.targets)
    block_pairs = np.concatenate([b.sources.astype(np.int64) * fast.n_neurons + b.targets() for b in blocks])
    np.testing.assert_array_equal(pairs, np.sort(block_pairs))


@needs_compiler
@pytest.mark.parametrize("exclude", [False, True])
def test_compiled_fixed_indegree_draws_equal_the_torch_draws(exclude):
    from dtb.network.fixed_indegree import draw_sources

    rng = np.random.default_rng(3)
    ids = np.concatenate([rng.integers(0, 2**40, 300), [0, 2**32 - 1, 2**32, 2**63 - 1]])
    excl = rng.integers(0, 57, ids.size) if exclude else None
    for seed, stream, k, n in ((0, 2, 37, 57), (2**64 - 1, 2 + 16 * 5, 200, 3), (99, 18, 1, 2)):
        if exclude:
            excl = np.minimum(excl, n - 1)
        fast = draw_sources(seed, stream, ids, k, n, excl, method="compiled")
        reference = draw_sources(seed, stream, ids, k, n, excl, method="numpy")
        np.testing.assert_array_equal(fast, reference)
        assert fast.min() >= 0 and fast.max() < n
        if exclude:
            assert not np.any(fast == excl[:, None])


@needs_compiler
@pytest.mark.parametrize("seed", [0, 12345])
def test_compiled_fixed_indegree_network_is_the_pinned_one(seed):
    from dtb.network.fixed_indegree import connect_fixed_indegree
    from dtb.selftest import fixed_indegree_case, network_digest
    from tests.pinned_graphs import FIXED_INDEGREE_PINNED

    assert network_digest(connect_fixed_indegree(*fixed_indegree_case(seed))) == FIXED_INDEGREE_PINNED[seed]


@needs_compiler
def test_a_first_build_says_so_in_one_line_and_a_cached_one_is_quiet(tmp_path, monkeypatch, caplog):
    """A real build into a fresh DTB_CACHE_DIR (about 2 s): one INFO line naming the folder, then silence."""
    import logging

    monkeypatch.setenv("DTB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(compiled, "_library", None)  # this process has loaded the default cache's library
    with caplog.at_level(logging.INFO, logger="dtb"):
        compiled._load()
    target = compiled.library_path()
    assert str(target).startswith(str(tmp_path / "cache")) and target.is_file()
    lines = [r.getMessage() for r in caplog.records if "building kernels" in r.getMessage()]
    assert lines == [f"building kernels (graph sampler), about 5 s, once; cached in {target.parent}"]
    layout = _layout("ei_multinomial_small")
    assert graph_digest(build_block(layout, 0, layout.n_neurons, method="compiled")) == PINNED["ei_multinomial_small"]
    caplog.clear()
    monkeypatch.setattr(compiled, "_library", None)  # a later process: the library is cached, nothing is built
    with caplog.at_level(logging.INFO, logger="dtb"):
        compiled._load()
    assert not [r for r in caplog.records if "building kernels" in r.getMessage()]
