"""Fuzzed BIDS input: the phantom's files mutated, run through `dtb anat`, `dtb func` and `dtb dwi`.

The phantom (`dtb phantom`, a tiny setting) is generated once per module; each case hard-links a copy
into a fresh folder, applies one mutation (files are replaced, never written in place, so the links
stay intact), and runs the three stage commands in process up to the end of their validation (a
wrapper around ``dtb.io.bids.validate_subject`` stops the stage there when validation passes, so
no preprocessing runs). For each stage the test states whether the mutation is harmless for it
(the stage must pass validation) or not (the command must exit 2 with one line that names the
offending file); any other exception is a traceback and fails the test. Nothing may be written to
``--out`` nor into the dataset.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtb.assembly.settings import ModelSettings
from dtb.cli import main
from dtb.errors import DTBError
from dtb.io import bids
from dtb.phantom import PhantomSettings, generate_phantom
from tests.fuzz_support import Untouched, captured_stderr, fuzz_settings, outcome, record

SUITE = "bids"
SUB = "sub-phantom"
T1W = f"{SUB}/anat/{SUB}_T1w.nii.gz"
DWI = f"{SUB}/dwi/{SUB}_dwi.nii.gz"
BVAL = f"{SUB}/dwi/{SUB}_dwi.bval"
BVEC = f"{SUB}/dwi/{SUB}_dwi.bvec"
BOLD = f"{SUB}/func/{SUB}_task-rest_bold.nii.gz"
BOLD_JSON = f"{SUB}/func/{SUB}_task-rest_bold.json"
T1W_JSON = f"{SUB}/anat/{SUB}_T1w.json"
DWI_JSON = f"{SUB}/dwi/{SUB}_dwi.json"
ROOT_JSON = "task-rest_bold.json"  # inherited by every task-rest BOLD (BIDS inheritance)
#: which stage reads which image
STAGE_OF = {T1W: "anat", BOLD: "func", DWI: "dwi"}
STAGES = ("anat", "func", "dwi")
IMAGES = tuple(STAGE_OF)
#: a tiny phantom: 2 regions on an 8 mm grid, 12 directions, 3 BOLD volumes (about 10 s to generate)
TINY = PhantomSettings(
    seed=3,
    n_regions=2,
    grid_mm=8,
    region_radius_mm=16,
    n_directions=12,
    n_volumes=3,
    tr_s=0.2,
    warmup_s=0.0,
    neurons_total=80,
    model=ModelSettings(indegree=10, dt_ms=1.0),
    backend="torch",
)
N_GRADIENTS = 1 + TINY.n_directions


class ValidationPassed(Exception):
    """Raised by the validate_subject wrapper: the stage would now start processing."""


class CliRefused(DTBError):
    """`dtb <stage>` exited 2: it caught a DTBError and printed its message (held here)."""


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return generate_phantom(tmp_path_factory.mktemp("fuzz-phantom") / "bids", TINY, progress="none")
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ the cases


@dataclass
class Case:
    """One mutation: what it does, how, and which stages must refuse it naming which files."""

    what: str
    apply: Callable[[Path], None]
    errors: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> names; absent: harmless
    label: str = "phantom"


def _for(stages, *names) -> dict[str, tuple[str, ...]]:
    return {stage: tuple(Path(n).name for n in names) for stage in stages}


def _replace(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)  # a hard link to the pristine phantom: never write through it
    path.write_bytes(data)


def _save(path: Path, img) -> None:
    path.unlink(missing_ok=True)
    nib.save(img, path)


def _image(root: Path, rel: str) -> nib.Nifti1Image:
    img = nib.load(root / rel)
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine, img.header)


def _decompress(root: Path, rel: str) -> str:
    """Turn ``.nii.gz`` into ``.nii`` (the finder accepts both); returns the new relative path."""
    new = rel.removesuffix(".gz")
    (root / new).write_bytes(gzip.decompress((root / rel).read_bytes()))
    (root / rel).unlink()
    return new


@st.composite
def truncations(draw) -> Case:
    rel = draw(st.sampled_from(IMAGES))
    plain = draw(st.booleans())
    fraction = draw(st.floats(0.0, 1.0, exclude_max=True))

    def apply(root: Path) -> None:
        path = rel if not plain else _decompress(root, rel)
        data = (root / path).read_bytes()
        _replace(root / path, data[: int(fraction * len(data))])

    name = Path(rel).name.removesuffix(".gz") if plain else Path(rel).name
    return Case(f"{rel} ({'.nii' if plain else '.nii.gz'}) cut to {fraction:.3f}", apply, _for([STAGE_OF[rel]], name))


@st.composite
def reshapes(draw) -> Case:
    rel = draw(st.sampled_from(IMAGES))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=5)))
    if draw(st.booleans()) and len(shape) >= 3:  # often keep a plausible volume, vary the rest
        shape = (4, 5, 3, *shape[3:])
    if rel == DWI and draw(st.booleans()):
        shape = (3, 4, 2, draw(st.sampled_from([N_GRADIENTS - 1, N_GRADIENTS, N_GRADIENTS + 1])))

    def apply(root: Path) -> None:
        img = nib.load(root / rel)
        data = (np.arange(math.prod(shape), dtype=np.float32) % 7).reshape(shape)  # non-constant when > 1 voxel
        _save(root / rel, nib.Nifti1Image(data, img.affine, img.header))

    empty = 0 in shape
    if rel == T1W:
        ok = not empty and (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)) and math.prod(shape) > 1
    elif rel == BOLD:
        ok = not empty and len(shape) == 4 and shape[3] >= 2
    else:
        ok = not empty and len(shape) == 4 and shape[3] == N_GRADIENTS
    names = (rel, BVAL, BVEC) if rel == DWI else (rel,)
    return Case(f"{rel} reshaped to {shape}", apply, {} if ok else _for([STAGE_OF[rel]], *names))


AFFINE_KINDS = ("codes0", "nan", "inf", "singular", "tiny", "huge", "reorient", "disagree", "qform_only")


@st.composite
def affines(draw) -> Case:
    rel = draw(st.sampled_from(IMAGES))
    kind = draw(st.sampled_from(AFFINE_KINDS))
    entry = (draw(st.integers(0, 2)), draw(st.integers(0, 3)))
    permutation = draw(st.permutations([0, 1, 2]))
    signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3))
    pixdim = draw(st.sampled_from([8.0, 2.5, 0.0, -8.0, math.nan, math.inf]))
    harmful = {"codes0", "nan", "inf", "singular", "tiny"}

    def apply(root: Path) -> None:
        img = _image(root, rel)
        affine = img.affine.copy()
        header = img.header
        if kind == "codes0":
            header.set_sform(affine, code=0)
            header.set_qform(affine, code=0)
        elif kind in ("nan", "inf"):
            header.set_qform(affine, code=0)
            header.set_sform(affine, code=2)
            header[("srow_x", "srow_y", "srow_z")[entry[0]]][entry[1]] = math.nan if kind == "nan" else math.inf
        elif kind in ("singular", "tiny", "huge", "reorient"):
            linear = affine[:3, :3].copy()
            if kind == "singular":
                linear[:, entry[1] % 3] = 0.0
            elif kind == "tiny":
                linear *= 1e-7
            elif kind == "huge":
                linear *= 1e6
            else:
                linear = linear[:, permutation] * np.asarray(signs)
            affine[:3, :3] = linear
            header.set_qform(affine if kind in ("huge", "reorient") else None, code=1 if kind == "reorient" else 0)
            header.set_sform(affine, code=2)
        elif kind == "disagree":
            shifted = affine.copy()
            shifted[:3, 3] += 5.0
            header.set_qform(shifted, code=1)
            header.set_sform(affine, code=2)
        else:  # qform only, with the voxel sizes drawn
            header.set_sform(None, code=0)
            header.set_qform(affine, code=1)
            header["pixdim"][1 + entry[0]] = pixdim
        _save(root / rel, nib.Nifti1Image(np.asanyarray(img.dataobj), None, header))

    bad = kind in harmful or (kind == "qform_only" and not (math.isfinite(pixdim) and pixdim > 0))
    detail = f" pixdim[{1 + entry[0]}]={pixdim}" if kind == "qform_only" else ""
    return Case(f"{rel} affine {kind}{detail}", apply, _for([STAGE_OF[rel]], rel) if bad else {})


@st.composite
def non_finite_values(draw) -> Case:
    rel = draw(st.sampled_from(IMAGES))
    value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    where = draw(st.lists(st.integers(0, 10_000), min_size=4, max_size=4))

    def apply(root: Path) -> None:
        img = _image(root, rel)
        data = np.asarray(img.dataobj, dtype=np.float32).copy()
        data[tuple(w % n for w, n in zip(where, data.shape))] = value
        img.header.set_data_dtype(np.float32)
        _save(root / rel, nib.Nifti1Image(data, img.affine, img.header))

    return Case(f"{rel} one voxel {value}", apply, _for([STAGE_OF[rel]], rel))


@st.composite
def scalings(draw) -> Case:
    rel = draw(st.sampled_from(IMAGES))
    slope = draw(st.sampled_from([0.0, math.nan, math.inf, -math.inf, 2.0, 1e-3]))
    inter = draw(st.sampled_from([0.0, 5.0, math.nan, math.inf]))

    def apply(root: Path) -> None:
        img = _image(root, rel)
        new = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
        new.header["scl_slope"], new.header["scl_inter"] = slope, inter
        path = root / rel.removesuffix(".gz")
        (root / rel).unlink()
        # nibabel rewrites scl_* from the data when saving; patch the header bytes afterwards
        new.to_filename(path)
        raw = bytearray(path.read_bytes())
        raw[112:120] = np.asarray([slope, inter], dtype="<f4").tobytes()
        _replace(path, bytes(raw))

    # nibabel (and the NIfTI rule for 0) reads a non-finite or zero slope as "no scaling"; a valid slope
    # with a non-finite intercept is an unreadable header
    valid_slope = math.isfinite(slope) and slope != 0
    bad = valid_slope and not math.isfinite(inter)
    name = Path(rel).name.removesuffix(".gz")
    return Case(f"{rel} scl_slope={slope} scl_inter={inter}", apply, _for([STAGE_OF[rel]], name) if bad else {})


GRADIENT_KINDS = (
    "drop_bval",
    "extra_bval",
    "drop_bvec",
    "extra_bvec",
    "transpose_bvec",
    "two_rows_bvec",
    "four_rows_bvec",
    "negative_b",
    "nan_b",
    "inf_b",
    "nan_dir_b0",
    "nan_dir",
    "word_bval",
    "word_bvec",
    "empty_bval",
    "empty_bvec",
    "binary_bval",
    "ragged_bvec",
    "missing_bval",
    "missing_bvec",
    "crlf",
    "tabs",
    "float_b",
)


@st.composite
def gradients(draw) -> Case:
    kind = draw(st.sampled_from(GRADIENT_KINDS))
    index = draw(st.integers(1, N_GRADIENTS - 1))  # volume 0 is the b = 0 volume

    def apply(root: Path) -> None:
        bvals = np.loadtxt(root / BVAL, ndmin=2)
        bvecs = np.loadtxt(root / BVEC, ndmin=2)

        def text(table) -> bytes:
            return ("\n".join(" ".join(f"{v:g}" for v in row) for row in np.atleast_2d(table)) + "\n").encode()

        if kind == "drop_bval":
            _replace(root / BVAL, text(bvals[:, :-1]))
        elif kind == "extra_bval":
            _replace(root / BVAL, text(np.hstack([bvals, [[1000.0]]])))
        elif kind == "drop_bvec":
            _replace(root / BVEC, text(bvecs[:, :-1]))
        elif kind == "extra_bvec":
            _replace(root / BVEC, text(np.hstack([bvecs, [[1.0], [0.0], [0.0]]])))
        elif kind == "transpose_bvec":
            _replace(root / BVEC, text(bvecs.T))
        elif kind == "two_rows_bvec":
            _replace(root / BVEC, text(bvecs[:2]))
        elif kind == "four_rows_bvec":
            _replace(root / BVEC, text(np.vstack([bvecs, bvecs[:1]])))
        elif kind in ("negative_b", "nan_b", "inf_b"):
            bvals[0, index] = {"negative_b": -1000.0, "nan_b": math.nan, "inf_b": math.inf}[kind]
            _replace(root / BVAL, text(bvals))
        elif kind in ("nan_dir_b0", "nan_dir"):
            bvecs[:, 0 if kind == "nan_dir_b0" else index] = math.nan
            _replace(root / BVEC, text(bvecs))
        elif kind == "word_bval":
            _replace(root / BVAL, text(bvals).replace(b"1000", b"b1000", 1))
        elif kind == "word_bvec":
            _replace(root / BVEC, b"x " + text(bvecs))
        elif kind == "empty_bval":
            _replace(root / BVAL, b"")
        elif kind == "empty_bvec":
            _replace(root / BVEC, b"\n")
        elif kind == "binary_bval":
            _replace(root / BVAL, bytes(range(256)))
        elif kind == "ragged_bvec":
            lines = text(bvecs).decode().splitlines()
            _replace(root / BVEC, ("\n".join([lines[0] + " 0.5", *lines[1:]]) + "\n").encode())
        elif kind == "missing_bval":
            (root / BVAL).unlink()
        elif kind == "missing_bvec":
            (root / BVEC).unlink()
        elif kind == "crlf":
            _replace(root / BVEC, text(bvecs).replace(b"\n", b"\r\n"))
        elif kind == "tabs":
            _replace(root / BVAL, text(bvals).replace(b" ", b"\t"))
        else:
            _replace(root / BVAL, " ".join(f"{b:.1f}" for b in bvals[0]).encode())

    harmless = {"nan_dir_b0", "crlf", "tabs", "float_b"}
    if kind in harmless:
        errors = {}
    elif "bvec" in kind or kind == "nan_dir":
        errors = _for(["dwi"], BVEC)
    else:
        errors = _for(["dwi"], BVAL)
    return Case(f"gradients: {kind} (index {index})", apply, errors)


def _json_values():
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**400), 10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    )
    return st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=3))


def _valid_tr(value) -> bool:
    """A usable RepetitionTime: a positive finite number of seconds (not a bool); null counts as absent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:  # an integer beyond float range
        return False


