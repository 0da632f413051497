"""BIDS-derivatives outputs of the imaging stages: names, JSON sidecars, atomic writes.

Layout: ``<out>/dtb/dataset_description.json`` and ``<out>/dtb/sub-<label>/{anat,dwi,func}/`` with names
such as ``sub-01_space-MNI152NLin2009aSym_res-3mm_desc-neuroncount_stats.nii.gz``. Every file gets a JSON
sidecar with ``Sources`` (BIDS URIs ``bids:raw:<path>`` into the input dataset) and, for BOLD-derived
files, ``RepetitionTime`` [s].

A stage writes through one :class:`DerivativesWriter` used as a context manager: files go to a hidden
staging folder and are moved into place only when the whole stage succeeded, so an error leaves no
partial output (neither a half-written file nor half of a stage's files). Each datatype folder (the
output of one stage) is renamed into place whole (:func:`dtb.io.atomic.swap_in`) under its lock
(:func:`derivatives_lock`), so a killed stage leaves no folder under its final name either.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import nibabel as nib
import pandas as pd
import xarray as xr

from dtb import __version__
from dtb.errors import InputDataError
from dtb.io.atomic import remove_leftovers, swap_in
from dtb.io.faults import fault_point
from dtb.io.locks import output_lock
from dtb.io.store import json_safe, write_group

__all__ = [
    "ENTITY_ORDER",
    "DERIVATIVES_NAME",
    "bids_name",
    "derivative_path",
    "dataset_description",
    "DerivativesWriter",
    "derivatives_lock",
]

#: Folder under ``<out>`` holding this pipeline's derivatives.
DERIVATIVES_NAME = "dtb"
#: BIDS entity order in file names.
ENTITY_ORDER = ("sub", "ses", "task", "acq", "run", "space", "res", "den", "atlas", "label", "desc")
_BIDS_VERSION = "1.9.0"


def bids_name(entities: Mapping[str, str | None], suffix: str, extension: str) -> str:
    """``sub-01_space-X_desc-Y_suffix.ext`` from entities (None values skipped), in BIDS order.

    Parameters
    ----------
    entities : must include ``sub``; keys outside :data:`ENTITY_ORDER` are refused.
    suffix : e.g. ``"stats"``, ``"probseg"``, ``"timeseries"``.
    extension : with the dot, e.g. ``".nii.gz"``.
    """
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise InputDataError(f"unknown BIDS entities {sorted(unknown)}; use {ENTITY_ORDER}")
    if not entities.get("sub"):
        raise InputDataError("a derivative name needs the 'sub' entity")
    parts = []
    for key in ENTITY_ORDER:
        value = entities.get(key)
        if value is None:
            continue
        value = str(value)
        if not value.isalnum():
            raise InputDataError(f"BIDS entity {key}-{value!r} must be letters and digits only")
        parts.append(f"{key}-{value}")
    return "_".join(parts + [suffix]) + extension


def derivative_path(
    out_dir: str | Path, entities: Mapping[str, str | None], datatype: str, suffix: str, extension: str
) -> Path:
    """Path of a derivative: ``<out>/dtb/sub-<label>/<datatype>/<bids_name>``."""
    if datatype not in ("anat", "dwi", "func"):
        raise InputDataError(f"datatype must be anat, dwi or func, got {datatype!r}")
    name = bids_name(entities, suffix, extension)
    return Path(out_dir) / DERIVATIVES_NAME / f"sub-{entities['sub']}" / datatype / name


def dataset_description(raw_dataset: str | Path | None = None) -> dict:
    """The ``dataset_description.json`` content of the dtb derivatives (DatasetType derivative)."""
    description = {
        "Name": "dtb imaging derivatives",
        "BIDSVersion": _BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "dtb", "Version": __version__, "Description": "digital twin brain imaging stages"}],
    }
    if raw_dataset is not None:
        description["DatasetLinks"] = {"raw": Path(raw_dataset).resolve().as_uri()}
    return description


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def derivatives_lock(folder: str | Path) -> Iterator[None]:
    """Hold the lock of one stage's derivatives folder (``<out>/dtb/sub-<label>/<datatype>``) for the body.

    A second ``dtb anat``/``dwi``/``func`` of the same subject and ``--out`` is refused at once
    (:func:`dtb.io.locks.output_lock`; the lock file is ``<datatype>.lock`` beside the folder). The
    folders made to hold the lock file are removed again when they are still empty on exit, so a
    stage that stops with an error leaves nothing under ``--out``.
    """
    folder = Path(os.path.abspath(folder))
    made = []
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        made.append(parent)
        parent = parent.parent
    try:
        with output_lock(folder, what=f"dtb {folder.name} derivatives"):
            yield
    finally:
        for path in made:  # deepest first
            try:
                path.rmdir()
            except OSError:  # not empty: something was written there
                break


class DerivativesWriter:
    """Write one stage's derivatives for one subject, all or nothing.

    Use as a context manager. The files of each datatype folder (``<out>/dtb/sub-<label>/anat``, the
    output of one stage) are staged in a hidden folder beside it (``.anat.tmp-*``, under the folder's
    lock, :func:`derivatives_lock`) and the folder is renamed into place whole on a clean exit (files
    of the same names are replaced, other files of an existing folder are kept;
    :func:`dtb.io.atomic.swap_in`), or the staging is removed on an exception. A killed stage leaves
    only the hidden staging folder, which the next run of the stage removes.

    Parameters
    ----------
    out_dir : derivatives root given by the user (``--out``); ``dtb/`` is created inside.
    label : participant label (without ``sub-``).
    raw_dataset : the input BIDS root (``Sources`` are relative to it, as ``bids:raw:<path>``).

    Examples
    --------
    >>> with DerivativesWriter(out, "01", bids_root) as writer:  # doctest: +SKIP
    ...     writer.nifti(img, "anat", {"space": "MNI152NLin2009aSym"}, "probseg", sources=[t1w])
    """

    def __init__(self, out_dir: str | Path, label: str, raw_dataset: str | Path | None = None):
        self.out_dir = Path(out_dir)
        self.label = label
        self.raw_dataset = Path(raw_dataset).resolve() if raw_dataset is not None else None
        self.root = self.out_dir / DERIVATIVES_NAME
        self._stack: ExitStack | None = None
        self._stages: dict[Path, Path] = {}  # final datatype folder -> its staging folder
        self._written: list[Path] = []

    # -- context manager
    def __enter__(self) -> DerivativesWriter:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputDataError(f"--out {self.out_dir} is a file; give a folder for the derivatives")
        self.root.mkdir(parents=True, exist_ok=True)
        self._stack = ExitStack()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        stack, self._stack = self._stack, None
        with stack:  # the locks are released last
            try:
                if exc_type is None:
                    self._commit()
            finally:
                for staging in self._stages.values():
                    shutil.rmtree(staging.parent, ignore_errors=True)
                self._stages = {}

    def _commit(self) -> None:
        description = self.root / "dataset_description.json"
        if not description.exists():
            _atomic_write_text(description, json.dumps(dataset_description(self.raw_dataset), indent=2) + "\n")
        for final_dir, staging in sorted(self._stages.items()):
            names = sorted(entry.name for entry in staging.iterdir())
            fault_point(final_dir.name, "staged")  # a test hook (dtb.io.faults); a no-op otherwise
            swap_in(staging, final_dir, keep_existing=True)
            self._written += [final_dir / name for name in names]

    @property
    def written(self) -> list[Path]:
        """Final paths of the files written (after the context exits cleanly)."""
        return list(self._written)

    # -- naming
    def path(self, datatype: str, entities: Mapping[str, str | None], suffix: str, extension: str) -> Path:
        """Final path of a derivative of this subject (``sub`` is added)."""
        return derivative_path(self.out_dir, {"sub": self.label, **entities}, datatype, suffix, extension)

    def _staged(self, final: Path) -> Path:
        if self._stack is None:
            raise RuntimeError("DerivativesWriter must be used as a context manager (with ... as writer)")
        folder = final.parent
        if folder not in self._stages:  # the first file of this folder: take its lock, then stage beside it
            self._stack.enter_context(derivatives_lock(folder))
            remove_leftovers(folder)
            holder = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
            (holder / folder.name).mkdir()
            self._stages[folder] = holder / folder.name
        return self._stages[folder] / final.name

    def _source_uri(self, path: Path) -> str:
        path = Path(path).resolve()
        if self.raw_dataset is not None and self.raw_dataset in path.parents:
            return f"bids:raw:{path.relative_to(self.raw_dataset).as_posix()}"
        if self.root.resolve() in path.parents:
            return f"bids::{path.relative_to(self.root.resolve()).as_posix()}"
        return path.as_uri()

    def _sidecar(self, final: Path, sources, metadata: Mapping | None) -> Path:
        content = {"Sources": [self._source_uri(p) for p in sources]}
        content.update(json_safe(dict(metadata or {})))
        stem = final.name
        for ext in (".nii.gz", ".nii", ".tsv", ".zarr", ".json"):
            if stem.endswith(ext):
                stem = stem[: -len(ext)]
                break
        sidecar = final.with_name(stem + ".json")
        self._staged(sidecar).write_text(json.dumps(content, indent=2) + "\n")
        return sidecar

    # -- writers
    def nifti(
        self,
        img: nib.Nifti1Image,
        datatype: str,
        entities: Mapping[str, str | None],
        suffix: str,
        *,
        sources=(),
        metadata: Mapping | None = None,
    ) -> Path:
        """Stage a NIfTI image (``.nii.gz``) and its JSON sidecar; return the final path."""
        final = self.path(datatype, entities, suffix, ".nii.gz")
        nib.save(img, self._staged(final))
        self._sidecar(final, sources, metadata)
        return final

    def tsv(
        self,
        table: pd.DataFrame,
        datatype: str,
        entities: Mapping[str, str | None],
        suffix: str,
        *,
        sources=(),
        metadata: Mapping | None = None,
        index: bool = False,
    ) -> Path:
        """Stage a tab-separated table (``n/a`` for missing values) and its sidecar."""
        final = self.path(datatype, entities, suffix, ".tsv")
        table.to_csv(self._staged(final), sep="\t", index=index, na_rep="n/a")
        self._sidecar(final, sources, metadata)
        return final

    def zarr(
        self,
        dataset: xr.Dataset,
        datatype: str,
        entities: Mapping[str, str | None],
        suffix: str,
        *,
        sources=(),
        metadata: Mapping | None = None,
        append_dim: str | None = None,
    ) -> Path:
        """Stage an xarray Dataset as a zarr v3 store (via :func:`dtb.io.store.write_group`) and its sidecar."""
        final = self.path(datatype, entities, suffix, ".zarr")
        dataset = dataset.assign_attrs({**dataset.attrs, **dict(metadata or {})})
        write_group(self._staged(final), "/", dataset, append_dim=append_dim, first=True)
        self._sidecar(final, sources, metadata)
        return final
