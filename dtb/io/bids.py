"""Find a subject's imaging inputs in a BIDS dataset and validate them once, at the edge.

Two steps, each with one job:

* :func:`find_subject_inputs` walks ``<bids>/sub-<label>/`` (and ``<bids>/derivatives/*/sub-<label>/``)
  with :mod:`pathlib` and returns a :class:`SubjectInputs` of paths and sidecar metadata. Raw files
  (``anat/*_T1w``, ``dwi/*_dwi`` + ``.bval``/``.bvec``, ``func/*_task-<task>_bold`` + JSON) and
  preprocessed ones (fMRIPrep-style ``*_space-<tpl>_desc-preproc_bold``, ``*_desc-brain_mask``,
  ``*_label-GM_probseg``, ``*_desc-confounds_timeseries.tsv``, ``*_relmat.tsv``, ``.trk``/``.tck``)
  are both accepted; when both exist the preprocessed BOLD is used (that is what most users have).
  JSON sidecars, ``.bval`` and ``.bvec`` follow the BIDS inheritance principle: every applicable file
  from the dataset root down to the data file's folder is merged, the nearest one winning.
* :func:`validate_subject` checks what every later stage relies on (TR, gradients, affines, orientation,
  dimensions, NaNs, shared grids) and returns a :class:`ValidatedSubject` whose images are in RAS+
  orientation. Every problem raises :class:`~dtb.errors.InputDataError` naming the file and the fix.

pybids is not used: it indexes a whole dataset into SQLite and pulls SQLAlchemy, formulaic and the
schema package, while the pipeline needs a handful of files of one subject.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from dtb.errors import InputDataError

__all__ = [
    "SubjectInputs",
    "ValidatedSubject",
    "find_subject_inputs",
    "validate_subject",
    "parse_entities",
    "inherited_sidecar",
    "repetition_time",
    "AFFINE_TOLERANCE",
]

log = logging.getLogger("dtb.io.bids")

#: Largest element-wise difference [mm] between two affines still taken as the same grid.
AFFINE_TOLERANCE = 1e-5
#: Header TRs labelled seconds above this [s] were written in milliseconds (FSL 3.x and old converters).
_HEADER_TR_MS_THRESHOLD = 100.0
_NIFTI = (".nii.gz", ".nii")
_ENTITY = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9+]+)$")


# --------------------------------------------------------------------------- names and sidecars


def _split_extension(name: str) -> tuple[str, str]:
    for ext in (".nii.gz", ".tsv.gz", ".nii", ".json", ".bval", ".bvec", ".tsv", ".trk", ".tck", ".zarr"):
        if name.endswith(ext):
            return name[: -len(ext)], ext
    stem, dot, ext = name.rpartition(".")
    return (stem, "." + ext) if dot else (name, "")


def parse_entities(path: str | Path) -> tuple[dict[str, str], str, str]:
    """Split a BIDS file name into its entities, suffix and extension.

    Parameters
    ----------
    path : file path or name, e.g. ``sub-01_task-rest_run-1_bold.nii.gz``.

    Returns
    -------
    entities : ``{"sub": "01", "task": "rest", "run": "1"}`` (in file-name order)
    suffix : ``"bold"``
    extension : ``".nii.gz"``
    """
    stem, extension = _split_extension(Path(path).name)
    parts = stem.split("_")
    entities: dict[str, str] = {}
    suffix = ""
    for i, part in enumerate(parts):
        match = _ENTITY.match(part)
        if match:
            entities[match.group(1)] = match.group(2)
        elif i == len(parts) - 1:
            suffix = part
    return entities, suffix, extension


def _applies_to(candidate: Path, entities: Mapping[str, str], suffix: str, extension: str) -> bool:
    cand_entities, cand_suffix, cand_ext = parse_entities(candidate)
    if cand_suffix != suffix or cand_ext != extension:
        return False
    return all(entities.get(key) == value for key, value in cand_entities.items())


def _levels(data_file: Path, root: Path) -> list[Path]:
    """Folders from the dataset root down to the data file's folder (root first)."""
    folders = [data_file.parent]
    while folders[-1] != root and root in folders[-1].parents:
        folders.append(folders[-1].parent)
    return folders[::-1]


def _applicable_files(data_file: Path, root: Path, extension: str) -> list[Path]:
    """Applicable inherited files, farthest (dataset root) first, nearest last."""
    entities, suffix, _ = parse_entities(data_file)
    found: list[Path] = []
    for folder in _levels(data_file, root):
        here = [p for p in sorted(folder.glob(f"*{extension}")) if _applies_to(p, entities, suffix, extension)]
        # within one folder, the file with more entities is the more specific one
        here.sort(key=lambda p: len(parse_entities(p)[0]))
        found.extend(here)
    return found


