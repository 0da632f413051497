"""Fuzzed twin configs and region-level inputs, through `dtb assimilate` up to the start of the run.

`dtb assimilate --config CONFIG --inputs ROOT --participant-label 01 --out OUT` reads and checks the twin
config (dtb.twin.config) and the region-level inputs (dtb.io.region_inputs) before the assimilation
starts; a wrapper around ``dtb.twin.run.assimilate_subject`` stops the command there when both loaded.
Each case mutates one key of a valid config, or one file of a valid region-level subject, and states
by an independent rule whether that is harmless (the command must reach the run) or not (it must
exit 2 with one line naming the file or key). Nothing may be written to ``--out`` nor to the inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from dtb.cli import main
from dtb.cli.workflow_config import twin_settings
from dtb.errors import DTBError
from dtb.io.region_inputs import RegionSubject, region_input_paths, write_region_subject
from dtb.twin import run as twin_run
from tests.fuzz_support import Untouched, captured_stderr, fuzz_settings, outcome, record
from tests.twin_config_rules import PLAUSIBLE, REGIONS, RULES, SCALARS, SECTIONS, VALUES, _num

ROOT = Path(__file__).resolve().parents[2]
LABEL = "01"
ATLAS = "AAL2"
N_FRAMES = 30
#: the demo's twin settings (config/config.yaml, as the workflow writes them for dtb) are the valid base config
BASE_CONFIG = twin_settings(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


class RunReached(Exception):
    """Raised instead of running the assimilation: config and inputs loaded."""


class CliRefused(DTBError):
    """`dtb assimilate` exited 2 with this message."""


@pytest.fixture(scope="module")
def region_root(tmp_path_factory) -> Path:
    rng = np.random.default_rng(5)
    n = len(REGIONS)
    sc = np.triu(rng.integers(1, 40, size=(n, n)).astype(float), 1)
    subject = RegionSubject(
        label=LABEL,
        atlas=ATLAS,
        labels=tuple(REGIONS),
        bold=100.0 + rng.standard_normal((N_FRAMES, n)),
        tr_s=2.0,
        sc=sc + sc.T,
        lengths=(sc + sc.T) * 1.5,
        neuron_counts=np.full(n, 500, dtype=np.int64),
        grey_matter_mm3=rng.uniform(1000, 5000, n),
    )
    root = tmp_path_factory.mktemp("fuzz-region") / "inputs"
    write_region_subject(root, subject)
    return root


def _run_assimilate(inputs: Path, out: Path, config: Path | None) -> str:
    argv = ["assimilate", "--inputs", str(inputs), "--participant-label", LABEL, "--out", str(out)]
    if config is not None:
        argv += ["--config", str(config)]

    def stop(*args, **kwargs):
        raise RunReached

    with mock.patch.object(twin_run, "assimilate_subject", stop), captured_stderr() as err:
        try:
            code = main(argv)
        except RunReached:
            return "loaded"
    printed = err.getvalue()
    assert code == 2, f"dtb assimilate exited {code} without reaching the run: {printed}"
    assert printed.startswith("dtb assimilate: error: ") and "Traceback" not in printed, printed
    raise CliRefused(printed.removeprefix("dtb assimilate: error: ").strip())


# ------------------------------------------------------------------ the twin config: the rule per key

# the rules and strategies live in tests/twin_config_rules.py (shared with test_fuzz_workflow_config)


def _set(config: dict, path: tuple[str, ...], value) -> None:
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _get(config: dict, path: tuple[str, ...]):
    for key in path:
        config = config[key]
    return config


@dataclass
class ConfigCase:
    what: str
    text: bytes
    names: tuple[str, ...] | None  # None: harmless


@st.composite
def config_cases(draw) -> ConfigCase:
    kind = draw(st.sampled_from(["value"] * 6 + ["unknown", "section", "text"]))
    config = json.loads(json.dumps(BASE_CONFIG))
    if kind == "value":
        path = draw(st.sampled_from(sorted(RULES)))
        _set(config, path, draw(PLAUSIBLE if draw(st.booleans()) else VALUES))
        text = yaml.safe_dump(config).encode()
        value = _get(yaml.safe_load(text), path)  # what the loader sees after the YAML round trip
        ok = RULES[path](value)
        return ConfigCase(f"{'.'.join(path)} = {value!r}", text, None if ok else (".".join(path),))
    if kind == "unknown":
        section = draw(st.sampled_from(sorted(SECTIONS)))
        key = draw(st.text(min_size=1, max_size=8))
        assume(key not in SECTIONS[section])
        _set(config, (*section, key), draw(SCALARS))
        return ConfigCase(f"unknown key {key!r} in {section}", yaml.safe_dump(config).encode(), (repr(key),))
    if kind == "section":
        section = draw(st.sampled_from([s for s in SECTIONS if s]))
        value = draw(st.one_of(st.none(), SCALARS, st.lists(SCALARS, max_size=2)))
        _set(config, section, value)
        name = ".".join(section)
        # null stands for an empty section (all defaults); anything else must be a mapping
        return ConfigCase(
            f"section {name} = {value!r}", yaml.safe_dump(config).encode(), None if value is None else (name,)
        )
    data = draw(st.one_of(st.binary(max_size=30), st.text(max_size=30).map(str.encode)))
    try:
        parsed = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return ConfigCase(f"config bytes {data!r}", data, ("twin.yaml",))
    assume(not isinstance(parsed, dict) or not parsed)  # a non-empty mapping is the other kinds' job
    ok = parsed is None or parsed == {}  # an empty file or {}: every default
    return ConfigCase(f"config bytes {data!r}", data, None if ok else ("twin.yaml",))


@pytest.mark.filterwarnings("ignore")
@fuzz_settings(max_examples=500)
@given(case=config_cases())
def test_twin_config_mutations_load_or_are_refused_naming_the_key(region_root, case):
    record("twin_config", "mutations")
    base = Path(tempfile.mkdtemp(prefix="case-", dir=region_root.parent))
    try:
        config = base / "twin.yaml"
        config.write_bytes(case.text)
        out = base / "run.zarr"
        untouched = Untouched(region_root, config)
        outcome(
            "twin_config",
            lambda: _run_assimilate(region_root, out, config),
            expect_error=case.names is not None,
            names=(case.names or ()),
            what=case.what,
        )
        assert not out.exists(), f"{case.what}: wrote {out}"
        untouched.check(case.what)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ region-level inputs

PATHS = region_input_paths(Path("."), LABEL, ATLAS)
FILES = {
    "timeseries": PATHS.timeseries,
    "streamlines": PATHS.streamlines,
    "lengths": PATHS.lengths,
    "stats": PATHS.stats,
}
SIDECAR = PATHS.timeseries.with_suffix(".json")
NON_FINITE = ["nan", "NaN", "", "inf", "-inf", "NA", "1e400"]
NON_NUMERIC = ["abc", "1..2", "--1", "0x1G", "[1]"]


def _rewrite(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)  # hard link to the pristine dataset: never write through it
    path.write_bytes(data)


def _cells(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _write_cells(path: Path, cells: list[list[str]]) -> None:
    _rewrite(path, ("\n".join("\t".join(row) for row in cells) + "\n").encode())


@dataclass
class RegionCase:
    what: str
    apply: Callable[[Path], None]
    names: tuple[str, ...] | None  # None: harmless


@st.composite
def cell_values(draw) -> RegionCase:
    which = draw(st.sampled_from(sorted(FILES)))
    row = draw(st.integers(1, N_FRAMES if which == "timeseries" else len(REGIONS)))
    column = draw(st.integers(0 if which == "timeseries" else 1, len(REGIONS) - (which == "timeseries")))
    if which == "stats":
        column = draw(st.sampled_from([1, 2]))  # neuron_count, grey_matter_mm3
    kind = draw(st.sampled_from(["number", "non_finite", "non_numeric"]))
    if kind == "number":
        value = draw(st.one_of(st.integers(-3, 10**6), st.floats(-1e6, 1e6, allow_nan=False)))
        text = repr(value) if isinstance(value, float) else str(value)
    else:
        text = draw(st.sampled_from(NON_FINITE if kind == "non_finite" else NON_NUMERIC))
    rel = FILES[which]

    def apply(root: Path) -> None:
        cells = _cells(root / rel)
        cells[row][column] = text
        _write_cells(root / rel, cells)

    if kind != "number":
        ok = False
    elif which == "timeseries":
        ok = True  # any finite value (one cell cannot make a 30-frame column constant)
    elif which == "stats" and column == 1:
        ok = float(text) >= 0 and float(text) == round(float(text))  # neuron_count: whole, >= 0
    else:
        ok = float(text) >= 0  # counts, lengths, volumes
    return RegionCase(f"{rel.name} [{row}, {column}] = {text!r}", apply, None if ok else (rel.name,))


@st.composite
def relabels(draw) -> RegionCase:
    region = draw(st.integers(0, len(REGIONS) - 1))
    label = draw(
        st.one_of(
            st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True),
            st.sampled_from(["01", "007", "1.5", "2", "True", "null", "nan", "NA", "Insula_L", "a b", ""]),
        )
    )
    everywhere = draw(st.booleans())
    where = draw(st.sampled_from(["timeseries", "streamlines_header", "streamlines_index", "stats"]))

    def apply(root: Path) -> None:
        targets = (
            ["timeseries", "streamlines_header", "streamlines_index", "lengths_header", "lengths_index", "stats"]
            if everywhere
            else [where]
        )
        for target in targets:
            name, _, part = target.partition("_")
            path = root / FILES[name]
            cells = _cells(path)
            if name == "timeseries":
                cells[0][region] = label
            elif name == "stats" or part == "index":
                cells[1 + region][0] = label
            else:
                cells[0][1 + region] = label
            _write_cells(path, cells)

    others = set(REGIONS) - {REGIONS[region]}
    # a label is any non-empty text, read as written ("NA", "01" and "nan" are names), unique among the
    # regions; renamed the same way in every table it is harmless
    ok = label == REGIONS[region] or (everywhere and label != "" and label not in others)
    names = (
        None
        if ok
        else tuple(p.name for p in (FILES["timeseries"], FILES["streamlines"], FILES["lengths"], FILES["stats"]))
    )
    return RegionCase(f"region {region} relabelled {label!r} {'everywhere' if everywhere else where}", apply, names)


@st.composite
def shapes(draw) -> RegionCase:
    kind = draw(st.sampled_from(["drop_frames", "drop_column", "drop_row", "duplicate_column"]))
    which = draw(st.sampled_from(["streamlines", "lengths", "stats", "timeseries"]))
    count = draw(st.integers(1, N_FRAMES))

    def apply(root: Path) -> None:
        path = root / FILES["timeseries" if kind == "drop_frames" else which]
        cells = _cells(path)
        if kind == "drop_frames":
            cells = cells[: 1 + N_FRAMES - count]
        elif kind == "drop_column":
            cells = [row[:-1] for row in cells]
        elif kind == "drop_row":
            cells = cells[:-1]
        else:
            cells = [row + [row[-1]] for row in cells]
        _write_cells(path, cells)

    if kind == "drop_frames":  # at least 20 frames are needed
        return RegionCase(
            f"timeseries cut to {N_FRAMES - count} frames",
            apply,
            None if N_FRAMES - count >= 20 else (FILES["timeseries"].name,),
        )
    # the time series sets the regions the other tables must match; stats may lose its optional last
    # column (grey_matter_mm3; neuron_count stays) and the time series a frame (29 of 30 are enough)
    harmless = (which, kind) in (("stats", "drop_column"), ("timeseries", "drop_row"))
    names = (FILES[which].name, FILES["streamlines"].name)
    return RegionCase(f"{kind} of {which}", apply, None if harmless else names)


@st.composite
def sidecar_and_files(draw) -> RegionCase:
    kind = draw(st.sampled_from(["tr", "garbage", "missing_tr", "missing_file"]))
    if kind == "tr":
        tr = draw(SCALARS)

        def apply(root: Path) -> None:
            _rewrite(root / SIDECAR, json.dumps({"RepetitionTime": tr, "Sources": []}).encode())

        ok = _num(tr, 0, open_low=True)
        return RegionCase(f"RepetitionTime {tr!r}", apply, None if ok else (SIDECAR.name,))
    if kind == "garbage":
        data = draw(st.one_of(st.binary(max_size=20), st.sampled_from([b"[]", b"{", b"\xff{}", b"null"])))

        def apply(root: Path) -> None:
            _rewrite(root / SIDECAR, data)

        return RegionCase(f"sidecar bytes {data!r}", apply, (SIDECAR.name,))
    if kind == "missing_tr":

        def apply(root: Path) -> None:
            _rewrite(root / SIDECAR, b'{"Sources": []}')

        return RegionCase("sidecar without RepetitionTime", apply, (SIDECAR.name,))
    which = draw(st.sampled_from(["timeseries", "streamlines", "lengths", "stats", "sidecar", "binary"]))

    def apply(root: Path) -> None:
        if which == "sidecar":
            (root / SIDECAR).unlink()
        elif which == "binary":
            _rewrite(root / FILES["streamlines"], bytes(range(256)) * 3)
        else:
            (root / FILES[which]).unlink()

    # lengths and stats are optional when loading (the run itself asks for region sizes)
    if which in ("lengths", "stats"):
        names = None
    elif which == "sidecar":
        names = (SIDECAR.name,)
    elif which == "binary":
        names = (FILES["streamlines"].name,)
    elif which == "streamlines":  # the atlas is found from this file's name: the message gives the pattern
        names = ("sub-01_atlas-*_desc-streamlines_relmat.tsv",)
    else:
        names = (FILES[which].name,)
    return RegionCase(f"{which} file {'garbled' if which == 'binary' else 'removed'}", apply, names)


REGION_CASES = st.one_of(cell_values(), relabels(), shapes(), sidecar_and_files())


@pytest.mark.filterwarnings("ignore")
@fuzz_settings(max_examples=250)
@given(case=REGION_CASES)
def test_region_input_mutations_load_or_are_refused_naming_the_file(region_root, case):
    record("region_inputs", "mutations")
    base = Path(tempfile.mkdtemp(prefix="case-", dir=region_root.parent))
    try:
        inputs = base / "inputs"
        shutil.copytree(region_root, inputs, copy_function=os.link)
        case.apply(inputs)
        untouched = Untouched(inputs)
        out = base / "run.zarr"
        outcome(
            "region_inputs",
            lambda: _run_assimilate(inputs, out, None),
            expect_error=case.names is not None,
            names=(case.names or ()),
            what=case.what,
        )
        assert not out.exists(), f"{case.what}: wrote {out}"
        untouched.check(case.what)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_base_inputs_and_config_load(region_root, tmp_path):
    """The fuzzed cases start from a valid config and subject (else every 'harmless' case would fail)."""
    config = tmp_path / "twin.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    assert _run_assimilate(region_root, tmp_path / "out", config) == "loaded"
    table = pd.read_csv(region_root / FILES["timeseries"], sep="\t")
    assert list(table.columns) == REGIONS and len(table) == N_FRAMES
