"""A subject's regions -> the twin's network and model parameters (docs/model.md §3).

- :func:`scaled_counts`, :func:`wired_connectome`: neurons per region scaled to ``neurons_total``
  and the connectome with the ``model.wiring`` (keyed by ``derive_seed(seed, "wiring")``);
- :func:`source_layout` / :func:`region_layout`: neurons per region + connectome -> the network's
  :class:`~dtb.network.layout.Layout` (voxel E/I model per region), the graph keyed by
  ``derive_seed(seed, "graph")``;
- :func:`region_model` / :func:`build_region_model`: a layout and its network (built here, or
  loaded from a network store by :mod:`dtb.twin.network`) -> :class:`RegionModel` (the
  :class:`~dtb.network.Network` and the :class:`~dtb.sim.ModelParams` with the DTB g_u per
  population: every stage uses this one g scaling, the weights k staying in the graph).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from dtb.assembly.settings import ModelSettings
from dtb.assembly.wiring import rewire
from dtb.network.build import build_network
from dtb.network.graph import Network
from dtb.network.layout import Layout, NetworkConfig, largest_remainder, make_layout
from dtb.seeds import derive_seed
from dtb.sim.params import ModelParams, NeuronParams

__all__ = [
    "RegionModel",
    "build_region_model",
    "region_layout",
    "region_model",
    "scaled_counts",
    "source_layout",
    "wired_connectome",
]


@dataclass(frozen=True, eq=False)
class RegionModel:
    """A twin's network and model parameters.

    Attributes
    ----------
    network : Network
    model : ModelParams
    population_region : int array (n_populations,), index into ``region_labels``.
    region_labels : labels of the regions kept (regions without neurons or connections are dropped).
    kept_regions : int array, index of every kept region in the input order.
    """

    network: Network
    model: ModelParams
    population_region: np.ndarray
    region_labels: tuple[str, ...]
    kept_regions: np.ndarray

    @property
    def n_regions(self) -> int:
        return len(self.region_labels)

    def neuron_count(self) -> np.ndarray:
        """Neurons per kept region [neurons] (after the population floors)."""
        sizes = np.diff(self.network.offsets)
        return np.bincount(self.population_region, weights=sizes, minlength=self.n_regions).astype(np.int64)


def scaled_counts(counts, total: int) -> np.ndarray:
    """Neurons per region proportional to ``counts``, summing exactly to ``total`` (largest remainder)."""
    counts = np.asarray(counts, dtype=np.float64)
    return largest_remainder(int(total), counts / counts.sum())


def wired_connectome(sc, settings: ModelSettings, *, seed: int) -> np.ndarray:
    """The connectome ``sc`` (row = source) with ``settings.wiring``; ``seed`` is the run's seed."""
    return rewire(sc, settings.wiring, seed=derive_seed(seed, "wiring"), knn_k=settings.knn_k)


def region_layout(neuron_counts, connectome, region_labels, settings: ModelSettings, *, graph_seed: int) -> Layout:
    """Populations and sampling tables of a twin's network (docs/model.md §3, voxel E/I model per region).

    ``connectome`` has row = inputs of a target (the builder's convention); ``graph_seed`` keys the
    synapse sampling (a twin run passes ``derive_seed(seed, "graph")``).
    """
    cfg = NetworkConfig(
        indegree=settings.indegree,
        model="ei",
        seed=graph_seed,
        min_excitatory=settings.min_excitatory,
        min_inhibitory=settings.min_inhibitory,
        weight=settings.weight_excitatory,
        weight_inhibitory=settings.weight_inhibitory,
    )
    labels = [str(x) for x in region_labels]
    return make_layout(np.asarray(neuron_counts), connectome, cfg, voxel_labels=labels)


def source_layout(counts, connectome, labels, settings: ModelSettings, *, seed: int) -> Layout:
    """The layout of a twin's network from region inputs: ``counts`` per region, ``connectome``
    with row = source (the BIDS relmat convention), the graph keyed by ``derive_seed(seed, "graph")``."""
    # region inputs store row = source; the builder wants row = inputs of a target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return region_layout(
            counts,
            np.asarray(connectome, dtype=np.float64).T,
            labels,
            settings,
            graph_seed=derive_seed(seed, "graph"),
        )


def region_model(layout: Layout, network: Network, settings: ModelSettings) -> RegionModel:
    """The :class:`RegionModel` of ``layout`` with its built (or loaded) ``network``."""
    params = {
        name: NeuronParams(g={k.removeprefix("g_"): v for k, v in g.items()})
        for name, g in layout.population_parameters().items()
    }
    model = ModelParams(populations=params, dt_ms=settings.dt_ms, delay_ms=settings.delay_ms)
    return RegionModel(
        network=network,
        model=model,
        population_region=np.asarray(layout.population_voxel, dtype=np.int64),
        region_labels=tuple(layout.voxel_labels),
        kept_regions=np.asarray(layout.voxel_ids, dtype=np.int64),
    )


def build_region_model(
    neuron_counts, connectome, region_labels, settings: ModelSettings, *, graph_seed: int
) -> RegionModel:
    """Network (docs/model.md §3, voxel E/I model per region) and model parameters of a twin.

    ``connectome`` has row = inputs of a target; ``graph_seed`` keys the synapse sampling (a twin
    run passes ``derive_seed(seed, "graph")``).
    """
    layout = region_layout(neuron_counts, connectome, region_labels, settings, graph_seed=graph_seed)
    return region_model(layout, build_network(layout), settings)