def inherited_sidecar(data_file: str | Path, root: str | Path) -> tuple[dict, tuple[Path, ...]]:
    """Merge the JSON sidecars of ``data_file`` by the BIDS inheritance principle.

    Parameters
    ----------
    data_file : a data file inside the dataset (e.g. ``sub-01/func/sub-01_task-rest_bold.nii.gz``).
    root : the dataset root (the folder with ``dataset_description.json``).

    Returns
    -------
    metadata : merged key/values; a key in a nearer file (deeper folder, or more entities in the same
        folder) overrides the same key from a farther one.
    sources : the JSON files used, farthest first.
    """
    data_file, root = Path(data_file).resolve(), Path(root).resolve()
    metadata: dict = {}
    sources = tuple(_applicable_files(data_file, root, ".json"))
    for sidecar in sources:
        try:
            content = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise InputDataError(f"{sidecar}: not valid JSON ({exc}); fix or remove the sidecar") from None
        if not isinstance(content, dict):
            raise InputDataError(f"{sidecar}: a BIDS sidecar must hold a JSON object, got {type(content).__name__}")
        metadata.update(content)
    return metadata, sources


def _nearest(data_file: Path, root: Path, extension: str) -> Path | None:
    # the file named like the data file wins; otherwise the nearest inherited one
    own = data_file.with_name(_split_extension(data_file.name)[0] + extension)
    if own.exists():
        return own
    files = _applicable_files(data_file.resolve(), root.resolve(), extension)
    return files[-1] if files else None


# --------------------------------------------------------------------------- finding files


@dataclass(frozen=True)
class SubjectInputs:
    """Paths and sidecar metadata of one subject's imaging inputs (any may be None).

    Attributes
    ----------
    root : BIDS dataset root.
    label : participant label without ``sub-``.
    t1w : T1-weighted image (raw, or fMRIPrep ``desc-preproc_T1w``).
    t1w_space : template name when the T1w is already normalised (``space-`` entity), else None.
    gm_probseg : grey-matter probability map (``label-GM_probseg``).
    gm_probseg_space : its ``space-`` entity, None for the T1w (native) space.
    dwi, bval, bvec : diffusion image and its gradient files (inherited ones allowed).
    bold : BOLD series (raw or preprocessed).
    bold_space : template name when the BOLD is already normalised, else None.
    bold_preprocessed : True for a ``desc-preproc`` BOLD (motion correction is skipped).
    bold_metadata : merged JSON sidecar of the BOLD (``RepetitionTime`` [s], ...).
    bold_sidecars : JSON files merged into ``bold_metadata``, farthest first.
    bold_mask : brain mask on the BOLD grid (``desc-brain_mask``).
    confounds : confounds table (``desc-confounds_timeseries.tsv``).
    connectome : precomputed region x region connectome (``*_relmat.tsv``).
    tractogram : streamlines (``.trk``/``.tck``).
    ambiguous : modality -> message for files found more than once (left None above);
        :func:`validate_subject` raises it when the stage needs that modality.
    """

    root: Path
    label: str
    t1w: Path | None = None
    t1w_space: str | None = None
    gm_probseg: Path | None = None
    gm_probseg_space: str | None = None
    dwi: Path | None = None
    bval: Path | None = None
    bvec: Path | None = None
    bold: Path | None = None
    bold_space: str | None = None
    bold_preprocessed: bool = False
    bold_metadata: Mapping = field(default_factory=dict)
    bold_sidecars: tuple[Path, ...] = ()
    bold_mask: Path | None = None
    confounds: Path | None = None
    connectome: Path | None = None
    tractogram: Path | None = None
    ambiguous: Mapping[str, str] = field(default_factory=dict)

    def sources(self) -> list[Path]:
        """Every input file found, for provenance (``Sources`` of derivatives)."""
        names = ("t1w", "gm_probseg", "dwi", "bval", "bvec", "bold", "bold_mask", "confounds")
        paths = [getattr(self, n) for n in names] + [self.connectome, self.tractogram, *self.bold_sidecars]
        return [p for p in paths if p is not None]


def _subject_dirs(root: Path, label: str) -> list[Path]:
    dirs = [root / f"sub-{label}"]
    derivatives = root / "derivatives"
    if derivatives.is_dir():
        dirs += sorted(d / f"sub-{label}" for d in derivatives.iterdir() if (d / f"sub-{label}").is_dir())
    return [d for d in dirs if d.is_dir()]


def _name_problem(path: Path, label: str) -> str | None:
    """Why ``path`` is not a BIDS file name of subject ``label`` (None when it is one)."""
    parts = _split_extension(path.name)[0].split("_")
    if parts[0] != f"sub-{label}":
        return f"it must start with sub-{label}_ (the subject of its folder)"
    keys = ["sub"]
    for part in parts[1:-1]:
        match = _ENTITY.match(part)
        if match is None:
            return f"{part!r} is not a <key>-<value> entity of letters and digits"
        if match.group(1) in keys:
            return f"entity {match.group(1)!r} appears twice"
        keys.append(match.group(1))
    if len(parts) < 2 or not re.fullmatch(r"[a-zA-Z0-9]+", parts[-1]):
        return f"its suffix {parts[-1]!r} is not letters and digits (e.g. _T1w, _bold, _dwi)"
    return None


