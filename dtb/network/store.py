"""A built network as a zarr v3 group: one sub-group per rank, readable on its own.

Every array's chunks carry a CRC-32C (zarr's ``crc32c`` codec), checked when a block is read.

Layout of the store::

    <store>/                       attrs: format "dtb-network", format_version, populations
                                   [{name, size, kind}], n_neurons, n_synapses, rank_id_ranges,
                                   metadata (config, seed, tables, drops, per-population g_u),
                                   dtb_version
    <store>/rank_00000/            attrs: start, stop, n_synapses, dropped_duplicates
        indptr   int64  (stop - start + 1,)   CSR by *target* over the rank's own neurons
        sources  uint32 (n_synapses,)         global source id of each incoming synapse
        weights  uint8  (n_synapses,)         weight k (w = k / 255)

A rank reads only its own group (:func:`load_block`); :func:`load_network` joins all
groups into the engine's CSR-by-source :class:`~dtb.network.graph.Network`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zarr

from dtb import __version__
from dtb.errors import NetworkError
from dtb.io.locks import output_lock
from dtb.io.store import checksum_codecs, json_safe, verify_store
from dtb.network.build import SynapseBlock, assemble_network
from dtb.network.graph import Network, Population

__all__ = ["FORMAT", "create_store", "write_block", "load_block", "load_network", "store_info"]

FORMAT = "dtb-network"
FORMAT_VERSION = 1
_CHUNK = 1 << 22


def _group_name(rank: int) -> str:
    return f"rank_{int(rank):05d}"


def create_store(path, populations, rank_id_ranges, metadata: dict, overwrite: bool = False) -> None:
    """Create the root group with its attributes (call once, before the ranks write).

    Parameters
    ----------
    path : directory of the zarr store.
    populations : sequence of Population, in id order.
    rank_id_ranges : int array (n_ranks + 1,), first id of each rank plus n_neurons.
    metadata : JSON-able provenance (the builder's ``Network.metadata``).
    overwrite : replace an existing store.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise NetworkError(
                f"network store {path} already exists; choose a new path or pass overwrite (--overwrite)"
            )
        shutil.rmtree(path)
    pops = [{"name": p.name, "size": int(p.size), "kind": p.kind} for p in populations]
    ranges = np.asarray(rank_id_ranges, dtype=np.int64)
    if ranges[0] != 0 or ranges[-1] != sum(p["size"] for p in pops) or np.any(np.diff(ranges) < 0):
        raise NetworkError("rank_id_ranges must rise from 0 to the number of neurons")
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update(
        json_safe(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "dtb_version": __version__,
                "populations": pops,
                "n_neurons": int(ranges[-1]),
                "rank_id_ranges": ranges,
                "metadata": metadata,
            }
        )
    )


def write_block(path, rank: int, block: SynapseBlock) -> None:
    """Write one rank's incoming synapses (independently of the other ranks)."""
    root = zarr.open_group(str(path), mode="r+", zarr_format=3)
    ranges = root.attrs["rank_id_ranges"]
    if not 0 <= rank < len(ranges) - 1 or (block.start, block.stop) != (ranges[rank], ranges[rank + 1]):
        raise NetworkError(f"block [{block.start}, {block.stop}) does not match rank {rank}'s id range in the store")
    group = root.create_group(_group_name(rank), overwrite=True)
    for name, data in (("indptr", block.indptr), ("sources", block.sources), ("weights", block.weights)):
        arr = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(max(1, min(_CHUNK, data.size)),),
            compressors=checksum_codecs(),  # every chunk carries its CRC-32C (verified by load_block)
        )
        if data.size:
            arr[:] = data
    group.attrs.update(
        {
            "start": int(block.start),
            "stop": int(block.stop),
            "n_synapses": block.n_synapses,
            "dropped_duplicates": int(block.dropped_duplicates),
        }
    )


def store_info(path) -> dict:
    """The root attributes of a network store (populations, ranges, metadata)."""
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise NetworkError(f"no network store at {path}: {exc}") from None
    attrs = dict(root.attrs)
    if attrs.get("format") != FORMAT:
        raise NetworkError(f"{path} is not a dtb network store (format {attrs.get('format')!r})")
    return attrs