def _json_text(content) -> bytes:
    return json.dumps(content, allow_nan=True).encode()


def _json_object(data: bytes) -> bool:
    """True when ``data`` is UTF-8 text holding a JSON object (what a BIDS sidecar must be)."""
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except ValueError:  # includes UnicodeDecodeError
        return False


GARBAGE = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"{", b'{"RepetitionTime": }', b"[1, 2]", b"1.5", b'"text"', b"null", b"\xff\xfe{}"]),
)


@st.composite
def sidecars(draw) -> Case:
    kind = draw(st.sampled_from(["bold_tr", "bold_garbage", "bold_missing", "root", "other_garbage"]))
    if kind == "bold_tr":
        tr = draw(_json_values())
        extra = draw(st.dictionaries(st.text(max_size=6), _json_values(), max_size=3))
        content = {**extra, "RepetitionTime": tr, "TaskName": "rest"}

        def apply(root: Path) -> None:
            _replace(root / BOLD_JSON, _json_text(content))

        # null counts as absent: the header TR (0.2 s, unit sec) is used with a warning
        ok = tr is None or _valid_tr(tr)
        return Case(f"BOLD RepetitionTime {tr!r}", apply, {} if ok else _for(["func"], BOLD_JSON))
    if kind == "bold_garbage":
        data = draw(GARBAGE)

        def apply(root: Path) -> None:
            _replace(root / BOLD_JSON, data)

        # the BOLD sidecars are read when the subject's files are found: every stage refuses them
        ok = _json_object(data)
        return Case(f"BOLD sidecar bytes {data[:20]!r}", apply, {} if ok else _for(STAGES, BOLD_JSON))
    if kind == "bold_missing":
        keep_unit = draw(st.booleans())

        def apply(root: Path) -> None:
            (root / BOLD_JSON).unlink()
            if not keep_unit:
                img = nib.load(root / BOLD)
                img.header.set_xyzt_units(xyz="mm", t="unknown")
                _save(root / BOLD, nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header))

        # without a JSON the header TR (pixdim[4] with a time unit) is used; without a unit: refused
        return Case(
            f"BOLD sidecar removed, header unit kept={keep_unit}", apply, {} if keep_unit else _for(["func"], BOLD_JSON)
        )
    if kind == "root":
        data = draw(
            st.one_of(
                GARBAGE,
                st.dictionaries(st.sampled_from(["RepetitionTime", "TaskName", "x"]), _json_values()).map(_json_text),
            )
        )

        def apply(root: Path) -> None:
            _replace(root / ROOT_JSON, data)

        # inherited by the BOLD; a readable object is overridden by the subject's own RepetitionTime
        ok = _json_object(data)
        return Case(f"root {ROOT_JSON} {data[:20]!r}", apply, {} if ok else _for(STAGES, ROOT_JSON))
    rel = draw(st.sampled_from([T1W_JSON, DWI_JSON]))
    data = draw(GARBAGE)
    delete = draw(st.booleans())

    def apply(root: Path) -> None:
        if delete:
            (root / rel).unlink()
        else:
            _replace(root / rel, data)

    # no stage reads the T1w or DWI sidecar (nothing in them is needed): harmless
    return Case(f"{rel} {'removed' if delete else data[:20]!r}", apply)