def _find(
    dirs: list[Path], datatype: str, extensions: tuple[str, ...], select, *, strict: Path | None = None, label=""
) -> list[Path]:
    """Files of one datatype whose entities and suffix ``select`` accepts; in the folder ``strict`` (the raw
    subject folder) every file with one of ``extensions`` must have a BIDS name (derivatives may hold others)."""
    found = []
    for subject_dir in dirs:
        for folder in [subject_dir / datatype, *sorted(subject_dir.glob(f"ses-*/{datatype}"))]:
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                entities, suffix, ext = parse_entities(path)
                if ext not in extensions:
                    continue
                problem = _name_problem(path, label) if subject_dir == strict else None
                if problem is not None:
                    raise InputDataError(
                        f"{path}: not a BIDS file name: {problem}; rename it "
                        f"(sub-{label}[_<key>-<value>...]_<suffix>{ext}) or move it out of the dataset"
                    )
                if select(entities, suffix):
                    found.append(path)
    return found


class _Ambiguities(dict):
    """Modality name -> message, for files found more than once (an error only if a stage needs them)."""

    def one(self, name: str, paths: list[Path], what: str, fix: str) -> Path | None:
        if len(paths) > 1:
            listing = ", ".join(str(p) for p in paths)
            self[name] = f"more than one {what} found ({listing}); {fix}"
            return None
        return paths[0] if paths else None


def _matches(entities: Mapping[str, str], wanted: Mapping[str, str | None]) -> bool:
    return all(value is None or entities.get(key) == value for key, value in wanted.items())


