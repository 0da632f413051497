"""The forward model: an ensemble on a twin's network, observed per region through BOLD.

- :func:`make_simulation`: an ensemble :class:`~dtb.sim.Simulation` (or, over MPI ranks, a
  :class:`~dtb.sim.distributed.DistributedSimulation`) recording 1 ms counts, with Gamma(5, 5)
  gains on the external current (docs/model.md §5), wrapped in
  :class:`~dtb.sim.regional.RegionalBold` (per-region rates and Balloon-Windkessel BOLD);
- :func:`drive_h_track`: one brain run TR by TR with h set before each window (the twin's
  re-simulation and virtual experiments, the phantom's truth run).
"""

from __future__ import annotations

import numpy as np

from dtb.assembly.region import RegionModel
from dtb.network.gains import gamma_gains
from dtb.progress import Progress
from dtb.seeds import derive_seed
from dtb.sim.engine import Ensemble, Simulation
from dtb.sim.recording import RecordSpec
from dtb.sim.regional import RegionalBold

__all__ = ["drive_h_track", "make_simulation", "member_seeds"]


def member_seeds(seed: int, n_members: int, purpose: str = "member", first: int = 0) -> tuple[int, ...]:
    """Noise seeds of the members of a run with ``seed``: ``derive_seed(seed, purpose, m)`` for
    m = first, ..., first + n_members - 1."""
    return tuple(derive_seed(seed, purpose, first + m) for m in range(n_members))


def make_simulation(
    region_model: RegionModel,
    *,
    n_members: int,
    seed: int,
    gain_seed: int,
    member_purpose: str = "member",
    first_member: int = 0,
    backend: str = "torch",
    device: str = "cpu",
    record_spikes: bool = False,
    comm=None,
    layout: str = "members",
) -> RegionalBold:
    """An ensemble of ``n_members`` on the twin's network, observed per region through BOLD.

    ``seed`` is the run seed: member m's noise uses ``derive_seed(seed, member_purpose, m)``
    (:func:`member_seeds`; m counts from ``first_member``, so an ensemble run in batches gives each
    member the noise it has in one run); ``gain_seed`` keys the Gamma gains as given. With ``comm`` (an MPI
    communicator of more than one rank) the ensemble is a
    :class:`~dtb.sim.distributed.DistributedSimulation` spread over the ranks by ``layout``
    (``members`` or ``neurons``); its results are bitwise those of one process.
    """
    network = region_model.network
    gains = gamma_gains(gain_seed, np.arange(network.n_neurons))
    kwargs = dict(
        ensemble=Ensemble(member_seeds(seed, n_members, member_purpose, first_member)),
        backend=backend,
        device=device,
        record=RecordSpec(
            population_counts=True,
            count_bin_ms=1.0,
            spikes=record_spikes,
            sample_every_ms=region_model.model.dt_ms,
        ),
        ext_gain=gains,
    )
    if comm is not None and comm.Get_size() > 1:
        from dtb.sim.distributed import DistributedConfig, DistributedSimulation

        sim = DistributedSimulation(
            network, region_model.model, comm=comm, config=DistributedConfig(layout=layout), **kwargs
        )
    else:
        sim = Simulation(network, region_model.model, **kwargs)
    return RegionalBold(sim, region_model.population_region, region_model.n_regions)


def drive_h_track(
    regional: RegionalBold,
    name: str,
    regions,
    values: np.ndarray,
    tr_ms,
    *,
    record_windows: int = 0,
    progress: str | None = None,
    label: str = "resimulate",
):
    """Run one brain window by window, setting ``name`` of ``regions`` to ``values[w]`` before window w.

    ``tr_ms``: the length of every window [ms] (a whole number), or one length per window.
    Returns (bold, rate, population counts, spikes) of member 0: (window, region) arrays, the BOLD
    at each window's end and the mean rate over it [Hz], and the per-window counts/spike rows of
    the first ``record_windows`` windows (these need a simulation that records spikes). ``label``
    names the progress display.
    """
    n = values.shape[0]
    lengths = np.broadcast_to(np.asarray(tr_ms), (n,))
    bold = np.empty((n, regional.n_regions))
    rate = np.empty((n, regional.n_regions))
    spikes, counts = [], []
    bar = Progress(n, label, progress, unit="TR")
    for w in range(n):
        regional.set_region_hyperparameter(name, regions, values[w])
        out = regional.advance(lengths[w].item())
        bold[w], rate[w] = out.bold[0].numpy(), out.rate_hz[0].numpy()
        if w < record_windows:
            counts.append(out.population_counts[:, 0, :])
            spikes.append(out.spikes[:, [0, 2]])
        bar.update(1)
    bar.close()
    return bold, rate, counts, spikes
