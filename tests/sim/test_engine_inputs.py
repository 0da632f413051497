"""Bad input gets a clear error naming the parameter and the fix; backends are chosen by name."""

from __future__ import annotations

import numpy as np
import pytest

from dtb.errors import BackendUnavailableError, ConfigError, NetworkError, ParameterError
from dtb.network import Network, Population
from dtb.sim import Ensemble, ModelParams, NeuronParams, Receptor, Simulation, available_backends, get_backend
from dtb.sim.description import load_description
from tests.helpers import unconnected


def model_for(*names, **kw):
    return ModelParams({n: NeuronParams() for n in names}, **kw)


def test_delay_must_be_a_multiple_of_dt():
    with pytest.raises(ParameterError, match=r"delay_ms \(0.25\) must be a positive integer multiple of dt_ms \(0.1\)"):
        model_for("P", dt_ms=0.1, delay_ms=0.25)
    assert model_for("P", dt_ms=0.1, delay_ms=1.5).delay_steps == 15


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Receptor("AMPA", -2.0, 0.0, "E"), r"receptor 'AMPA': tau_ms must be > 0"),
        (lambda: NeuronParams(ou_tau_ms=-10.0), r"ou_tau_ms must be > 0"),
        (lambda: NeuronParams(g_L=0.0), r"g_L must be > 0"),
        (lambda: NeuronParams(V_reset_mV=-40.0), r"V_reset_mV \(-40.0\) must be below V_th_mV"),
        (lambda: NeuronParams(ou_sigma=float("nan")), r"ou_sigma must be finite"),
        (lambda: NeuronParams(poisson_weight=300), r"poisson_weight must be an integer in \[0, 255\]"),
        (lambda: NeuronParams(T_ref_ms=-1.0), r"T_ref_ms must be >= 0"),
        (lambda: ModelParams({"P": NeuronParams(g={"AMPA": 1.0})}), r"g must give exactly the receptors"),
        (lambda: ModelParams({"P": NeuronParams()}, integrator="rk4"), r"integrator must be one of"),
    ],
)
def test_invalid_parameters_are_refused_with_the_reason(build, message):
    with pytest.raises(ParameterError, match=message):
        build()


def test_inconsistent_hyperparameter_shapes_are_refused():
    net = unconnected(10)
    with pytest.raises(ParameterError, match=r"'g_AMPA' must have shape \(n_members=2, n_populations\)"):
        Ensemble((1, 2), {"g_AMPA": np.ones((3, 1))})
    with pytest.raises(ParameterError, match=r"shape \(n_members=2, n_populations=1\), got \(2, 2\)"):
        Simulation(net, model_for("P"), ensemble=Ensemble((1, 2), {"g_AMPA": np.ones((2, 2))}))
    with pytest.raises(ParameterError, match="unknown hyperparameter 'tau_m'"):
        Simulation(net, model_for("P"), ensemble=Ensemble((1, 2), {"tau_m": np.ones((2, 1))}))
    with pytest.raises(ParameterError, match="contains NaN"):
        Ensemble((1,), {"i_ext": np.array([[np.nan]])})
    with pytest.raises(ParameterError, match="must be >= 0"):
        Simulation(net, model_for("P"), ensemble=Ensemble((1,), {"g_AMPA": -np.ones((1, 1))}))


def test_inconsistent_arrays_are_refused():
    net = unconnected(10)
    with pytest.raises(ParameterError, match=r"initial_V array must be finite with shape \(10,\)"):
        Simulation(net, model_for("P"), seed=1, initial_V=np.zeros(9))
    with pytest.raises(ParameterError, match=r"ext_gain must be a finite, non-negative array of shape \(10,\)"):
        Simulation(net, model_for("P"), seed=1, ext_gain=np.ones(11))
    with pytest.raises(ParameterError, match="model parameters are missing for populations"):
        Simulation(net, model_for("Q"), seed=1)
    with pytest.raises(ParameterError, match="duration_ms .* must be a non-negative multiple of dt"):
        Simulation(net, model_for("P"), seed=1).run(0.05, progress=False)
    with pytest.raises(ParameterError, match="seed must be an integer in"):
        Simulation(net, model_for("P"), seed=-3)


def test_inconsistent_networks_are_refused():
    pops = [Population("E", 3, "E")]
    with pytest.raises(NetworkError, match="synapse sources must lie in"):
        Network.from_edges(pops, np.array([5]), np.array([0]), 255)
    with pytest.raises(NetworkError, match="sources and targets must have the same length"):
        Network.from_edges(pops, np.array([0, 1]), np.array([0]), 255)
    with pytest.raises(NetworkError, match="kind must be one of"):
        Population("X", 3, "excitatory")
    with pytest.raises(NetworkError, match="population names must be unique"):
        Network.from_edges([Population("E", 1, "E"), Population("E", 1, "I")], np.zeros(0), np.zeros(0), 255)


def test_unknown_or_unavailable_backend_is_refused_clearly():
    with pytest.raises(
        BackendUnavailableError, match=r"unknown backend 'numba'; choose one of \['torch', 'cuda_ext'\]"
    ):
        get_backend("numba")
    reasons = available_backends()
    assert reasons["torch"] is None
    if reasons["cuda_ext"] is not None:
        with pytest.raises(BackendUnavailableError, match="backend 'cuda_ext' is not available: "):
            Simulation(unconnected(2), model_for("P"), seed=1, backend="cuda_ext")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="no CUDA GPU here"):
            get_backend("torch", "cuda")


def test_description_errors_name_the_file_and_key(tmp_path):
    good = "populations: {E: {size: 10, kind: E}}\nprojections: [{source: E, target: E, indegree: 2}]\n"
    path = tmp_path / "net.yaml"
    path.write_text(good.replace("indegree", "in_degree"))
    with pytest.raises(ConfigError, match=r"net.yaml: unknown key\(s\) \['in_degree'\] in projections\[0\]; allowed"):
        load_description(path)
    path.write_text(good + "model: {dt_ms: 0.1, delay_ms: 0.15}\n")
    with pytest.raises(ConfigError, match="net.yaml: .*delay_ms \\(0.15\\) must be a positive integer multiple"):
        load_description(path)
    path.write_text(good.replace("target: E", "target: X"))
    with pytest.raises(ConfigError, match="no population named 'X'"):
        load_description(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_description(tmp_path / "missing.yaml")
    path.write_text(good)
    desc = load_description(path)
    assert desc.network.n_synapses == 20 and np.all(desc.network.in_degrees() == 2)
