"""The lean twin window (counts in the kernel, Balloon over the window in C++) gives the old path's bits.

- the 8-lane AVX2 Box-Muller of the CPU kernels equals the scalar one (and dtb.philox) bitwise;
- the C++ copies of dtb.fpmath.exp and pow, and the Balloon window integration, equal the
  step-by-step Python reference bitwise over many random states;
- Simulation.run_counts gives the counts of Simulation.run (kernel and generic counting);
- RegionalBold.advance on the lean path gives the recorded path's BOLD, rates, counts and state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtb import fpmath
from dtb.errors import ParameterError
from dtb.network import Network, Population
from dtb.philox import normal_from_uint32
from dtb.sim import Ensemble, ModelParams, NeuronParams, RecordSpec, Simulation
from dtb.sim.bold import BalloonParams, BalloonState, integrate_bold, log_retained
from dtb.sim.regional import RegionalBold
from tests.helpers import require_backend


@pytest.fixture(scope="module")
def ext():
    require_backend("cuda_ext")
    from cuda_ext.loader import load_cpu_extension

    return load_cpu_extension()


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int64 if t.element_size() == 8 else torch.int32)


def test_vector_box_muller_equals_scalar_and_python(ext):
    rng = np.random.default_rng(11)
    n = 200_003  # not a multiple of 8: the tail takes the scalar path
    a = torch.from_numpy(rng.integers(0, 2**32, n, dtype=np.int64))
    b = torch.from_numpy(rng.integers(0, 2**32, n, dtype=np.int64))
    edges = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1, 2**30, 3 * 2**30])
    a[:8], b[:8] = edges, edges.flip(0)  # extremes of u and every quarter turn of cos
    vector = ext.normal_words(a, b, True)
    assert torch.equal(bits(vector), bits(ext.normal_words(a, b, False)))
    assert torch.equal(bits(vector[:20_000]), bits(normal_from_uint32(a[:20_000], b[:20_000]).to(torch.float32)))


def test_cpp_exp_and_pow_equal_fpmath(ext):
    rng = np.random.default_rng(12)
    x = torch.from_numpy(rng.normal(0.0, 40.0, 100_000))
    x[:6] = torch.tensor([0.0, -745.2, 709.7, -1000.5, 1e-300, -0.5])
    assert torch.equal(bits(ext.fpmath(x, 2)), bits(fpmath.exp(x)))
    base = torch.from_numpy(rng.uniform(1e-4, 4.0, 20_000))
    for y in (5.0, 2.0, -3.0, 0.0, 64.0, 65.0, 2.5, 1.0 / 0.3):
        assert torch.equal(bits(ext.pow_f64(base, torch.full_like(base, y))), bits(fpmath.pow(base, y))), y


def random_states(rng, shape):
    """Balloon states spread around and far from the attractor (as an assimilation may leave them)."""
    return BalloonState(
        s=torch.from_numpy(rng.normal(0.0, 0.5, shape)),
        f=torch.from_numpy(rng.uniform(0.3, 2.5, shape)),
        v=torch.from_numpy(rng.uniform(0.5, 1.8, shape)),
        q=torch.from_numpy(rng.uniform(0.3, 1.8, shape)),
    )


def constants(p: BalloonParams) -> list[float]:
    return [p.eps, p.tau_s, p.tau_f, p.tau_0, 1.0 / p.alpha, p.E_0, p.V_0, p.dt_s, p.u_floor, log_retained(p.E_0)]


@pytest.mark.parametrize("params", [BalloonParams(), BalloonParams(alpha=0.32, E_0=0.4, tau_s=0.65)])
def test_balloon_window_equals_the_step_by_step_reference(ext, params):
    rng = np.random.default_rng(13)
    K, T = 500, 300
    state = random_states(rng, (K,))
    u = torch.from_numpy(rng.exponential(0.004, (T, K)))
    u[:, :50] = 0.0  # below the floor
    ref_state, ref_y = integrate_bold(state.clone(), u, params)
    s, f, v, q = (getattr(state, k).clone() for k in "sfvq")
    y = torch.empty((T, K), dtype=torch.float64)
    ext.balloon_window(s, f, v, q, u, constants(params), y)
    assert torch.equal(bits(y), bits(ref_y))
    for name, got in zip("sfvq", (s, f, v, q), strict=True):
        assert torch.equal(bits(got), bits(getattr(ref_state, name))), name


def test_balloon_window_from_counts_equals_membership_matmul(ext):
    rng = np.random.default_rng(14)
    T, M, P, R = 200, 3, 9, 4
    region = torch.tensor([0, 0, 1, 2, 2, 2, 3, 1, 0])
    counts = torch.from_numpy(rng.poisson(3.0, (T, M, P)).astype(np.int32))
    neurons = torch.tensor([300.0, 170.0, 451.0, 80.0], dtype=torch.float64)
    membership = torch.zeros((P, R), dtype=torch.float64)
    membership[torch.arange(P), region] = 1.0
    params = BalloonParams()
    state = random_states(rng, (M, R))
    ref_state, ref_y = integrate_bold(state.clone(), (counts.to(torch.float64) @ membership) / neurons, params)
    s, f, v, q = (getattr(state, k).clone() for k in "sfvq")
    y = torch.empty((M, R), dtype=torch.float64)
    ext.balloon_window_counts(s, f, v, q, counts, region, neurons, constants(params), y)
    assert torch.equal(bits(y), bits(ref_y[-1]))
    for name, got in zip("sfvq", (s, f, v, q), strict=True):
        assert torch.equal(bits(got), bits(getattr(ref_state, name))), name


def region_network(n_regions: int = 3, per_pop: int = 60, seed: int = 5) -> Network:
    """E/I populations per region, random connections at ~10 Hz activity (OU drive)."""
    rng = np.random.default_rng(seed)
    pops = []
    for r in range(n_regions):
        pops += [Population(f"E{r}", per_pop, "E"), Population(f"I{r}", per_pop // 4, "I")]
    n = sum(p.size for p in pops)
    k = 20
    src = rng.integers(0, n, n * k)
    tgt = np.repeat(np.arange(n), k)
    return Network.from_edges(pops, src, tgt, 120, {"builder": "test"})


def region_model(net: Network, dt_ms: float) -> ModelParams:
    return ModelParams(
        populations={p.name: NeuronParams(ou_mu=0.75, ou_sigma=0.2) for p in net.populations},
        dt_ms=dt_ms,
        delay_ms=1.0,
    )


def regional(net, model, backend, spikes: bool, members: int = 2) -> RegionalBold:
    sim = Simulation(
        net,
        model,
        ensemble=Ensemble(tuple(range(3, 3 + members))),
        backend=backend,
        record=RecordSpec(population_counts=True, count_bin_ms=1.0, spikes=spikes, sample_every_ms=model.dt_ms),
    )
    pop_region = [i // 2 for i in range(len(net.populations))]
    return RegionalBold(sim, pop_region, len(net.populations) // 2)


@pytest.mark.parametrize(("backend", "dt_ms"), [("cuda_ext", 0.1), ("cuda_ext", 1.0), ("torch", 1.0)])
def test_lean_window_equals_recorded_window(backend, dt_ms):
    if backend == "cuda_ext":
        require_backend("cuda_ext")
    net = region_network()
    model = region_model(net, dt_ms)
    lean, recorded = regional(net, model, backend, spikes=False), regional(net, model, backend, spikes=True)
    assert lean.lean and not recorded.lean
    total = 0
    for window in range(3):
        if window == 1:  # a hyperparameter change between windows, as the assimilation makes
            for r in (lean, recorded):
                r.set_region_hyperparameter("ou_mu", [0, 2], np.array([[0.8, 0.7], [0.72, 0.9]]))
        a, b = lean.advance(30.0), recorded.advance(30.0)
        assert a.population_counts.dtype == b.population_counts.dtype == np.int32
        assert np.array_equal(a.population_counts, b.population_counts)
        assert torch.equal(bits(a.bold), bits(b.bold)) and torch.equal(bits(a.rate_hz), bits(b.rate_hz))
        total += int(a.population_counts.sum())
    for name in "sfvq":
        assert torch.equal(bits(getattr(lean.state, name)), bits(getattr(recorded.state, name)))
    assert torch.equal(lean.sim.state.V, recorded.sim.state.V)
    assert total > 100  # the windows did spike (the comparison is not of empty counts)


def test_run_counts_bins_and_checks():
    net = region_network(n_regions=2)
    model = region_model(net, 0.1)
    sim = Simulation(net, model, seed=2, record=RecordSpec(count_bin_ms=2.0, spikes=False))
    reference = Simulation(net, model, seed=2, record=RecordSpec(count_bin_ms=2.0, spikes=False))
    counts = sim.run_counts(10.0)
    tree = reference.run(10.0, progress=False)
    assert counts.shape == (5, 1, 4)
    assert np.array_equal(counts.numpy(), tree["population_counts"]["spike_count"].values)
    with pytest.raises(ParameterError, match="count_bin_ms"):
        sim.run_counts(3.0)
    with pytest.raises(ParameterError, match="out must be"):
        sim.run_counts(4.0, out=torch.zeros((3, 1, 4), dtype=torch.int32))
