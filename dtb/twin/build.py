"""Build the spiking model of a region-level twin: counts + connectome -> network, model, ensemble.

The pieces every twin stage shares (assimilation, re-simulation, the phantom's truth run):

- :class:`ModelSettings`: network and neuron settings of a twin (in-degree, weights, step);
- :func:`region_layout` / :func:`build_region_model`: neurons per region + connectome ->
  the network's :class:`~dtb.network.layout.Layout` / :class:`RegionModel` (the
  :class:`~dtb.network.Network`, the :class:`~dtb.sim.ModelParams` with the DTB g_u per
  population, and each population's region); :func:`region_model` joins a layout and its
  network (built here, or loaded from a network store by :mod:`dtb.twin.network`);
- :func:`make_simulation`: an ensemble :class:`~dtb.sim.Simulation` recording 1 ms counts,
  with Gamma(5, 5) gains on the external current (docs/model.md §5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dtb.errors import ConfigError
from dtb.network.build import build_network
from dtb.network.gains import gamma_gains
from dtb.network.graph import Network
from dtb.network.layout import Layout, NetworkConfig, make_layout
from dtb.seeds import derive_seed
from dtb.sim.engine import Ensemble, Simulation
from dtb.sim.params import ModelParams, NeuronParams
from dtb.sim.recording import RecordSpec
from dtb.sim.regional import RegionalBold
from dtb.twin.wiring import WIRINGS
from dtb.validation import check_choice, check_positive, check_unknown_keys

__all__ = [
    "ModelSettings",
    "RegionModel",
    "build_region_model",
    "make_simulation",
    "member_seeds",
    "region_layout",
    "region_model",
]


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Network and neuron settings of a twin.

    Parameters
    ----------
    indegree : reference in-degree K [synapses per neuron].
    weight_excitatory, weight_inhibitory : synaptic weight k (w = k/255) of synapses from E and
        from I neurons; 133/255 puts the DTB voxel E/I model near 10 Hz.
    dt_ms : integration step [ms]; 0.1 is the default and the reference; 1.0 (the fast CPU setting) is an
        approximation whose measured effect on rates and fidelity docs/twin.md gives ("The model's step").
    delay_ms : synaptic delay [ms].
    min_excitatory, min_inhibitory : population floors [neurons].
    wiring : ``dti`` (the subject's connectome), ``random`` (its weights shuffled over its edges) or
        ``knn`` (its ``knn_k`` strongest connections per region); :mod:`dtb.twin.wiring`.
    knn_k : connections kept per region by ``wiring: knn``.
    """

    indegree: int = 50
    weight_excitatory: int = 133
    weight_inhibitory: int = 255
    dt_ms: float = 0.1
    delay_ms: float = 1.0
    min_excitatory: int = 8
    min_inhibitory: int = 2
    wiring: str = "dti"
    knn_k: int = 8

    def __post_init__(self) -> None:
        check_choice(self.wiring, "model.wiring", WIRINGS, error=ConfigError)
        check_positive(self.knn_k, "model.knn_k", integer=True, error=ConfigError, fix="connections kept per region")

    @classmethod
    def from_mapping(cls, values: dict) -> ModelSettings:
        accepted = [f for f in cls.__dataclass_fields__]
        if "graph_seed" in values:
            raise ConfigError(
                "model.graph_seed is no longer a setting: the graph's seed derives from the run's `seed` "
                "(dtb.seeds.derive_seed(seed, 'graph')); remove graph_seed and set the top-level seed"
            )
        check_unknown_keys(values, accepted, what="model setting")
        return cls(**values)

    def describe(self) -> dict:
        return asdict(self)


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
        sizes = np.diff(self.network.offsets)
        return np.bincount(self.population_region, weights=sizes, minlength=self.n_regions).astype(np.int64)


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

    ``graph_seed`` keys the synapse sampling; a twin run passes ``derive_seed(seed, "graph")``.
    """
    layout = region_layout(neuron_counts, connectome, region_labels, settings, graph_seed=graph_seed)
    return region_model(layout, build_network(layout), settings)


def member_seeds(seed: int, n_members: int, purpose: str = "member") -> tuple[int, ...]:
    """Noise seeds of the members of a run with ``seed``: ``derive_seed(seed, purpose, m)``."""
    return tuple(derive_seed(seed, purpose, m) for m in range(n_members))


def make_simulation(
    region_model: RegionModel,
    *,
    n_members: int,
    seed: int,
    gain_seed: int,
    member_purpose: str = "member",
    backend: str = "torch",
    device: str = "cpu",
    record_spikes: bool = False,
    comm=None,
    layout: str = "members",
) -> RegionalBold:
    """An ensemble of ``n_members`` on the twin's network, observed per region through BOLD.

    ``seed`` is the run seed: member m's noise uses ``derive_seed(seed, member_purpose, m)``
    (:func:`member_seeds`); ``gain_seed`` keys the Gamma gains as given. With ``comm`` (an MPI
    communicator of more than one rank) the ensemble is a
    :class:`~dtb.sim.distributed.DistributedSimulation` spread over the ranks by ``layout``
    (``members`` or ``neurons``); its results are bitwise those of one process.
    """
    network = region_model.network
    gains = gamma_gains(gain_seed, np.arange(network.n_neurons))
    kwargs = dict(
        ensemble=Ensemble(member_seeds(seed, n_members, member_purpose)),
        backend=backend,
        device=device,
        record=RecordSpec(
            population_counts=True,
            count_bin_ms=1.0,
            spikes=record_spikes,
            sample_every_ms=region_model.model.dt_ms,
        ),
        ext_gain=gains,
    )
    if comm is not None and comm.Get_size() > 1:
        from dtb.sim.distributed import DistributedConfig, DistributedSimulation

        sim = DistributedSimulation(
            network, region_model.model, comm=comm, config=DistributedConfig(layout=layout), **kwargs
        )
    else:
        sim = Simulation(network, region_model.model, **kwargs)
    return RegionalBold(sim, region_model.population_region, region_model.n_regions)
