"""Published benchmark networks, built exactly as their reference scripts build them.

``brunel_coba``: the "Brunel-COBA" network of the peer benchmark (NEST 3.10 and Brian2
2.11 scripts, not part of this repository; bench/README.md): Brunel (2000) model A topology with
COBA conductance jumps, driven by Poisson input.  Units: pF, nS, mV, ms, Hz; currents pA.
The graph and initial V come from the same three numpy calls as the peers'
``brunel_common.make_graph`` (PCG64 with the given seed), so all simulators run the
identical network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dtb.network.graph import Network, Population
from dtb.sim.params import ModelParams, NeuronParams, Receptor

__all__ = ["BrunelCOBA", "brunel_coba"]

_NEURON = dict(C=200.0, g_L=10.0, V_L_mV=-60.0, V_th_mV=-50.0, V_reset_mV=-60.0, T_ref_ms=2.0)
_RECEPTORS = (Receptor("ex", 5.0, 0.0, "E"), Receptor("in", 10.0, -80.0, "I"))


@dataclass(frozen=True)
class BrunelCOBA:
    """The built benchmark: network, model, initial V [mV] and the parameters used."""

    network: Network
    model: ModelParams
    V0: np.ndarray
    params: dict


def brunel_coba(
    N: int = 10_000,
    K: int = 100,
    seed: int = 1234,
    dt_ms: float = 0.1,
    delay_ms: float = 1.5,
    w_E: float | None = None,
    g: float = 8.0,
    nu_ext_hz: float = 10.0,
    integrator: str = "exponential_euler",
) -> BrunelCOBA:
    """Build Brunel-COBA with N neurons (80 % E) and in-degree K (80 % from E).

    Every synapse has weight k = 255 (w = 1), so one spike adds exactly one unit to J and
    the receptor conductance scales carry the physical jumps: g_ex = w_E = 0.7 nS
    sqrt(100/K), g_in = g w_E.  External drive: K_E Poisson inputs of nu_ext each, i.e.
    one Poisson process of K_E nu_ext per neuron, each event adding w_E to g_ex.
    """
    w_E = 0.7 * math.sqrt(100.0 / K) if w_E is None else float(w_E)
    N_E = int(round(0.8 * N))
    K_E = int(round(0.8 * K))
    K_I = K - K_E
    rng = np.random.default_rng(seed)
    pre_E = rng.integers(0, N_E, size=(N, K_E), dtype=np.int64)
    pre_I = rng.integers(N_E, N, size=(N, K_I), dtype=np.int64)
    V0 = rng.uniform(_NEURON["V_reset_mV"], _NEURON["V_th_mV"], size=N)
    sources = np.concatenate([pre_E.ravel(), pre_I.ravel()])
    targets = np.concatenate([np.repeat(np.arange(N), K_E), np.repeat(np.arange(N), K_I)])
    params = dict(
        N=N,
        N_E=N_E,
        K=K,
        K_E=K_E,
        K_I=K_I,
        seed=seed,
        w_E=w_E,
        g=g,
        w_I=g * w_E,
        nu_ext=nu_ext_hz,
        delay=delay_ms,
        dt=dt_ms,
    )
    network = Network.from_edges(
        [Population("E", N_E, "E"), Population("I", N - N_E, "I")],
        sources,
        targets,
        255,
        {"builder": "brunel_coba", **params},
    )
    neuron = NeuronParams(
        **_NEURON,
        g={"ex": w_E, "in": g * w_E},
        ou_mu=0.0,
        ou_sigma=0.0,
        poisson_rate_hz=K_E * nu_ext_hz,
        poisson_weight=255,
    )
    model = ModelParams({"E": neuron, "I": neuron}, _RECEPTORS, dt_ms=dt_ms, delay_ms=delay_ms, integrator=integrator)
    return BrunelCOBA(network, model, V0, params)
