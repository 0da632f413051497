"""The ``model`` section of a twin config: network and neuron settings of the forward model.

Kept free of numpy and torch, so ``dtb phantom --help`` and the config checks import it cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dtb.errors import ConfigError
from dtb.validation import check_choice, check_positive, check_unknown_keys

__all__ = ["ModelSettings", "WIRINGS"]

#: Accepted ``model.wiring`` values of a twin config (:mod:`dtb.assembly.wiring`).
WIRINGS = ("dti", "random", "knn")


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
        ``knn`` (its ``knn_k`` strongest connections per region); :mod:`dtb.assembly.wiring`.
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