# renames of a data file: new file name -> harmless, "missing" (the stage finds no such file and says
# where it looked) or "named" (the file is refused by name)
RENAMES = {
    BOLD: {
        f"{SUB}_task-rest_run-1_bold.nii.gz": "ok",
        f"{SUB}_task-rest_acq-fast_bold.nii.gz": "ok",
        f"{SUB}_task-rest_bold.nii": "gz",
        f"{SUB}_task-other_bold.nii.gz": "missing",
        f"{SUB}_bold.nii.gz": "missing",
        f"{SUB}_task-rest_BOLD.nii.gz": "missing",
        f"{SUB}_task-rest_bold.nii.gzip": "missing",
        f"{SUB}_task-re.st_bold.nii.gz": "named",
        f"{SUB}_task-rest_acq-_bold.nii.gz": "named",
        f"{SUB}_task-rest_junk_bold.nii.gz": "named",
        f"{SUB}_task-rest_task-rest_bold.nii.gz": "named",
        "sub-other_task-rest_bold.nii.gz": "named",
        "task-rest_bold.nii.gz": "named",
    },
    T1W: {
        f"{SUB}_run-1_T1w.nii.gz": "ok",
        f"{SUB}_acq-mprage_T1w.nii.gz": "ok",
        f"{SUB}_t1w.nii.gz": "missing",
        f"{SUB}_T1.nii.gz": "missing",
        f"{SUB}_T1w_backup.nii.gz": "named",
        f"{SUB}_acq-a b_T1w.nii.gz": "named",
        f"{SUB}_sub-phantom_T1w.nii.gz": "named",
        "sub-Phantom_T1w.nii.gz": "named",
        "T1w.nii.gz": "named",
    },
    DWI: {
        f"{SUB}_acq-multishell_dwi.nii.gz": "ok",  # the .bval/.bvec apply by inheritance (fewer entities)
        f"{SUB}_run-1_dwi.nii.gz": "ok",
        f"{SUB}_DWI.nii.gz": "missing",
        f"{SUB}_dwi.nii.bz2": "missing",
        f"{SUB}_acq-x-y_dwi.nii.gz": "named",
        f"{SUB}__dwi.nii.gz": "named",
        "sub-other_dwi.nii.gz": "named",
    },
}
MISSING_WHERE = {T1W: f"{SUB}/anat", BOLD: f"{SUB}/func", DWI: SUB}


