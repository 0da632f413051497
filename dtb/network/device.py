"""The synapse sampler in torch on any device (a GPU when present): the identical graph.

:func:`build_block_on_device` runs the algorithm of :mod:`dtb.network.sampling` with every
array a torch tensor on ``device``: the Philox words (``dtb.philox``, int64 arithmetic),
the categorical and long-range draws (``torch.searchsorted``), the random-subset draw
(stable ``argsort``), the surplus ranks and the duplicate redraw rounds.  Integer
arithmetic is exact on every device, and the one floating-point step (``(w + 0.5) *
2**-32 + v``, compared with the long-range table) is two separately rounded IEEE float64
operations, as in numpy, so a CUDA build gives bitwise the CPU graph.  Each chunk's
sources come back to the host, where the block is assembled as on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch

from dtb import validation
from dtb.errors import NetworkError
from dtb.network.layout import Layout
from dtb.network.sampling import (
    _COLUMN,
    _LONG_RANGE,
    _MASK32,
    _NEURON,
    _REDRAW,
    _SUBSET,
    SynapseBlock,
    _build_block,
    _check_range,
    _needs_subset,
    _thresholds,
    _words,
)
from dtb.philox import Stream, philox4x32, split_seed

__all__ = ["build_block_on_device", "resolve_device"]

_DEVICE_CHUNK_WORDS = 1 << 22  # targets x draws per chunk on a GPU (~0.3 GB of temporaries)


def resolve_device(device) -> torch.device:
    """``"auto"`` -> ``cuda`` when torch sees a GPU, else ``cpu``; a CUDA device must exist
    (:func:`dtb.validation.resolve_device`, raising NetworkError)."""
    return validation.resolve_device(device, error=NetworkError, unavailable=NetworkError)


class _Tables:
    """The layout's sampling tables as tensors on one device."""

    def __init__(self, layout: Layout, device: torch.device) -> None:
        def t(a, dtype=torch.int64):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        self.device = device
        self.offsets = t(layout.offsets)
        self.sizes = t(np.diff(layout.offsets))
        self.population_voxel = t(layout.population_voxel)
        self.voxel_first_population = t(layout.voxel_first_population)
        self.lr_indptr = t(layout.lr_indptr)
        self.lr_population = t(layout.lr_population)
        self.lr_cdf = t(layout.lr_cdf, torch.float64)


