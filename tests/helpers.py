"""Small networks for engine tests (one generator module, as nilearn does)."""

from __future__ import annotations

import numpy as np

from dtb.network import Network, Population
from dtb.sim import ModelParams, NeuronParams, RecordSpec, Simulation

QUIET = dict(ou_mu=0.0, ou_sigma=0.0)
#: every engine backend the physics tests run on (skipped where unavailable)
ENGINE_BACKENDS = ("torch", "cuda_ext")


def unconnected(n: int = 1, kind: str = "E", name: str = "P") -> Network:
    """``n`` neurons with no synapses."""
    return Network.from_edges([Population(name, n, kind)], np.zeros(0, np.int64), np.zeros(0, np.int64), 255)


def single_population_model(neuron: NeuronParams, name: str = "P", **model_kw) -> ModelParams:
    return ModelParams({name: neuron}, **model_kw)


def run_unconnected(
    neuron: NeuronParams,
    n: int,
    duration_ms: float,
    record: RecordSpec | None = None,
    seed: int = 1,
    initial_V="rest",
    backend: str = "torch",
    **model_kw,
):
    net = unconnected(n)
    sim = Simulation(
        net,
        single_population_model(neuron, **model_kw),
        seed=seed,
        record=record or RecordSpec(),
        initial_V=initial_V,
        backend=backend,
    )
    return sim, sim.run(duration_ms, progress=False)


def spike_table(tree) -> np.ndarray:
    """Spikes as a sorted (step, member, neuron) int64 array, for exact comparisons."""
    ds = tree["spikes"].to_dataset()
    table = np.stack([ds["step"].values, ds["member"].values.astype(np.int64), ds["neuron"].values], axis=1)
    return table[np.lexsort(table.T[::-1])]


def require_backend(name: str) -> None:
    """Skip the calling test, with the reason, when backend ``name`` cannot run here."""
    import pytest

    from dtb.sim.backends import available_backends

    reason = available_backends()[name]
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