@st.composite
def renames(draw) -> Case:
    rel = draw(st.sampled_from(IMAGES))
    new_name = draw(st.sampled_from(sorted(RENAMES[rel])))
    duplicate = draw(st.booleans())  # also keep the original: two candidates
    verdict = RENAMES[rel][new_name]

    def apply(root: Path) -> None:
        source = root / rel
        target = source.with_name(new_name)
        data = source.read_bytes()
        if verdict == "gz":
            data = gzip.decompress(data)
        if not duplicate:
            source.unlink()
        _replace(target, data)

    stage = STAGE_OF[rel]
    if verdict == "named":
        errors = _for(STAGES, new_name)  # a malformed name in the raw subject folder stops every stage
    elif duplicate and verdict in ("ok", "gz"):
        errors = _for([stage], new_name, rel)  # two candidates: both are listed
    elif duplicate or verdict in ("ok", "gz"):
        errors = {}  # the original is still there and the other name is not a candidate
    else:
        errors = {stage: (MISSING_WHERE[rel],)}
    return Case(f"{rel} renamed to {new_name}{' (original kept)' if duplicate else ''}", apply, errors)


@st.composite
def labels(draw) -> Case:
    label = draw(
        st.one_of(
            st.sampled_from(["phantom", "sub-phantom", "Phantom", "phantom ", "sub-", "", "phan-tom", "-phantom"]),
            st.text(max_size=10),
        )
    )
    bare = label.removeprefix("sub-")
    if bare == "phantom":
        return Case(f"participant label {label!r}", lambda root: None, label=label)
    names = (repr(label),) if not (bare.isascii() and bare.isalnum()) else (f"sub-{bare}",)
    return Case(f"participant label {label!r}", lambda root: None, _for(STAGES, *names), label=label)


