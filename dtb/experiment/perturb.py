"""Perturb a fitted twin and re-simulate it with its fitted h track (docs/experiments.md).

A :class:`Perturbation` changes the twin in three ways, applied to the store's own connectome,
neurons and h track, and everything else (graph seed, Gamma gains, noise seed) is the one
`dtb resimulate` uses, so a perturbed run differs from the store's ``/resimulation`` only by what
the perturbation does, and :class:`Perturbation()` (none) reproduces ``/resimulation`` bitwise:

- **lesion** of a region set: ``direction="outgoing"`` zeroes the set's rows of the connectome
  (row = source) before the network is built, so no long-range synapse leaves the set; the other
  regions' long-range in-degree is unchanged (fixed in-degree) and is drawn from the remaining
  sources. ``direction="incoming"`` removes every synapse from another region onto a neuron of the
  set from the built network (the network builder drops a region whose connectome row of inputs is
  all zero, so incoming lesions cannot be made in the connectome: the set's neurons keep only their
  local inputs and lose their long-range in-degree). ``"both"`` does both.
- **stimulation**: ``amplitude`` added to h, the external-current hyperparameter (written into
  ``i_ext`` by default) of the excitatory populations of a region set in every TR window whose start lies in
  [start_s, stop_s) (the h track changes once per TR; the window is rounded to whole TRs).
- **rewiring** with fraction P: each region's long-range input distribution becomes
  (1 - P) * its DTI distribution + P * a local one (its ``k`` nearest neighbours; by distance when
  region centres are given, else its ``k`` strongest connections, the closest in streamline terms),
  the region's total streamlines kept. P = 0 leaves the connectome untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dtb.errors import ConfigError
from dtb.network.graph import Network
from dtb.validation import check_choice, check_in_range, check_number, check_positive

__all__ = [
    "LESION_DIRECTIONS",
    "Lesion",
    "Perturbation",
    "Stimulation",
    "lesion_connectome",
    "remove_incoming",
    "resolve_regions",
    "rewire_local",
]

#: Accepted ``Lesion.direction`` values.
LESION_DIRECTIONS = ("outgoing", "incoming", "both")


def resolve_regions(names, labels, what: str = "region") -> list[int]:
    """Indices of ``names`` among ``labels``; a name without hemisphere (``Calcarine``) means every
    label ``<name>_L``/``<name>_R``/``<name>`` present. Unknown names raise a ConfigError listing
    the valid labels."""
    labels = [str(x) for x in labels]
    out: list[int] = []
    unknown = []
    for name in names:
        name = str(name)
        if name in labels:
            hits = [labels.index(name)]
        else:
            hits = [i for i, x in enumerate(labels) if x in (f"{name}_L", f"{name}_R")]
        if not hits:
            unknown.append(name)
        out.extend(h for h in hits if h not in out)
    if unknown:
        raise ConfigError(
            f"unknown {what} name(s) {unknown}; this twin's {len(labels)} regions are: {', '.join(labels)} "
            "(a name without _L/_R means both hemispheres)"
        )
    return out


@dataclass(frozen=True)
class Lesion:
    """Cut the ``direction`` long-range connections of ``regions`` (names or labels)."""

    regions: tuple[str, ...] = ()
    direction: str = "outgoing"

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(str(r) for r in self.regions))
        check_choice(self.direction, "lesion direction", LESION_DIRECTIONS, error=ConfigError)


@dataclass(frozen=True)
class Stimulation:
    """Add ``amplitude`` (in the units of h) to ``regions``' excitatory populations in [start_s, stop_s)."""

    regions: tuple[str, ...] = ()
    amplitude: float = 0.0
    start_s: float = 0.0
    stop_s: float = float("inf")

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(str(r) for r in self.regions))
        check_number(self.amplitude, "stimulation amplitude", error=ConfigError)
        if not self.start_s < self.stop_s:
            raise ConfigError(f"stimulation window must have start_s < stop_s, got [{self.start_s}, {self.stop_s})")


