"""Reading a twin run store (written by ``dtb assimilate`` / ``dtb resimulate``) for the report.

The store is opened group by group (groups use ``time`` on different grids: TR windows in
``/resimulation``, 1 ms bins in ``/resimulation_counts``), so that a damaged or missing group
costs only its own section.  Every group may be missing in a partial run; :class:`TwinRun`
then says which and why instead of failing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import xarray as xr

from dtb.errors import ReportError
from dtb.io import twin_store
from dtb.io.store import verify_store

__all__ = ["GROUPS", "TwinRun", "open_run"]

log = logging.getLogger("dtb")

#: Groups of the twin run store the report reads, and what writes each of them (dtb.io.twin_store.GROUPS).
GROUPS = MappingProxyType({name: f"{g.written_by} ({g.meaning})" for name, g in twin_store.GROUPS.items()})


@dataclass(frozen=True)
class TwinRun:
    """The readable parts of one twin run store.

    Attributes
    ----------
    path : the store's path.
    attrs : root attributes (JSON), e.g. ``subject``, ``tr_s``, ``config``, ``warnings``.
    groups : group name (``"observation"``, ``"resimulation_spikes"``, ...) -> Dataset (lazy).
    absent : group name -> why it cannot be used (missing or unreadable).
    """

    path: Path
    attrs: Mapping
    groups: Mapping[str, xr.Dataset]
    absent: Mapping[str, str] = field(default_factory=dict)

    def group(self, name: str) -> xr.Dataset | None:
        """The Dataset of group ``name``, or None when the store lacks it."""
        return self.groups.get(name)

    def variable(self, group: str, name: str) -> xr.DataArray | None:
        """Variable ``name`` of ``group`` (None when the group or the variable is missing)."""
        ds = self.groups.get(group)
        if ds is None or name not in ds.variables:
            return None
        return ds[name]

    def why_missing(self, group: str, variable: str | None = None) -> str:
        """A sentence saying why ``group`` (or its ``variable``) is not available."""
        if group in self.absent:
            return self.absent[group]
        if variable is not None and group in self.groups and variable not in self.groups[group].variables:
            return f"the store's /{group} group has no variable {variable!r}"
        return f"the store has no /{group} group"

    @property
    def config(self) -> dict:
        """The full settings of the run (root attribute ``config``), {} when absent."""
        config = self.attrs.get("config")
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError:
                return {"config (unparsed)": config}
        return dict(config) if isinstance(config, Mapping) else {}

    @property
    def warnings(self) -> list[str]:
        """Warnings recorded by the stages that wrote the store: the root attribute ``warnings``,
        then any ``warnings`` attribute of a group (prefixed with the group's name)."""

        def as_list(value) -> list[str]:
            if not value:
                return []
            return [value] if isinstance(value, str) else [str(w) for w in value]

        found = as_list(self.attrs.get("warnings"))
        for name, ds in self.groups.items():
            found.extend(f"/{name}: {w}" for w in as_list(ds.attrs.get("warnings")))
        return found

    @property
    def tr_s(self) -> float | None:
        """Repetition time [s]: the ``tr_s`` attribute, else the spacing of the observation times."""
        tr = self.attrs.get("tr_s")
        if isinstance(tr, (int, float)) and np.isfinite(tr) and tr > 0:
            return float(tr)
        for group in ("observation", "assimilation", "resimulation"):
            ds = self.groups.get(group)
            if ds is not None and "time" in ds.coords and ds.sizes.get("time", 0) > 1:
                step = float(np.median(np.diff(ds["time"].values)))
                if step > 0:
                    return step
        return None

    def regions(self) -> list[str]:
        """Region labels, from the first group that has a ``region`` coordinate."""
        for group in ("network", "observation", "resimulation", "metrics", "assimilation"):
            ds = self.groups.get(group)
            if ds is not None and "region" in ds.coords:
                return [str(r) for r in ds["region"].values]
        return []


def open_run(path: str | Path) -> TwinRun:
    """Open a twin run store for reporting.

    Parameters
    ----------
    path : the run store (a zarr v3 directory, e.g. ``sub-01_run.zarr``).

    Returns
    -------
    TwinRun
        Root attributes, every readable group, and why the others are absent.

    Raises
    ------
    ReportError
        When ``path`` does not exist or is not a zarr v3 group.
    """
    path = Path(path)
    if not path.exists():
        raise ReportError(f"run store {path} does not exist; give the RUN.zarr written by 'dtb assimilate'")
    try:
        attrs = twin_store.root_attrs_json(path)
        twin_store.root_attrs(path)
    except Exception as exc:  # zarr and json raise several types for a non-store
        raise ReportError(
            f"{path} is not a zarr v3 store ({type(exc).__name__}: {exc}); give the RUN.zarr written by 'dtb assimilate'"
        ) from None
    verify_store(path, fix="Write it again (dtb assimilate --overwrite, dtb resimulate), then the report.")

    def damaged(name, exc) -> None:  # checked per group: one damaged group spoils no other
        log.warning("report: cannot read /%s of %s: %s", name, path, exc)

    groups, absent = twin_store.read_groups(path, on_error=damaged)
    return TwinRun(path=path, attrs=MappingProxyType(attrs), groups=MappingProxyType(groups), absent=absent)
