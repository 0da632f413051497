"""The small network and run settings shared by the distributed tests and their MPI worker."""

from __future__ import annotations

import numpy as np

from dtb.network import Population, gamma_gains
from dtb.network.fixed_indegree import Projection, connect_fixed_indegree
from dtb.sim import Ensemble, ModelParams, NeuronParams, RecordSpec

N_VOXELS = 3
POPULATIONS = [Population(f"v{v}_{k}", size, k) for v in range(N_VOXELS) for k, size in (("E", 160), ("I", 40))]


def network():
    """Three voxels of 160 E + 40 I neurons, local E/I loops and long-range E -> E."""
    projections = []
    for v in range(N_VOXELS):
        for w in range(N_VOXELS):
            projections.append(Projection(f"v{w}_E", f"v{v}_E", 30 if v == w else 10, 160))
        projections += [
            Projection(f"v{v}_I", f"v{v}_E", 15, 255),
            Projection(f"v{v}_E", f"v{v}_I", 40, 160),
            Projection(f"v{v}_I", f"v{v}_I", 15, 255),
        ]
    return connect_fixed_indegree(POPULATIONS, projections, 11)


def model() -> ModelParams:
    neuron = NeuronParams(ou_mu=0.85, poisson_weight=40)
    return ModelParams({p.name: neuron for p in POPULATIONS})


def ensemble(n_members: int) -> Ensemble:
    """Members differ in seed, OU mean, Poisson rate and external current."""
    P = len(POPULATIONS)
    member = np.arange(n_members)[:, None]
    return Ensemble(
        tuple(5 + m for m in range(n_members)),
        {
            "ou_mu": 0.8 + 0.03 * member + 0.01 * np.arange(P)[None, :],
            "poisson_rate_hz": np.full((n_members, P), 200.0) * (member % 2),
            "i_ext": np.tile([0.05, 0.0] * N_VOXELS, (n_members, 1)),
        },
    )


RECORD = RecordSpec(count_bin_ms=0.5, sample_neurons=(450, 0, 250, 599), sample_every_ms=0.5)

#: name -> settings; total_ms is run as first_ms then the rest (the first stops mid-interval)
CASES = {
    "neurons-torch": dict(layout="neurons", backend="torch", members=2),
    "neurons-cuda_ext": dict(layout="neurons", backend="cuda_ext", members=2),
    "members-torch": dict(layout="members", backend="torch", members=4),
    # restart from a checkpoint mid-interval, with new hyperparameters for the second part
    "neurons-torch-resume": dict(layout="neurons", backend="torch", members=2, resume=True),
}
for _case in CASES.values():
    _case.update(first_ms=15.5, total_ms=40.0, chunk_ms=5.0)


def simulation_kwargs(case: dict) -> dict:
    """Arguments shared by Simulation and DistributedSimulation for a case."""
    n = sum(p.size for p in POPULATIONS)
    return dict(
        network=network(),
        model=model(),
        ensemble=ensemble(case["members"]),
        backend=case["backend"],
        record=RECORD,
        ext_gain=gamma_gains(3, np.arange(n)),
    )


def records(trees) -> dict[str, np.ndarray]:
    """Counts, the spike table and sampled V of consecutive runs, as plain arrays."""
    counts = np.concatenate([t["population_counts"]["spike_count"].values for t in trees])
    spikes = np.concatenate(
        [
            np.stack([t["spikes"][k].values.astype(np.int64) for k in ("step", "member", "neuron")], axis=1)
            for t in trees
        ]
    )
    V = np.concatenate([t["samples"]["V"].values for t in trees])
    return {"counts": counts, "spikes": spikes, "V": V, "neuron": trees[0]["samples"]["neuron"].values}


def new_hyperparameters(n_members: int) -> dict[str, np.ndarray]:
    """Hyperparameters set between the two runs of a resume case (as an assimilation would)."""
    P = len(POPULATIONS)
    return {"ou_mu": np.full((n_members, P), 0.9) - 0.02 * np.arange(n_members)[:, None]}