def load_block(path, rank: int) -> SynapseBlock:
    """Read one rank's incoming synapses (CSR by target) without touching the others."""
    info = store_info(path)
    n_ranks = len(info["rank_id_ranges"]) - 1
    if not 0 <= int(rank) < n_ranks:
        raise NetworkError(f"rank {rank} is out of range; the store has {n_ranks} rank(s)")
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)[_group_name(rank)]
    except KeyError:
        raise NetworkError(f"rank {rank} of {path} was never written; build it first") from None
    verify_store(
        Path(path) / _group_name(rank),
        fix=f"Build the block again: dtb network build ... --out {path} --rank {int(rank)} (or the whole store "
        "with --overwrite).",
    )
    return SynapseBlock(
        start=int(group.attrs["start"]),
        stop=int(group.attrs["stop"]),
        indptr=np.asarray(group["indptr"][:]),
        sources=np.asarray(group["sources"][:]),
        weights=np.asarray(group["weights"][:]),
        dropped_duplicates=int(group.attrs["dropped_duplicates"]),
    )


def load_network(path) -> Network:
    """Read every rank's block and join them into a Network (CSR by source)."""
    info = store_info(path)
    pops = [Population(p["name"], p["size"], p["kind"]) for p in info["populations"]]
    blocks = [load_block(path, r) for r in range(len(info["rank_id_ranges"]) - 1)]
    meta = dict(info.get("metadata", {}))
    meta.pop("dropped_duplicate_synapses", None)
    return assemble_network(pops, blocks, meta)


def build_whole_store(path, layout, partition, *, overwrite: bool = False, **build) -> list[int]:
    """Build every block into a temporary store beside ``path`` and rename it into place, under the
    store's lock, so a killed build leaves no store under its final name (dtb.io.atomic; the test
    hook ``DTB_FAULT_AT=network:staged:...``). ``build``: the sampling and metadata arguments of
    :func:`build_to_store`.
    """
    from dtb.io.atomic import staged_output

    if Path(path).exists() and not overwrite:
        raise NetworkError(f"network store {path} already exists; choose a new path or pass overwrite (--overwrite)")
    with output_lock(path, what="network store"), staged_output(path, stage="network") as staging:
        return build_to_store(staging, layout, partition, **build)


def build_to_store(
    path,
    layout,
    partition,
    ranks=None,
    overwrite: bool = False,
    create: bool = True,
    threads: int = 1,
    method: str = "auto",
    device: str | None = None,
    metadata: dict | None = None,
) -> list[int]:
    """Build the blocks of ``ranks`` (default: all) and write them to ``path``.

    Parameters
    ----------
    path : zarr store directory.
    layout : Layout to build.
    partition : Partition of the layout's populations over ranks.
    ranks : iterable of rank indices to build here (other processes may build the rest).
    overwrite : replace an existing store when creating it.
    create : create the root group first (do this once, before ranks write in parallel).
    threads, method, device : how to sample (see :func:`dtb.network.build.build_block`);
        the stored network is identical for every choice.
    metadata : extra provenance added to the store's ``metadata`` (e.g. the run seed).

    Returns
    -------
    list of int: synapses written per built rank.
    """
    from dtb.network.build import build_block, network_metadata

    if device is not None and str(device) != "cpu":
        from dtb.network.device import resolve_device

        resolve_device(device)  # a bad or absent device stops here, before the store is made
    # creating (or building every rank) owns the store; processes filling chosen ranks of a created
    # store share it, each owning its ranks
    with output_lock(path, shared=not create, what="network store"):
        if create:
            create_store(
                path,
                layout.populations,
                partition.id_ranges,
                {**network_metadata(layout), **(metadata or {})},
                overwrite=overwrite,
            )
        written = []
        for rank in range(partition.n_ranks) if ranks is None else ranks:
            with output_lock(path, suffix=f".{_group_name(int(rank))}.lock", what=f"rank {int(rank)} of network store"):
                block = build_block(
                    layout, *partition.rank_range(int(rank)), threads=threads, method=method, device=device
                )
                write_block(path, int(rank), block)
            written.append(block.n_synapses)
    return written
