"""Physics of the neuron model (docs/model.md §1-2): stationary moments, rates, decay.

Every test runs on every backend available here (``backend`` fixture: torch, and the
cuda_ext C++ kernels where they build; a backend that cannot run is skipped with its reason).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from dtb.network import Network, Population
from dtb.sim import ModelParams, NeuronParams, RecordSpec, Simulation
from tests.helpers import ENGINE_BACKENDS, QUIET, require_backend, run_unconnected, spike_table

NO_THRESHOLD = dict(V_th_mV=1e9)


@pytest.fixture(params=ENGINE_BACKENDS)
def backend(request) -> str:
    require_backend(request.param)
    return request.param


def test_ou_current_has_stationary_mean_and_sd(backend):
    neuron = NeuronParams(**NO_THRESHOLD)  # DTB defaults: mu 0.66, sigma 0.12, tau 10 ms
    record = RecordSpec(spikes=False, sample_neurons=tuple(range(0, 2000, 5)), sample_every_ms=10.0)
    _, tree = run_unconnected(neuron, 2000, 1000.0, record, backend=backend)
    current = tree["samples"]["I_bg"].sel(time=slice(0.1, None)).values.ravel()
    n_eff = current.size  # samples 10 ms = one tau apart: nearly independent
    assert abs(current.mean() - 0.66) < 4 * 0.12 / math.sqrt(n_eff / 2)
    assert current.std() == pytest.approx(0.12, rel=0.03)


def test_free_membrane_has_dtb_mean_and_sd(backend):
    """Without threshold, V = V_L + mu/g_L = -53.0 mV with SD (sigma/g_L) sqrt(tau/(tau+tau_m)) ~ 1.9 mV."""
    neuron = NeuronParams(**NO_THRESHOLD)
    record = RecordSpec(spikes=False, sample_neurons=tuple(range(0, 2000, 5)), sample_every_ms=20.0)
    _, tree = run_unconnected(neuron, 2000, 1000.0, record, backend=backend)
    V = tree["samples"]["V"].sel(time=slice(0.3, None)).values.ravel()
    tau, tau_m = 10.0, 1.0 / 0.03
    expected_sd = (0.12 / 0.03) * math.sqrt(tau / (tau + tau_m))
    assert V.mean() == pytest.approx(-53.0, abs=0.1)
    assert V.std() == pytest.approx(expected_sd, rel=0.05)
    assert expected_sd == pytest.approx(1.9, abs=0.05)


@pytest.mark.parametrize("integrator", ["exponential_euler", "forward_euler"])
@pytest.mark.parametrize("current", [0.8, 1.0, 1.5, 3.0])
def test_constant_current_rate_matches_analytic_lif_rate(current, integrator, backend):
    g_L, V_L, V_th, V_reset, T_ref, dt = 0.03, -75.0, -50.0, -65.0, 5.0, 0.1
    neuron = NeuronParams(**QUIET, i_ext=current)
    _, tree = run_unconnected(neuron, 1, 1000.0, initial_V="reset", integrator=integrator, backend=backend)
    steps = spike_table(tree)[:, 0]
    V_inf = V_L + current / g_L
    T_int = (1.0 / g_L) * math.log((V_inf - V_reset) / (V_inf - V_th))
    analytic_rate = 1000.0 / (T_ref + T_int)
    isi_steps = np.diff(steps)
    assert np.all(isi_steps == isi_steps[0]), "constant drive must give a perfectly regular spike train"
    measured_rate = 1000.0 / (isi_steps[0] * dt)
    # spikes are detected on the step grid: the ISI is T_ref + T_int rounded up to a step
    assert measured_rate == pytest.approx(analytic_rate, rel=1.2 * dt / (T_ref + T_int))
    if integrator == "exponential_euler":  # exact on the grid: the first step at or above threshold
        assert isi_steps[0] == round(T_ref / dt) + math.ceil(T_int / dt - 1e-9)


def test_no_spikes_below_rheobase(backend):
    rheobase = 0.03 * (-50.0 - -75.0)  # g_L (V_th - V_L) = 0.75
    neuron = NeuronParams(**QUIET, i_ext=0.999 * rheobase)
    _, tree = run_unconnected(neuron, 3, 1000.0, initial_V="reset", backend=backend)
    assert tree["spikes"].sizes["spike"] == 0
    neuron_above = NeuronParams(**QUIET, i_ext=1.01 * rheobase)
    _, tree = run_unconnected(neuron_above, 3, 1000.0, initial_V="reset", backend=backend)
    assert tree["spikes"].sizes["spike"] > 0


def test_refractory_period_is_held_to_the_step(backend):
    """A huge current fires again on the first step after T_ref; V sits at V_reset meanwhile."""
    neuron = NeuronParams(**QUIET, i_ext=1000.0, T_ref_ms=2.3)
    record = RecordSpec(sample_neurons=(0,), sample_every_ms=0.1)
    _, tree = run_unconnected(neuron, 1, 50.0, record, initial_V="reset", backend=backend)
    steps = spike_table(tree)[:, 0]
    n_ref = 23
    assert np.all(np.diff(steps) == n_ref + 1)
    V = tree["samples"]["V"].values[:, 0, 0]  # sample k = end of step k
    for s in steps[:-1]:
        assert np.all(V[s : s + n_ref + 1] == -65.0)
        assert V[s + n_ref + 1] == -65.0  # the next spike resets again on the first free step


def _one_shot_sources(target_params: NeuronParams, weight: int, delay_ms: float = 1.0):
    """An E and an I source neuron that fire once at step 0, projecting onto two targets."""
    pops = [Population("srcE", 1, "E"), Population("srcI", 1, "I"), Population("tgt", 2, "E")]
    net = Network.from_edges(pops, np.array([0, 1]), np.array([2, 3]), np.array([weight, weight], np.uint8))
    once = NeuronParams(**QUIET, T_ref_ms=10_000.0)
    model = ModelParams({"srcE": once, "srcI": once, "tgt": target_params}, delay_ms=delay_ms)
    return net, model


def test_each_receptor_decays_exactly_after_a_single_spike(backend):
    weight = 200
    target = NeuronParams(**QUIET, **NO_THRESHOLD)
    net, model = _one_shot_sources(target, weight, delay_ms=1.0)
    record = RecordSpec(sample_neurons=(2, 3), sample_every_ms=0.1)
    sim = Simulation(
        net, model, seed=3, record=record, backend=backend, initial_V=np.array([-40.0, -40.0, -75.0, -75.0])
    )
    tree = sim.run(300.0, progress=False)
    spikes = spike_table(tree)
    assert spikes[:, 0].tolist() == [0, 0] and spikes[:, 2].tolist() == [0, 1]
    J = tree["samples"]["J"].values[:, 0]  # (time, receptor, neuron); row k = end of step k
    D = 10
    w = weight / 255.0
    n = np.arange(J.shape[0] - D)
    for u, receptor in enumerate(model.receptors):
        driven = 2 if receptor.source_kind == "E" else 3  # column 0: target of srcE, 1: of srcI
        other = 1 - (driven - 2)
        column = driven - 2
        assert np.all(J[:D, u, column] == 0.0), "no input before the delay has elapsed"
        expected = w * np.exp(-n * 0.1 / receptor.tau_ms)
        # float32 recursion J <- J * f32(exp(-dt/tau)): relative error grows like n * 2**-24
        normal = expected > 1e-30  # below that float32 goes subnormal
        relative_error = np.abs(J[D:, u, column] - expected)[normal] / expected[normal]
        bound = 1e-7 * (1 + n[normal])
        assert np.all(relative_error <= bound), f"{receptor.name}: max rel. error {relative_error.max():.2e}"
        assert np.all(J[:, u, other] == 0.0), f"{receptor.name} must ignore sources of the other kind"


def _fine_reference(model: ModelParams, jump_time_ms: float, weight: float, t_end_ms: float) -> callable:
    """V(t) of the target, solved with scipy (rtol 1e-10) for the same J jump."""
    p = model.populations["tgt"]
    rec = {r.name: r for r in model.receptors}
    E_names = [r.name for r in model.receptors if r.source_kind == "E"]

    def rhs(t, y):
        V = y[0]
        current = -p.g_L * (V - p.V_L_mV) + p.i_ext
        if t >= jump_time_ms:
            for u in E_names:
                J = weight * math.exp(-(t - jump_time_ms) / rec[u].tau_ms)
                current += p.g[u] * J * (rec[u].E_rev_mV - V)
        return [current / p.C]

    sol = solve_ivp(
        rhs, (0.0, t_end_ms), [-70.0], rtol=1e-10, atol=1e-10, dense_output=True, max_step=0.01, first_step=1e-4
    )
    return lambda t: sol.sol(t)[0]


@pytest.mark.parametrize("integrator,tolerance_mV", [("exponential_euler", 0.15), ("forward_euler", 0.2)])
def test_integrators_match_a_fine_step_reference(integrator, tolerance_mV, backend):
    """V of a neuron receiving one strong AMPA+NMDA jump (an 11 mV excursion), against an
    adaptive ODE solution.  Both schemes hold J at its step-start value, so they are first
    order: measured max errors 0.13 / 0.065 mV (exponential Euler) and 0.15 / 0.077 mV
    (forward Euler) at dt = 0.1 / 0.05 ms."""
    target = NeuronParams(
        **QUIET, **NO_THRESHOLD, i_ext=0.15, g={"AMPA": 0.05, "NMDA": 0.01, "GABA_A": 0.03, "GABA_B": 0.002}
    )
    errors = {}
    for dt in (0.1, 0.05):
        net, model = _one_shot_sources(target, 255, delay_ms=1.0)
        model = ModelParams(dict(model.populations), dt_ms=dt, delay_ms=1.0, integrator=integrator)
        sim = Simulation(
            net,
            model,
            seed=3,
            backend=backend,
            record=RecordSpec(sample_neurons=(2,), sample_every_ms=0.1),
            initial_V=np.array([-40.0, -40.0, -70.0, -70.0]),
        )
        tree = sim.run(100.0, progress=False)
        t_ms = tree["samples"]["time"].values * 1000.0
        V = tree["samples"]["V"].values[:, 0, 0]
        # source spikes in step 0; J jumps at the end of step D, i.e. at t = (D + 1) dt = 1 ms + dt
        reference = _fine_reference(model, 1.0 + dt, 1.0, 100.0)
        errors[dt] = np.max(np.abs(V - reference(t_ms)))
    assert errors[0.1] < tolerance_mV
    assert errors[0.05] < 0.6 * errors[0.1], "first-order convergence: halving dt halves the error"
