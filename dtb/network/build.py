"""Building a network's synapses (docs/model.md §3.4): one entry point, three samplers.

:func:`build_block` samples the incoming synapses of a range of target ids with the
reference sampler (:mod:`dtb.network.sampling`, numpy/torch), the compiled one
(:mod:`dtb.network.compiled`, C++/OpenMP) or the GPU one (:mod:`dtb.network.device`); all
three give the bitwise identical graph, a pure function of (seed, target id), so any
partition of the ids builds the same network.  :func:`assemble_network` joins blocks into
the CSR-by-source :class:`~dtb.network.graph.Network`.  The samplers import
:mod:`dtb.network.sampling`, never this module, so the import graph has no cycle.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from dtb.errors import NetworkError
from dtb.network.graph import Network
from dtb.network.layout import Layout
from dtb.network.sampling import SynapseBlock, _build_block, _check_range, _warn_dropped, needs_subset_table
from dtb.validation import check_choice, check_positive

__all__ = [
    "METHODS",
    "SynapseBlock",
    "assemble_network",
    "blocks_to_network",
    "build_block",
    "build_network",
    "even_ranges",
    "needs_subset_table",
    "network_metadata",
]

#: Samplers of :func:`build_block`: ``"compiled"`` (C++/OpenMP, :mod:`dtb.network.compiled`),
#: ``"numpy"`` (the numpy/torch reference, :mod:`dtb.network.sampling`), ``"auto"`` (compiled when it builds here,
#: else numpy with a one-time warning).  All build the bitwise identical graph.
METHODS = ("auto", "compiled", "numpy")
_fallback_warned = False


def build_block(
    layout: Layout, start: int, stop: int, threads: int = 1, method: str = "auto", device: str | None = None
) -> SynapseBlock:
    """Build the incoming synapses of targets ``start .. stop-1`` (any sub-range of ids).

    The result depends only on the layout, the seed and the target ids: not on the range,
    the sampler, the thread count or the device.

    Parameters
    ----------
    layout : Layout from :func:`~dtb.network.layout.make_layout`.
    start, stop : target id range.
    threads : CPU threads (OpenMP threads of the compiled sampler, torch threads of the
        numpy path; restored afterwards).  Default 1: on a shared machine spinning threads
        can slow a build down; ranks building their blocks in separate processes are the
        other way to use several cores.
    method : one of :data:`METHODS` (CPU samplers; ignored on a GPU device).
    device : ``None``/``"cpu"`` (the CPU samplers), a torch device such as ``"cuda"`` or
        ``"cuda:1"`` (the torch sampler of :mod:`dtb.network.device` on that device), or
        ``"auto"`` (``"cuda"`` when torch sees a GPU, else the CPU).
    """
    check_positive(threads, "threads", integer=True, error=NetworkError)
    check_choice(method, "method", METHODS, error=NetworkError)
    if device is not None and str(device) != "cpu":
        from dtb.network.device import build_block_on_device, resolve_device

        resolved = resolve_device(device)
        if resolved.type != "cpu":
            return build_block_on_device(layout, start, stop, resolved, threads=int(threads))
    _check_range(layout, start, stop)
    if method != "numpy":
        from dtb.network import compiled

        error = compiled.compiled_error()
        if error is None:
            indptr, sources, weights, dropped = compiled.build_block_arrays(layout, start, stop, int(threads))
            _warn_dropped(start, stop, dropped)
            return SynapseBlock(start, stop, indptr, sources, weights, dropped)
        if method == "compiled":
            raise NetworkError(error)  # names the fix (dtb.kernel_build's failure message)
        _warn_fallback(error)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        return _build_block(layout, start, stop)
    finally:
        torch.set_num_threads(previous)


def _warn_fallback(error: str) -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            f"{error}\nBuilding networks with the numpy sampler instead (identical graph, about 5x slower); "
            "install a C++ compiler (g++) for the compiled one.",
            RuntimeWarning,
            stacklevel=3,
        )


def even_ranges(n_neurons: int, n_parts: int) -> list[tuple[int, int]]:
    """Split ``0 .. n_neurons-1`` into ``n_parts`` contiguous ranges of near-equal size."""
    edges = np.linspace(0, n_neurons, n_parts + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def blocks_to_network(layout: Layout, blocks: list[SynapseBlock], metadata: dict | None = None) -> Network:
    """Assemble blocks that cover every target id into a Network (CSR by source)."""
    meta = network_metadata(layout)
    meta.update(metadata or {})
    return assemble_network(layout.populations, blocks, meta)


def assemble_network(
    populations, blocks: list[SynapseBlock], metadata: dict | None = None, method: str = "auto"
) -> Network:
    """Join blocks covering ids ``0 .. n-1`` contiguously into a Network (CSR by source).

    Within a source, synapses keep block order then draw order, so the result does not
    depend on how the ids were split into blocks.  ``method``: ``"compiled"`` (a counting
    sort in C++, O(synapses)), ``"numpy"`` (a stable torch sort), ``"auto"`` (compiled when
    it builds here); both give the identical network.
    """
    if method not in METHODS:
        raise NetworkError(f"method must be one of {METHODS}, got {method!r}")
    populations = tuple(populations)
    n_neurons = int(sum(p.size for p in populations))
    blocks = sorted(blocks, key=lambda b: b.start)
    expected = 0
    for b in blocks:
        if b.start != expected:
            raise NetworkError(
                f"blocks must cover the ids contiguously: a block starts at {b.start}, expected {expected}"
            )
        expected = b.stop
    if expected != n_neurons:
        raise NetworkError(f"blocks cover ids up to {expected}, the network has {n_neurons}")
    meta = dict(metadata or {})
    meta["dropped_duplicate_synapses"] = int(sum(b.dropped_duplicates for b in blocks))
    if method != "numpy":
        from dtb.network import compiled

        error = compiled.compiled_error()
        if error is None:
            counts = np.concatenate([np.diff(b.indptr) for b in blocks]) if blocks else np.zeros(0, np.int64)
            target_indptr = np.zeros(n_neurons + 1, dtype=np.int64)
            np.cumsum(counts, out=target_indptr[1:])
            indptr, targets, weights = compiled.transpose_to_sources(
                target_indptr, np.concatenate([b.sources for b in blocks]), np.concatenate([b.weights for b in blocks])
            )
            return Network(populations, indptr, targets, weights, meta)
        if method == "compiled":
            raise NetworkError(f"{error}\nUse method='numpy' (the reference needs no compiler).")
        _warn_fallback(error)
    sources = torch.as_tensor(np.concatenate([b.sources for b in blocks]).astype(np.int64))
    targets = np.concatenate([b.targets() for b in blocks])
    weights = np.concatenate([b.weights for b in blocks])
    sorted_sources, order = torch.sort(sources, stable=True)
    order_np = order.numpy()
    indptr = np.zeros(n_neurons + 1, dtype=np.int64)
    np.cumsum(np.bincount(sorted_sources.numpy(), minlength=n_neurons), out=indptr[1:])
    return Network(populations, indptr, targets[order_np].astype(np.uint32), weights[order_np], meta)


def network_metadata(layout: Layout) -> dict:
    """JSON-safe description of how a layout was built (config, tables, drops, parameters)."""
    cfg = layout.config
    return {
        "builder": "dtb.network.build",
        "seed": int(cfg.seed),
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "population_voxel": [layout.voxel_labels[v] for v in layout.population_voxel],
        "population_model": [layout.models[layout.voxel_model[v]].name for v in layout.population_voxel],
        "population_indegree": layout.indegrees.tolist(),
        "population_params": layout.population_parameters(),
        **layout.metadata,
    }


def build_network(
    layout: Layout, n_parts: int = 1, threads: int = 1, method: str = "auto", device: str | None = None
) -> Network:
    """Build the whole network, in ``n_parts`` independent blocks of target ids.

    Parameters
    ----------
    layout : Layout from :func:`~dtb.network.layout.make_layout`.
    n_parts : number of blocks (as separate processes would build them); the network is
        identical for every value.
    threads, method, device : as for :func:`build_block` (the network is identical for all).
    """
    check_positive(n_parts, "n_parts", integer=True, error=NetworkError)
    blocks = [
        build_block(layout, a, b, threads=threads, method=method, device=device)
        for a, b in even_ranges(layout.n_neurons, n_parts)
    ]
    return blocks_to_network(layout, blocks)