@dataclass(frozen=True)
class Perturbation:
    """What to change in a fitted twin (all parts optional; the default changes nothing)."""

    lesion: Lesion = field(default_factory=Lesion)
    stimulation: Stimulation = field(default_factory=Stimulation)
    rewire_p: float = 0.0
    rewire_k: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "rewire_p", check_in_range(self.rewire_p, "rewiring fraction P", 0.0, 1.0, error=ConfigError)
        )
        check_positive(self.rewire_k, "rewiring k (nearest neighbours)", integer=True, error=ConfigError)

    def describe(self) -> dict:
        return {
            "lesion": {"regions": list(self.lesion.regions), "direction": self.lesion.direction},
            "stimulation": {
                "regions": list(self.stimulation.regions),
                "amplitude": self.stimulation.amplitude,
                "start_s": self.stimulation.start_s,
                "stop_s": self.stimulation.stop_s if np.isfinite(self.stimulation.stop_s) else None,
            },
            "rewire_p": self.rewire_p,
            "rewire_k": int(self.rewire_k),
        }


def lesion_connectome(connectome, regions, direction: str = "outgoing") -> np.ndarray:
    """A copy of ``connectome`` (row = source) with the rows of ``regions`` zeroed (``outgoing``).

    Only the outgoing part is a connectome change (see the module docstring); ``incoming`` returns the
    connectome unchanged (the synapses are removed from the built network by :func:`remove_incoming`).
    Raises a ConfigError when a region outside the set would be left without long-range input.
    """
    sc = np.array(connectome, dtype=np.float64)
    idx = np.asarray(list(regions), dtype=np.int64)
    if idx.size == 0 or direction == "incoming":
        return sc
    sc[idx, :] = 0.0
    off = sc.copy()
    np.fill_diagonal(off, 0.0)
    cut_off = [j for j in range(sc.shape[0]) if j not in set(idx.tolist()) and off[:, j].sum() <= 0]
    if cut_off:
        raise ConfigError(
            f"lesioning the outgoing connections of {idx.tolist()} leaves region(s) {cut_off} without any "
            "long-range input; the network builder would drop them: lesion fewer regions"
        )
    return sc


def remove_incoming(network: Network, population_region, regions) -> Network:
    """``network`` without the synapses from a neuron of another region onto a neuron of ``regions``."""
    idx = np.asarray(list(regions), dtype=np.int64)
    if idx.size == 0:
        return network
    pop_region = np.asarray(population_region, dtype=np.int64)
    sizes = np.diff(network.offsets)
    neuron_region = np.repeat(pop_region, sizes)
    source = np.repeat(np.arange(network.n_neurons), np.diff(network.indptr))
    src_r = neuron_region[source]
    tgt_r = neuron_region[network.targets.astype(np.int64)]
    drop = np.isin(tgt_r, idx) & (src_r != tgt_r)
    keep = ~drop
    counts = np.bincount(source[keep], minlength=network.n_neurons)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    meta = {
        **dict(network.metadata),
        "lesion_incoming_regions": idx.tolist(),
        "lesion_removed_synapses": int(drop.sum()),
    }
    return Network(
        populations=network.populations,
        indptr=indptr,
        targets=network.targets[keep],
        weights=network.weights[keep],
        metadata=meta,
    )


def rewire_local(connectome, p: float, *, k: int = 8, centres=None) -> np.ndarray:
    """Replace a fraction ``p`` of each region's long-range input by input from its ``k`` nearest neighbours.

    ``connectome`` is row = source (store convention); the input distribution of region j is column j.
    New column j = total_j * ((1 - p) * c_j / total_j + p * l_j), where l_j is the local distribution:
    uniform over the ``k`` regions nearest to j when ``centres`` (region, 3) [mm] are given, else
    proportional to j's ``k`` strongest connections. ``p = 0`` returns the connectome unchanged (a copy).
    """
    p = check_in_range(p, "rewiring fraction P", 0.0, 1.0, error=ConfigError)
    sc = np.array(connectome, dtype=np.float64)
    np.fill_diagonal(sc, 0.0)
    n = sc.shape[0]
    if p == 0.0:
        return sc
    k = int(min(max(1, k), n - 1))
    total = sc.sum(axis=0)
    local = np.zeros_like(sc)
    for j in range(n):
        if total[j] <= 0:
            continue
        if centres is not None:
            c = np.asarray(centres, dtype=np.float64)
            d = np.linalg.norm(c - c[j], axis=1)
            d[j] = np.inf
            near = np.argsort(d, kind="stable")[:k]
            local[near, j] = 1.0 / k
        else:
            col = sc[:, j].copy()
            col[j] = -np.inf
            near = np.argsort(-col, kind="stable")[:k]
            near = near[sc[near, j] > 0]
            local[near, j] = sc[near, j] / sc[near, j].sum()
    safe = np.where(total > 0, total, 1.0)
    out = total * ((1.0 - p) * sc / safe + p * local)
    np.fill_diagonal(out, 0.0)
    return out
