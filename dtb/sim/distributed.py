"""One simulation over many MPI processes (ranks), bitwise identical to one process.

Two ensemble layouts (:class:`DistributedConfig`):

``"neurons"`` (one brain split across ranks)
    Rank r owns the contiguous neuron block of whole populations that
    :func:`~dtb.network.partition.partition_populations` gives it (balanced by neurons x
    in-degree), for every member, and the incoming synapses of those neurons (built by
    the rank itself with :func:`~dtb.network.build.build_block` from a ``Layout``, or cut
    from a ``Network``).  It keeps state only for its own neurons.  Once per min-delay
    interval it sends the ids of its spiking neurons to the ranks that hold their targets
    (:class:`~dtb.sim.spike_exchange.SpikeExchange`: non-blocking Alltoallv, overlapped with
    the delivery of its own spikes).
``"members"`` (members split across ranks)
    Each rank simulates the whole brain for a contiguous block of members; no spike
    traffic at all.

Either way the results do not depend on the number of ranks: noise is Philox keyed by
(member seed, global neuron id, step), the graph is a pure function of (seed, target id),
and synaptic input is accumulated as integers.

Outputs.  ``run`` gathers the population counts (the BOLD input, small) and the sampled
traces on every rank (``allgather``), so every rank gets the single-process
``population_counts`` and can run the same assimilation code.  With a store, rank 0 writes
``population_counts`` and ``samples`` exactly as a single process does, and every rank
writes its own spike events to ``spikes/rank_<r>`` (global neuron ids, members as in the
whole ensemble); :func:`read_spikes` merges them into the single-process ``spikes``
table.  Without a store the returned tree also holds the merged spike events (gathered
from all ranks: meant for small runs; pass ``RecordSpec(spikes=False)`` otherwise).

Failures.  Use :func:`abort_on_error` around SPMD code: a rank that raises reports
``rank r of n: <error>`` on stderr and calls ``comm.Abort``, so no rank hangs in a
collective.  For tests, ``DTB_INJECT_FAULT="<rank>:<interval>"`` makes that rank raise at
the end of that interval.

Examples
--------
Run under ``mpiexec -n 4 python script.py``::

    from mpi4py import MPI
    sim = DistributedSimulation(layout, model, ensemble=ensemble, comm=MPI.COMM_WORLD)
    with abort_on_error(sim.comm):
        tree = sim.run(1000.0, store="run.zarr")
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import zarr

from dtb.errors import BackendUnavailableError, ConfigError, DTBError, ParameterError
from dtb.io.store import json_safe, open_tree, write_group
from dtb.network.build import SynapseBlock, build_block, build_network, even_ranges
from dtb.network.graph import Network
from dtb.network.layout import Layout
from dtb.network.partition import Partition, partition_populations
from dtb.sim.engine import Ensemble, Simulation
from dtb.sim.mpi_launch import INIT_TIMEOUT_ENV, init_timeout_s
from dtb.sim.params import ModelParams
from dtb.sim.recording import APPEND_DIMS, RecordSpec
from dtb.sim.spike_exchange import SpikeExchange
from dtb.validation import check_choice, resolve_device

__all__ = [
    "LAYOUTS",
    "DistributedConfig",
    "DistributedSimulation",
    "InjectedFault",
    "abort_on_error",
    "block_from_network",
    "local_device",
    "max_op",
    "mpi_world",
    "ranks_share_of_cores",
    "read_spikes",
]

log = logging.getLogger("dtb")

LAYOUTS = ("neurons", "members")
FAULT_ENV = "DTB_INJECT_FAULT"
MPI_HINT = "pip install mpi4py mpich"


@dataclass(frozen=True)
class DistributedConfig:
    """How a simulation is spread over ranks.

    Parameters
    ----------
    layout : ``"neurons"`` (one brain split across ranks; every rank simulates all members
        for its neurons) or ``"members"`` (every rank a whole brain for a block of members).
    overlap : in the ``"neurons"`` layout, deliver local spikes while the spike ids of other
        ranks travel (non-blocking collectives); False exchanges first (blocking).
    """

    layout: str = "neurons"
    overlap: bool = True

    def __post_init__(self) -> None:
        check_choice(self.layout, "distributed layout", LAYOUTS, error=ConfigError)


class InjectedFault(RuntimeError):
    """Raised by a rank on purpose (``DTB_INJECT_FAULT``) to test failure handling."""


@contextlib.contextmanager
def init_watchdog(timeout_s: float, what: str = "MPI_Init"):
    """End this process with a message when the block has not finished within ``timeout_s`` [s].

    A forked watcher waits on a pipe: the block's end closes it (the watcher exits quietly); after
    ``timeout_s`` the watcher writes one line to stderr and kills this process (SIGTERM, then
    SIGKILL 2 s later), so a launcher (Hydra, ``srun --kill-on-bad-exit``) ends the job instead of
    waiting for ever. It needs no GIL: ``MPI_Init`` may hold it while it spins. 0 disables it.
    """
    if not timeout_s or timeout_s <= 0 or not hasattr(os, "fork"):
        yield
        return
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the watcher: no Python-level locks, only system calls
        try:
            os.close(write_end)
            ready, _, _ = select.select([read_end], [], [], timeout_s)
            if not ready:
                message = (
                    f"dtb: process {parent}: {what} did not finish within {timeout_s:g} s; ending it. Another MPI "
                    "job starting on this node at the same moment can cross-talk with this one: rerun the job "
                    f"(raise {INIT_TIMEOUT_ENV} if start-up is slow on this machine, 0 disables the limit)\n"
                )
                os.write(2, message.encode())
                os.kill(parent, signal.SIGTERM)
                time.sleep(2.0)
                os.kill(parent, signal.SIGKILL)
        except BaseException:  # noqa: BLE001 - the watcher never returns into the caller's code
            pass
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        yield
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)


def mpi_world():
    """``mpi4py.MPI.COMM_WORLD``, or a clear error with the install hint when MPI is missing.

    The first call initialises MPI under :func:`init_watchdog` (``DTB_MPI_INIT_TIMEOUT`` seconds,
    default 300): a rank stuck in ``MPI_Init`` ends itself with a message instead of hanging.
    """
    try:
        if "mpi4py.MPI" in sys.modules:
            from mpi4py import MPI
        else:
            with init_watchdog(init_timeout_s()):
                from mpi4py import MPI
    except ImportError as exc:
        raise BackendUnavailableError(
            f"multi-process simulation needs mpi4py and an MPI runtime ({exc}); install them with `{MPI_HINT}`"
        ) from None
    return MPI.COMM_WORLD


def local_device(comm, device: str | torch.device | None) -> torch.device:
    """The device of this rank: ``"auto"``/None gives ``cuda:<local rank % GPUs>`` when CUDA
    is present (one rank per GPU), else the CPU; explicit devices are kept."""
    if device is not None and str(device) != "auto":
        return resolve_device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    local_rank = local.Get_rank()
    local.Free()
    return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")


def max_op():
    """``MPI.MAX`` (for ``comm.allreduce(value, op=max_op())``)."""
    from mpi4py import MPI

    return MPI.MAX


def ranks_share_of_cores(comm) -> int:
    """CPU threads per rank that do not oversubscribe the node: cores // ranks on this node."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    per_node = local.Get_size()
    local.Free()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // per_node)


