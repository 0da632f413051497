"""The backend contract: what a backend implements and exactly what it must compute.

The engine (:mod:`dtb.sim.engine`) owns state, the stepping order, recording and (later)
communication.  A backend implements only the hot kernels, on tensors the engine hands
it.  Every backend must follow the *arithmetic contract* below operation by operation,
so that backends agree bitwise on spikes wherever float32 arithmetic is reproducible.

Shapes: ``M`` ensemble members, ``N`` neurons, ``R`` receptor channels, ``D`` delay steps.

Arithmetic contract of one step ``s`` for neuron ``i`` of member ``m`` (float32 unless
noted; ``a + b + c`` means ``(a + b) + c``; no fused multiply-add)::

    words    = philox4x32((i_lo, i_hi, s, Stream.STEP), key(seed_m))
    xi       = normal_from_uint32(words[0], words[1])             # only if OU is on
    n_pois   = poisson_inversion(uniform(words[2]), lam, exp(-lam)) # int32, float64 inside
    (xi: float64 sqrt(-2 log u_a) cos(2 pi u_b) rounded to float32 once; log, cos and the
     per-run exp(-lam), exp(-dt/tau) from dtb.fpmath, never the machine's libm)
    if refractory == 0:                                           # integrate V
        G     = g_L + g_0 J_0 + g_1 J_1 + ...                       # conductances at step start
        I     = gLVL + (g_0 J_0) E_0 + (g_1 J_1) E_1 + ... + I_ou + i_ext
        exponential Euler:  V_inf = I / G
                            V = V_inf + (V - V_inf) * exp_contract(-(dt_over_C * G))
        forward Euler:      V = V + dt_over_C * (I - G V)
    else:
        refractory -= 1                                           # V stays at V_reset
    J_u      = J_u * decay_u + f32(drive[kind_u] + n_pois * k_pois * [kind_u == E]) / 255
    I_ou     = I_ou + ou_a * (ou_mu - I_ou) + ou_b_sigma * xi
    spike    = (integrated this step) and V >= V_th
    if spike: V = V_reset; refractory = n_ref

``exp_contract`` is a float32 exp made of separately rounded float32 operations
(:func:`exp_contract`; the same steps in cuda_ext/lif_common.h), so that every backend,
vectorised or not, computes the same bits; its error is below 2 ulp.

``drive[kind]`` is the integer sum of uint8 weights of the spikes of that kind emitted
``D`` steps earlier; integer sums are exact and order-independent, so delivery may use
atomics, threads or ranks freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = [
    "ARITHMETIC_CONTRACT",
    "exp_contract",
    "DeviceNetwork",
    "ExpandedParams",
    "EngineState",
    "IntervalResult",
    "Backend",
]

#: Version of the arithmetic contract above. Bump it with every change that can change a
#: single bit of any backend's results (it is stored in every output's provenance, and a
#: checkpoint written under another version is not resumed). 2: ``exp_contract`` for the
#: exponential-Euler factor (1 was torch's ``exp``). 3: Box-Muller and the per-run constants
#: (exp(-lam), exp(-dt/tau)) from :mod:`dtb.fpmath` instead of the machine's libm, so the
#: results no longer depend on which log/cos/exp the machine dispatches to.
ARITHMETIC_CONTRACT = 3


_EXP_CONSTANTS = {
    name: torch.tensor(value, dtype=torch.float32)
    for name, value in {
        "lo": -87.0,
        "hi": 88.0,
        "log2e": 1.44269504088896341,
        "half": 0.5,
        "c1": 0.693359375,
        "c2": -2.12194440e-4,
        "p0": 1.9875691500e-4,
        "p1": 1.3981999507e-3,
        "p2": 8.3334519073e-3,
        "p3": 4.1665795894e-2,
        "p4": 1.6666665459e-1,
        "p5": 5.0000001201e-1,
        "one": 1.0,
    }.items()
}


def exp_contract(x: torch.Tensor) -> torch.Tensor:
    """exp of float32 ``x`` by the contract's float32 recipe (Cephes expf, no fused multiply-add).

    ``x`` is clamped to [-87, 88]; ``n = floor(x log2(e) + 1/2)``, ``r = x - n C1 - n C2``
    (C1 + C2 = ln 2), a degree-5 polynomial in ``r`` and a scale by ``2**n`` built from
    the exponent bits.  Each line is one correctly rounded float32 operation, identical in
    torch on any device and in cuda_ext/lif_common.h.  Relative error < 2 ulp.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"exp_contract takes float32 tensors, got {x.dtype}")
    c = {k: v.to(x.device) for k, v in _EXP_CONSTANTS.items()}
    x = torch.minimum(torch.maximum(x, c["lo"]), c["hi"])
    n = torch.floor(x * c["log2e"] + c["half"])
    r = x - n * c["c1"]
    r = r - n * c["c2"]
    z = r * r
    p = c["p0"] * r + c["p1"]
    for name in ("p2", "p3", "p4", "p5"):
        p = p * r + c[name]
    p = p * z
    p = p + r
    p = p + c["one"]
    scale = ((n.to(torch.int32) + 127) << 23).view(torch.float32)
    return p * scale


