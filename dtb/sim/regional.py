"""Region-level observation of a spiking ensemble: per-region firing and Balloon-Windkessel BOLD.

:class:`RegionalBold` wraps a :class:`~dtb.sim.engine.Simulation` whose populations belong to
regions (or voxels).  :meth:`RegionalBold.advance` simulates one window (e.g. one TR), turns
the engine's 1 ms population spike counts into each region's spike fraction
u = spikes / neurons per 1 ms (docs/model.md §4), integrates the Balloon model every 1 ms, and
returns the window's mean firing rate and the BOLD signal at the window's end, per member
and region.  The haemodynamic state lives here (shape (member, region)) so that an
assimilation can read and overwrite it between windows.

Examples
--------
>>> regional = RegionalBold(sim, population_region=[0, 0, 1, 1], n_regions=2)   # doctest: +SKIP
>>> out = regional.advance(720.0)        # one TR of 0.72 s
>>> out.bold.shape, out.rate_hz.shape    # (member, region) each
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dtb.errors import ParameterError
from dtb.sim.bold import BalloonParams, BalloonState, bold_signal, integrate_bold, log_retained
from dtb.sim.engine import Simulation

__all__ = ["RegionalBold", "WindowOutput"]


@dataclass(frozen=True)
class WindowOutput:
    """What one window produced, per member and region.

    Attributes
    ----------
    rate_hz : float64 tensor (member, region), mean firing rate over the window [Hz].
    bold : float64 tensor (member, region), BOLD signal at the end of the window [1].
    population_counts : int array (time, member, population), the engine's 1 ms spike counts.
    spikes : float array (spike, 3) of (time [s], member, neuron id) rows when the simulation
        records spike events, else None.
    """

    rate_hz: torch.Tensor
    bold: torch.Tensor
    population_counts: np.ndarray
    spikes: np.ndarray | None = None


class RegionalBold:
    """A spiking ensemble observed per region through the Balloon-Windkessel model.

    Parameters
    ----------
    sim : Simulation or DistributedSimulation
        The ensemble; it must record population counts in bins of ``balloon.dt_s``
        (the default 1 ms of both). A :class:`~dtb.sim.distributed.DistributedSimulation`
        gathers the counts of all ranks on every rank, so every rank holds the same
        haemodynamic state of the whole ensemble and an assimilation runs unchanged (and
        identically) on every rank.
    population_region : int array (n_populations,)
        Region index of every population of ``sim.populations``.
    n_regions : number of regions R (every region must own at least one population).
    balloon : BalloonParams (default: docs/model.md §4)
    """

    def __init__(
        self,
        sim: Simulation,
        population_region,
        n_regions: int,
        balloon: BalloonParams | None = None,
    ) -> None:
        balloon = balloon or BalloonParams()
        self.sim = sim
        self.balloon_params = balloon
        pop_region = np.asarray(population_region, dtype=np.int64)
        n_pop = len(sim.populations)
        if pop_region.shape != (n_pop,) or pop_region.min(initial=0) < 0 or pop_region.max(initial=0) >= n_regions:
            raise ParameterError(
                f"population_region must give a region index in [0, {n_regions}) for each of the {n_pop} "
                f"populations, got shape {pop_region.shape}"
            )
        if np.unique(pop_region).size != n_regions:
            raise ParameterError(f"every one of the {n_regions} regions must own at least one population")
        spec = sim.record_spec
        if not spec.population_counts or abs(spec.count_bin_ms - 1000.0 * balloon.dt_s) > 1e-9:
            raise ParameterError(
                f"the simulation must record population counts in bins of the Balloon step "
                f"({1000.0 * balloon.dt_s:g} ms); got population_counts={spec.population_counts}, "
                f"count_bin_ms={spec.count_bin_ms}"
            )
        self.population_region = pop_region
        self.n_regions = int(n_regions)
        sizes = np.diff(sim.offsets).astype(np.float64)
        membership = np.zeros((n_pop, n_regions))
        membership[np.arange(n_pop), pop_region] = 1.0
        self.region_neurons = membership.T @ sizes
        self._membership = torch.as_tensor(membership)
        self._region_neurons = torch.as_tensor(self.region_neurons)
        self._population_region_t = torch.as_tensor(pop_region)
        self.state = BalloonState.resting((sim.n_members, n_regions))
        self._kinds = np.array([p.kind for p in sim.populations])
        self._base_tables: dict[str, np.ndarray] = {}

    @property
    def n_members(self) -> int:
        return self.sim.n_members

    def excitatory_columns(self, region: int) -> np.ndarray:
        """Indices of the excitatory populations of ``region``."""
        return np.flatnonzero((self.population_region == region) & (self._kinds == "E"))

    def set_region_hyperparameter(self, name: str, regions, values) -> None:
        """Set hyperparameter ``name`` of the excitatory populations of each of ``regions``.

        ``values`` has shape (member, len(regions)) or (len(regions),) (same for every member);
        every other population keeps the value it had when this method was first called for
        ``name`` (the model's, normally).
        """
        if name not in self._base_tables:
            self._base_tables[name] = self.sim.hyperparameter_table(name)
        table = self._base_tables[name].copy()
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.n_members, len(regions)))
        for k, region in enumerate(regions):
            table[:, self.excitatory_columns(int(region))] = values[:, k : k + 1]
        self.sim.set_hyperparameters(**{name: table})

    def bold(self) -> torch.Tensor:
        """BOLD signal of the current haemodynamic state, (member, region)."""
        return bold_signal(self.state, self.balloon_params)

    @property
    def lean(self) -> bool:
        """Whether :meth:`advance` takes the lean path (no spike events or samples recorded)."""
        spec = self.sim.record_spec
        return not spec.spikes and not spec.sample_neurons

    def advance(self, duration_ms: float) -> WindowOutput:
        """Simulate ``duration_ms`` (a multiple of 1 ms) and integrate BOLD every 1 ms.

        Without spike events or samples to record (the assimilation's ensembles) this is the
        lean path: the engine counts spikes per (1 ms bin, member, population) into one buffer
        per window (:meth:`~dtb.sim.engine.Simulation.run_counts`, inside the kernel on the
        ``cuda_ext`` CPU backend) and the Balloon model is integrated over the whole window
        (in C++ on that backend, by :func:`~dtb.sim.bold.integrate_bold` elsewhere).  Both
        paths give the same bits (tests/twin/test_twin_throughput.py).
        """
        if self.lean:
            return self._advance_lean(duration_ms)
        return self._advance_recorded(duration_ms)

    def _window_rate(self, totals: torch.Tensor, n_bins: int) -> torch.Tensor:
        """Mean rate [Hz] per (member, region) from the window's spike totals per (member, region)."""
        if not n_bins:
            return torch.zeros_like(self.bold())
        return totals / self._region_neurons / (n_bins * self.balloon_params.dt_s)

    def _advance_lean(self, duration_ms: float) -> WindowOutput:
        counts = self.sim.run_counts(duration_ms)  # (time, member, population) int32
        n_bins = counts.shape[0]
        kernels = getattr(self.sim.backend, "kernels", None)
        if kernels is not None and hasattr(kernels, "balloon_window_counts") and counts.device.type == "cpu":
            st = self.state
            s, f, v, q = (x.to(torch.float64).contiguous().clone() for x in (st.s, st.f, st.v, st.q))
            bold = torch.empty_like(s)
            kernels.balloon_window_counts(
                s, f, v, q, counts, self._population_region_t, self._region_neurons, self._balloon_constants(), bold
            )
            self.state = BalloonState(s, f, v, q)
        else:
            fraction = (counts.to(torch.float64) @ self._membership.to(counts.device)) / self._region_neurons.to(
                counts.device
            )
            self.state, _ = integrate_bold(self.state, fraction, self.balloon_params)
            bold = self.bold()
        # integer totals: exact in float64 in any order, so the rate has the same bits on every path
        totals = counts.sum(dim=0, dtype=torch.int64).to(torch.float64).cpu() @ self._membership
        return WindowOutput(
            rate_hz=self._window_rate(totals, n_bins), bold=bold, population_counts=counts.cpu().numpy()
        )

    def _balloon_constants(self) -> list[float]:
        """The Balloon constants in the order of the C++ ``balloon_window`` (cuda_ext/balloon.h)."""
        p = self.balloon_params
        return [
            p.eps, p.tau_s, p.tau_f, p.tau_0, 1.0 / p.alpha, p.E_0, p.V_0, p.dt_s, p.u_floor, log_retained(p.E_0)
        ]  # fmt: skip

    def _advance_recorded(self, duration_ms: float) -> WindowOutput:
        tree = self.sim.run(duration_ms, progress="none")
        counts = np.asarray(tree["population_counts"]["spike_count"].values)  # (time, member, population)
        spikes = torch.as_tensor(counts, dtype=torch.float64) @ self._membership  # (time, member, region)
        fraction = spikes / self._region_neurons
        self.state, _ = integrate_bold(self.state, fraction, self.balloon_params)
        # spike counts are integers: their sums (over populations above, over time here) are exact in
        # float64 in any order, so the rate is the same bits on every machine
        rate = self._window_rate(spikes.sum(dim=0), fraction.shape[0])
        spikes = None
        if "spikes" in tree.children:
            ev = tree["spikes"]
            spikes = np.column_stack([ev["time"].values, ev["member"].values, ev["neuron"].values])
        return WindowOutput(rate_hz=rate, bold=self.bold(), population_counts=counts, spikes=spikes)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Engine state plus the haemodynamic state (CPU tensors)."""
        st = self.state
        return {
            "engine": self.sim.state_dict(),
            "balloon": {k: getattr(st, k).cpu().clone() for k in ("s", "f", "v", "q")},
        }

    def load_state_dict(self, state: dict) -> None:
        self.sim.load_state_dict(state["engine"])
        b = state["balloon"]
        if tuple(b["s"].shape) != (self.n_members, self.n_regions):
            raise ParameterError("saved Balloon state does not match this model's members and regions")
        self.state = BalloonState(*(b[k].clone().to(torch.float64) for k in ("s", "f", "v", "q")))