def find_subject_inputs(
    bids_dir: str | Path,
    participant_label: str,
    *,
    task: str = "rest",
    session: str | None = None,
    run: str | None = None,
) -> SubjectInputs:
    """Find one subject's T1w, DWI and BOLD (raw or preprocessed) in a BIDS dataset.

    Parameters
    ----------
    bids_dir : dataset root (holds ``dataset_description.json`` and ``sub-<label>/``); preprocessed files
        may also sit in ``<bids_dir>/derivatives/<pipeline>/sub-<label>/``.
    participant_label : subject label, with or without the ``sub-`` prefix.
    task : BOLD task label (``task-<task>``).
    session, run : restrict to one session / run when the subject has several.

    Returns
    -------
    SubjectInputs
        Files not present are None; :func:`validate_subject` decides which ones a stage needs.

    Raises
    ------
    InputDataError
        The dataset or subject folder is missing, or a modality is ambiguous (several runs).
    """
    root = Path(bids_dir).expanduser().resolve()
    if not root.is_dir():
        raise InputDataError(f"BIDS dataset {root} does not exist; give the folder holding sub-<label>/")
    label = participant_label.removeprefix("sub-")
    if not re.fullmatch(r"[a-zA-Z0-9]+", label):
        raise InputDataError(f"participant label {participant_label!r} is not a BIDS label (letters and digits only)")
    dirs = _subject_dirs(root, label)
    find = functools.partial(_find, strict=root / f"sub-{label}", label=label)
    if not dirs:
        present = sorted(p.name for p in root.glob("sub-*"))[:10]
        raise InputDataError(
            f"{root / ('sub-' + label)} does not exist; subjects in {root}: {', '.join(present) or 'none'}"
        )
    common = {"ses": session, "run": run}
    ambiguity = "keep one run (or give session/run), or move the extra files out of the dataset"
    found = _Ambiguities()

    def raw(suffix):
        return lambda e, s: s == suffix and "space" not in e and "desc" not in e and _matches(e, common)

    t1w_pre = find(dirs, "anat", _NIFTI, lambda e, s: s == "T1w" and e.get("desc") == "preproc" and _matches(e, common))
    t1w = found.one("t1w", t1w_pre, "preprocessed T1w", ambiguity) or found.one(
        "t1w", find(dirs, "anat", _NIFTI, raw("T1w")), "T1w", ambiguity
    )
    gm = found.one(
        "gm_probseg",
        find(dirs, "anat", _NIFTI, lambda e, s: s == "probseg" and e.get("label") == "GM" and _matches(e, common)),
        "GM probability map (label-GM_probseg)",
        ambiguity,
    )
    dwi = found.one("dwi", find(dirs, "dwi", _NIFTI, raw("dwi")), "DWI", ambiguity)
    wanted = {**common, "task": task}
    bold_pre = find(
        dirs, "func", _NIFTI, lambda e, s: s == "bold" and e.get("desc") == "preproc" and _matches(e, wanted)
    )
    bold_raw = find(
        dirs, "func", _NIFTI, lambda e, s: s == "bold" and "desc" not in e and "space" not in e and _matches(e, wanted)
    )
    bold = found.one("bold", bold_pre, "preprocessed BOLD", ambiguity) or found.one(
        "bold", bold_raw, f"task-{task} BOLD", ambiguity
    )
    bold_space = parse_entities(bold)[0].get("space") if bold is not None else None
    mask = confounds = None
    bold_metadata: dict = {}
    bold_sidecars: tuple[Path, ...] = ()
    if bold is not None:
        entities = parse_entities(bold)[0]
        bold_root = next(p for p in bold.parents if p.name == f"sub-{label}").parent
        bold_metadata, bold_sidecars = inherited_sidecar(bold, bold_root)
        same_run = {k: entities.get(k) for k in ("ses", "task", "run", "space")}
        mask = found.one(
            "bold_mask",
            find(dirs, "func", _NIFTI, lambda e, s: s == "mask" and e.get("desc") == "brain" and _matches(e, same_run)),
            "BOLD brain mask",
            ambiguity,
        )
        confounds = found.one(
            "confounds",
            find(
                dirs,
                "func",
                (".tsv",),
                lambda e, s: (
                    s == "timeseries" and e.get("desc") == "confounds" and _matches(e, {**same_run, "space": None})
                ),
            ),
            "confounds table",
            ambiguity,
        )
    bval = bvec = None
    if dwi is not None:
        dwi_root = next(p for p in dwi.parents if p.name == f"sub-{label}").parent
        bval, bvec = _nearest(dwi, dwi_root, ".bval"), _nearest(dwi, dwi_root, ".bvec")
    connectome = found.one(
        "connectome", find(dirs, "dwi", (".tsv",), lambda e, s: s == "relmat"), "connectome (relmat.tsv)", ambiguity
    )
    tractogram = found.one(
        "tractogram", find(dirs, "dwi", (".trk", ".tck"), lambda e, s: True), "tractogram", ambiguity
    )
    inputs = SubjectInputs(
        root=root,
        label=label,
        t1w=t1w,
        t1w_space=parse_entities(t1w)[0].get("space") if t1w is not None else None,
        gm_probseg=gm,
        gm_probseg_space=parse_entities(gm)[0].get("space") if gm is not None else None,
        dwi=dwi,
        bval=bval,
        bvec=bvec,
        bold=bold,
        bold_space=bold_space,
        bold_preprocessed=bold is not None and parse_entities(bold)[0].get("desc") == "preproc",
        bold_metadata=bold_metadata,
        bold_sidecars=bold_sidecars,
        bold_mask=mask,
        confounds=confounds,
        connectome=connectome,
        tractogram=tractogram,
        ambiguous=dict(found),
    )
    log.info("sub-%s inputs: %s", label, ", ".join(f"{p.relative_to(root)}" for p in inputs.sources()))
    return inputs


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ValidatedSubject:
    """Inputs that passed :func:`validate_subject`; images are RAS+ (``as_closest_canonical``).

    Attributes
    ----------
    inputs : the :class:`SubjectInputs` validated.
    t1w, gm_probseg, bold_mask, dwi : validated images (None when absent); 3-D except ``dwi``.
    bvals : b-values [s/mm^2], shape (n_volumes,), or None.
    bvecs : unit gradient directions in the (reoriented) voxel frame, shape (n_volumes, 3), or None.
    repetition_time : BOLD TR [s] (None without BOLD).
    n_volumes : BOLD volumes (0 without BOLD).
    notes : what validation changed or warned about (reorientations, TR disagreements), for the log.
    """

    inputs: SubjectInputs
    t1w: nib.Nifti1Image | None = None
    gm_probseg: nib.Nifti1Image | None = None
    bold_mask: nib.Nifti1Image | None = None
    dwi: nib.Nifti1Image | None = None
    bvals: np.ndarray | None = None
    bvecs: np.ndarray | None = None
    repetition_time: float | None = None
    n_volumes: int = 0
    notes: tuple[str, ...] = ()
    _bold: nib.Nifti1Image | None = field(default=None, repr=False)

    @property
    def bold_shape(self) -> tuple[int, int, int, int]:
        """(x, y, z, time) of the BOLD series."""
        if self._bold is None:
            raise InputDataError(f"sub-{self.inputs.label} has no BOLD series")
        return tuple(int(n) for n in self._bold.shape)

    def bold_chunks(self, volumes_per_chunk: int = 64) -> Iterator[tuple[int, nib.Nifti1Image]]:
        """Yield ``(first_volume, image)`` blocks of the BOLD series in RAS+ orientation.

        Only one block is in memory at a time (``volumes_per_chunk`` x voxels x 4 bytes, float32), so a long
        series never needs to be loaded whole.
        """
        if self._bold is None:
            raise InputDataError(f"sub-{self.inputs.label} has no BOLD series")
        if volumes_per_chunk < 1:
            raise InputDataError(f"volumes_per_chunk must be >= 1, got {volumes_per_chunk}")
        for start in range(0, self.n_volumes, volumes_per_chunk):
            stop = min(self.n_volumes, start + volumes_per_chunk)
            block = self._bold.slicer[..., start:stop]
            yield (
                start,
                nib.as_closest_canonical(nib.Nifti1Image(np.asarray(block.dataobj), block.affine, block.header)),
            )