CASES = st.one_of(
    truncations(), reshapes(), affines(), non_finite_values(), scalings(), gradients(), sidecars(), renames(), labels()
)


# ------------------------------------------------------------------ running a stage up to its validation


def _stop_after(validate):
    def wrapper(*args, **kwargs):
        raise ValidationPassed(validate(*args, **kwargs))

    return wrapper


def _run_stage(stage: str, root: Path, label: str, out: Path) -> str:
    argv = [stage, "--bids", str(root), f"--participant-label={label}", "--out", str(out)]
    with mock.patch.object(bids, "validate_subject", _stop_after(bids.validate_subject)), captured_stderr() as err:
        try:
            code = main(argv)
        except ValidationPassed:
            return "validated"
    printed = err.getvalue()
    assert code == 2, f"dtb {stage} exited {code} without validating: {printed}"
    assert printed.startswith(f"dtb {stage}: error: ") and "Traceback" not in printed, printed
    raise CliRefused(printed.removeprefix(f"dtb {stage}: error: ").strip())


@pytest.mark.filterwarnings("ignore")
@fuzz_settings(max_examples=300)
@given(case=CASES)
def test_mutated_phantom_is_validated_or_refused_by_name(phantom, case):
    record(SUITE, "mutations")
    base = Path(tempfile.mkdtemp(prefix="case-", dir=phantom.parent))
    try:
        root = base / "bids"
        shutil.copytree(phantom, root, copy_function=os.link)
        case.apply(root)
        dataset = Untouched(root)
        for stage in STAGES:
            out = base / f"out-{stage}"
            expected = case.errors.get(stage)
            outcome(
                SUITE,
                lambda stage=stage, out=out: _run_stage(stage, root, case.label, out),
                expect_error=expected is not None,
                names=expected or (),
                what=f"dtb {stage}: {case.what}",
            )
            assert not out.exists(), f"dtb {stage}: {case.what}: wrote {out}"
        dataset.check(case.what)
    finally:
        shutil.rmtree(base, ignore_errors=True)
