"""Population models of one voxel (docs/model.md §3.2): the voxel E/I model and the laminar column.

A :class:`ColumnModel` describes the populations of one voxel (or region): their names,
kinds, neuron shares, in-degree scales, where their inputs come from (a row per target
population over the local source populations plus one ``outer`` column for inputs from
other voxels), which populations send long-range output, and the receptor conductances
g_u the DTB calibrated for them (plain dicts, so that ``dtb.sim`` can build its
``NeuronParams`` from them; this module never imports ``dtb.sim``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtb.errors import NetworkError
from dtb.validation import check_positive

__all__ = [
    "ColumnModel",
    "MODEL_NAMES",
    "ei_model",
    "laminar_model",
    "neuron_counts_from_grey_matter",
]

#: Names accepted for ``NetworkConfig.model``.
MODEL_NAMES = ("ei", "laminar")

#: g_u of the voxel E/I model at in-degree 100 (docs/model.md §1).
EI_G = {"g_AMPA": 6.16e-3, "g_NMDA": 9.0e-4, "g_GABA_A": 2.97e-2, "g_GABA_B": 1.91e-3}

LAMINAR_NAMES = ("L2/3E", "L2/3I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I")
LAMINAR_SHARES = (0.268, 0.076, 0.284, 0.071, 0.063, 0.014, 0.186, 0.038)
#: Synapses per target neuron (rows = target) from each local population, last column: other voxels.
LAMINAR_SYNAPSES = (
    (3554, 804, 881, 45, 431, 0, 136, 0, 1020),
    (1778, 532, 456, 29, 217, 0, 69, 0, 396),
    (417, 84, 1070, 690, 79, 93, 1686, 0, 1489),
    (168, 41, 628, 538, 36, 0, 1028, 0, 790),
    (2550, 176, 765, 99, 621, 596, 363, 7, 1591),
    (1357, 76, 380, 32, 375, 403, 129, 0, 214),
    (643, 46, 549, 196, 327, 126, 925, 597, 2609),
    (80, 8, 92, 3, 159, 11, 76, 499, 1794),
)
#: (g_AMPA, g_NMDA, g_GABA_A, g_GABA_B) of the column at in-degree 100 (docs/model.md §3.2b).
LAMINAR_G = (
    (6.60e-3, 9.4e-4, 0.1019, 4.59e-3),
    (1.382e-2, 1.96e-3, 0.1818, 7.28e-3),
    (7.55e-3, 1.06e-3, 0.0985, 4.32e-3),
    (1.346e-2, 1.89e-3, 0.1592, 6.52e-3),
    (6.44e-3, 9.1e-4, 0.1021, 4.45e-3),
    (1.647e-2, 2.34e-3, 0.2151, 7.97e-3),
    (6.80e-3, 9.6e-4, 0.0692, 3.25e-3),
    (1.439e-2, 2.03e-3, 0.1467, 5.87e-3),
)
_G_NAMES = ("g_AMPA", "g_NMDA", "g_GABA_A", "g_GABA_B")


@dataclass(frozen=True)
class ColumnModel:
    """The populations of one voxel and where their inputs come from.

    Attributes
    ----------
    name : ``"ei"`` or ``"laminar"``.
    population_names : local population names, in id order.
    kinds : ``"E"`` or ``"I"`` per population.
    shares : fraction of the voxel's neurons in each population (sums to 1).
    indegree_scales : in-degree of population a is ``max(1, floor(K * scale_a))``.
    source_probabilities : array (n_pop, n_pop + 1); row a gives the probability that an
        input of a target in population a comes from local population b (columns 0..n_pop-1)
        or from another voxel (last column).  Rows sum to 1.
    output_weights : array (n_pop,); how long-range output of the voxel is shared among its
        populations (zero for populations that send none); sums to 1.
    conductances : per population, a dict ``{"g_AMPA": ..., "g_NMDA": ..., "g_GABA_A": ...,
        "g_GABA_B": ...}`` (DTB units, calibrated at in-degree 100).
    """

    name: str
    population_names: tuple[str, ...]
    kinds: tuple[str, ...]
    shares: tuple[float, ...]
    indegree_scales: tuple[float, ...]
    source_probabilities: np.ndarray
    output_weights: np.ndarray
    conductances: tuple[dict, ...]

    @property
    def n_populations(self) -> int:
        return len(self.population_names)


def ei_model() -> ColumnModel:
    """The voxel E/I model (docs/model.md §3.2a): 80 % E, 20 % I; inputs 4/7 local E, 1/7 local I,
    2/7 long-range E (57 / 14 / 29 at K = 100)."""
    row = np.array([4.0, 1.0, 2.0]) / 7.0
    return ColumnModel(
        name="ei",
        population_names=("E", "I"),
        kinds=("E", "I"),
        shares=(0.8, 0.2),
        indegree_scales=(1.0, 1.0),
        source_probabilities=np.stack([row, row]),
        output_weights=np.array([1.0, 0.0]),
        conductances=(dict(EI_G), dict(EI_G)),
    )


def laminar_model(long_range_sources: str = "all_e") -> ColumnModel:
    """The laminar cortical column (docs/model.md §3.2b).

    Parameters
    ----------
    long_range_sources : ``"all_e"`` (default: every E layer, weighted by its neuron
        share) or ``"l5e"`` (layer 5 E only, an earlier DTB choice).
    """
    table = np.asarray(LAMINAR_SYNAPSES, dtype=np.float64)
    shares = np.asarray(LAMINAR_SHARES)
    totals = table.sum(axis=1)
    scales = totals / (totals @ shares / shares.sum())
    kinds = tuple("E" if n.endswith("E") else "I" for n in LAMINAR_NAMES)
    if long_range_sources == "all_e":
        out = np.where(np.array(kinds) == "E", shares, 0.0)
    elif long_range_sources == "l5e":
        out = np.array([1.0 if n == "L5E" else 0.0 for n in LAMINAR_NAMES])
    else:
        raise NetworkError(f"long_range_sources must be 'all_e' or 'l5e', got {long_range_sources!r}")
    return ColumnModel(
        name="laminar",
        population_names=LAMINAR_NAMES,
        kinds=kinds,
        shares=tuple(float(s) for s in shares),
        indegree_scales=tuple(float(s) for s in scales),
        source_probabilities=table / totals[:, None],
        output_weights=out / out.sum(),
        conductances=tuple(dict(zip(_G_NAMES, g)) for g in LAMINAR_G),
    )


def neuron_counts_from_grey_matter(grey_matter, n_neurons_total: int) -> np.ndarray:
    """Neurons per voxel, ``N_v = round(N_total * gm_v / sum gm)`` (docs/model.md §3.1).

    Parameters
    ----------
    grey_matter : array (n_voxels,)
        Grey-matter volume (or probability) of every voxel [mm^3 or any unit]; >= 0.
    n_neurons_total : int
        Total number of neurons to distribute.

    Returns
    -------
    ndarray of int64, shape (n_voxels,)
    """
    gm = np.asarray(grey_matter, dtype=np.float64)
    if gm.ndim != 1 or gm.size == 0:
        raise NetworkError(f"grey_matter must be a non-empty 1-D array (one value per voxel), got shape {gm.shape}")
    bad = ~np.isfinite(gm) | (gm < 0)
    if bad.any():
        raise NetworkError(
            f"grey_matter has {int(bad.sum())} negative or NaN value(s) (first at voxel {int(np.argmax(bad))}); "
            "give finite volumes >= 0 (0 drops the voxel)"
        )
    check_positive(n_neurons_total, "n_neurons_total", integer=True, error=NetworkError)
    if gm.sum() <= 0:
        raise NetworkError("grey_matter is zero everywhere; no voxel can hold neurons")
    return np.rint(n_neurons_total * gm / gm.sum()).astype(np.int64)
