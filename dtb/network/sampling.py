"""The reference synapse sampler (docs/model.md §3.4): a pure function of (seed, target id).

For every target neuron ``i`` of population a (voxel v), its K_a inputs are split among
source columns (local populations of v, plus ``outer`` = other voxels): exactly, by
largest remainder (``split="exact"``), or by drawing each input's column from the
categorical row (``split="multinomial"``).  An ``outer`` input draws its source population
(w, b) with probability ``P_vw * output_weight_b``.  Source neurons are drawn uniformly
within each source population, never the target itself, and *distinct* within a
population: duplicates are redrawn (up to ``max_redraws`` rounds; a duplicate left after
that is dropped and counted, as are draws beyond a population's size), and a local column
that takes more than half of its source population is drawn as a random subset (sorting
random keys) instead.  Populations with the same in-degree and source row are sampled
together in cache-sized chunks (a Python loop per group and chunk, never per neuron).

Every random word comes from Philox keyed by the seed, with counter
``(i_lo, i_hi, c2, GRAPH + 16 * purpose)``: purpose 0 column, 1 long-range population,
2 neuron, 3 subset keys, 8 + r redraw round r.  Nothing depends on which block a target
is built in, so any partition of the ids builds the identical graph, and each process can
build its own incoming synapses without communication.

This module is the bottom of the network samplers: :mod:`dtb.network.compiled` (C++) and
:mod:`dtb.network.device` (torch on a GPU) reuse its tables and words, and
:mod:`dtb.network.build` dispatches between the three.  It imports neither of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from dtb.errors import NetworkError
from dtb.network.layout import Layout
from dtb.philox import Stream, philox4x32, split_seed

__all__ = ["SynapseBlock", "needs_subset_table"]

log = logging.getLogger("dtb")

_COLUMN, _LONG_RANGE, _NEURON, _SUBSET, _REDRAW = 0, 1, 2, 3, 8
_MASK32 = 0xFFFFFFFF
_CHUNK_WORDS = 1 << 18  # targets x draws per vectorised chunk (cache-sized)


@dataclass(frozen=True, eq=False)
class SynapseBlock:
    """Incoming synapses of the targets ``start .. stop-1`` (CSR by target).

    Attributes
    ----------
    start, stop : first and one-past-last target id.
    indptr : int64 (stop - start + 1,); synapses of target ``start + j`` are
        ``sources[indptr[j]:indptr[j+1]]``.
    sources : uint32 (n_synapses,), global source ids, in draw order per target.
    weights : uint8 (n_synapses,), weight k (w = k/255).
    dropped_duplicates : synapses dropped because their source population had no further
        distinct neuron (a draw asked more of it than it holds, or no distinct neuron was
        found in ``max_redraws`` rounds).
    """

    start: int
    stop: int
    indptr: np.ndarray
    sources: np.ndarray
    weights: np.ndarray
    dropped_duplicates: int = 0

    @property
    def n_synapses(self) -> int:
        return int(self.sources.size)

    def targets(self) -> np.ndarray:
        """Target id of every synapse (int64)."""
        return np.repeat(np.arange(self.start, self.stop, dtype=np.int64), np.diff(self.indptr))


def _words(key, ids: torch.Tensor, n_words: int, purpose: int, c2_offset: int = 0) -> torch.Tensor:
    """Random 32-bit words (n_targets, n_words) for word indices 0..n_words-1 of a purpose."""
    calls = -(-n_words // 4)
    col = torch.arange(calls, dtype=torch.int64, device=ids.device).view(1, -1) + c2_offset
    ids = ids.view(-1, 1)
    w = philox4x32((ids & _MASK32, ids >> 32, col, int(Stream.GRAPH) + 16 * purpose), key)
    return torch.stack(w, dim=2).reshape(ids.shape[0], calls * 4)[:, :n_words]


def _thresholds(probabilities: np.ndarray) -> torch.Tensor:
    """Upper 32-bit thresholds of a categorical row (word < threshold[c] picks column <= c)."""
    cdf = np.cumsum(probabilities)
    thr = np.floor(cdf / cdf[-1] * 2.0**32).astype(np.int64)
    thr[np.flatnonzero(probabilities > 0)[-1] :] = 2**32
    return torch.as_tensor(thr)


def _uniform_shifted(words: np.ndarray, shift: int) -> np.ndarray:
    """Uniforms in (shift, shift + 1) from 32-bit words (float64)."""
    return (words.astype(np.float64) + 0.5) * 2.0**-32 + shift


def _group_sources(
    layout: Layout, pops: np.ndarray, ids: torch.Tensor, key, sizes: np.ndarray, min_output_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Global source ids (n, K) and a keep mask for targets ``ids`` of populations ``pops``.

    All the populations share K and their source row (see ``_group_key``); a population
    whose local columns need the subset draw is always alone in its group.
    """
    cfg = layout.config
    rep = int(pops[0])
    K = int(layout.indegrees[rep])
    outer_col = layout.column_counts.shape[1] - 1
    offsets = layout.offsets
    voxel = layout.population_voxel[pops]
    first = layout.voxel_first_population[voxel][:, None]
    lo, hi = layout.lr_indptr[voxel][:, None], layout.lr_indptr[voxel + 1][:, None]

    def long_range(words: np.ndarray, shift: np.ndarray) -> np.ndarray:
        index = np.searchsorted(layout.lr_cdf, (words.astype(np.float64) + 0.5) * 2.0**-32 + shift)
        return layout.lr_population[np.clip(index, lo, hi - 1)]

    n_outer = int(layout.column_counts[rep, -1])
    if cfg.split == "exact":
        col = np.repeat(np.arange(outer_col + 1), layout.column_counts[rep])
        q = first + col[None, :]
        if n_outer:
            q[:, K - n_outer :] = long_range(_words(key, ids, n_outer, _LONG_RANGE).numpy(), voxel[:, None])
    else:
        thr = _thresholds(layout.column_probabilities[rep]).numpy()
        col = np.searchsorted(thr, _words(key, ids, K, _COLUMN).numpy(), side="right")
        q = first + col
        outer = col == outer_col
        if outer.any():
            words = _words(key, ids, K, _LONG_RANGE).numpy()
            q = np.where(outer, long_range(words, voxel[:, None] + np.zeros((1, K), np.int64)), q)

    p_t = pops[:, None]
    self_local = ids.numpy()[:, None] - offsets[p_t]
    is_self = q == p_t
    pool = sizes[q] - is_self
    local = (_words(key, ids, K, _NEURON).numpy() * pool) >> 32
    local += is_self & (local >= self_local)

    if cfg.split == "exact" and _needs_subset(layout, rep, sizes):  # dense local columns: a random subset
        a, first_p = int(layout.population_local[rep]), int(first[0, 0])
        draw0 = 0
        for b, c in enumerate(layout.column_counts[rep, :-1].tolist()):
            pool_b = int(sizes[first_p + b]) - (b == a) if c else 0
            if c and 2 * c > pool_b:
                keys = _words(key, ids, pool_b, _SUBSET, c2_offset=b << 16)
                chosen = torch.argsort(keys, dim=1, stable=True)[:, :c].numpy()
                if b == a:
                    chosen = chosen + (chosen >= self_local)
                local[:, draw0 : draw0 + c] = chosen
            draw0 += c

    src = offsets[q] + local
    keep = np.ones(src.shape, dtype=bool)
    if cfg.split == "multinomial" or (n_outer and min_output_size < n_outer):
        # a population asked for more distinct neurons than it has: drop the surplus draws
        # (the latest in draw order) now, instead of redrawing them in vain
        order = np.argsort(q, axis=1, kind="stable")
        q_sorted = np.take_along_axis(q, order, axis=1)
        position = np.broadcast_to(np.arange(K), q_sorted.shape)
        first_of_group = np.ones(q_sorted.shape, dtype=bool)
        first_of_group[:, 1:] = q_sorted[:, 1:] != q_sorted[:, :-1]
        rank = position - np.maximum.accumulate(np.where(first_of_group, position, 0), axis=1)
        surplus_sorted = rank >= np.take_along_axis(pool, order, axis=1)
        if surplus_sorted.any():
            surplus = np.zeros_like(keep)
            np.put_along_axis(surplus, order, surplus_sorted, axis=1)
            keep &= ~surplus
            src[surplus] = -1 - np.flatnonzero(surplus.ravel())  # unique sentinels: never duplicates
    rows = np.flatnonzero((np.diff(np.sort(src, axis=1), axis=1) == 0).any(axis=1))
    for round_index in range(cfg.max_redraws + 1):
        if rows.size == 0:
            break
        order = np.argsort(src[rows], axis=1, kind="stable")
        ordered = np.take_along_axis(src[rows], order, axis=1)
        dup_sorted = ordered[:, 1:] == ordered[:, :-1]
        has_dup = dup_sorted.any(axis=1)
        rows, dup_sorted, order = rows[has_dup], dup_sorted[has_dup], order[has_dup]
        if rows.size == 0:
            break
        r_idx = np.repeat(np.arange(rows.size), dup_sorted.sum(axis=1))
        d_idx = order[:, 1:][dup_sorted]
        t_rows = rows[r_idx]
        if round_index == cfg.max_redraws:
            keep[t_rows, d_idx] = False
            break
        tid = ids[torch.as_tensor(t_rows)]
        word = philox4x32(
            (tid & _MASK32, tid >> 32, torch.as_tensor(d_idx), int(Stream.GRAPH) + 16 * (_REDRAW + round_index)), key
        )[0].numpy()
        qq = q[t_rows, d_idx]
        selfq = qq == pops[t_rows]
        new_local = (word * (sizes[qq] - selfq)) >> 32
        new_local += selfq & (new_local >= self_local[t_rows, 0])
        src[t_rows, d_idx] = offsets[qq] + new_local
    return src, keep, int(src.size - keep.sum())


