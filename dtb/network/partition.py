"""Whole populations to ranks, balancing neurons x in-degree; each rank owns a contiguous id range."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtb.errors import NetworkError

__all__ = ["Partition", "partition_populations"]


@dataclass(frozen=True, eq=False)
class Partition:
    """Assignment of populations to ranks.

    Attributes
    ----------
    population_ranges : int array (n_ranks + 1,); rank r owns populations
        ``population_ranges[r] .. population_ranges[r+1]-1``.
    id_ranges : int64 array (n_ranks + 1,); rank r owns neuron ids ``id_ranges[r] .. id_ranges[r+1]-1``.
    costs : float array (n_ranks,), neurons x in-degree (synapses) per rank.
    """

    population_ranges: np.ndarray
    id_ranges: np.ndarray
    costs: np.ndarray

    @property
    def n_ranks(self) -> int:
        return int(self.costs.size)

    @property
    def imbalance(self) -> float:
        """max / mean cost (1 is perfect)."""
        return float(self.costs.max() / self.costs.mean()) if self.costs.mean() > 0 else 1.0

    def rank_range(self, rank: int) -> tuple[int, int]:
        return int(self.id_ranges[rank]), int(self.id_ranges[rank + 1])


def partition_populations(sizes, indegrees, n_ranks: int) -> Partition:
    """Split consecutive populations over ``n_ranks`` ranks, minimising the largest rank cost.

    The cost of a population is ``size x in-degree`` (its synapses).  Populations stay
    whole and in id order, so ranks own contiguous id ranges; the split minimises the
    maximum rank cost (bisection on the bottleneck with a greedy fill, exact up to 1e-9
    relative), which gives max/mean <= 1.1 whenever no population is too big to allow it.

    Parameters
    ----------
    sizes : int array (P,), neurons per population, in id order.
    indegrees : int array (P,), synapses per neuron of each population.
    n_ranks : number of ranks (processes / GPUs).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    cost = sizes.astype(np.float64) * np.asarray(indegrees, dtype=np.float64)
    n_ranks = int(n_ranks)
    if n_ranks < 1:
        raise NetworkError(f"n_ranks must be >= 1, got {n_ranks}")
    if n_ranks > sizes.size:
        raise NetworkError(
            f"cannot give whole populations to {n_ranks} ranks: the network has only {sizes.size} populations; "
            "use fewer ranks (or more voxels)"
        )
    prefix = np.concatenate([[0.0], np.cumsum(cost)])

    def cuts(cap: float) -> np.ndarray | None:
        bounds = [0]
        for _ in range(n_ranks):
            nxt = int(np.searchsorted(prefix, prefix[bounds[-1]] + cap, side="right") - 1)
            nxt = max(nxt, bounds[-1] + 1) if bounds[-1] < sizes.size else bounds[-1]
            bounds.append(min(nxt, sizes.size))
            if prefix[bounds[-1]] - prefix[bounds[-2]] > cap * (1 + 1e-12) and bounds[-1] - bounds[-2] > 1:
                return None
        return np.asarray(bounds) if bounds[-1] == sizes.size else None

    lo, hi = max(cost.max(), prefix[-1] / n_ranks), prefix[-1]
    best = cuts(hi)
    for _ in range(100):
        if hi - lo <= 1e-9 * hi:
            break
        mid = 0.5 * (lo + hi)
        attempt = cuts(mid)
        if attempt is None:
            lo = mid
        else:
            hi, best = mid, attempt
    # every rank must own at least one population: split off from the end where needed
    bounds = best.copy()
    for r in range(n_ranks - 1, 0, -1):
        bounds[r] = min(bounds[r], bounds[r + 1] - 1)
    for r in range(1, n_ranks):
        bounds[r] = max(bounds[r], bounds[r - 1] + 1)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    costs = np.diff(prefix[bounds])
    return Partition(population_ranges=bounds.astype(np.int64), id_ranges=offsets[bounds], costs=costs)