@contextlib.contextmanager
def abort_on_error(comm, stream=None):
    """Report any exception as ``rank r of n: ...`` and abort every rank (no hangs).

    Without this, a rank that fails leaves the others blocked in the next collective.
    """
    try:
        yield
    except BaseException as exc:  # noqa: BLE001 - every failure must end all ranks
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        out = stream or sys.stderr
        name = type(exc).__name__
        print(f"dtb: rank {comm.Get_rank()} of {comm.Get_size()} failed: {name}: {exc}", file=out, flush=True)
        if not isinstance(exc, DTBError):  # a bug or a system failure: keep the traceback
            traceback.print_exc(file=out)
            out.flush()
        time.sleep(0.2)  # let the launcher forward the message before it tears the job down
        code = 2 if isinstance(exc, DTBError) else 1
        comm.Abort(code)
        os._exit(code)  # Abort may return before the launcher kills this process


def block_from_network(network: Network, start: int, stop: int) -> SynapseBlock:
    """The incoming synapses of targets ``start .. stop-1`` of a whole network (CSR by target)."""
    sources = np.repeat(np.arange(network.n_neurons, dtype=np.int64), np.diff(network.indptr))
    targets = network.targets.astype(np.int64)
    keep = (targets >= start) & (targets < stop)
    sources, targets, weights = sources[keep], targets[keep], network.weights[keep]
    order = np.argsort(targets, kind="stable")
    indptr = np.zeros(stop - start + 1, dtype=np.int64)
    np.cumsum(np.bincount(targets - start, minlength=stop - start), out=indptr[1:])
    return SynapseBlock(start, stop, indptr, sources[order].astype(np.uint32), weights[order])