def _group_sources_torch(layout: Layout, T: _Tables, pops: torch.Tensor, ids: torch.Tensor, key, min_output_size: int):
    """Torch twin of :func:`dtb.network.sampling._group_sources` (same words, same decisions)."""
    cfg = layout.config
    dev = T.device
    rep = int(pops[0])
    K = int(layout.indegrees[rep])
    outer_col = layout.column_counts.shape[1] - 1
    sizes_np = np.diff(layout.offsets)
    voxel = T.population_voxel[pops]
    first = T.voxel_first_population[voxel][:, None]
    lo, hi = T.lr_indptr[voxel][:, None], T.lr_indptr[voxel + 1][:, None]
    n = ids.shape[0]

    def long_range(words: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        x = (words.to(torch.float64) + 0.5) * 2.0**-32 + shift
        index = torch.searchsorted(T.lr_cdf, x.contiguous())
        return T.lr_population[torch.minimum(torch.maximum(index, lo), hi - 1)]

    n_outer = int(layout.column_counts[rep, -1])
    if cfg.split == "exact":
        col = torch.repeat_interleave(
            torch.arange(outer_col + 1, device=dev), torch.as_tensor(layout.column_counts[rep], device=dev)
        )
        q = (first + col[None, :]).clone()
        if n_outer:
            q[:, K - n_outer :] = long_range(_words(key, ids, n_outer, _LONG_RANGE), voxel[:, None])
    else:
        thr = _thresholds(layout.column_probabilities[rep]).to(dev)
        col = torch.searchsorted(thr, _words(key, ids, K, _COLUMN).contiguous(), right=True)
        q = first + col
        outer = col == outer_col
        if bool(outer.any()):
            words = _words(key, ids, K, _LONG_RANGE)
            q = torch.where(outer, long_range(words, voxel[:, None].expand(n, K)), q)

    p_t = pops[:, None]
    self_local = ids[:, None] - T.offsets[p_t]
    is_self = q == p_t
    pool = T.sizes[q] - is_self.long()
    local = (_words(key, ids, K, _NEURON) * pool) >> 32
    local = local + (is_self & (local >= self_local)).long()

    if cfg.split == "exact" and _needs_subset(layout, rep, sizes_np):  # dense local columns: a random subset
        a, first_p = int(layout.population_local[rep]), int(first[0, 0])
        draw0 = 0
        for b, c in enumerate(layout.column_counts[rep, :-1].tolist()):
            pool_b = int(sizes_np[first_p + b]) - (b == a) if c else 0
            if c and 2 * c > pool_b:
                keys = _words(key, ids, pool_b, _SUBSET, c2_offset=b << 16)
                chosen = torch.argsort(keys, dim=1, stable=True)[:, :c]
                if b == a:
                    chosen = chosen + (chosen >= self_local).long()
                local[:, draw0 : draw0 + c] = chosen
            draw0 += c

    src = T.offsets[q] + local
    keep = torch.ones(src.shape, dtype=torch.bool, device=dev)
    if cfg.split == "multinomial" or (n_outer and min_output_size < n_outer):
        # a population asked for more distinct neurons than it has: drop the surplus draws
        order = torch.argsort(q, dim=1, stable=True)
        q_sorted = torch.take_along_dim(q, order, dim=1)
        position = torch.arange(K, device=dev).expand(n, K)
        first_of_group = torch.ones(q_sorted.shape, dtype=torch.bool, device=dev)
        first_of_group[:, 1:] = q_sorted[:, 1:] != q_sorted[:, :-1]
        rank = position - torch.cummax(torch.where(first_of_group, position, 0), dim=1).values
        surplus_sorted = rank >= torch.take_along_dim(pool, order, dim=1)
        if bool(surplus_sorted.any()):
            surplus = torch.zeros_like(keep).scatter_(1, order, surplus_sorted)
            keep &= ~surplus
            sentinel = -1 - torch.arange(src.numel(), device=dev).view(src.shape)  # never duplicates
            src = torch.where(surplus, sentinel, src)
    rows = torch.nonzero((torch.diff(torch.sort(src, dim=1).values, dim=1) == 0).any(dim=1)).view(-1)
    for round_index in range(cfg.max_redraws + 1):
        if rows.numel() == 0:
            break
        sub = src[rows]
        order = torch.argsort(sub, dim=1, stable=True)
        ordered = torch.take_along_dim(sub, order, dim=1)
        dup_sorted = ordered[:, 1:] == ordered[:, :-1]
        has_dup = dup_sorted.any(dim=1)
        rows, dup_sorted, order = rows[has_dup], dup_sorted[has_dup], order[has_dup]
        if rows.numel() == 0:
            break
        r_idx = torch.repeat_interleave(torch.arange(rows.numel(), device=dev), dup_sorted.sum(dim=1))
        d_idx = order[:, 1:][dup_sorted]
        t_rows = rows[r_idx]
        if round_index == cfg.max_redraws:
            keep[t_rows, d_idx] = False
            break
        tid = ids[t_rows]
        word = philox4x32((tid & _MASK32, tid >> 32, d_idx, int(Stream.GRAPH) + 16 * (_REDRAW + round_index)), key)[0]
        qq = q[t_rows, d_idx]
        selfq = qq == pops[t_rows]
        new_local = (word * (T.sizes[qq] - selfq.long())) >> 32
        new_local = new_local + (selfq & (new_local >= self_local[t_rows, 0])).long()
        src[t_rows, d_idx] = T.offsets[qq] + new_local
    n_drop = int(src.numel() - int(keep.sum()))
    return src.cpu().numpy(), keep.cpu().numpy(), n_drop


def build_block_on_device(
    layout: Layout, start: int, stop: int, device, chunk_words: int = _DEVICE_CHUNK_WORDS, threads: int = 1
) -> SynapseBlock:
    """Incoming synapses of targets ``start .. stop-1`` sampled with torch on ``device``.

    Parameters
    ----------
    layout : Layout from :func:`~dtb.network.layout.make_layout`.
    start, stop : target id range.
    device : torch device (``"cuda"``, ``"cuda:1"``, ``"cpu"``, or ``"auto"``).
    chunk_words : targets x draws per chunk (bounds the device memory of temporaries,
        about 80 B per word).
    threads : torch CPU threads while building (restored afterwards); on a shared machine
        more threads than free cores slow the many small torch operations down many times.

    Returns
    -------
    SynapseBlock, on the host, bitwise equal to :func:`dtb.network.build.build_block`.
    """
    dev = resolve_device(device)
    _check_range(layout, start, stop)
    tables = _Tables(layout, dev)
    key = split_seed(layout.config.seed)
    sizes = np.diff(layout.offsets)
    min_output_size = int(sizes[layout.lr_population].min()) if layout.lr_population.size else 0

    def sampler(pops: np.ndarray, ids: np.ndarray):
        return _group_sources_torch(
            layout,
            tables,
            torch.as_tensor(pops, device=dev),
            torch.as_tensor(ids, device=dev),
            key,
            min_output_size,
        )

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        return _build_block(layout, start, stop, sampler=sampler, chunk_words=int(chunk_words))
    finally:
        torch.set_num_threads(previous)