def _warn_dropped(start: int, stop: int, dropped: int) -> None:
    if dropped:
        log.warning(
            "targets [%d, %d): %d synapse(s) dropped for lack of distinct source neurons "
            "(populations smaller than the draws asked of them)",
            start,
            stop,
            dropped,
        )


def needs_subset_table(layout: Layout) -> np.ndarray:
    """Per population: True when the exact split draws a local column as a random subset (bool, (P,))."""
    sizes = np.diff(layout.offsets)
    if layout.config.split != "exact":
        return np.zeros(len(layout.populations), dtype=bool)
    return np.array([_needs_subset(layout, p, sizes) for p in range(len(layout.populations))], dtype=bool)


def _needs_subset(layout: Layout, p: int, sizes: np.ndarray) -> bool:
    """True when a local column of population p takes more than half of its source population."""
    first = int(layout.voxel_first_population[layout.population_voxel[p]])
    a = int(layout.population_local[p])
    counts = layout.column_counts[p, :-1]
    n_local = layout.models[layout.voxel_model[layout.population_voxel[p]]].n_populations
    pools = sizes[first : first + n_local] - (np.arange(n_local) == a)
    return bool(np.any((counts[:n_local] > 0) & (2 * counts[:n_local] > pools)))


def _group_key(layout: Layout, p: int, sizes: np.ndarray) -> tuple:
    """Populations with equal keys are sampled together (same K and source row)."""
    if layout.config.split == "exact":
        key = (int(layout.indegrees[p]), layout.column_counts[p].tobytes())
        return key + ((p,) if _needs_subset(layout, p, sizes) else ())
    return (int(layout.indegrees[p]), layout.column_probabilities[p].tobytes())