def _fix_hint(path: Path) -> str:
    return f"fix the header of {path.name} (e.g. nibabel set_sform/set_qform, or fslorient) or re-export it"


def _load(path: Path, what: str) -> nib.Nifti1Image:
    try:
        img = nib.load(path, mmap=False)  # read slices from the file: memmapped pages would count as resident
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputDataError(
            f"{path}: cannot read the {what} as NIfTI ({exc}); re-export it as .nii or .nii.gz"
        ) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputDataError(f"{path}: the {what} must be NIfTI-1/2, got {type(img).__name__}")
    if path.name.endswith(".gz"):
        _check_gzip_end(path, img, what)
    return img


def _check_gzip_end(path: Path, img, what: str) -> None:
    """Refuse a .nii.gz cut short anywhere, also inside its 8-byte gzip trailer.

    nibabel reads only the bytes it needs, so a file that lost just the end of its gzip stream
    still loads. The trailer's last word is the uncompressed size (mod 2^32): when it equals the
    NIfTI's header plus voxels the file is whole; otherwise the stream is read to its end to decide
    (a file with padding or several gzip members is whole too).
    """
    import gzip
    import zlib

    expected = int(img.header.get_data_offset()) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() >= 18:
            handle.seek(-4, 2)
            if int.from_bytes(handle.read(4), "little") == expected % 2**32:
                return
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise InputDataError(
            f"{path}: the {what}'s gzip stream is cut short or corrupt ({type(exc).__name__}: {exc}); the file is "
            "truncated: copy or export it again"
        ) from None


def _read(img: nib.Nifti1Image, path: Path, what: str, volumes: slice | None = None) -> np.ndarray:
    """The image's voxels (or a block of volumes); a truncated or corrupt file names itself."""
    try:
        if volumes is None:
            return np.asanyarray(img.dataobj)
        return np.asarray(img.dataobj[..., volumes])
    except Exception as exc:  # gzip/zlib/nibabel raise EOFError, zlib.error, OSError, ValueError, ...
        raise InputDataError(
            f"{path}: cannot read the {what}'s voxels ({type(exc).__name__}: {exc}); the file is truncated or "
            "corrupt: copy or export it again"
        ) from None


def _check_affine(img: nib.Nifti1Image, path: Path, notes: list[str]) -> None:
    header = img.header
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 and scode == 0:
        raise InputDataError(
            f"{path}: qform_code and sform_code are both 0, so the voxel-to-world mapping is unknown; "
            f"{_fix_hint(path)} with code 1 (scanner) or 4 (MNI)"
        )
    affine = img.affine
    if not np.all(np.isfinite(affine)):
        raise InputDataError(f"{path}: the affine has non-finite entries; {_fix_hint(path)}")
    linear = affine[:3, :3]
    singular = np.linalg.svd(linear, compute_uv=False)
    if singular.min() <= 1e-6 * max(singular.max(), 1e-12) or singular.min() < 1e-6:
        raise InputDataError(
            f"{path}: the affine is singular (voxel sizes {np.round(singular, 6).tolist()} mm); {_fix_hint(path)}"
        )
    if qcode > 0 and scode > 0:
        qform, sform = header.get_qform(), header.get_sform()
        if np.max(np.abs(qform - sform)) > 1e-3:
            note = (
                f"{path.name}: qform and sform differ by up to {np.max(np.abs(qform - sform)):.3g} mm; using the sform"
            )
            notes.append(note)
            warnings.warn(note, UserWarning, stacklevel=3)


def _to_ras(img: nib.Nifti1Image, path: Path, notes: list[str]) -> nib.Nifti1Image:
    codes = nib.aff2axcodes(img.affine)
    if codes == ("R", "A", "S"):
        return img
    note = f"{path.name}: reoriented from {''.join(codes)} to RAS with nibabel as_closest_canonical"
    notes.append(note)
    log.info(note)
    return nib.as_closest_canonical(img)


