"""Spike exchange between ranks: routing tables and the per-interval Alltoallv of spike ids.

A rank owns the neurons ``start .. stop-1`` and their *incoming* synapses (a
:class:`~dtb.network.build.SynapseBlock`, CSR by target with global source ids).  At
construction every rank tells the owner of each of its presynaptic neurons that it needs
that neuron's spikes (one Alltoallv of id lists), so each rank knows, for every neuron
it owns, the ranks that hold its targets.  Then, once per min-delay interval:

1. the rank's spike rows ``(slot, member, local id)`` are encoded as one integer per
   spike and destination, ``(slot * M + member) * n_neurons + global id`` (uint32 when
   ``D * M * n_neurons < 2**32``, else int64), grouped by destination rank;
2. the counts go out with a non-blocking ``Ialltoall`` and the ids with a non-blocking
   ``Ialltoallv``; while they travel the rank delivers its *own* spikes to its own
   targets (the overlap of communication with local work);
3. the received ids are decoded and delivered through the local synapses.

Delivery accumulates integers, so splitting it into a local and a remote part, in any
order, gives the drive of a single process bit for bit.  Ids are staged through host
memory (numpy buffers), so no CUDA-aware MPI is needed; spikes are few compared with
the state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from dtb.network.build import SynapseBlock
from dtb.sim.backends.base import Backend, DeviceNetwork

__all__ = ["ExchangeStats", "SpikeExchange"]


@dataclass
class ExchangeStats:
    """Counters of one rank's spike traffic (since construction)."""

    intervals: int = 0
    spikes_sent: int = 0  #: spike ids sent to other ranks (one per spike and destination)
    bytes_sent: int = 0  #: payload bytes sent to other ranks (ids only, not the counts)
    spikes_received: int = 0
    bytes_received: int = 0
    wait_s: float = 0.0  #: time blocked in MPI waits (not hidden by local delivery)
    exchange_s: float = 0.0  #: time in :meth:`SpikeExchange.deliver` in all

    def as_dict(self) -> dict:
        return dict(vars(self))


