"""The layout of a network: its populations, their in-degrees and source tables.

:func:`make_layout` turns neuron counts, a connectome and a :class:`NetworkConfig` into a
:class:`Layout`: everything the synapse sampler needs, small (per population and per
connectome entry, never per neuron or synapse), so every process can hold it.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from dtb.apportion import largest_remainder
from dtb.errors import NetworkError
from dtb.network.connectivity import as_connectome, row_normalised, unconnected_voxels
from dtb.network.graph import Population
from dtb.network.populations import MODEL_NAMES, ColumnModel, ei_model, laminar_model
from dtb.validation import check_choice, check_integer, check_positive, check_seed

__all__ = ["NetworkConfig", "Layout", "make_layout", "largest_remainder", "SPLIT_MODES"]

log = logging.getLogger("dtb")

#: How a target's K inputs are split among its source columns (see NetworkConfig).
SPLIT_MODES = ("exact", "multinomial")


@dataclass(frozen=True)
class NetworkConfig:
    """How to build a network (docs/model.md §3).

    Parameters
    ----------
    indegree : K, the reference in-degree (synapses per neuron; default 100).
    model : ``"ei"`` (voxel E/I model everywhere) or ``"laminar"`` (laminar column in
        cortical voxels, E/I model in subcortical ones).
    seed : graph seed (non-negative int < 2**64); the graph is a pure function of it and
        of the target neuron id.
    min_excitatory, min_inhibitory : floor of every E / I population size [neurons]
        (defaults 200 / 50; set to 1 for tiny test networks).
    weight : integer k of every synapse, w = k/255 (default 255, i.e. w = 1: the g_u
        tables of docs/model.md §1 and §3.2 are calibrated for unit weights).
    weight_inhibitory : integer k of synapses from inhibitory neurons (default: ``weight``).
        With the DTB g_u, ``weight=133, weight_inhibitory=255`` puts the voxel E/I model in
        the ~10 Hz regime (unit weights everywhere overdrive it).
    split : ``"exact"`` (default): the K_a inputs of a target are apportioned to its
        source columns by largest remainder (57/14/29 at K = 100), the long-range ones are
        then drawn from the connectome row; ``"multinomial"``: every input draws its
        column from the categorical row (docs/model.md §3.4 literally).
    long_range_sources : ``"all_e"`` (every E layer by neuron share) or ``"l5e"``
        (laminar model only).
    max_redraws : rounds of redrawing duplicate sources before a remaining duplicate is
        dropped (and counted in the metadata).
    """

    indegree: int = 100
    model: str = "ei"
    seed: int = 0
    min_excitatory: int = 200
    min_inhibitory: int = 50
    weight: int = 255
    weight_inhibitory: int | None = None
    split: str = "exact"
    long_range_sources: str = "all_e"
    max_redraws: int = 64

    def __post_init__(self) -> None:
        for name in ("indegree", "min_excitatory", "min_inhibitory", "max_redraws"):
            check_positive(getattr(self, name), name, integer=True, error=NetworkError)
        check_choice(self.model, "model", MODEL_NAMES, error=NetworkError)
        check_choice(self.split, "split", SPLIT_MODES, error=NetworkError)
        check_integer(self.weight, "weight", 1, 255, error=NetworkError, fix="the weight is w = k/255")
        check_integer(
            self.weight_inhibitory, "weight_inhibitory", 1, 255, allow_none=True, error=NetworkError, fix="w = k/255"
        )
        check_seed(self.seed, "seed", error=NetworkError)


@dataclass(frozen=True, eq=False)
class Layout:
    """Populations and sampling tables of a network (no synapses).

    Attributes
    ----------
    config : the NetworkConfig used.
    populations : tuple of Population, in id order (voxel-major).
    models : the ColumnModels in use; ``voxel_model[v]`` indexes it.
    voxel_ids : original index of every kept voxel (dropped voxels are absent).
    voxel_labels : label of every kept voxel.
    voxel_model : int array (n_kept,), model index per kept voxel.
    voxel_first_population : int array (n_kept + 1,), first population index per voxel.
    population_voxel, population_local : int arrays (P,): kept-voxel index and index within
        the voxel's model of every population.
    offsets : int64 array (P + 1,), first neuron id of every population.
    column_counts : int array (P, max_local + 1): in ``exact`` split, synapses from each local
        population (by local index) and, in the last column, from other voxels.
    column_probabilities : float array (P, max_local + 1): the source row of every population.
    indegrees : int array (P,), K_a per population (after dropping surplus).
    lr_indptr, lr_population, lr_cdf : long-range table (CSR over kept voxels): row v lists
        the global source populations of voxel v's long-range inputs with a cumulative
        probability shifted by v (``v < lr_cdf <= v + 1``).
    metadata : JSON-safe record of what was dropped and why.
    """

    config: NetworkConfig
    populations: tuple[Population, ...]
    models: tuple[ColumnModel, ...]
    voxel_ids: np.ndarray
    voxel_labels: tuple[str, ...]
    voxel_model: np.ndarray
    voxel_first_population: np.ndarray
    population_voxel: np.ndarray
    population_local: np.ndarray
    offsets: np.ndarray
    column_counts: np.ndarray
    column_probabilities: np.ndarray
    indegrees: np.ndarray
    lr_indptr: np.ndarray
    lr_population: np.ndarray
    lr_cdf: np.ndarray
    metadata: dict = field(default_factory=dict)

    @property
    def n_neurons(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_synapses(self) -> int:
        """Synapses before duplicate drops (sum of in-degrees)."""
        return int(np.sum(np.diff(self.offsets) * self.indegrees))

    def population_parameters(self) -> dict:
        """Per population, the dict of calibrated g_u (for the sim layer's NeuronParams)."""
        return {
            pop.name: dict(self.models[self.voxel_model[v]].conductances[a])
            for pop, v, a in zip(self.populations, self.population_voxel, self.population_local)
        }


def _check_counts(neuron_counts) -> np.ndarray:
    counts = np.asarray(neuron_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise NetworkError(
            f"neuron_counts must be a non-empty 1-D array (one count per voxel), got shape {counts.shape}"
        )
    bad = ~np.isfinite(counts) | (counts < 0)
    if bad.any():
        raise NetworkError(
            f"neuron_counts has {int(bad.sum())} negative or NaN value(s) (first at voxel {int(np.argmax(bad))}); "
            "give finite counts >= 0 (0 drops the voxel)"
        )
    if np.any(counts != np.rint(counts)):
        raise NetworkError("neuron_counts must be whole numbers; round them first")
    return counts.astype(np.int64)


def make_layout(
    neuron_counts,
    connectome=None,
    config: NetworkConfig | None = None,
    *,
    cortical=None,
    indegree_scale=None,
    voxel_labels=None,
) -> Layout:
    """Populations, in-degrees and source tables of a network (docs/model.md §3.1-3.3).

    Parameters
    ----------
    neuron_counts : int array (n_voxels,)
        Neurons per voxel or region (see :func:`neuron_counts_from_grey_matter`); 0 drops a voxel.
    connectome : array (n_voxels, n_voxels) or scipy.sparse matrix, optional
        Structural connectivity (streamline counts); row v = inputs of v.  May be omitted
        only for a single voxel, whose long-range share is then given to its local inputs.
    config : NetworkConfig
    cortical : bool array (n_voxels,), optional
        True for cortical voxels (laminar column under ``model="laminar"``); default all True.
    indegree_scale : float array (n_voxels,), optional
        Per-voxel in-degree scale (e.g. from a PET SV2A map, mean 1).
    voxel_labels : sequence of str, optional
        Names used in population names ``"<label>:<population>"``; default ``"v<index>"``.
    """
    config = config or NetworkConfig()
    counts = _check_counts(neuron_counts)
    n_voxels = counts.size
    cortical_mask = np.ones(n_voxels, bool) if cortical is None else np.asarray(cortical, dtype=bool)
    if cortical_mask.shape != (n_voxels,):
        raise NetworkError(f"cortical must have one flag per voxel ({n_voxels}), got shape {cortical_mask.shape}")
    scale = np.ones(n_voxels) if indegree_scale is None else np.asarray(indegree_scale, dtype=np.float64)
    if scale.shape != (n_voxels,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise NetworkError(
            f"indegree_scale must be a positive finite array with one value per voxel ({n_voxels}), "
            f"got shape {scale.shape}"
        )
    labels = [f"v{v}" for v in range(n_voxels)] if voxel_labels is None else [str(x) for x in voxel_labels]
    if len(labels) != n_voxels or len(set(labels)) != n_voxels:
        raise NetworkError(f"voxel_labels must be {n_voxels} unique names, got {len(labels)}")

    keep = counts > 0
    meta: dict = {"dropped_voxels_no_neurons": np.flatnonzero(~keep).tolist()}
    if (~keep).any():
        warnings.warn(f"dropping {int((~keep).sum())} voxel(s) with no neurons (grey matter)", stacklevel=2)
    if connectome is None:
        if n_voxels != 1:
            raise NetworkError(
                f"a connectome is needed for {n_voxels} voxels; give a ({n_voxels}, {n_voxels}) matrix "
                "(only a single-voxel network may omit it)"
            )
        if not keep.any():
            raise NetworkError("the only voxel has no neurons; give neuron_counts > 0")
        matrix = None
        meta["dropped_voxels_no_connections"] = []
        meta["long_range"] = "none (single voxel): the outer share is given to local inputs"
    else:
        matrix = as_connectome(connectome, n_voxels)
        no_conn = unconnected_voxels(matrix, keep)
        meta["dropped_voxels_no_connections"] = np.flatnonzero(no_conn).tolist()
        if no_conn.any():
            warnings.warn(
                f"dropping {int(no_conn.sum())} voxel(s) with no long-range connections to other voxels: "
                f"{np.flatnonzero(no_conn)[:10].tolist()}{' ...' if no_conn.sum() > 10 else ''}",
                stacklevel=2,
            )
        keep &= ~no_conn
        if not keep.any():
            raise NetworkError(
                "every voxel was dropped (no neurons or no connections); check neuron_counts and connectome"
            )
        matrix = row_normalised(matrix[keep][:, keep].tocsr())
        meta["long_range"] = "connectome, zero diagonal, row-normalised"
    voxel_ids = np.flatnonzero(keep)
    kept_counts, kept_cortical, kept_scale = counts[keep], cortical_mask[keep], scale[keep]

    models = (ei_model(),) if config.model == "ei" else (ei_model(), laminar_model(config.long_range_sources))
    voxel_model = np.where(kept_cortical, len(models) - 1, 0).astype(np.int64)
    max_local = max(m.n_populations for m in models)

    pops: list[Population] = []
    pop_voxel, pop_local, indegrees, col_counts, col_probs = [], [], [], [], []
    surplus: dict[str, int] = {}
    split_cache: dict[tuple, np.ndarray] = {}
    floor_total = 0
    first_pop = [0]
    for v, (vid, n_v) in enumerate(zip(voxel_ids, kept_counts)):
        model = models[voxel_model[v]]
        floors = [config.min_excitatory if k == "E" else config.min_inhibitory for k in model.kinds]
        sizes = [max(f, int(round(n_v * s))) for f, s in zip(floors, model.shares)]
        floor_total += sum(sizes) - int(n_v)
        for a, (name, kind, size) in enumerate(zip(model.population_names, model.kinds, sizes)):
            row = np.array(model.source_probabilities[a], dtype=np.float64)
            if matrix is None:
                row[-1] = 0.0
                row /= row.sum()
            k_a = max(1, int(np.floor(config.indegree * model.indegree_scales[a] * kept_scale[v] + 1e-9)))
            split_key = (int(voxel_model[v]), a, k_a, matrix is None)
            if split_key not in split_cache:
                split_cache[split_key] = largest_remainder(k_a, row)
            counts_a = split_cache[split_key].copy()
            pool = np.array([s - (b == a) for b, s in enumerate(sizes)])
            over = np.maximum(counts_a[:-1] - pool, 0)
            pop_name = f"{labels[vid]}:{name}"
            if over.any():
                counts_a[:-1] -= over
                surplus[pop_name] = int(over.sum())
                k_a = int(counts_a.sum())
            padded_c = np.zeros(max_local + 1, np.int64)
            padded_p = np.zeros(max_local + 1)
            padded_c[: model.n_populations], padded_c[-1] = counts_a[:-1], counts_a[-1]
            padded_p[: model.n_populations], padded_p[-1] = row[:-1], row[-1]
            pops.append(Population(pop_name, size, kind))
            pop_voxel.append(v)
            pop_local.append(a)
            indegrees.append(k_a)
            col_counts.append(padded_c)
            col_probs.append(padded_p)
        first_pop.append(len(pops))
    if floor_total > 0:
        log.info("population floors added %d neurons beyond the requested counts", floor_total)
    if surplus:
        warnings.warn(
            f"in-degree larger than a local source population in {len(surplus)} population(s); the surplus "
            f"synapses ({sum(surplus.values())} per neuron in total) are dropped and recorded",
            stacklevel=2,
        )
    meta["floor_added_neurons"] = int(max(floor_total, 0))
    meta["surplus_dropped_per_neuron"] = surplus

    sizes = np.array([p.size for p in pops], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    first_pop_arr = np.asarray(first_pop, dtype=np.int64)
    lr_indptr, lr_pop, lr_cdf = _long_range_table(matrix, models, voxel_model, first_pop_arr)
    meta.update(
        {
            "model": config.model,
            "n_voxels_kept": int(voxel_ids.size),
            "kept_voxel_ids": voxel_ids.tolist(),
        }
    )
    return Layout(
        config=config,
        populations=tuple(pops),
        models=models,
        voxel_ids=voxel_ids,
        voxel_labels=tuple(labels[i] for i in voxel_ids),
        voxel_model=voxel_model,
        voxel_first_population=first_pop_arr,
        population_voxel=np.asarray(pop_voxel, dtype=np.int64),
        population_local=np.asarray(pop_local, dtype=np.int64),
        offsets=offsets,
        column_counts=np.asarray(col_counts, dtype=np.int64),
        column_probabilities=np.asarray(col_probs),
        indegrees=np.asarray(indegrees, dtype=np.int64),
        lr_indptr=lr_indptr,
        lr_population=lr_pop,
        lr_cdf=lr_cdf,
        metadata=meta,
    )


def _long_range_table(matrix, models, voxel_model, first_pop):
    """CSR over target voxels of (source population, shifted cumulative probability):
    entry (v, (w, b)) has probability ``P_vw * output_weight_b``."""
    n_kept = voxel_model.size
    if matrix is None:
        return np.zeros(n_kept + 1, np.int64), np.zeros(0, np.int64), np.zeros(0)
    outputs = [np.flatnonzero(m.output_weights > 0) for m in models]
    weights = [m.output_weights[o] for m, o in zip(models, outputs)]
    n_out = np.array([o.size for o in outputs])[voxel_model]  # per source voxel
    src_voxel = matrix.indices.astype(np.int64)
    reps = n_out[src_voxel]
    entry_row = np.repeat(np.repeat(np.arange(n_kept), np.diff(matrix.indptr)), reps)
    entry_voxel = np.repeat(src_voxel, reps)
    entry_p = np.repeat(matrix.data, reps)
    # position of each entry within its source voxel's output list
    starts = np.concatenate([[0], np.cumsum(reps)[:-1]])
    within = np.arange(entry_voxel.size) - np.repeat(starts, reps)
    local = np.zeros(entry_voxel.size, np.int64)
    share = np.zeros(entry_voxel.size)
    for m, (o, w) in enumerate(zip(outputs, weights)):
        sel = voxel_model[entry_voxel] == m
        local[sel] = o[within[sel]]
        share[sel] = w[within[sel]]
    population = first_pop[entry_voxel] + local
    prob = entry_p * share
    indptr = np.concatenate([[0], np.cumsum(np.bincount(entry_row, minlength=n_kept))]).astype(np.int64)
    cum = np.cumsum(prob)
    row_start_cum = np.concatenate([[0.0], cum])[indptr[:-1]]
    cdf = cum - np.repeat(row_start_cum, np.diff(indptr))
    row_total = np.repeat(cdf[indptr[1:] - 1], np.diff(indptr))
    cdf = cdf / row_total + entry_row
    cdf[indptr[1:] - 1] = np.arange(n_kept) + 1.0
    return indptr, population, cdf