def _check_dims(img: nib.Nifti1Image, path: Path, what: str, ndim: int) -> nib.Nifti1Image:
    if 0 in img.shape:
        raise InputDataError(f"{path}: the {what} has an empty axis (shape {img.shape}); export the whole image")
    if ndim == 3 and img.ndim == 4 and img.shape[3] == 1:
        return nib.squeeze_image(img)
    if img.ndim != ndim:
        if ndim == 4:
            fix = f"give the whole {what} series (x, y, z, time); a 3-D file holds a single volume"
        else:
            fix = f"the {what} must be one 3-D volume; extract one (e.g. nilearn.image.index_img)"
        raise InputDataError(f"{path}: the {what} has {img.ndim} dimensions {img.shape}, expected {ndim}; {fix}")
    if ndim == 4 and img.shape[3] < 2:
        raise InputDataError(f"{path}: the {what} has {img.shape[3]} volume; a time series needs at least 2")
    return img


def _check_finite(data: np.ndarray, path: Path, what: str, offset: int = 0) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), data.shape)
        if offset and len(first) == 4:
            first = (*first[:3], first[3] + offset)
        raise InputDataError(
            f"{path}: the {what} has {int(bad.sum())} NaN/inf value(s) (first at voxel {tuple(int(i) for i in first)}); "
            "replace them (e.g. by 0 outside the brain: nilearn.image.math_img('np.nan_to_num(img)', img=...)) "
            "and run again"
        )


def _same_grid(a: nib.Nifti1Image, path_a: Path, b: nib.Nifti1Image, path_b: Path) -> None:
    if tuple(a.shape[:3]) != tuple(b.shape[:3]):
        raise InputDataError(
            f"{path_b}: grid {tuple(b.shape[:3])} differs from {path_a.name} {tuple(a.shape[:3])}; "
            f"resample it onto {path_a.name} (nilearn.image.resample_to_img) or give files from the same run"
        )
    diff = float(np.max(np.abs(a.affine - b.affine)))
    if diff > AFFINE_TOLERANCE:
        raise InputDataError(
            f"{path_b}: affine differs from {path_a.name} by up to {diff:.3g} mm (tolerance {AFFINE_TOLERANCE}); "
            f"resample it onto {path_a.name} (nilearn.image.resample_to_img) or give files from the same run"
        )


def repetition_time(
    img: nib.Nifti1Image,
    metadata: Mapping,
    path: Path,
    notes: list[str] | None = None,
    sidecars: tuple[Path, ...] = (),
) -> float:
    """The BOLD TR [s]: the JSON ``RepetitionTime``, cross-checked with the NIfTI header.

    Rules (docs/imaging.md, "Validation rules"): the JSON wins; a header TR (``pixdim[4]`` with a time unit) that differs by
    more than 1 ms gives a warning; with no JSON the header TR is used; with neither an error is raised,
    never a guess. A header without a time unit (``xyzt_units`` time bits 0) counts as missing. A header
    labelled seconds but above 100 s was written in milliseconds (FSL 3.x): it is read as ms, with a note.

    Parameters
    ----------
    img : the BOLD image (header only is read).
    metadata : merged JSON sidecar (:func:`inherited_sidecar`).
    path : BOLD path, for messages.
    notes : list to which notes are appended.
    sidecars : the JSON files ``metadata`` was merged from (named in messages).

    Returns
    -------
    float
        TR in seconds, > 0.
    """
    notes = [] if notes is None else notes
    json_tr = metadata.get("RepetitionTime")
    if json_tr is not None:
        if isinstance(json_tr, bool) or not isinstance(json_tr, int | float) or not _positive_finite(json_tr):
            where = ", ".join(str(p) for p in sidecars) or "its JSON sidecar"
            raise InputDataError(
                f"{path}: RepetitionTime {json_tr!r} in {where} is not a positive number of seconds; fix the sidecar"
            )
        json_tr = float(json_tr)
    header_tr = None
    time_unit = img.header.get_xyzt_units()[1]
    pixdim = float(img.header["pixdim"][4]) if img.ndim == 4 else 0.0
    if time_unit in ("sec", "msec", "usec") and np.isfinite(pixdim) and pixdim > 0:
        header_tr = pixdim * {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}[time_unit]
        if time_unit == "sec" and header_tr > _HEADER_TR_MS_THRESHOLD:
            header_tr *= 1e-3
            note = f"{path.name}: header TR {pixdim:g} labelled seconds read as {header_tr:g} s (it was written in ms)"
            notes.append(note)
            log.info(note)
    if json_tr is None and header_tr is None:
        raise InputDataError(
            f"{path}: no repetition time: the JSON sidecar has no RepetitionTime and the NIfTI header none with a time "
            f'unit (pixdim[4]={pixdim:g}, unit {time_unit!r}); add "RepetitionTime": <seconds> to '
            f"{_split_extension(path.name)[0]}.json (or task-<task>_bold.json at the dataset root)"
        )
    if json_tr is None:
        note = f"{path.name}: no RepetitionTime in the JSON sidecar; using the header TR {header_tr:g} s"
        notes.append(note)
        warnings.warn(note, UserWarning, stacklevel=2)
        return header_tr
    if header_tr is not None and abs(header_tr - json_tr) > 1e-3:
        note = f"{path.name}: RepetitionTime {json_tr:g} s in the JSON differs from the header TR {header_tr:g} s; using the JSON"
        notes.append(note)
        warnings.warn(note, UserWarning, stacklevel=2)
    return json_tr