class SpikeExchange:
    """Routes the spikes of one rank's neurons to the ranks that hold their targets.

    Parameters
    ----------
    comm : mpi4py communicator of the ranks that split the brain.
    block : incoming synapses of this rank's neurons (targets ``block.start .. block.stop-1``).
    id_ranges : int64 (n_ranks + 1,), first neuron id of every rank plus ``n_neurons``.
    inhibitory : bool (n_neurons,), or a callable giving it for an id array: True for
        neurons of ``I`` populations (their spikes drive the inhibitory channels).
    n_members : ensemble members simulated by every rank.
    delay_steps : D, steps per interval.
    device : torch device of the drive tensor.
    overlap : post non-blocking collectives and deliver local spikes while they travel
        (True), or exchange first with blocking collectives (False, for comparison).
    """

    def __init__(
        self,
        comm,
        block: SynapseBlock,
        id_ranges: np.ndarray,
        inhibitory,
        n_members: int,
        delay_steps: int,
        device: torch.device,
        overlap: bool = True,
    ) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.id_ranges = np.asarray(id_ranges, dtype=np.int64)
        self.start, self.stop = int(block.start), int(block.stop)
        self.n_neurons = int(self.id_ranges[-1])
        self.n_members = int(n_members)
        self.delay_steps = int(delay_steps)
        self.device = torch.device(device)
        self.overlap = bool(overlap)
        self.stats = ExchangeStats()
        fits_uint32 = self.delay_steps * self.n_members * self.n_neurons < 2**32
        self.wire_dtype = np.uint32 if fits_uint32 else np.int64
        self._mpi_type = MPI.UINT32_T if fits_uint32 else MPI.INT64_T

        # --- the local graph, CSR by *compact* source (the distinct presynaptic ids)
        sources = block.sources.astype(np.int64)
        self.compact_sources = np.unique(sources)
        compact = np.searchsorted(self.compact_sources, sources)
        order = np.argsort(compact, kind="stable")
        indptr = np.zeros(self.compact_sources.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(compact, minlength=self.compact_sources.size), out=indptr[1:])
        local_targets = (block.targets() - self.start)[order]
        kinds = (
            inhibitory(self.compact_sources) if callable(inhibitory) else np.asarray(inhibitory)[self.compact_sources]
        )
        n_local = self.stop - self.start
        self.graph = DeviceNetwork(
            indptr=torch.as_tensor(indptr, device=self.device),
            targets=torch.as_tensor(local_targets.astype(np.int32), device=self.device),
            weights=torch.as_tensor(np.ascontiguousarray(block.weights[order]), device=self.device),
            source_kind=torch.as_tensor(np.asarray(kinds).astype(np.int64), device=self.device),
            population_index=torch.zeros(n_local, dtype=torch.int64, device=self.device),
            n_populations=1,
        )
        self._compact_sources_t = torch.as_tensor(self.compact_sources, device=self.device)

        # --- tell every owner which of its neurons this rank needs (one Alltoallv)
        owner = np.searchsorted(self.id_ranges, self.compact_sources, side="right") - 1
        need_counts = np.bincount(owner, minlength=self.size).astype(np.int64)
        wanted_counts = np.asarray(comm.alltoall(need_counts.tolist()), dtype=np.int64)
        wanted = np.empty(int(wanted_counts.sum()), dtype=np.int64)
        comm.Alltoallv(
            [self.compact_sources, (need_counts, _displacements(need_counts)), MPI.INT64_T],
            [wanted, (wanted_counts, _displacements(wanted_counts)), MPI.INT64_T],
        )
        # this rank's neurons with local targets -> their compact index (-1: none)
        local_to_compact = np.full(n_local, -1, dtype=np.int64)
        mine = self.compact_sources[owner == self.rank]
        local_to_compact[mine - self.start] = np.searchsorted(self.compact_sources, mine)
        self._local_to_compact = torch.as_tensor(local_to_compact, device=self.device)
        # destinations of each of this rank's neurons (other ranks only), CSR by local id
        dest_rank = np.repeat(np.arange(self.size, dtype=np.int64), wanted_counts)
        remote = dest_rank != self.rank
        dest_local, dest_rank = wanted[remote] - self.start, dest_rank[remote]
        order = np.lexsort((dest_rank, dest_local))
        dest_indptr = np.zeros(n_local + 1, dtype=np.int64)
        np.cumsum(np.bincount(dest_local, minlength=n_local), out=dest_indptr[1:])
        self._dest_indptr = torch.as_tensor(dest_indptr, device=self.device)
        self._dest_rank = torch.as_tensor(dest_rank[order], device=self.device)
        self.n_remote_sources = int((owner != self.rank).sum())

    # ------------------------------------------------------------------ per interval
    def deliver(self, rows: torch.Tensor, drive: torch.Tensor, backend: Backend) -> None:
        """Deliver one interval's spikes of all ranks into this rank's ``drive``.

        Collective: every rank of the communicator calls it once per interval.

        Parameters
        ----------
        rows : (n, 3) int64 ``(slot, member, local neuron id)`` spike rows of this rank.
        drive : (D, 2, M, n_local) int32, zeroed, filled in place.
        backend : the backend whose ``deliver`` kernel accumulates the weights.
        """
        MPI = self._MPI
        t_start = time.perf_counter()
        M, N = self.n_members, self.n_neurons
        rows = rows.to(self.device)
        if self.size == 1:  # nothing to exchange
            self._deliver_local(rows, drive, backend)
            self.stats.intervals += 1
            self.stats.exchange_s += time.perf_counter() - t_start
            return
        local = rows[:, 2]
        # --- encode one id per spike and destination rank, grouped by destination
        first = self._dest_indptr[local]
        count = self._dest_indptr[local + 1] - first
        spike_of = torch.repeat_interleave(torch.arange(local.numel(), device=self.device), count)
        total = int(spike_of.numel())
        within = torch.arange(total, device=self.device) - (torch.cumsum(count, 0) - count)[spike_of]
        dest = self._dest_rank[first[spike_of] + within]
        key = (rows[:, 0] * M + rows[:, 1]) * N + (local + self.start)
        dest_sorted, order = torch.sort(dest, stable=True)
        send_counts = torch.bincount(dest_sorted, minlength=self.size).cpu().numpy().astype(np.int64)
        recv_counts = np.empty(self.size, dtype=np.int64)
        counts_request = self.comm.Ialltoall([send_counts, MPI.INT64_T], [recv_counts, MPI.INT64_T])
        send = key[spike_of[order]].cpu().numpy().astype(self.wire_dtype)
        t0 = time.perf_counter()
        counts_request.Wait()
        self.stats.wait_s += time.perf_counter() - t0
        recv = np.empty(int(recv_counts.sum()), dtype=self.wire_dtype)
        buffers = (
            [send, (send_counts, _displacements(send_counts)), self._mpi_type],
            [recv, (recv_counts, _displacements(recv_counts)), self._mpi_type],
        )
        if self.overlap:
            request = self.comm.Ialltoallv(*buffers)
            self._deliver_local(rows, drive, backend)  # overlaps the transfer
            t0 = time.perf_counter()
            request.Wait()
            self.stats.wait_s += time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            self.comm.Alltoallv(*buffers)
            self.stats.wait_s += time.perf_counter() - t0
            self._deliver_local(rows, drive, backend)
        if recv.size:
            key = torch.as_tensor(recv.astype(np.int64), device=self.device)
            source = key % N
            slot_member = key // N
            compact = torch.searchsorted(self._compact_sources_t, source)
            remote_rows = torch.stack([slot_member // M, slot_member % M, compact], dim=1)
            backend.deliver(remote_rows, self.graph, drive)
        self.stats.intervals += 1
        self.stats.spikes_sent += total
        self.stats.bytes_sent += int(send.nbytes)
        self.stats.spikes_received += int(recv.size)
        self.stats.bytes_received += int(recv.nbytes)
        self.stats.exchange_s += time.perf_counter() - t_start

    def _deliver_local(self, rows: torch.Tensor, drive: torch.Tensor, backend: Backend) -> None:
        if rows.numel() == 0:
            return
        compact = self._local_to_compact[rows[:, 2]]
        keep = compact >= 0
        if bool(keep.any()):
            backend.deliver(torch.stack([rows[keep, 0], rows[keep, 1], compact[keep]], dim=1), self.graph, drive)


def _displacements(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
