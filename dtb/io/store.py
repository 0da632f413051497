"""zarr v3 stores through xarray: JSON-safe attributes, append-along-a-dimension writes, checksums.

Every array ``dtb`` writes ends its codec chain with zarr v3's ``crc32c`` codec (after the default
zstd), so each chunk file carries the CRC-32C of its bytes. zarr checks it on every read; before a
store is trusted, :func:`verify_store` checks every chunk file at once (no decompression) and names
the damaged array, chunk and file. Stores written before the checksums have none to check.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from dtb.errors import DTBError

__all__ = ["json_safe", "write_group", "open_tree", "checksum_codecs", "verify_store", "StoreCorruptError"]


class StoreCorruptError(DTBError, ValueError):
    """A store's chunk or a checkpoint does not match the checksum written with it."""


def checksum_codecs() -> tuple:
    """The bytes-to-bytes codecs of every array ``dtb`` writes: zarr's default zstd, then crc32c."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return (ZstdCodec(level=0, checksum=False), Crc32cCodec())


def verify_store(store: str | Path, fix: str | None = None) -> int:
    """Check the CRC-32C of every chunk file of every checksummed array under ``store``.

    Parameters
    ----------
    store : a zarr v3 directory (a whole store, or one of its groups).
    fix : what the user should do about a damaged store (default: delete it and write it again).

    Returns
    -------
    int : the number of chunk files checked.

    Raises
    ------
    StoreCorruptError : naming the store, each damaged array and chunk (up to 5) and the fix.
    """
    import google_crc32c

    store = Path(store)
    bad: list[str] = []
    checked = 0
    for dirpath, dirnames, filenames in os.walk(store):
        dirnames.sort()
        if "zarr.json" not in filenames:
            continue
        here = Path(dirpath)
        try:
            meta = json.loads((here / "zarr.json").read_bytes())
        except (OSError, ValueError):
            continue  # an unreadable node is reported by whoever opens it
        if meta.get("node_type") != "array":
            continue
        dirnames[:] = []  # an array has no child nodes
        codecs = meta.get("codecs") or []
        if not codecs or not isinstance(codecs[-1], dict) or codecs[-1].get("name") != "crc32c":
            continue
        chunks = here / "c"
        for cdir, cdirs, cfiles in os.walk(chunks):
            cdirs.sort()
            for name in sorted(cfiles):
                path = Path(cdir) / name
                data = path.read_bytes()
                checked += 1
                ok = len(data) >= 4 and google_crc32c.value(data[:-4]) == int.from_bytes(data[-4:], "little")
                if not ok:
                    array = here.relative_to(store).as_posix() if here != store else store.name
                    chunk = ".".join(path.relative_to(chunks).parts)
                    bad.append(f"array {array}, chunk {chunk} (file {path})")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise StoreCorruptError(
            f"{store} is damaged: {len(bad)} chunk(s) do not match their checksum: {'; '.join(bad[:5])}{more}. "
            + (fix or "Delete the store and write it again with the command that made it.")
        )
    return checked


def json_safe(value):
    """Convert numpy scalars/arrays, tuples, paths and mappings into plain JSON types."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _check_attrs(ds: xr.Dataset) -> None:
    json.dumps(ds.attrs)
    for var in ds.variables.values():
        json.dumps(var.attrs)


def write_group(store: str | Path, group: str, ds: xr.Dataset, append_dim: str | None, first: bool) -> None:
    """Write ``ds`` as zarr group ``group`` of ``store`` (first call) or append along ``append_dim``.

    Chunks follow the written blocks along ``append_dim`` (one block per call), so a
    killed writer leaves every earlier block complete.
    """
    ds = ds.copy()
    ds.attrs = json_safe(ds.attrs)
    for var in ds.variables.values():
        var.attrs = json_safe(var.attrs)
        var.encoding = {}
    _check_attrs(ds)
    with warnings.catch_warnings():
        # label arrays are fixed-width unicode, which zarr v3 stores but flags as not yet specified
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        _to_zarr(store, group, ds, append_dim, first)


def _to_zarr(store, group: str, ds: xr.Dataset, append_dim: str | None, first: bool) -> None:
    if first:
        encoding = {name: {"compressors": checksum_codecs()} for name in ds.variables}
        if append_dim is not None:
            block = max(1, ds.sizes.get(append_dim, 1))
            for name, var in ds.variables.items():
                if append_dim in var.dims:
                    encoding[name]["chunks"] = tuple(
                        block if d == append_dim else max(1, ds.sizes[d]) for d in var.dims
                    )
        ds.to_zarr(store, group=group, mode="w", consolidated=False, zarr_format=3, encoding=encoding)
    else:
        ds.to_zarr(store, group=group, mode="a", append_dim=append_dim, consolidated=False, zarr_format=3)


def open_tree(store: str | Path, verify: bool = True) -> xr.DataTree:
    """Open a store written by `dtb` as an xarray DataTree (lazily).

    With ``verify`` (the default) every chunk's checksum is checked first (:func:`verify_store`;
    a damaged store raises :class:`StoreCorruptError` naming the chunk). Snakemake leaves a ``.snakemake_timestamp`` file in every ``directory()`` output, and a twin
    run store holds the assimilation's ``checkpoint.pt``; zarr's warnings about these two foreign
    files are silenced (nothing else is).
    """
    if verify and Path(store).is_dir():
        verify_store(store)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at (\.snakemake_timestamp|checkpoint\.pt) is not recognized")
        return xr.open_datatree(store, engine="zarr", consolidated=False, zarr_format=3)
