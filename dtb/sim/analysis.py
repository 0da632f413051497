"""Summary statistics of recorded activity: rates, CV of inter-spike intervals, synchrony."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["population_rates", "summarize", "isi_cv", "neuron_rates"]


def population_rates(counts: xr.Dataset, start_s: float = 0.0) -> xr.DataArray:
    """Mean firing rate [Hz] per member and population from ``population_counts``,
    over bins starting at or after ``start_s``."""
    sel = counts["spike_count"].where(counts["time"] >= start_s, drop=True)
    duration_s = sel.sizes["time"] * float(counts.attrs["bin_ms"]) / 1000.0
    rates = sel.sum("time") / counts["population_size"] / duration_s
    rates.attrs = {"units": "Hz", "long_name": "mean firing rate"}
    return rates


def summarize(counts: xr.Dataset) -> dict:
    """JSON-friendly summary: rate per population (list over members) and overall mean rate."""
    rates = population_rates(counts)
    sizes = counts["population_size"]
    total = (
        counts["spike_count"].sum(("time", "population"))
        / sizes.sum()
        / (counts.sizes["time"] * float(counts.attrs["bin_ms"]) / 1000.0)
    )
    return {
        "rate_hz": {str(p): rates.sel(population=p).values.tolist() for p in rates["population"].values},
        "rate_mean_hz": total.values.tolist(),
    }


def neuron_rates(spikes: xr.Dataset, n_neurons: int, duration_s: float, member: int = 0) -> np.ndarray:
    """Firing rate [Hz] of every neuron of one member."""
    neuron = spikes["neuron"].values[spikes["member"].values == member]
    return np.bincount(neuron, minlength=n_neurons) / duration_s


def isi_cv(spikes: xr.Dataset, member: int = 0, min_spikes: int = 3, start_s: float = 0.0) -> np.ndarray:
    """Coefficient of variation of the inter-spike intervals of every neuron of one member
    that fired at least ``min_spikes`` times after ``start_s`` (1 for Poisson, 0 for a clock)."""
    keep = (spikes["member"].values == member) & (spikes["time"].values >= start_s)
    neuron = spikes["neuron"].values[keep]
    time = spikes["time"].values[keep]
    order = np.lexsort((time, neuron))
    neuron, time = neuron[order], time[order]
    same = neuron[1:] == neuron[:-1]
    isi = np.diff(time)[same]
    owner = neuron[1:][same]
    if isi.size == 0:
        return np.zeros(0)
    ids, first = np.unique(owner, return_index=True)
    counts = np.diff(np.append(first, isi.size))
    sums = np.add.reduceat(isi, first)
    sq = np.add.reduceat(isi * isi, first)
    mean = sums / counts
    var = sq / counts - mean**2
    ok = counts >= (min_spikes - 1)
    return np.sqrt(np.maximum(var[ok], 0)) / mean[ok]