def _positive_finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:  # a JSON integer beyond the float range
        return False


def _read_gradients(
    dwi_path: Path, bval: Path | None, bvec: Path | None, n_volumes: int
) -> tuple[np.ndarray, np.ndarray]:
    stem = _split_extension(dwi_path.name)[0]
    for path, ext in ((bval, ".bval"), (bvec, ".bvec")):
        if path is None:
            raise InputDataError(f"{dwi_path}: no {ext} file; add {stem}{ext} next to it (or an inherited one)")
    try:
        bvals = np.loadtxt(bval, ndmin=2)
        bvecs = np.loadtxt(bvec, ndmin=2)
    except ValueError as exc:
        raise InputDataError(
            f"{bval} / {bvec}: not numeric text ({exc}); write them as BIDS plain-text tables"
        ) from None
    if bvals.shape[0] != 1:
        raise InputDataError(f"{bval}: expected one row of b-values, got shape {bvals.shape}; write them on one line")
    if bvecs.shape[0] != 3:
        hint = "transpose it (three rows: x, y, z)" if bvecs.shape[1] == 3 else "write three rows (x, y, z)"
        raise InputDataError(f"{bvec}: expected 3 rows of gradient directions, got shape {bvecs.shape}; {hint}")
    bvals, bvecs = bvals[0], bvecs.T
    for path, count in ((bval, bvals.shape[0]), (bvec, bvecs.shape[0])):
        if count != n_volumes:
            raise InputDataError(
                f"{path}: {count} gradient entries but {dwi_path.name} has {n_volumes} volumes; "
                "give one b-value and one direction per DWI volume"
            )
    b0_nan = (bvals == 0) & ~np.all(np.isfinite(bvecs), axis=1)
    bvecs = np.where(b0_nan[:, None], 0.0, bvecs)  # a b = 0 volume has no direction (often NaN)
    if not (np.all(np.isfinite(bvals)) and np.all(np.isfinite(bvecs))) or np.any(bvals < 0):
        raise InputDataError(f"{bval} / {bvec}: b-values must be finite and >= 0 and directions finite; fix the files")
    return bvals, bvecs


