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
from dtb.sim.bold import BalloonParams, BalloonState, bold_signal, integrate_bold
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
    sim : Simulation
        The ensemble; it must record population counts in bins of ``balloon.dt_s``
        (the default 1 ms of both).
    population_region : int array (n_populations,)
        Region index of every population of ``sim.network``.
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
        n_pop = len(sim.network.populations)
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
        sizes = np.diff(sim.network.offsets).astype(np.float64)
        membership = np.zeros((n_pop, n_regions))
        membership[np.arange(n_pop), pop_region] = 1.0
        self.region_neurons = membership.T @ sizes
        self._membership = torch.as_tensor(membership)
        self._region_neurons = torch.as_tensor(self.region_neurons)
        self.state = BalloonState.resting((sim.n_members, n_regions))
        self._kinds = np.array([p.kind for p in sim.network.populations])
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

    def advance(self, duration_ms: float) -> WindowOutput:
        """Simulate ``duration_ms`` (a multiple of 1 ms) and integrate BOLD every 1 ms."""
        tree = self.sim.run(duration_ms, progress="none")
        counts = np.asarray(tree["population_counts"]["spike_count"].values)  # (time, member, population)
        spikes = torch.as_tensor(counts, dtype=torch.float64) @ self._membership  # (time, member, region)
        fraction = spikes / self._region_neurons
        self.state, _ = integrate_bold(self.state, fraction, self.balloon_params)
        # spike counts are integers: their sums (over populations above, over time here) are exact in
        # float64 in any order, so the rate is the same bits on every machine
        n_bins = fraction.shape[0]
        rate = (
            spikes.sum(dim=0) / self._region_neurons / (n_bins * self.balloon_params.dt_s)
            if n_bins
            else torch.zeros_like(self.bold())
        )
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
