"""zarr v3 stores through xarray: JSON-safe attributes and append-along-a-dimension writes."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["json_safe", "write_group", "open_tree"]


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
        encoding = {}
        if append_dim is not None:
            block = max(1, ds.sizes.get(append_dim, 1))
            for name, var in ds.variables.items():
                if append_dim in var.dims:
                    encoding[name] = {
                        "chunks": tuple(block if d == append_dim else max(1, ds.sizes[d]) for d in var.dims)
                    }
        ds.to_zarr(store, group=group, mode="w", consolidated=False, zarr_format=3, encoding=encoding)
    else:
        ds.to_zarr(store, group=group, mode="a", append_dim=append_dim, consolidated=False, zarr_format=3)


def open_tree(store: str | Path) -> xr.DataTree:
    """Open a store written by `dtb` as an xarray DataTree (lazily).

    Snakemake leaves a ``.snakemake_timestamp`` file in every ``directory()`` output, and a twin
    run store holds the assimilation's ``checkpoint.pt``; zarr's warnings about these two foreign
    files are silenced (nothing else is).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at (\.snakemake_timestamp|checkpoint\.pt) is not recognized")
        return xr.open_datatree(store, engine="zarr", consolidated=False, zarr_format=3)