def _population_indegrees(network: Network) -> np.ndarray:
    """Mean in-degree of every population (the partitioner's cost weight)."""
    per_neuron = network.in_degrees()
    sums = np.add.reduceat(per_neuron, network.offsets[:-1]) if per_neuron.size else np.zeros(0)
    return np.maximum(sums / np.array([p.size for p in network.populations]), 1.0)


def _fault_interval(rank: int) -> int | None:
    spec = os.environ.get(FAULT_ENV, "").strip()
    if not spec:
        return None
    try:
        fault_rank, interval = (int(x) for x in spec.split(":"))
    except ValueError:
        raise ConfigError(f"{FAULT_ENV} must be '<rank>:<interval>', got {spec!r}") from None
    return interval if fault_rank == rank else None


class _RankSimulation(Simulation):
    """The engine on one rank's neuron block: global neuron ids, exchanged delivery."""

    def __init__(self, *args, id_offset: int, rank: int, **kwargs) -> None:
        self._id_offset = int(id_offset)
        self.exchange: SpikeExchange | None = None  # set by DistributedSimulation (neurons layout)
        self._intervals_done = 0
        self._fault_at = _fault_interval(rank)
        self._rank = rank
        super().__init__(*args, **kwargs)

    def _neuron_id_words(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = self._id_offset
        ids = torch.arange(start, start + self.network.n_neurons, dtype=torch.int64, device=self.device).view(1, -1)
        return ids & 0xFFFFFFFF, ids >> 32

    def _deliver_interval(self) -> None:
        self._intervals_done += 1
        if self._fault_at is not None and self._intervals_done == self._fault_at:
            raise InjectedFault(f"injected fault ({FAULT_ENV}) on rank {self._rank} at interval {self._fault_at}")
        if self.exchange is None:
            super()._deliver_interval()
            return
        rows = torch.cat(self._pending) if self._pending else torch.zeros((0, 3), dtype=torch.int64)
        self._pending = []
        self._drive = torch.zeros_like(self._drive)
        self.exchange.deliver(rows, self._drive, self.backend)


class DistributedSimulation:
    """A :class:`~dtb.sim.engine.Simulation` spread over the ranks of an MPI communicator.

    Every rank constructs it with the same arguments (SPMD); results equal those of one
    process with the same arguments, bit for bit.

    Parameters
    ----------
    network : Network or Layout
        A whole network (every rank holds it and cuts its own block), or a network
        ``Layout`` (each rank builds only its own block's synapses; the scalable path).
    model : ModelParams
    comm : mpi4py communicator (default ``MPI.COMM_WORLD``).
    config : DistributedConfig (layout and overlap).
    seed, ensemble, backend, record, initial_V, ext_gain, current_unit
        As for :class:`~dtb.sim.engine.Simulation`, always for the *whole* ensemble and
        network (arrays of shape (n_neurons,) or (n_members, n_populations)); each rank
        takes its part.
    device : ``"auto"`` (default) gives ``cuda:<local rank>`` when CUDA is present, else CPU.
    """

    def __init__(
        self,
        network: Network | Layout,
        model: ModelParams,
        *,
        comm=None,
        config: DistributedConfig | None = None,
        seed: int | None = None,
        ensemble: Ensemble | None = None,
        backend: str = "torch",
        device: str | torch.device | None = "auto",
        record: RecordSpec | None = None,
        initial_V: str | np.ndarray = "uniform",
        ext_gain: np.ndarray | None = None,
        current_unit: str = "1",
    ) -> None:
        self.comm = comm if comm is not None else mpi_world()
        self.rank, self.n_ranks = self.comm.Get_rank(), self.comm.Get_size()
        self.config = config or DistributedConfig()
        if not isinstance(network, (Network, Layout)):
            raise ParameterError(f"network must be a dtb Network or Layout, got {type(network).__name__}")
        if ensemble is not None and seed is not None:
            raise ParameterError("give either seed (single run) or ensemble (several members), not both")
        if ensemble is None:
            if seed is None:
                raise ParameterError("a distributed simulation needs a seed or an ensemble (every rank must agree)")
            ensemble = Ensemble.single(seed)
        self.ensemble = ensemble
        self.model = model
        self.record_spec = record or RecordSpec()
        self.populations = tuple(network.populations)
        self.offsets = np.concatenate([[0], np.cumsum([p.size for p in self.populations])]).astype(np.int64)
        self.n_neurons = int(self.offsets[-1])
        self._check_record(self.record_spec)
        device = local_device(self.comm, device)
        if self.config.layout == "members":
            local_network, local_record, block = self._place_members(network), self.record_spec, None
        else:
            local_network, block = self._place_neurons(network)
            local_record = self._local_record(self.record_spec, *self.id_range)
        self.network_metadata = dict(network.metadata) if isinstance(network, Network) else {"layout": "Layout"}
        m0, m1 = self.member_range
        p0, p1 = self.population_range
        local_ensemble = Ensemble(
            ensemble.seeds[m0:m1], {k: v[m0:m1, p0:p1] for k, v in ensemble.hyperparameters.items()}
        )
        self.local = _RankSimulation(
            local_network,
            model,
            ensemble=local_ensemble,
            backend=backend,
            device=device,
            record=local_record,
            initial_V=self._local_initial_V(initial_V),
            ext_gain=None if ext_gain is None else self._slice_neurons(np.asarray(ext_gain, dtype=np.float64)),
            current_unit=current_unit,
            id_offset=self.id_range[0],
            rank=self.rank,
        )
        self.device = self.local.device
        self._hyper = {k: np.asarray(v, dtype=np.float64).copy() for k, v in ensemble.hyperparameters.items()}
        if block is not None:
            self.local.exchange = SpikeExchange(
                self.comm,
                block,
                self.partition.id_ranges,
                self._inhibitory,
                n_members=ensemble.n_members,
                delay_steps=model.delay_steps,
                device=self.device,
                overlap=self.config.overlap,
            )
            self.n_local_synapses = block.n_synapses
            self.n_synapses = int(self.comm.allreduce(block.n_synapses))
        else:
            self.n_local_synapses = self.n_synapses = local_network.n_synapses
        self._stores_written: set[str] = set()

    # ------------------------------------------------------------------ placement
    def _place_members(self, network: Network | Layout) -> Network:
        """Members layout: this rank's member block; the whole network."""
        M = self.ensemble.n_members
        if self.n_ranks > M:
            raise ParameterError(
                f"the members layout needs at least one member per rank: {M} member(s) on {self.n_ranks} ranks; "
                "use fewer ranks, more members, or the 'neurons' layout"
            )
        self.partition = None
        self.member_range = even_ranges(M, self.n_ranks)[self.rank]
        self.id_range = (0, self.n_neurons)
        self.population_range = (0, len(self.populations))
        return network if isinstance(network, Network) else build_network(network)

    def _place_neurons(self, network: Network | Layout) -> tuple[Network, SynapseBlock]:
        """Neurons layout: this rank's populations (partitioner) and their incoming synapses."""
        indegrees = network.indegrees if isinstance(network, Layout) else _population_indegrees(network)
        self.partition: Partition | None = partition_populations(
            [p.size for p in self.populations], indegrees, self.n_ranks
        )
        self.member_range = (0, self.ensemble.n_members)
        self.id_range = start, stop = self.partition.rank_range(self.rank)
        p0, p1 = (int(x) for x in self.partition.population_ranges[self.rank : self.rank + 2])
        self.population_range = (p0, p1)
        block = (
            build_block(network, start, stop)
            if isinstance(network, Layout)
            else block_from_network(network, start, stop)
        )
        no_synapses = Network(
            self.populations[p0:p1],
            np.zeros(stop - start + 1, dtype=np.int64),
            np.zeros(0, dtype=np.uint32),
            np.zeros(0, dtype=np.uint8),
            {"rank_block": [start, stop]},
        )
        return no_synapses, block

    def _inhibitory(self, ids: np.ndarray) -> np.ndarray:
        """True for global ids of ``I`` populations (no per-neuron table of the whole brain)."""
        population = np.searchsorted(self.offsets, ids, side="right") - 1
        return np.array([p.kind == "I" for p in self.populations])[population]

    # ------------------------------------------------------------------ slicing helpers
    def _check_record(self, spec: RecordSpec) -> None:
        for name in ("sample_neurons", "spike_neurons"):
            ids = np.asarray(getattr(spec, name) or (), dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= self.n_neurons):
                raise ParameterError(
                    f"record: {name} must be ids in [0, {self.n_neurons}), got {ids.min()}..{ids.max()}"
                )

    @staticmethod
    def _local_record(spec: RecordSpec, start: int, stop: int) -> RecordSpec:
        samples = tuple(int(i) - start for i in spec.sample_neurons if start <= i < stop)
        spikes = spec.spike_neurons
        if spikes is not None:
            spikes = tuple(int(i) - start for i in spikes if start <= i < stop)
        return replace(spec, sample_neurons=samples, spike_neurons=spikes)

    def _slice_neurons(self, values: np.ndarray) -> np.ndarray:
        start, stop = self.id_range
        if values.shape[-1] != self.n_neurons:
            raise ParameterError(f"per-neuron array must have {self.n_neurons} columns, got shape {values.shape}")
        return values[..., start:stop]

    def _local_initial_V(self, initial_V):
        if isinstance(initial_V, str):
            return initial_V
        arr = np.asarray(initial_V, dtype=np.float32)
        arr = self._slice_neurons(arr)
        if arr.ndim == 2 and arr.shape[0] == self.ensemble.n_members:
            arr = arr[self.member_range[0] : self.member_range[1]]
        return arr

    # ------------------------------------------------------------------ engine API
    @property
    def n_members(self) -> int:
        return self.ensemble.n_members

    @property
    def step(self) -> int:
        return self.local.step

    @property
    def current_unit(self) -> str:
        return self.local.current_unit

    @property
    def backend(self):
        """This rank's backend (every rank runs the same one)."""
        return self.local.backend

    @property
    def time_ms(self) -> float:
        return self.local.time_ms

    @property
    def exchange_stats(self) -> dict:
        """This rank's spike traffic (empty in the members layout)."""
        exchange = self.local.exchange
        return exchange.stats.as_dict() if exchange is not None else {}

    def set_hyperparameters(self, **values: np.ndarray) -> None:
        """Change hyperparameters; each value has shape (n_members, n_populations) (whole ensemble)."""
        m0, m1 = self.member_range
        p0, p1 = self.population_range
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        for name, arr in arrays.items():
            if arr.shape != (self.n_members, len(self.populations)):
                raise ParameterError(
                    f"hyperparameter {name!r} must have shape (n_members={self.n_members}, "
                    f"n_populations={len(self.populations)}), got {arr.shape}"
                )
        self.local.set_hyperparameters(**{k: v[m0:m1, p0:p1] for k, v in arrays.items()})
        self._hyper.update({k: v.copy() for k, v in arrays.items()})

    def hyperparameter_table(self, name: str) -> np.ndarray:
        """Current value of ``name`` per member and population of the whole ensemble, (M, P)."""
        if name in self._hyper:
            return self._hyper[name].copy()
        base = np.asarray(self.model.per_population(tuple(p.name for p in self.populations), name), np.float64)
        return np.broadcast_to(base, (self.n_members, base.size)).copy()

    def state_dict(self) -> dict:
        """This rank's state (its neurons and members), tagged with its place in the run.

        Every rank saves its own; :meth:`load_state_dict` restores it on the same layout.
        """
        state = self.local.state_dict()
        state["hyperparameters"] = {k: v.copy() for k, v in self._hyper.items()}
        state["seeds"] = list(self.ensemble.seeds)
        state["distributed"] = self._placement()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` saved by the same rank of the same layout."""
        placement = state.get("distributed")
        if placement != self._placement():
            raise ParameterError(
                f"rank {self.rank}: the state was saved by {placement}, this rank is {self._placement()}; "
                "restore with the same number of ranks and layout"
            )
        m0, m1 = self.member_range
        p0, p1 = self.population_range
        local = dict(state)
        local["seeds"] = list(self.ensemble.seeds[m0:m1])
        local["hyperparameters"] = {k: np.asarray(v)[m0:m1, p0:p1] for k, v in state["hyperparameters"].items()}
        self.local.load_state_dict(local)
        self._hyper = {k: np.asarray(v, dtype=np.float64).copy() for k, v in state["hyperparameters"].items()}

    def _placement(self) -> dict:
        return {
            "layout": self.config.layout,
            "rank": self.rank,
            "n_ranks": self.n_ranks,
            "id_range": list(self.id_range),
            "member_range": list(self.member_range),
        }

    def provenance(self) -> dict:
        """JSON-safe description of the whole run (not collective: any rank may call it)."""
        prov = self.local.provenance()
        prov.update(
            {
                "seeds": list(self.ensemble.seeds),
                "n_members": self.n_members,
                "n_neurons": self.n_neurons,
                "n_synapses": self.n_synapses,
                "populations": {p.name: {"size": p.size, "kind": p.kind} for p in self.populations},
                "hyperparameters": {k: v.tolist() for k, v in self._hyper.items()},
                "network_metadata": self.network_metadata,
                "distributed": {
                    "layout": self.config.layout,
                    "n_ranks": self.n_ranks,
                    "overlap": self.config.overlap,
                    "rank_id_ranges": None if self.partition is None else self.partition.id_ranges.tolist(),
                    "spikes": "per-rank groups spikes/rank_<r> (dtb.sim.distributed.read_spikes merges them)",
                },
            }
        )
        return prov

    # ------------------------------------------------------------------ running
    def run(
        self,
        duration_ms: float,
        *,
        store: str | Path | None = None,
        chunk_ms: float | None = None,
        progress: bool | str | None = None,
        overwrite: bool = False,
    ) -> xr.DataTree:
        """Simulate ``duration_ms`` on all ranks (collective) and return the gathered records.

        Parameters as for :meth:`dtb.sim.engine.Simulation.run`; progress is shown by rank 0
        only.  Every rank returns the same ``population_counts`` and ``samples``; see the
        module docstring for spikes.
        """
        store_key = self._prepare_store(store, overwrite) if store is not None else None
        chunks: dict[str, list[xr.Dataset]] = {}
        shown = progress if self.rank == 0 else "none"
        for parts in self.local.run_chunks(duration_ms, chunk_ms=chunk_ms, to_store=store is not None, progress=shown):
            gathered = self._gather(parts, keep_spikes=store_key is None)
            for group, ds in gathered.items():
                if store_key is not None:
                    self._write(store, store_key, group, ds)
                else:
                    chunks.setdefault(group, []).append(ds)
        prov = self.provenance()
        if store_key is not None:
            if self.rank == 0:
                zarr.open_group(store, mode="a", zarr_format=3).attrs.update(json_safe(prov))
            self.comm.Barrier()
            return open_tree(store, verify=False)  # just written here
        tree = {
            f"/{g}": xr.concat(parts, dim=APPEND_DIMS[g]) if len(parts) > 1 else parts[0] for g, parts in chunks.items()
        }
        result = xr.DataTree.from_dict(tree)
        result.attrs = json_safe(prov)
        return result

    def run_counts(self, duration_ms: float) -> torch.Tensor:
        """The lean twin window on all ranks (collective): spike counts per (bin, member, population)
        of the whole ensemble, (n_bins, n_members, n_populations) int32 on the CPU, on every rank.

        Each rank counts its own members (``members`` layout) or populations (``neurons``) with
        :meth:`~dtb.sim.engine.Simulation.run_counts`; the blocks are gathered (integers: the same
        counts as one process).
        """
        local = self.local.run_counts(duration_ms).cpu().numpy()
        pieces = self.comm.allgather(local)
        axis = 1 if self.config.layout == "members" else 2
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(pieces, axis=axis)))

    def _prepare_store(self, store, overwrite: bool) -> str:
        store_key = str(Path(store).resolve())
        if store_key in self._stores_written:
            return store_key
        problem = None
        if self.rank == 0:
            path = Path(store)
            if path.exists() and not overwrite:
                problem = f"store {store} already exists; choose a new path or pass overwrite=True (--overwrite)"
            else:
                try:
                    if path.exists():
                        shutil.rmtree(path)
                    root = zarr.open_group(str(path), mode="w", zarr_format=3)
                    if self.record_spec.spikes:
                        root.create_group("spikes")
                except OSError as exc:
                    problem = f"cannot create store {store}: {exc}"
        problem = self.comm.bcast(problem, root=0)
        if problem is not None:
            raise ParameterError(problem)
        return store_key

    def _write(self, store, store_key: str, group: str, ds: xr.Dataset) -> None:
        key = f"{store_key}::{group}"
        write_group(store, group, ds, APPEND_DIMS[group.split("/")[0]], first=key not in self._stores_written)
        self._stores_written.add(key)
        self._stores_written.add(store_key)

    def _gather(self, parts: dict[str, xr.Dataset], keep_spikes: bool) -> dict[str, xr.Dataset]:
        """Join one chunk's records of all ranks (collective).  Returns the groups this rank
        writes (store) or keeps (in memory)."""
        out: dict[str, xr.Dataset] = {}
        m0, start = self.member_range[0], self.id_range[0]
        if "population_counts" in parts:
            ds = parts["population_counts"]
            pieces = self.comm.allgather(ds["spike_count"].values)
            axis = 1 if self.config.layout == "members" else 2
            counts = np.concatenate(pieces, axis=axis)
            names = np.array([p.name for p in self.populations], dtype=object)
            full = xr.Dataset(
                {
                    "spike_count": (("time", "member", "population"), counts, ds["spike_count"].attrs),
                    "population_size": (("population",), np.diff(self.offsets), ds["population_size"].attrs),
                },
                coords={
                    "time": ds["time"],
                    "member": ("member", np.arange(self.n_members)),
                    "population": ("population", names),
                },
                attrs=ds.attrs,
            )
            out["population_counts"] = full
        if self.record_spec.sample_neurons:
            out_samples = self._gather_samples(parts.get("samples"))
            if out_samples is not None:
                out["samples"] = out_samples
        if "spikes" in parts:
            ds = parts["spikes"].copy()
            ds["member"] = ds["member"] + np.int32(m0)
            ds["neuron"] = ds["neuron"] + np.int64(start)
            if keep_spikes:
                out["spikes"] = _merge_spikes(self.comm.allgather(ds))
            else:
                out[f"spikes/rank_{self.rank:05d}"] = ds
        if not keep_spikes:  # store: rank 0 writes the gathered groups, each rank its spikes
            out = {g: ds for g, ds in out.items() if g.startswith("spikes/") or self.rank == 0}
        return out

    def _gather_samples(self, ds: xr.Dataset | None) -> xr.Dataset | None:
        pieces = [p for p in self.comm.allgather(None if ds is None else (self.id_range[0], ds)) if p is not None]
        if not pieces:
            return None
        if self.config.layout == "members":
            merged = xr.concat([d for _, d in pieces], dim="member", data_vars="minimal", coords="minimal")
            return merged.assign_coords(member=np.arange(self.n_members))
        joined = [d.assign_coords(neuron=d["neuron"].values + offset) for offset, d in pieces]
        merged = xr.concat(joined, dim="neuron", data_vars="minimal", coords="minimal")
        return merged.sel(neuron=list(self.record_spec.sample_neurons))


def _merge_spikes(pieces: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate spike tables and sort them by (step, member, neuron), the single-process order."""
    merged = xr.concat(pieces, dim="spike", data_vars="all") if len(pieces) > 1 else pieces[0]
    order = np.lexsort((merged["neuron"].values, merged["member"].values, merged["step"].values))
    return merged.isel(spike=order)


def read_spikes(store: str | Path) -> xr.Dataset:
    """The spike events of a distributed run's store, merged in single-process order.

    Also accepts a single-process store (returns its ``spikes`` group as is).
    """
    tree = open_tree(store)
    if "spikes" not in tree:
        raise ParameterError(f"store {store} has no spike events (was it run with spikes=False / --no-spikes?)")
    node = tree["spikes"]
    if node.has_data or not node.children:
        return node.to_dataset().load()
    pieces = [node[name].to_dataset().load() for name in sorted(node.children)]
    return _merge_spikes(pieces)