def _check_range(layout: Layout, start: int, stop: int) -> None:
    n_total = layout.n_neurons
    if not 0 <= start <= stop <= n_total:
        raise NetworkError(f"target range [{start}, {stop}) must lie within [0, {n_total}]")
    if n_total >= 2**32:
        raise NetworkError(f"{n_total} neurons do not fit uint32 synapse indices (at most 2**32 - 1)")
    if np.diff(layout.offsets).max() >= 2**31:
        raise NetworkError("a population of 2**31 neurons or more cannot be sampled; split it over more voxels")


def _build_block(layout: Layout, start: int, stop: int, sampler=None, chunk_words: int = _CHUNK_WORDS) -> SynapseBlock:
    """Sample groups of populations chunk by chunk and assemble the block (CSR by target).

    ``sampler(pops, ids) -> (src, keep, n_dropped)`` samples the targets ``ids`` (int64
    numpy) of populations ``pops``, all of one group, and returns numpy arrays as
    :func:`_group_sources`; default: the numpy/torch reference on the CPU.
    """
    key = split_seed(layout.config.seed)
    offsets = layout.offsets
    sizes = np.diff(offsets)
    min_output_size = int(sizes[layout.lr_population].min()) if layout.lr_population.size else 0
    if sampler is None:

        def sampler(pops, ids):
            return _group_sources(layout, pops, torch.as_tensor(ids), key, sizes, min_output_size)

    first_p = max(int(np.searchsorted(offsets, start, side="right") - 1), 0)
    last_p = int(np.searchsorted(offsets, stop, side="left"))
    groups: dict[tuple, list[int]] = {}
    for p in range(first_p, min(last_p, len(layout.populations))):
        if min(stop, offsets[p + 1]) > max(start, offsets[p]):
            groups.setdefault(_group_key(layout, p, sizes), []).append(p)
    counts = np.zeros(stop - start, dtype=np.int64)
    pieces = []
    dropped = 0
    for members in groups.values():
        members = np.asarray(members, dtype=np.int64)
        lows = np.maximum(start, offsets[members])
        highs = np.minimum(stop, offsets[members + 1])
        all_ids = np.concatenate([np.arange(a, b) for a, b in zip(lows, highs)])
        all_pops = np.repeat(members, highs - lows)
        K = int(layout.indegrees[members[0]])
        step = max(1, chunk_words // max(K, 1))
        for c0 in range(0, all_ids.size, step):
            src, keep, n_drop = sampler(all_pops[c0 : c0 + step], all_ids[c0 : c0 + step])
            dropped += n_drop
            rows = all_ids[c0 : c0 + step] - start
            counts[rows] = keep.sum(axis=1) if n_drop else K
            pieces.append((rows, src, keep if n_drop else None))
    indptr = np.zeros(stop - start + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    sources = np.empty(int(indptr[-1]), dtype=np.uint32)
    for rows, src, keep in pieces:
        if keep is None:
            sources[(indptr[rows][:, None] + np.arange(src.shape[1])).ravel()] = src.ravel()
        else:
            within = np.cumsum(keep, axis=1) - 1
            sources[(indptr[rows][:, None] + within)[keep]] = src[keep]
    weights = np.full(sources.size, layout.config.weight, dtype=np.uint8)
    w_inh = layout.config.weight_inhibitory
    if w_inh is not None and w_inh != layout.config.weight:
        inhibitory = np.array([pop.kind == "I" for pop in layout.populations])
        source_population = np.searchsorted(offsets, sources, side="right") - 1
        weights[inhibitory[source_population]] = w_inh
    _warn_dropped(start, stop, dropped)
    return SynapseBlock(start, stop, indptr, sources, weights, dropped)