def _reorient_bvecs(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Express voxel-frame gradient directions in the frame of ``as_closest_canonical``."""
    ornt = nib.orientations.io_orientation(affine)
    out = np.empty_like(bvecs)
    for old_axis, (new_axis, flip) in enumerate(ornt):
        out[:, int(new_axis)] = flip * bvecs[:, old_axis]
    return out


def _validated_image(path: Path, what: str, ndim: int, notes: list[str]) -> nib.Nifti1Image:
    img = _check_dims(_load(path, what), path, what, ndim)
    _check_affine(img, path, notes)
    return img


def validate_subject(inputs: SubjectInputs, require: tuple[str, ...] = ()) -> ValidatedSubject:
    """Check a subject's inputs once, before any stage runs (docs/imaging.md, "Validation rules").

    Checks: readable NIfTI; 3-D anatomy/masks and 4-D BOLD/DWI; qform/sform codes set, affine finite and
    invertible (a qform/sform disagreement is a warning; the sform is used); no NaN/inf (BOLD checked in
    blocks); BOLD TR (:func:`repetition_time`); bval/bvec counts equal the DWI volumes and bvec has 3 rows;
    BOLD and its brain mask, and T1w and a GM map in the same space, share a grid (affines within
    :data:`AFFINE_TOLERANCE`). Images not in RAS+ are reoriented with ``nib.as_closest_canonical``
    (with a log line; the bvecs are permuted and flipped with them).

    Parameters
    ----------
    inputs : from :func:`find_subject_inputs`.
    require : modalities the calling stage needs: ``"anat"`` (T1w or GM map), ``"dwi"``, ``"func"``. Only
        their files are read and checked (``dtb anat`` neither reads nor refuses a broken BOLD); empty: every
        file found is checked.

    Returns
    -------
    ValidatedSubject
        Images of modalities not checked are None.

    Raises
    ------
    InputDataError
        Naming the file and the fix.
    """
    unknown = set(require) - {"anat", "dwi", "func"}
    if unknown:
        raise InputDataError(f"unknown modality {sorted(unknown)} in require; use 'anat', 'dwi' or 'func'")
    subject = inputs.root / f"sub-{inputs.label}"
    needed = {"anat": ("t1w", "gm_probseg"), "func": ("bold", "bold_mask", "confounds"), "dwi": ("dwi",)}
    if "dwi" in require and inputs.dwi is None and "dwi" not in inputs.ambiguous:
        needed["dwi"] = ("connectome", "tractogram")
    for modality in require:
        for name in needed[modality]:
            if name in inputs.ambiguous:
                raise InputDataError(inputs.ambiguous[name])
    if "anat" in require and inputs.t1w is None and inputs.gm_probseg is None:
        raise InputDataError(f"{subject}/anat: no *_T1w.nii[.gz] nor *_label-GM_probseg.nii[.gz]; add one")
    if "dwi" in require and inputs.dwi is None and inputs.connectome is None and inputs.tractogram is None:
        raise InputDataError(f"{subject}/dwi: no *_dwi.nii[.gz], *_relmat.tsv or tractogram; add one")
    if "func" in require and inputs.bold is None:
        raise InputDataError(f"{subject}/func: no *_task-<task>_bold.nii[.gz]; add one (or check --task)")
    checked = set(require) or {"anat", "dwi", "func"}
    modality = {"t1w": "anat", "gm_probseg": "anat", "bold_mask": "func"}

    notes: list[str] = []
    images: dict[str, nib.Nifti1Image | None] = {}
    for name, what in (("t1w", "T1w image"), ("gm_probseg", "GM probability map"), ("bold_mask", "BOLD brain mask")):
        path = getattr(inputs, name)
        if path is None or modality[name] not in checked:
            images[name] = None
            continue
        img = _validated_image(path, what, 3, notes)
        data = _read(img, path, what)
        _check_finite(data, path, what)
        if name == "t1w" and data.max() == data.min():
            raise InputDataError(
                f"{path}: the T1w is constant ({data.min():g} everywhere, stored as {img.get_data_dtype()}); "
                "re-export it (an integer data type truncates a [0, 1] float image to 0; save it as float32)"
            )
        images[name] = _to_ras(img, path, notes)
    if images["gm_probseg"] is not None:
        gm = _read(images["gm_probseg"], inputs.gm_probseg, "GM probability map")
        if gm.min() < -1e-6 or gm.max() > 1 + 1e-6:
            raise InputDataError(
                f"{inputs.gm_probseg}: GM probabilities must lie in [0, 1], got [{gm.min():.3g}, {gm.max():.3g}]; "
                "give a probability map, not a label or volume image"
            )
        if images["t1w"] is not None and inputs.gm_probseg_space == inputs.t1w_space:
            _same_grid(images["t1w"], inputs.t1w, images["gm_probseg"], inputs.gm_probseg)

    dwi = bvals = bvecs = None
    if inputs.dwi is not None and "dwi" in checked:
        raw = _validated_image(inputs.dwi, "DWI", 4, notes)
        bvals, bvecs = _read_gradients(inputs.dwi, inputs.bval, inputs.bvec, raw.shape[3])
        _check_finite(_read(raw, inputs.dwi, "DWI"), inputs.dwi, "DWI")
        dwi = _to_ras(raw, inputs.dwi, notes)
        if dwi is not raw:
            bvecs = _reorient_bvecs(bvecs, raw.affine)

    bold = None
    tr, n_volumes = None, 0
    if inputs.bold is not None and "func" in checked:
        bold = _validated_image(inputs.bold, "BOLD", 4, notes)
        tr = repetition_time(bold, inputs.bold_metadata, inputs.bold, notes, inputs.bold_sidecars)
        n_volumes = int(bold.shape[3])
        step = max(1, int(2**24 // max(1, int(np.prod(bold.shape[:3])))))  # <= 128 MiB of float64 per block
        for start in range(0, n_volumes, step):
            block = _read(bold, inputs.bold, "BOLD", slice(start, start + step))
            _check_finite(block, inputs.bold, "BOLD", offset=start)
        codes = nib.aff2axcodes(bold.affine)
        if codes != ("R", "A", "S"):
            note = f"{inputs.bold.name}: reoriented from {''.join(codes)} to RAS with nibabel as_closest_canonical"
            notes.append(note)
            log.info(note)
        if images["bold_mask"] is not None:
            reference = nib.Nifti1Image(np.zeros(bold.shape[:3], np.int8), bold.affine)
            _same_grid(nib.as_closest_canonical(reference), inputs.bold, images["bold_mask"], inputs.bold_mask)
    return ValidatedSubject(
        inputs=inputs,
        t1w=images["t1w"],
        gm_probseg=images["gm_probseg"],
        bold_mask=images["bold_mask"],
        dwi=dwi,
        bvals=bvals,
        bvecs=bvecs,
        repetition_time=tr,
        n_volumes=n_volumes,
        notes=tuple(notes),
        _bold=bold,
    )
