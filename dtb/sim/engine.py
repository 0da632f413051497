"""The simulation engine: state, stepping order, delays, ensembles, recording.

Stepping order (one *interval* = the D steps of one synaptic delay): the backend
integrates up to D steps using only input that is already known (spikes emitted one
interval earlier), then the spikes of the interval, held as id lists
``(slot, member, source)``, are delivered into the integer drive of the next interval.
This is the classic min-delay cycle; with several ranks (:mod:`dtb.sim.distributed`)
the id lists are the only traffic between them.

Examples
--------
>>> sim = Simulation(network, model, seed=1)              # doctest: +SKIP
>>> tree = sim.run(1000.0)                                # 1 s of biological time
>>> tree["population_counts"]["spike_count"]              # (time, member, population)
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import xarray as xr
import zarr

from dtb import __version__, fpmath
from dtb.errors import ParameterError
from dtb.io.store import json_safe, open_tree, write_group
from dtb.network.graph import Network
from dtb.philox import Stream, philox4x32, split_seed, uniform_from_uint32
from dtb.progress import Progress
from dtb.sim.backends import DeviceNetwork, EngineState, ExpandedParams, get_backend
from dtb.sim.backends.base import ARITHMETIC_CONTRACT
from dtb.sim.params import ModelParams
from dtb.sim.recording import APPEND_DIMS, Recorder, RecordSpec

__all__ = ["Ensemble", "Simulation", "INITIAL_V_MODES"]

log = logging.getLogger("dtb")

INITIAL_V_MODES = ("uniform", "rest", "reset")
_MAX_POISSON_EVENTS_PER_STEP = 100.0


@dataclass(frozen=True)
class Ensemble:
    """N_e members sharing one graph, differing in seed and per-population hyperparameters.

    Parameters
    ----------
    seeds : one seed per member (non-negative int < 2**64); it keys the member's noise
        and initial state, exactly as ``Simulation(seed=...)`` does for a single run.
    hyperparameters : name -> array of shape (n_members, n_populations)
        Values that replace the model's per-population parameter for each member.
        Names: ``g_<receptor>``, ``ou_mu``, ``ou_sigma``, ``i_ext``, ``poisson_rate_hz``.
    """

    seeds: tuple[int, ...]
    hyperparameters: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds:
            raise ParameterError("ensemble: at least one member seed is needed")
        for s in seeds:
            split_seed(s)
        object.__setattr__(self, "seeds", seeds)
        hyper = {}
        for name, values in dict(self.hyperparameters).items():
            arr = np.asarray(values, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[0] != len(seeds):
                raise ParameterError(
                    f"ensemble: hyperparameter {name!r} must have shape (n_members={len(seeds)}, n_populations), "
                    f"got {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise ParameterError(f"ensemble: hyperparameter {name!r} contains NaN or infinite values")
            hyper[name] = arr
        object.__setattr__(self, "hyperparameters", MappingProxyType(hyper))

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @classmethod
    def single(cls, seed: int) -> Ensemble:
        return cls((seed,))


class Simulation:
    """A network of conductance-based LIF neurons with OU background, on one backend.

    Parameters
    ----------
    network : Network
        Populations and synapses (CSR by source).
    model : ModelParams
        Receptors, per-population neuron parameters, dt, delay, integrator.
    seed : int, optional
        Seed of a single run.  When neither ``seed`` nor ``ensemble`` is given, one is
        drawn and logged; it is stored in every output either way.
    ensemble : Ensemble, optional
        Several members at once (they share the graph).  Member ``m`` gives exactly the
        spikes of a single run with ``seed=ensemble.seeds[m]`` and its hyperparameters.
    backend : ``"torch"`` (reference) or ``"cuda_ext"``; ``"cuda_ext:hipcpu"`` (device ``"cpu"``) runs
        the GPU kernels emulated by HIP-CPU, for checking them without a GPU.
    device : ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
    record : RecordSpec
    initial_V : ``"uniform"`` (U[V_reset, V_th) from the member's seed), ``"rest"`` (V_L),
        ``"reset"`` (V_reset), or an array of shape (n_neurons,) or (n_members, n_neurons) [mV].
    ext_gain : array (n_neurons,), optional
        Per-neuron gain xi_i of the external current (I_ext,i = i_ext * xi_i); default 1.
    current_unit : unit of currents, for output attributes ("1" for DTB units, "pA").
    """

    def __init__(
        self,
        network: Network,
        model: ModelParams,
        *,
        seed: int | None = None,
        ensemble: Ensemble | None = None,
        backend: str = "torch",
        device: str | torch.device | None = "cpu",
        record: RecordSpec | None = None,
        initial_V: str | np.ndarray = "uniform",
        ext_gain: np.ndarray | None = None,
        current_unit: str = "1",
    ) -> None:
        if not isinstance(network, Network):
            raise ParameterError(f"network must be a dtb.network.Network, got {type(network).__name__}")
        if not isinstance(model, ModelParams):
            raise ParameterError(f"model must be a dtb.sim.ModelParams, got {type(model).__name__}")
        missing = [p for p in network.population_names if p not in model.populations]
        if missing:
            raise ParameterError(
                f"model parameters are missing for populations {missing}; give a NeuronParams for each of "
                f"{list(network.population_names)}"
            )
        if ensemble is not None and seed is not None:
            raise ParameterError("give either seed (single run) or ensemble (several members), not both")
        if ensemble is None:
            if seed is None:
                seed = secrets.randbits(63)
                log.info("no seed given; drew seed %d", seed)
            ensemble = Ensemble.single(seed)
        self.network = network
        self.model = model
        self.ensemble = ensemble
        self.record_spec = record or RecordSpec()
        self.current_unit = current_unit
        self.backend = get_backend(backend, device)
        self.device = self.backend.device
        self._check_hyperparameters(ensemble.hyperparameters)
        self._hyper = {k: v.copy() for k, v in ensemble.hyperparameters.items()}

        n = network.n_neurons
        self._pop_index_np = network.population_index()
        self._pop_index = torch.as_tensor(self._pop_index_np, dtype=torch.int64, device=self.device)
        gain = np.ones(n) if ext_gain is None else np.asarray(ext_gain, dtype=np.float64)
        if gain.shape != (n,) or not np.all(np.isfinite(gain)) or np.any(gain < 0):
            raise ParameterError(
                f"ext_gain must be a finite, non-negative array of shape ({n},), got shape {gain.shape}"
            )
        self._gain = torch.as_tensor(gain, dtype=torch.float32, device=self.device)
        self._graph = DeviceNetwork(
            indptr=torch.as_tensor(network.indptr, device=self.device),
            targets=torch.as_tensor(network.targets.astype(np.int64 if n >= 2**31 else np.int32), device=self.device),
            weights=torch.as_tensor(network.weights, device=self.device),
            source_kind=torch.as_tensor(network.is_inhibitory().astype(np.int64), device=self.device),
            population_index=self._pop_index,
            n_populations=len(network.populations),
        )
        self.params = self._expand_params()
        self.state = self._initial_state(initial_V)
        M, D = ensemble.n_members, model.delay_steps
        self._drive = torch.zeros((D, 2, M, n), dtype=torch.int32, device=self.device)
        self._pending: list[torch.Tensor] = []
        self._recorder = Recorder(
            self.record_spec,
            dt_ms=model.dt_ms,
            population_names=network.population_names,
            population_sizes=np.diff(network.offsets),
            population_index=self._pop_index,
            n_members=M,
            n_neurons=n,
            receptor_names=model.receptor_names,
            current_unit=current_unit,
        )
        self._stores_written: dict[str, set[str]] = {}
        self._population_int32: torch.Tensor | None = None  # for counting kernels, made on first use

    # ------------------------------------------------------------------ parameters
    @property
    def n_members(self) -> int:
        return self.ensemble.n_members

    @property
    def populations(self) -> tuple:
        """The network's populations (the engine protocol :class:`~dtb.sim.distributed.DistributedSimulation` shares)."""
        return tuple(self.network.populations)

    @property
    def offsets(self) -> np.ndarray:
        """First neuron id of every population, and the neuron count last, (n_populations + 1,)."""
        return np.asarray(self.network.offsets, dtype=np.int64)

    @property
    def step(self) -> int:
        """Index of the next step (number of steps simulated so far)."""
        return self.state.step

    @property
    def time_ms(self) -> float:
        return self.state.step * self.model.dt_ms

    def _check_hyperparameters(self, hyper: Mapping[str, np.ndarray]) -> None:
        allowed = self.model.hyperparameter_names()
        P = len(self.network.populations)
        for name, values in hyper.items():
            if name not in allowed:
                raise ParameterError(f"unknown hyperparameter {name!r}; choose from {list(allowed)}")
            arr = np.asarray(values)
            if arr.shape != (self.n_members, P):
                raise ParameterError(
                    f"hyperparameter {name!r} must have shape (n_members={self.n_members}, n_populations={P}), got {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise ParameterError(f"hyperparameter {name!r} contains NaN or infinite values")
            if name != "ou_mu" and name != "i_ext" and np.any(arr < 0):
                raise ParameterError(f"hyperparameter {name!r} must be >= 0")

    def set_hyperparameters(self, **values: np.ndarray) -> None:
        """Change per-member, per-population hyperparameters, e.g. between assimilation windows.

        Each value has shape (n_members, n_populations); see :class:`Ensemble`.
        """
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        self._check_hyperparameters(arrays)
        self._hyper.update({k: v.copy() for k, v in arrays.items()})
        self.params = self._expand_params()

    def hyperparameter_table(self, name: str) -> np.ndarray:
        """Current value of parameter ``name`` per member and population, shape (M, P)."""
        if name in self._hyper:
            return self._hyper[name].copy()
        base = np.asarray(self.model.per_population(self.network.population_names, name), dtype=np.float64)
        return np.broadcast_to(base, (self.n_members, base.size)).copy()

    def _expand_params(self) -> ExpandedParams:
        pops = self.network.population_names
        dt = self.model.dt_ms
        dev = self.device
        idx = self._pop_index_np

        def shared(values, dtype=torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values)[idx][None, :], dtype=dtype, device=dev)

        def per_member(name: str, dtype=torch.float32) -> torch.Tensor:
            return torch.as_tensor(self.hyperparameter_table(name)[:, idx], dtype=dtype, device=dev)

        table = {
            name: np.asarray(self.model.per_population(pops, name))
            for name in ("C", "g_L", "V_L_mV", "V_th_mV", "V_reset_mV", "T_ref_ms", "ou_tau_ms", "poisson_weight")
        }
        ou_b = np.sqrt(1.0 - fpmath.exp(-2.0 * dt / table["ou_tau_ms"]))
        lam_table = self.hyperparameter_table("poisson_rate_hz") * (dt / 1000.0)
        if lam_table.max() > _MAX_POISSON_EVENTS_PER_STEP:
            raise ParameterError(
                f"poisson_rate_hz gives {lam_table.max():.3g} expected events per step of {dt} ms (at most "
                f"{_MAX_POISSON_EVENTS_PER_STEP:g} supported); use the OU current for strong drive or a smaller dt"
            )
        lam_max = float(lam_table.max())
        g_L32 = np.float32(table["g_L"])
        return ExpandedParams(
            g=torch.stack([per_member(f"g_{u}") for u in self.model.receptor_names]),
            g_L=shared(g_L32),
            gLVL=shared(g_L32 * np.float32(table["V_L_mV"])),
            V_th=shared(table["V_th_mV"]),
            V_reset=shared(table["V_reset_mV"]),
            dt_over_C=shared(dt / table["C"]),
            n_ref=shared(np.rint(table["T_ref_ms"] / dt).astype(np.int32), torch.int32),
            ou_a=shared(1.0 - fpmath.exp(-dt / table["ou_tau_ms"])),
            ou_mu=per_member("ou_mu"),
            ou_b_sigma=torch.as_tensor(
                (self.hyperparameter_table("ou_sigma") * ou_b[None, :])[:, idx], dtype=torch.float32, device=dev
            ),
            i_ext=per_member("i_ext") * self._gain,
            poisson_lam=torch.as_tensor(lam_table[:, idx], dtype=torch.float64, device=dev),
            poisson_p0=torch.as_tensor(fpmath.exp(-lam_table)[:, idx], dtype=torch.float64, device=dev),
            poisson_k=shared(table["poisson_weight"].astype(np.int32), torch.int32),
            poisson_max_events=int(math.ceil(lam_max + 20.0 * math.sqrt(lam_max) + 30.0)),
            decay=torch.as_tensor(
                fpmath.exp(np.array([-dt / r.tau_ms for r in self.model.receptors])), dtype=torch.float32, device=dev
            ).view(-1, 1, 1),
            E_rev=tuple(r.E_rev_mV for r in self.model.receptors),
            receptor_kind=tuple(0 if r.source_kind == "E" else 1 for r in self.model.receptors),
            keys=tuple(
                torch.tensor([split_seed(s)[w] for s in self.ensemble.seeds], dtype=torch.int64, device=dev).view(-1, 1)
                for w in (0, 1)
            ),
            neuron_ids=self._neuron_id_words(),
            integrator=self.model.integrator,
            ou_on=bool(np.any(self.hyperparameter_table("ou_sigma") > 0)),
            poisson_on=bool(lam_max > 0),
        )

    def _neuron_id_words(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.arange(self.network.n_neurons, dtype=torch.int64, device=self.device).view(1, -1)
        return ids & 0xFFFFFFFF, ids >> 32

    def _initial_state(self, initial_V) -> EngineState:
        M, N, R = self.n_members, self.network.n_neurons, len(self.model.receptors)
        dev = self.device
        p = self.params
        if isinstance(initial_V, str):
            if initial_V not in INITIAL_V_MODES:
                raise ParameterError(f"initial_V must be one of {INITIAL_V_MODES} or an array, got {initial_V!r}")
            if initial_V == "uniform":
                words = philox4x32((*self._neuron_id_words(), 0, int(Stream.INITIAL_STATE)), p.keys)
                u = uniform_from_uint32(words[0])
                V = (p.V_reset + (p.V_th - p.V_reset) * u).to(torch.float32)
            elif initial_V == "rest":
                V = torch.as_tensor(
                    np.asarray(self.model.per_population(self.network.population_names, "V_L_mV"))[self._pop_index_np],
                    dtype=torch.float32,
                    device=dev,
                ).expand(M, N)
            else:
                V = p.V_reset.expand(M, N)
        else:
            arr = np.asarray(initial_V, dtype=np.float32)
            if arr.shape not in ((N,), (M, N)) or not np.all(np.isfinite(arr)):
                raise ParameterError(f"initial_V array must be finite with shape ({N},) or ({M}, {N}), got {arr.shape}")
            V = torch.as_tensor(arr, device=dev).expand(M, N)
        return EngineState(
            V=V.contiguous().clone(),
            J=torch.zeros((R, M, N), dtype=torch.float32, device=dev),
            I_ou=p.ou_mu.expand(M, N).clone(),
            refractory=torch.zeros((M, N), dtype=torch.int32, device=dev),
            step=0,
        )

    # ------------------------------------------------------------------ running
    def _steps(self, duration_ms: float, what: str) -> int:
        steps = duration_ms / self.model.dt_ms
        if not math.isfinite(steps) or steps < 0 or abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            raise ParameterError(
                f"{what} ({duration_ms} ms) must be a non-negative multiple of dt ({self.model.dt_ms} ms)"
            )
        return int(round(steps))

    def _advance(self, n_steps: int, progress: Progress) -> None:
        """Integrate ``n_steps`` steps, delivering spikes at every interval boundary."""
        D = self.model.delay_steps
        recorder = self._recorder
        while n_steps > 0:
            offset = self.state.step % D
            n = min(D - offset, n_steps)
            step0 = self.state.step
            result = self.backend.integrate(
                self.state, self._drive, self.params, n, offset, recorder.sample_ids, recorder.sample_every
            )
            spikes = result.rows()  # (step in call, member, neuron), found once
            recorder.add(step0, n, result, spikes)
            if spikes.numel():
                slots = spikes.clone()
                slots[:, 0] += offset
                self._pending.append(slots)
            if offset + n == D:
                self._deliver_interval()
            n_steps -= n
            progress.update(n)

    def run_counts(self, duration_ms: float, out: torch.Tensor | None = None) -> torch.Tensor:
        """Simulate ``duration_ms`` and return only the spike counts per (bin, member, population).

        The lean path of a twin window (:class:`~dtb.sim.regional.RegionalBold`): the same steps,
        state and spike counts as :meth:`run` (bins of ``record.count_bin_ms``), but no recorder,
        no xarray tree and no provenance.  Backends with a counting kernel
        (``integrate_counts``: the ``cuda_ext`` CPU kernels) count inside the kernel; others
        count the spike rows of each interval (one ``index_put_``).

        Parameters
        ----------
        duration_ms : biological time [ms], a multiple of ``count_bin_ms``; the simulation must
            stand at a bin boundary.
        out : optional (n_bins, n_members, n_populations) int32 tensor on the simulation's device
            to fill (it is zeroed first), so a caller can reuse one buffer for every window.

        Returns
        -------
        torch.Tensor
            (n_bins, n_members, n_populations) int32: spikes in [bin start, bin start + bin).
        """
        n_steps = self._steps(duration_ms, "duration_ms")
        spec = self.record_spec
        bin_steps = self._steps(spec.count_bin_ms, "record.count_bin_ms") if spec.count_bin_ms > 0 else 0
        if bin_steps < 1 or n_steps % bin_steps or self.state.step % bin_steps:
            raise ParameterError(
                f"duration_ms ({duration_ms}) and the current time ({self.time_ms} ms) must be multiples of "
                f"record.count_bin_ms ({spec.count_bin_ms} ms)"
            )
        shape = (n_steps // bin_steps, self.n_members, len(self.network.populations))
        if out is None:
            out = torch.zeros(shape, dtype=torch.int32, device=self.device)
        else:
            if tuple(out.shape) != shape or out.dtype != torch.int32 or not out.is_contiguous():
                raise ParameterError(f"run_counts: out must be a contiguous int32 tensor of shape {shape}")
            out.zero_()
        if self._population_int32 is None:
            self._population_int32 = self._pop_index.to(torch.int32).contiguous()
        counter = getattr(self.backend, "integrate_counts", None)
        D = self.model.delay_steps
        first = self.state.step
        while n_steps > 0:
            offset = self.state.step % D
            n = min(D - offset, n_steps)
            done = self.state.step - first
            b0, phase = divmod(done, bin_steps)
            if counter is not None:
                bins = out[b0 : (done + n - 1) // bin_steps + 1]
                rows = counter(
                    self.state, self._drive, self.params, n, offset, bins, self._population_int32, phase, bin_steps
                )
            else:
                rows = self.backend.integrate(self.state, self._drive, self.params, n, offset, None, 1).rows()
                if rows.numel():
                    index = ((rows[:, 0] + done) // bin_steps, rows[:, 1], self._pop_index[rows[:, 2]])
                    out.index_put_(index, torch.ones(len(rows), dtype=torch.int32, device=out.device), accumulate=True)
            if rows.numel():
                slots = rows if counter is not None else rows.clone()  # the kernel's rows are ours to change
                slots[:, 0] += offset
                self._pending.append(slots)
            if offset + n == D:
                self._deliver_interval()
            n_steps -= n
        return out

    def _deliver_interval(self) -> None:
        """End of an interval: deliver its spikes into the (fresh) drive of the next one.

        The one point where spikes cross between neurons; the multi-process engine
        (:mod:`dtb.sim.distributed`) replaces it with an exchange of spike ids.  The drive is
        all zero afterwards except for the new input: cleared here in place, or already
        zeroed slot by slot by a backend that consumes what it reads (``consumes_drive``).
        """
        if not getattr(self.backend, "consumes_drive", False):
            self._drive.zero_()  # in place: no new allocation per interval
        if self._pending:
            pending = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending)
            self.backend.deliver(pending, self._graph, self._drive)
        self._pending = []

    def run_chunks(
        self,
        duration_ms: float,
        *,
        chunk_ms: float | None = None,
        to_store: bool = False,
        progress: bool | str | None = None,
    ) -> Iterator[dict[str, xr.Dataset]]:
        """Simulate ``duration_ms`` [ms] chunk by chunk, yielding each chunk's records.

        The one way through the engine's time loop, for :meth:`run` and for engines built on this
        one (:class:`dtb.sim.distributed.DistributedSimulation` gathers each chunk across ranks).
        Yields, per chunk of ``chunk_ms`` [ms] (default: 100 ms when ``to_store``, else the whole
        duration; rounded to whole count bins), the recorder's datasets by group
        (``population_counts``, ``spikes``, ``samples``); at least one, possibly empty, chunk.
        """
        n_steps = self._steps(duration_ms, "duration_ms")
        spec = self.record_spec
        bin_steps = self._recorder.bin_steps
        if spec.population_counts and (n_steps % bin_steps or self.state.step % bin_steps):
            raise ParameterError(
                f"duration_ms ({duration_ms}) must be a multiple of record.count_bin_ms ({spec.count_bin_ms} ms)"
            )
        if chunk_ms is None:
            chunk_steps = self._steps(100.0, "chunk") if to_store else max(n_steps, 1)
        else:
            chunk_steps = self._steps(chunk_ms, "chunk_ms")
            if chunk_steps == 0:
                raise ParameterError("chunk_ms must be > 0")
        if spec.population_counts:
            chunk_steps = max(bin_steps, chunk_steps - chunk_steps % bin_steps)
        bar = Progress(n_steps, "simulate", progress, unit_scale=self.model.dt_ms, unit="ms")
        try:
            done = 0
            while True:  # at least one (possibly empty) chunk, so run(0) returns empty records
                n = min(chunk_steps, n_steps - done)
                self._recorder.reset()
                self._advance(n, bar)
                done += n
                yield self._recorder.datasets()
                if done >= n_steps:
                    break
        finally:
            bar.close()

    def run(
        self,
        duration_ms: float,
        *,
        store: str | Path | None = None,
        chunk_ms: float | None = None,
        progress: bool | str | None = None,
        overwrite: bool = False,
    ) -> xr.DataTree:
        """Simulate ``duration_ms`` of biological time and return what was recorded.

        Parameters
        ----------
        duration_ms : biological time [ms]; a multiple of dt (and of ``count_bin_ms``).
        store : path of a zarr store to stream the records to (appended chunk by chunk,
            and across calls of ``run`` with the same store).  The returned tree is then
            opened lazily from the store and holds everything written to it so far.
        chunk_ms : records are handed over (and written) every ``chunk_ms``; default
            100 ms with a store, the whole run without one.
        progress : ``"bar"`` (or True), ``"log"`` (plain log lines), ``"none"`` (or False), or
            ``"auto"`` (or None: a bar on a terminal, log lines otherwise).
        overwrite : replace an existing store instead of refusing to touch it.

        Returns
        -------
        xarray.DataTree
            Children ``population_counts``, ``spikes`` and ``samples`` (as recorded), with
            provenance in the root attributes.
        """
        store_key = None
        if store is not None:
            store_key = str(Path(store).resolve())
            if store_key not in self._stores_written and Path(store).exists() and not overwrite:
                raise ParameterError(
                    f"store {store} already exists; choose a new path or pass overwrite=True (--overwrite)"
                )
        chunks: dict[str, list[xr.Dataset]] = {}
        for parts in self.run_chunks(duration_ms, chunk_ms=chunk_ms, to_store=store is not None, progress=progress):
            for group, ds in parts.items():
                if store_key is not None:
                    self._write(store, store_key, group, ds)
                else:
                    chunks.setdefault(group, []).append(ds)
        if store_key is not None:
            zarr.open_group(store, mode="a", zarr_format=3).attrs.update(json_safe(self.provenance()))
            return open_tree(store, verify=False)  # just written here
        tree = {
            f"/{g}": xr.concat(parts, dim=APPEND_DIMS[g]) if len(parts) > 1 else parts[0] for g, parts in chunks.items()
        }
        result = xr.DataTree.from_dict(tree)
        result.attrs = json_safe(self.provenance())
        return result

    def _write(self, store, store_key: str, group: str, ds: xr.Dataset) -> None:
        written = self._stores_written.setdefault(store_key, set())
        write_group(store, group, ds, APPEND_DIMS[group], first=group not in written)
        written.add(group)

    # ------------------------------------------------------------------ provenance & state
    def provenance(self) -> dict:
        """JSON-safe description of this simulation (stored with every output)."""
        return {
            "dtb_version": __version__,
            "arithmetic_contract": ARITHMETIC_CONTRACT,
            "seeds": list(self.ensemble.seeds),
            "n_members": self.n_members,
            "backend": self.backend.name,
            "device": str(self.device),
            "dt_ms": self.model.dt_ms,
            "delay_ms": self.model.delay_ms,
            "integrator": self.model.integrator,
            "n_neurons": self.network.n_neurons,
            "n_synapses": self.network.n_synapses,
            "populations": {p.name: {"size": p.size, "kind": p.kind} for p in self.network.populations},
            "receptors": [vars(r) for r in self.model.receptors],
            "neuron_params": {
                name: {**{k: v for k, v in vars(p).items() if k != "g"}, "g": dict(p.g)}
                for name, p in self.model.populations.items()
            },
            "hyperparameters": {k: v.tolist() for k, v in self._hyper.items()},
            "network_metadata": self.network.metadata,
            "simulated_ms": self.time_ms,
            "current_unit": self.current_unit,
        }

    def state_dict(self) -> dict:
        """Everything needed to continue this simulation exactly (CPU tensors + step).

        Random numbers are a function of (seed, neuron, step), so the step index *is*
        the generator state.  Hyperparameters are included; the network and model are not.
        """
        s = self.state
        return {
            "step": s.step,
            "V": s.V.cpu().clone(),
            "J": s.J.cpu().clone(),
            "I_ou": s.I_ou.cpu().clone(),
            "refractory": s.refractory.cpu().clone(),
            "drive": self._drive.cpu().clone(),
            "pending_spikes": torch.cat(self._pending).cpu()
            if self._pending
            else torch.zeros((0, 3), dtype=torch.int64),
            "seeds": list(self.ensemble.seeds),
            "hyperparameters": {k: v.copy() for k, v in self._hyper.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` taken from a simulation of the same network and model."""
        if list(state["seeds"]) != list(self.ensemble.seeds):
            raise ParameterError(
                f"state was saved with seeds {state['seeds']}, this simulation has {list(self.ensemble.seeds)}"
            )
        if tuple(state["V"].shape) != tuple(self.state.V.shape) or tuple(state["drive"].shape) != tuple(
            self._drive.shape
        ):
            raise ParameterError("state does not match this simulation's members, neurons or delay")
        dev = self.device
        self.state = EngineState(
            V=state["V"].to(dev).clone(),
            J=state["J"].to(dev).clone(),
            I_ou=state["I_ou"].to(dev).clone(),
            refractory=state["refractory"].to(dev).clone(),
            step=int(state["step"]),
        )
        self._drive = state["drive"].to(dev).clone()
        pending = state["pending_spikes"].to(dev)
        self._pending = [pending] if pending.numel() else []
        self._hyper = {k: np.asarray(v, dtype=np.float64).copy() for k, v in state["hyperparameters"].items()}
        self.params = self._expand_params()
