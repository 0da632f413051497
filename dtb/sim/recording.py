"""What a simulation records, and how it becomes xarray Datasets (in memory or streamed to zarr).

Three record kinds, each an xarray Dataset (together a DataTree):

``population_counts``
    ``spike_count`` (time, member, population): spikes per population in each bin of
    ``count_bin_ms`` (default 1 ms, the BOLD model's input), with ``population_size``.
``spikes``
    sparse events along dimension ``spike``: ``step`` (int64), ``time`` [s] = step * dt,
    ``member`` and ``neuron`` (global id).  Memory grows with the number of spikes only.
``samples``
    ``V`` [mV], ``J`` and ``I_syn`` per receptor, ``I_bg`` (OU) and ``I_ext`` of chosen neurons every
    ``sample_every_ms``, dims (time, member, [receptor,] neuron).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from dtb.errors import ParameterError
from dtb.sim.backends.base import IntervalResult

__all__ = ["RecordSpec", "Recorder"]


@dataclass(frozen=True)
class RecordSpec:
    """What to record.

    Parameters
    ----------
    population_counts : record spike counts per population and time bin.
    count_bin_ms : bin width [ms] of the population counts; a multiple of dt.
    spikes : record every spike event (True), none (False).
    spike_neurons : restrict spike events to these global neuron ids (None = all).
    sample_neurons : global ids whose V and currents are sampled (empty = none).
    sample_every_ms : sampling interval [ms] of those traces; a multiple of dt.
    """

    population_counts: bool = True
    count_bin_ms: float = 1.0
    spikes: bool = True
    spike_neurons: tuple[int, ...] | None = None
    sample_neurons: tuple[int, ...] = ()
    sample_every_ms: float = 0.1

    def steps_per(self, interval_ms: float, dt_ms: float, what: str) -> int:
        steps = interval_ms / dt_ms
        if interval_ms <= 0 or abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            raise ParameterError(f"record: {what} ({interval_ms} ms) must be a positive multiple of dt ({dt_ms} ms)")
        return int(round(steps))


def _units(name: str, current_unit: str) -> dict:
    table = {
        "V": ("mV", "membrane potential"),
        "J": ("1", "receptor gating variable J_u (sum of decaying weights)"),
        "I_syn": (current_unit, "synaptic current g_u J_u (E_u - V) per receptor"),
        "I_bg": (current_unit, "Ornstein-Uhlenbeck background current"),
        "I_ext": (current_unit, "external current h * gain"),
    }
    unit, long_name = table[name]
    return {"units": unit, "long_name": long_name}


class Recorder:
    """Collects one chunk of records from the engine and turns it into Datasets."""

    def __init__(
        self,
        spec: RecordSpec,
        *,
        dt_ms: float,
        population_names: tuple[str, ...],
        population_sizes: np.ndarray,
        population_index: torch.Tensor,
        n_members: int,
        n_neurons: int,
        receptor_names: tuple[str, ...],
        current_unit: str,
    ) -> None:
        self.spec = spec
        self.dt_ms = dt_ms
        self.population_names = population_names
        self.population_sizes = np.asarray(population_sizes, dtype=np.int64)
        self.population_index = population_index
        self.n_members = n_members
        self.receptor_names = receptor_names
        self.current_unit = current_unit
        self.bin_steps = spec.steps_per(spec.count_bin_ms, dt_ms, "count_bin_ms") if spec.population_counts else 1
        self.sample_every = spec.steps_per(spec.sample_every_ms, dt_ms, "sample_every_ms")
        ids = np.asarray(spec.sample_neurons, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= n_neurons):
            raise ParameterError(
                f"record: sample_neurons must be ids in [0, {n_neurons}), got {ids.min()}..{ids.max()}"
            )
        self.sample_ids_np = ids
        self.sample_ids = torch.as_tensor(ids, device=population_index.device) if ids.size else None
        self.spike_mask = None
        if spec.spike_neurons is not None:
            keep = np.asarray(spec.spike_neurons, dtype=np.int64)
            if keep.size and (keep.min() < 0 or keep.max() >= n_neurons):
                raise ParameterError(f"record: spike_neurons must be ids in [0, {n_neurons})")
            mask = torch.zeros(n_neurons, dtype=torch.bool, device=population_index.device)
            mask[torch.as_tensor(keep, device=mask.device)] = True
            self.spike_mask = mask
        self.reset()

    def reset(self) -> None:
        self._first_step: int | None = None
        self._counts: list[torch.Tensor] = []
        self._events: list[torch.Tensor] = []
        self._samples: dict[str, list[torch.Tensor]] = {}
        self._sample_steps: list[int] = []
        self._n_steps = 0

    def add(self, step0: int, n_steps: int, result: IntervalResult, spike_rows: torch.Tensor) -> None:
        """Record the outcome of ``n_steps`` steps starting at global step ``step0``.

        ``spike_rows`` is ``result.rows()``: (step in the call, member, neuron) rows,
        found once by the engine and shared with delivery.
        """
        if self._first_step is None:
            self._first_step = step0
        self._n_steps += n_steps
        if self.spec.population_counts:
            counts = torch.zeros(
                (n_steps, self.n_members, len(self.population_names)), dtype=torch.int32, device=spike_rows.device
            )
            if spike_rows.numel():
                index = (spike_rows[:, 0], spike_rows[:, 1], self.population_index[spike_rows[:, 2]])
                ones = torch.ones(len(spike_rows), dtype=torch.int32, device=spike_rows.device)
                counts.index_put_(index, ones, accumulate=True)
            self._counts.append(counts)
        if self.spec.spikes:
            kept = spike_rows if self.spike_mask is None else spike_rows[self.spike_mask[spike_rows[:, 2]]]
            events = kept.clone()
            events[:, 0] += step0
            self._events.append(events)
        for name, rows in result.samples.items():
            self._samples.setdefault(name, []).append(rows)
        self._sample_steps.extend(result.sample_steps)

    # ------------------------------------------------------------------ to xarray
    def datasets(self) -> dict[str, xr.Dataset]:
        """The chunk recorded since the last :meth:`reset` as Datasets (keyed by group name)."""
        out = {}
        members = np.arange(self.n_members)
        if self.spec.population_counts:
            per_step = (
                torch.cat(self._counts).cpu().numpy()
                if self._counts
                else np.zeros((0, self.n_members, len(self.population_names)), np.int32)
            )
            if self._n_steps % self.bin_steps or (self._first_step or 0) % self.bin_steps:
                raise ParameterError(
                    f"record: the recorded chunk ({self._n_steps} steps from step {self._first_step}) is not made of whole "
                    f"count bins of {self.bin_steps} steps; run durations must be multiples of count_bin_ms"
                )
            n_bins = self._n_steps // self.bin_steps
            binned = per_step.reshape(n_bins, self.bin_steps, self.n_members, -1).sum(axis=1, dtype=np.int32)
            first_bin = (self._first_step or 0) // self.bin_steps
            time_s = (first_bin + np.arange(n_bins)) * self.bin_steps * self.dt_ms / 1000.0
            out["population_counts"] = xr.Dataset(
                {
                    "spike_count": (
                        ("time", "member", "population"),
                        binned,
                        {"units": "1", "long_name": "spikes per population in [time, time + bin)"},
                    ),
                    "population_size": (
                        ("population",),
                        self.population_sizes,
                        {"units": "1", "long_name": "neurons per population"},
                    ),
                },
                coords={
                    "time": ("time", time_s, {"units": "s", "long_name": "start of the count bin"}),
                    "member": ("member", members),
                    "population": ("population", np.array(self.population_names, dtype=object)),
                },
                attrs={"bin_ms": self.spec.count_bin_ms, "dt_ms": self.dt_ms},
            )
        if self.spec.spikes:
            events = torch.cat(self._events).cpu().numpy() if self._events else np.zeros((0, 3), np.int64)
            out["spikes"] = xr.Dataset(
                {
                    "step": (
                        ("spike",),
                        events[:, 0].astype(np.int64),
                        {"units": "1", "long_name": "integration step of the spike"},
                    ),
                    "time": (
                        ("spike",),
                        events[:, 0] * (self.dt_ms / 1000.0),
                        {"units": "s", "long_name": "spike time (start of its step)"},
                    ),
                    "member": (
                        ("spike",),
                        events[:, 1].astype(np.int32),
                        {"units": "1", "long_name": "ensemble member"},
                    ),
                    "neuron": (
                        ("spike",),
                        events[:, 2].astype(np.int64),
                        {"units": "1", "long_name": "global neuron id"},
                    ),
                },
                attrs={"dt_ms": self.dt_ms},
            )
        if self.sample_ids is not None:
            time_s = (np.asarray(self._sample_steps, dtype=np.float64) + 1.0) * (self.dt_ms / 1000.0)
            data = {}
            for name, rows in self._samples.items():
                arr = torch.cat(rows).cpu().numpy()
                dims = (
                    ("time", "member", "receptor", "neuron") if name in ("I_syn", "J") else ("time", "member", "neuron")
                )
                data[name] = (dims, arr, _units(name, self.current_unit))
            out["samples"] = xr.Dataset(
                data,
                coords={
                    "time": ("time", time_s, {"units": "s", "long_name": "end of the sampled step"}),
                    "member": ("member", members),
                    "receptor": ("receptor", np.array(self.receptor_names, dtype=object)),
                    "neuron": ("neuron", self.sample_ids_np),
                },
                attrs={"sample_every_ms": self.spec.sample_every_ms},
            )
        return out


#: The dimension each record group grows along (for zarr appends and concatenation).
APPEND_DIMS = {"population_counts": "time", "spikes": "spike", "samples": "time"}
