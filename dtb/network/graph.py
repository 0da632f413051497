"""The network the engine consumes: populations of neurons and their synapses.

Neurons have global ids ``0 .. n_neurons-1``; each population owns a contiguous id
range, in the order the populations are listed.  Synapses are stored compactly as a
push CSR *by source*: the out-going synapses of neuron ``j`` are
``targets[indptr[j]:indptr[j+1]]`` with uint8 weights ``weights[...]`` (weight
``w = k / 255``).  Whether a synapse is excitatory or inhibitory is a property of the
source population (its ``kind``), not stored per synapse: 4 bytes of target index plus
1 byte of weight per synapse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dtb.errors import NetworkError
from dtb.validation import check_choice, check_positive

__all__ = ["Population", "Network", "KINDS"]

#: Source kinds: an ``E`` neuron's spikes drive the excitatory receptor channels of its
#: targets, an ``I`` neuron's spikes the inhibitory ones.
KINDS = ("E", "I")


@dataclass(frozen=True)
class Population:
    """A named block of neurons of one kind (``"E"`` or ``"I"``)."""

    name: str
    size: int
    kind: str

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise NetworkError(f"population name must be a non-empty string, got {self.name!r}")
        check_positive(self.size, f"population {self.name!r}: size", integer=True, error=NetworkError)
        check_choice(self.kind, f"population {self.name!r}: kind", KINDS, error=NetworkError)


@dataclass(frozen=True, eq=False)
class Network:
    """Populations plus synapses in CSR-by-source form.

    Parameters
    ----------
    populations : tuple of Population
        In id order; population ``p`` owns ids ``offsets[p] .. offsets[p+1]-1``.
    indptr : ndarray of int64, shape (n_neurons + 1,)
        CSR row pointer over source neurons.
    targets : ndarray of uint32, shape (n_synapses,)
        Target neuron id of every synapse, grouped by source.
    weights : ndarray of uint8, shape (n_synapses,)
        Synaptic weight ``k`` (the weight is ``k / 255``).
    metadata : dict
        JSON-safe provenance (builder, seed, parameters).
    """

    populations: tuple[Population, ...]
    indptr: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        pops = tuple(self.populations)
        if not pops:
            raise NetworkError("a network needs at least one population")
        names = [p.name for p in pops]
        if len(set(names)) != len(names):
            raise NetworkError(f"population names must be unique, got {names}")
        object.__setattr__(self, "populations", pops)
        n = self.n_neurons
        indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        targets = np.ascontiguousarray(self.targets)
        weights = np.ascontiguousarray(self.weights)
        if indptr.shape != (n + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise NetworkError(
                f"indptr must be a non-decreasing int array of length n_neurons + 1 = {n + 1} "
                f"starting at 0, got shape {indptr.shape}"
            )
        if targets.shape != (indptr[-1],) or weights.shape != targets.shape:
            raise NetworkError(
                f"targets and weights must both have length indptr[-1] = {indptr[-1]}, "
                f"got {targets.shape} and {weights.shape}"
            )
        if weights.dtype != np.uint8:
            raise NetworkError(f"weights must be uint8 (k in w = k/255), got {weights.dtype}")
        if targets.size and (targets.min() < 0 or targets.max() >= n):
            raise NetworkError(f"synapse targets must lie in [0, {n}), got [{targets.min()}, {targets.max()}]")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "targets", targets.astype(np.uint32, copy=False))
        object.__setattr__(self, "weights", weights)

    # --- sizes and lookups -------------------------------------------------------------
    @property
    def n_neurons(self) -> int:
        return int(sum(p.size for p in self.populations))

    @property
    def n_synapses(self) -> int:
        return int(self.targets.size)

    @property
    def population_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.populations)

    @property
    def offsets(self) -> np.ndarray:
        """First id of every population, plus ``n_neurons`` at the end (int64)."""
        return np.concatenate([[0], np.cumsum([p.size for p in self.populations])]).astype(np.int64)

    def population_index(self) -> np.ndarray:
        """Population index of every neuron (int32, shape (n_neurons,))."""
        sizes = [p.size for p in self.populations]
        return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)

    def is_inhibitory(self) -> np.ndarray:
        """True for neurons of ``I`` populations (bool, shape (n_neurons,))."""
        kinds = np.array([p.kind == "I" for p in self.populations])
        return kinds[self.population_index()]

    def slice_of(self, name: str) -> slice:
        """Id range of the population called ``name``."""
        try:
            p = self.population_names.index(name)
        except ValueError:
            raise NetworkError(f"no population named {name!r}; the network has {list(self.population_names)}") from None
        off = self.offsets
        return slice(int(off[p]), int(off[p + 1]))

    def in_degrees(self) -> np.ndarray:
        """Number of incoming synapses of every neuron (int64)."""
        return np.bincount(self.targets, minlength=self.n_neurons).astype(np.int64)

    @property
    def synapse_nbytes(self) -> int:
        """Bytes held by the synapse arrays (targets + weights + indptr)."""
        return int(self.targets.nbytes + self.weights.nbytes + self.indptr.nbytes)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_edges(
        cls,
        populations: tuple[Population, ...] | list[Population],
        sources: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray | int,
        metadata: dict | None = None,
    ) -> Network:
        """Build a network from edge lists (any order); synapses are grouped by source.

        Parameters
        ----------
        populations : sequence of Population
        sources, targets : int arrays, shape (n_synapses,)
            Global neuron ids of each synapse's pre- and postsynaptic neuron.
        weights : uint8 array of shape (n_synapses,) or one int in [1, 255]
            Weight ``k`` of each synapse (``w = k/255``).
        """
        pops = tuple(populations)
        n = int(sum(p.size for p in pops))
        sources = np.asarray(sources, dtype=np.int64).ravel()
        targets = np.asarray(targets, dtype=np.int64).ravel()
        if sources.shape != targets.shape:
            raise NetworkError(f"sources and targets must have the same length, got {sources.size} and {targets.size}")
        if np.isscalar(weights) or np.ndim(weights) == 0:
            k = int(weights)
            if not 0 <= k <= 255:
                raise NetworkError(f"weight k must be in [0, 255] (w = k/255), got {k}")
            weights = np.full(sources.shape, k, dtype=np.uint8)
        weights = np.asarray(weights)
        if weights.shape != sources.shape:
            raise NetworkError(f"weights must have length {sources.size}, got {weights.size}")
        if sources.size and (sources.min() < 0 or sources.max() >= n):
            raise NetworkError(f"synapse sources must lie in [0, {n}), got [{sources.min()}, {sources.max()}]")
        order = np.argsort(sources, kind="stable")
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(sources, minlength=n), out=indptr[1:])
        return cls(pops, indptr, targets[order], weights[order].astype(np.uint8), dict(metadata or {}))