@dataclass
class DeviceNetwork:
    """The graph on the backend's device."""

    indptr: torch.Tensor  #: (N+1,) int64, CSR by source
    targets: torch.Tensor  #: (S,) int32 (or int64 above 2**31 neurons)
    weights: torch.Tensor  #: (S,) uint8
    source_kind: torch.Tensor  #: (N,) int64: 0 for E sources, 1 for I sources
    population_index: torch.Tensor  #: (N,) int64
    n_populations: int


@dataclass
class ExpandedParams:
    """Per-neuron (and per-member) parameter tensors, expanded from per-population tables.

    Shapes ``(1, N)`` are shared by all members; ``(M, N)`` differ per member.
    """

    g: torch.Tensor  #: (R, M, N) receptor conductance scales
    g_L: torch.Tensor  #: (1, N)
    gLVL: torch.Tensor  #: (1, N) g_L * V_L
    V_th: torch.Tensor  #: (1, N)
    V_reset: torch.Tensor  #: (1, N)
    dt_over_C: torch.Tensor  #: (1, N)
    n_ref: torch.Tensor  #: (1, N) int32 refractory steps
    ou_a: torch.Tensor  #: (1, N) 1 - exp(-dt/tau)
    ou_mu: torch.Tensor  #: (M, N)
    ou_b_sigma: torch.Tensor  #: (M, N) sqrt(1 - exp(-2 dt/tau)) * sigma
    i_ext: torch.Tensor  #: (M, N) h_pop * gain_i
    poisson_lam: torch.Tensor  #: (M, N) float64 expected events per step
    poisson_p0: torch.Tensor  #: (M, N) float64 exp(-lam)
    poisson_k: torch.Tensor  #: (1, N) int32 weight of one event
    poisson_max_events: int  #: cap of the inversion loop (>= lam + 20 sqrt(lam) + 30)
    decay: torch.Tensor  #: (R, 1, 1) float32 exp(-dt/tau_u)
    E_rev: tuple[float, ...]  #: (R,) reversal potentials
    receptor_kind: tuple[int, ...]  #: (R,) 0 = driven by E sources, 1 = by I sources
    keys: tuple[torch.Tensor, torch.Tensor]  #: Philox key words per member, (M, 1) int64 each
    neuron_ids: tuple[torch.Tensor, torch.Tensor]  #: global id words (lo, hi), (1, N) int64
    integrator: str
    ou_on: bool
    poisson_on: bool


@dataclass
class EngineState:
    """The dynamical state of all members; with ``step`` it is the whole simulation state
    (random numbers are a function of the step, so no generator state exists)."""

    V: torch.Tensor  #: (M, N) float32 membrane potential [mV]
    J: torch.Tensor  #: (R, M, N) float32 receptor gating variables
    I_ou: torch.Tensor  #: (M, N) float32 OU background current
    refractory: torch.Tensor  #: (M, N) int32 refractory steps left
    step: int  #: global index of the next step


@dataclass
class IntervalResult:
    """What :meth:`Backend.integrate` returns for ``n`` steps.

    A backend gives the spikes as a mask (``spiked``) or directly as rows
    (``spike_rows``); :meth:`rows` returns the rows either way.
    """

    spiked: torch.Tensor | None  #: (n, M, N) bool, or None when spike_rows is given
    samples: dict[str, torch.Tensor]  #: name -> (n_sampled_steps, M, [R,] n_ids) float32
    sample_steps: list[int]  #: global step index of each sampled row
    #: (k, 3) int64 rows (step in the call, member, neuron), in the order of torch.nonzero(spiked)
    spike_rows: torch.Tensor | None = None

    def rows(self) -> torch.Tensor:
        """The spikes as (k, 3) int64 rows (step in the call, member, neuron), sorted."""
        if self.spike_rows is not None:
            return self.spike_rows
        if self.spiked is None:
            raise ValueError("IntervalResult holds neither spiked nor spike_rows")
        return torch.nonzero(self.spiked)


class Backend(Protocol):
    """Hot kernels of the engine; see the module docstring for the arithmetic contract.

    Optional: ``integrate_counts(state, drive, params, n_steps, drive_offset, counts, population,
    count_phase, count_bin_steps)`` advances like :meth:`integrate` without samples, adds each
    spike to ``counts`` (bins, M, P) int32 in the kernel and returns the spike rows
    (:meth:`dtb.sim.engine.Simulation.run_counts` uses it where present).
    """

    name: str
    device: torch.device
    #: True when integrate zeroes the drive slots it reads (the engine then skips clearing)
    consumes_drive: bool

    def integrate(
        self,
        state: EngineState,
        drive: torch.Tensor,
        params: ExpandedParams,
        n_steps: int,
        drive_offset: int,
        sample_ids: torch.Tensor | None,
        sample_every: int,
    ) -> IntervalResult:
        """Advance ``state`` in place by ``n_steps`` steps.

        ``drive`` is (D, 2, M, N) int32: integer synaptic input per delay slot, kind
        (E, I), member and target; step ``state.step + t`` reads slot ``drive_offset + t``.
        """
        ...

    def deliver(self, spikes: torch.Tensor, network: DeviceNetwork, out: torch.Tensor) -> None:
        """Accumulate the synaptic input of ``spikes`` into ``out`` in place.

        ``spikes`` is (n, 3) int64 rows ``(slot, member, source id)``; ``out`` is
        (D, 2, M, N) int32: every synapse ``source -> target`` with weight ``k`` adds ``k``
        to ``out[slot, kind(source), member, target]``.
        """
        ...
