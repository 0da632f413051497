"""Re-simulate a fitted twin under a :class:`~dtb.experiment.perturb.Perturbation`.

:func:`perturbed_region_model` builds the perturbed network; :func:`run_perturbed` drives it with
the store's fitted h track (plus any stimulation) with the seeds `dtb resimulate` uses, and returns
the re-simulated BOLD and rates as an xarray Dataset like the store's ``/resimulation``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import xarray as xr

from dtb.assembly.forward import drive_h_track
from dtb.assembly.region import RegionModel
from dtb.experiment.perturb import (
    Perturbation,
    lesion_connectome,
    remove_incoming,
    resolve_regions,
    rewire_local,
)
from dtb.twin.run import FittedTwin, fitted_region_model, resimulation_brain

__all__ = ["check_perturbation", "perturbed_connectome", "perturbed_region_model", "run_perturbed"]


def check_perturbation(fitted: FittedTwin, perturbation: Perturbation) -> dict:
    """Resolve the perturbation's region names on this twin (a ConfigError before anything runs)."""
    lesioned = resolve_regions(perturbation.lesion.regions, fitted.labels, "lesion region")
    stimulated = resolve_regions(perturbation.stimulation.regions, fitted.labels, "stimulation region")
    if perturbation.lesion.direction != "incoming":
        lesion_connectome(fitted.connectome, lesioned, perturbation.lesion.direction)  # raises if it disconnects
    return {"lesioned": lesioned, "stimulated": stimulated}


def perturbed_connectome(fitted: FittedTwin, perturbation: Perturbation, centres=None) -> np.ndarray:
    """The connectome (row = source) the perturbed twin is built from: rewiring, then the lesion."""
    lesioned = resolve_regions(perturbation.lesion.regions, fitted.labels, "lesion region")
    sc = fitted.connectome
    if perturbation.rewire_p > 0.0:
        sc = rewire_local(sc, perturbation.rewire_p, k=perturbation.rewire_k, centres=centres)
    if lesioned and perturbation.lesion.direction in ("outgoing", "both"):
        sc = lesion_connectome(sc, lesioned, "outgoing")
    return sc


def perturbed_region_model(fitted: FittedTwin, perturbation: Perturbation, centres=None) -> RegionModel:
    """The twin's network with the perturbation's lesion and rewiring (the store's own when it has none)."""
    lesioned = resolve_regions(perturbation.lesion.regions, fitted.labels, "lesion region")
    changed = perturbation.rewire_p > 0.0 or (lesioned and perturbation.lesion.direction != "incoming")
    model = fitted_region_model(fitted, perturbed_connectome(fitted, perturbation, centres) if changed else None)
    if list(model.region_labels) != list(fitted.labels):  # lesion_connectome refuses this; keep the invariant
        raise RuntimeError("internal: the perturbed network lost regions")
    if lesioned and perturbation.lesion.direction in ("incoming", "both"):
        model = dataclasses.replace(model, network=remove_incoming(model.network, model.population_region, lesioned))
    return model


def stimulus_values(fitted: FittedTwin, perturbation: Perturbation, base: dict[int, float]):
    """(regions, values (time, len(regions))) to set per TR: the h track plus the stimulation."""
    stim = perturbation.stimulation
    stimulated = resolve_regions(stim.regions, fitted.labels, "stimulation region")
    regions = list(fitted.inputs)
    extra = [r for r in stimulated if r not in regions]
    values = fitted.h_track
    if not stimulated or stim.amplitude == 0.0:
        return regions, values
    n = values.shape[0]
    regions = regions + extra
    values = np.concatenate([values, np.tile([base[r] for r in extra], (n, 1))], axis=1)
    t = np.arange(n) * fitted.tr_s
    on = (t >= stim.start_s) & (t < stim.stop_s)
    cols = [regions.index(r) for r in stimulated]
    values[np.ix_(on, cols)] += stim.amplitude
    return regions, values


def run_perturbed(
    fitted: FittedTwin,
    perturbation: Perturbation | None = None,
    *,
    seed: int | None = None,
    backend: str | None = None,
    centres=None,
    progress: str | None = "none",
) -> xr.Dataset:
    """Re-simulate one brain of the perturbed twin with the fitted h track: Dataset with bold, rate (time, region)."""
    perturbation = perturbation or Perturbation()
    check_perturbation(fitted, perturbation)
    config = fitted.config
    torch.set_num_threads(config.threads)
    model = perturbed_region_model(fitted, perturbation, centres)
    regional, run_seed = resimulation_brain(fitted, model, seed=seed, backend=backend)
    name = config.hmda.hyperparameter
    table = regional.sim.hyperparameter_table(name)
    base = {r: float(table[0, regional.excitatory_columns(r)[0]]) for r in range(len(fitted.labels))}
    regions, values = stimulus_values(fitted, perturbation, base)
    started = time.perf_counter()
    bold, rate, _, _ = drive_h_track(regional, name, regions, values, round(fitted.tr_s * 1000.0), progress=progress)
    n = bold.shape[0]
    return xr.Dataset(
        {
            "bold": (("time", "region"), bold, {"units": "1", "long_name": "re-simulated BOLD (perturbed twin)"}),
            "rate": (("time", "region"), rate, {"units": "Hz", "long_name": "mean firing rate per TR"}),
        },
        coords={
            "time": ("time", np.arange(n) * fitted.tr_s, {"units": "s"}),
            "region": np.asarray(fitted.labels, dtype=str),
        },
        attrs={
            "seed": run_seed,
            "perturbation": perturbation.describe(),
            "n_synapses": int(model.network.n_synapses),
            "wall_time_s": time.perf_counter() - started,
        },
    )
