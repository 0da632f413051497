"""The torch reference backend: readable, runs on any torch device (CPU or CUDA).

It follows the arithmetic contract of :mod:`dtb.sim.backends.base` literally, one torch
operation per line of the contract, so that faster backends can be checked against it.
Random numbers for a whole call are drawn at once (shape (n_steps, M, N)).
"""

from __future__ import annotations

import torch

from dtb.philox import Stream, normal_from_uint32, philox4x32, uniform_from_uint32
from dtb.sim.backends.base import DeviceNetwork, EngineState, ExpandedParams, IntervalResult, exp_contract

__all__ = ["TorchBackend", "poisson_by_inversion"]


def poisson_by_inversion(uniform: torch.Tensor, lam: torch.Tensor, p0: torch.Tensor, max_events: int) -> torch.Tensor:
    """Poisson deviates by sequential inversion of the CDF (float64; +, *, / only).

    Returns the smallest ``k`` with ``uniform <= sum_{j<=k} p_j`` where
    ``p_0 = exp(-lam)`` (given, computed once per population) and
    ``p_j = p_{j-1} * lam / j``; capped at ``max_events``.  Only correctly rounded
    operations are used, so every backend gets the same integers.
    """
    count = torch.zeros(uniform.shape, dtype=torch.int32, device=uniform.device)
    p = p0.expand(uniform.shape)
    cdf = p
    more = uniform > cdf
    j = 0
    while j < max_events and bool(more.any()):
        j += 1
        count += more.to(torch.int32)
        p = p * lam / j
        cdf = cdf + p
        more = more & (uniform > cdf)
    return count


class TorchBackend:
    """Reference implementation of the engine kernels in plain torch operations."""

    name = "torch"
    consumes_drive = False

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    # ------------------------------------------------------------------ noise
    def _noise(self, params: ExpandedParams, step0: int, n_steps: int, shape: tuple[int, int]):
        """OU normals and Poisson counts for steps step0 .. step0+n_steps-1, (n, M, N) each."""
        xi = counts = None
        if not (params.ou_on or params.poisson_on):
            return xi, counts
        steps = torch.arange(step0, step0 + n_steps, dtype=torch.int64, device=self.device)
        steps = steps.view(-1, 1, 1)
        id_lo, id_hi = params.neuron_ids
        k0, k1 = params.keys
        words = philox4x32((id_lo, id_hi, steps, int(Stream.STEP)), (k0, k1))
        full = (n_steps, *shape)
        if params.ou_on:
            xi = normal_from_uint32(words[0], words[1]).expand(full)
        if params.poisson_on:
            u = uniform_from_uint32(words[2]).expand(full)
            counts = poisson_by_inversion(u, params.poisson_lam, params.poisson_p0, params.poisson_max_events)
        return xi, counts

    # ------------------------------------------------------------------ stepping
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
        M, N = state.V.shape
        xi_all, pois_all = self._noise(params, state.step, n_steps, (M, N))
        spiked_all = torch.zeros((n_steps, M, N), dtype=torch.bool, device=self.device)
        samples: dict[str, list[torch.Tensor]] = {}
        sample_steps: list[int] = []
        V, J, I_ou, refractory = state.V, state.J, state.I_ou, state.refractory
        n_receptors = J.shape[0]
        for t in range(n_steps):
            step = state.step + t
            # --- membrane: integrate non-refractory neurons with the step-start J, I_ou
            integrating = refractory == 0
            gJ = [params.g[u] * J[u] for u in range(n_receptors)]
            G = params.g_L
            current = params.gLVL
            for u in range(n_receptors):
                G = G + gJ[u]
                current = current + gJ[u] * params.E_rev[u]
            current = current + I_ou + params.i_ext
            if params.integrator == "exponential_euler":
                V_inf = current / G
                factor = exp_contract(-(params.dt_over_C * G))
                V_new = V_inf + (V - V_inf) * factor
            else:
                V_new = V + params.dt_over_C * (current - G * V)
            V = torch.where(integrating, V_new, V)
            refractory = torch.where(integrating, refractory, refractory - 1)
            # --- synapses: exact decay plus this step's integer input
            slot = drive[drive_offset + t]
            excitatory = slot[0] if pois_all is None else slot[0] + pois_all[t] * params.poisson_k
            inputs = (excitatory.to(torch.float32) / 255.0, slot[1].to(torch.float32) / 255.0)
            J = torch.stack([J[u] * params.decay[u] + inputs[params.receptor_kind[u]] for u in range(n_receptors)])
            # --- OU background current, exact update
            if xi_all is not None:
                I_ou = I_ou + params.ou_a * (params.ou_mu - I_ou) + params.ou_b_sigma * xi_all[t]
            # --- threshold, reset, refractoriness
            spiked = integrating & (V >= params.V_th)
            V = torch.where(spiked, params.V_reset, V)
            refractory = torch.where(spiked, params.n_ref, refractory)
            spiked_all[t] = spiked
            if sample_ids is not None and (step + 1) % sample_every == 0:
                sample_steps.append(step)
                self._sample(samples, sample_ids, V, J, I_ou, params)
        state.V, state.J, state.I_ou, state.refractory = V, J, I_ou, refractory
        state.step += n_steps
        stacked = {name: torch.stack(rows) for name, rows in samples.items()}
        return IntervalResult(spiked_all, stacked, sample_steps)

    @staticmethod
    def _sample(samples, ids, V, J, I_ou, params: ExpandedParams) -> None:
        V_s = V[:, ids]
        J_s = J[:, :, ids]
        g_s = params.g[:, :, ids]
        E = torch.tensor(params.E_rev, dtype=torch.float32, device=V.device).view(-1, 1, 1)
        rows = {
            "V": V_s,
            "J": J_s.permute(1, 0, 2),
            "I_syn": (g_s * J_s * (E - V_s.unsqueeze(0))).permute(1, 0, 2),
            "I_bg": I_ou[:, ids],
            "I_ext": params.i_ext[:, ids],
        }
        for name, value in rows.items():
            samples.setdefault(name, []).append(value.clone())

    # ------------------------------------------------------------------ delivery
    def deliver(self, spikes: torch.Tensor, network: DeviceNetwork, out: torch.Tensor) -> None:
        if spikes.numel() == 0:
            return
        slot, member, source = spikes[:, 0], spikes[:, 1], spikes[:, 2]
        start = network.indptr[source]
        count = network.indptr[source + 1] - start
        total = int(count.sum())
        if total == 0:
            return
        spike_of_edge = torch.repeat_interleave(torch.arange(len(source), device=self.device), count)
        first_edge = torch.cumsum(count, 0) - count
        edge = start[spike_of_edge] + (torch.arange(total, device=self.device) - first_edge[spike_of_edge])
        target = network.targets[edge].to(torch.int64)
        weight = network.weights[edge].to(torch.int32)
        _, kinds, n_members, n_neurons = out.shape
        kind = network.source_kind[source[spike_of_edge]]
        flat = ((slot[spike_of_edge] * kinds + kind) * n_members + member[spike_of_edge]) * n_neurons + target
        out.view(-1).index_add_(0, flat, weight)
