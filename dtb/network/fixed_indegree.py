"""Fixed in-degree projections between populations, as a pure function of (seed, target id).

Every target neuron ``i`` of a projection ``p`` draws its ``indegree`` sources from the
Philox stream keyed by ``seed`` at counter ``(i_lo, i_hi, draw, GRAPH + 16 p)``, so any
process can build exactly the synapses of its own target neurons, in any order, and get
the same network.  Sources are drawn uniformly with replacement (multapses allowed); when
source and target population coincide, self-connections are excluded by drawing among
the other ``n - 1`` neurons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dtb.errors import NetworkError
from dtb.network.graph import Network, Population
from dtb.philox import Stream, philox4x32, split_seed
from dtb.validation import check_integer

__all__ = ["Projection", "connect_fixed_indegree", "draw_sources"]


@dataclass(frozen=True)
class Projection:
    """``indegree`` synapses onto every neuron of ``target`` from neurons of ``source``.

    ``weight`` is the integer k of every synapse (w = k/255).
    """

    source: str
    target: str
    indegree: int
    weight: int = 255
    autapses: bool = False

    def __post_init__(self) -> None:
        owner = f"projection {self.source}->{self.target}"
        check_integer(self.indegree, f"{owner}: indegree", 0, error=NetworkError)
        check_integer(self.weight, f"{owner}: weight k", 0, 255, error=NetworkError, fix="the weight is w = k/255")


def draw_sources(
    seed: int,
    stream: int,
    target_ids: np.ndarray,
    indegree: int,
    n_sources: int,
    exclude_local: np.ndarray | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Local source indices in [0, n_sources) for each target, shape (len(target_ids), indegree).

    ``exclude_local`` (one local index per target, or None) is never drawn: the draw is
    made among ``n_sources - 1`` and shifted past it.  ``method``: ``"compiled"`` (the C++
    sampler of :mod:`dtb.network.compiled`), ``"numpy"`` (torch Philox), or ``"auto"``
    (compiled when it builds here); identical draws.
    """
    n_pool = n_sources - (exclude_local is not None)
    if n_pool < 1 and indegree > 0:
        raise NetworkError(f"cannot draw {indegree} sources from a pool of {n_pool} neurons")
    if method not in ("auto", "compiled", "numpy"):
        raise NetworkError(f"method must be auto, compiled or numpy, got {method!r}")
    if method != "numpy":
        from dtb.network import compiled

        error = compiled.compiled_error()
        if error is None:
            return compiled.draw_fixed_indegree(seed, stream, target_ids, indegree, n_sources, exclude_local)
        if method == "compiled":
            raise NetworkError(error)
    ids = torch.as_tensor(np.asarray(target_ids, dtype=np.int64)).view(-1, 1)
    draws = torch.arange(indegree, dtype=torch.int64).view(1, -1)
    words = philox4x32((ids & 0xFFFFFFFF, ids >> 32, draws, stream), split_seed(seed))
    # 64 random bits -> index by multiply-shift on the top 32 bits of each half (bias < 2**-32 * n)
    local = ((words[0] * n_pool) >> 32).numpy()
    if exclude_local is not None:
        local = local + (local >= np.asarray(exclude_local, dtype=np.int64)[:, None])
    return local


def connect_fixed_indegree(
    populations: list[Population] | tuple[Population, ...],
    projections: list[Projection] | tuple[Projection, ...],
    seed: int,
    metadata: dict | None = None,
) -> Network:
    """Build a network of fixed in-degree projections (see module docstring)."""
    pops = tuple(populations)
    names = [p.name for p in pops]
    offsets = np.concatenate([[0], np.cumsum([p.size for p in pops])]).astype(np.int64)
    sources, targets, weights = [], [], []
    for index, proj in enumerate(projections):
        for end in (proj.source, proj.target):
            if end not in names:
                raise NetworkError(
                    f"projection {proj.source}->{proj.target}: no population named {end!r}; have {names}"
                )
        s, t = names.index(proj.source), names.index(proj.target)
        if proj.indegree == 0:
            continue
        target_ids = np.arange(offsets[t], offsets[t + 1])
        exclude = None
        if s == t and not proj.autapses:
            exclude = target_ids - offsets[s]
        local = draw_sources(seed, int(Stream.GRAPH) + 16 * index, target_ids, proj.indegree, pops[s].size, exclude)
        sources.append((local + offsets[s]).ravel())
        targets.append(np.repeat(target_ids, proj.indegree))
        weights.append(np.full(local.size, proj.weight, dtype=np.uint8))

    def cat(parts, dt):
        return np.concatenate(parts) if parts else np.zeros(0, dt)

    meta = {
        "builder": "fixed_indegree",
        "seed": int(seed),
        "projections": [vars(p) for p in projections],
        **(metadata or {}),
    }
    return Network.from_edges(pops, cat(sources, np.int64), cat(targets, np.int64), cat(weights, np.uint8), meta)
