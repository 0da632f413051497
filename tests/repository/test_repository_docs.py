"""The repository stands alone and its docs say what the code does.

- No file cites the design notes the project grew from or a path outside the repository: a user
  who clones it must be able to read everything it cites (docs/model.md is the model).
- Every ``docs/model.md §N`` citation names an existing section, and every test that
  docs/model.md says reproduces a number exists.
- Every function of the data path in docs/architecture.md imports.
- docs/workflow.md's config table states the schema's defaults, and the demo config
  (config/config.yaml) differs from them only where the page says so; the twin-config defaults that
  docs/workflow.md, docs/twin.md and dtb/twin/config.py's sample state are load_twin_config's.
- Test modules never import each other, and no test loads bench code by file path.
"""

from __future__ import annotations

import ast
import copy
import importlib
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL_DOC = ROOT / "docs" / "model.md"
THIS = Path(__file__).resolve()

#: the design notes that are not part of the repository, and paths that lead out of it
OUTSIDE = re.compile(
    r"\b(?:MODEL|ARCHITECTURE|CONVENTIONS|STYLE|DATA)\.md\b|\.\./shared\b|\bshared/(?:design|bench)\b|/ \"shared\""
)
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".yaml",
    ".yml",
    ".toml",
    ".smk",
    ".txt",
    ".cfg",
    ".ini",
    ".sh",
    ".cpp",
    ".h",
    ".cu",
    ".j2",
}
TEXT_NAMES = {"Snakefile", ".importlinter"}
SECTION = re.compile(r"§(\d+(?:\.\d+)?)[ab]?(?:-(\d+(?:\.\d+)?))?")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)


def _repository_files() -> list[Path]:
    """Tracked and untracked, not ignored files (git), else every file outside hidden folders."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    return [p for p in files if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES)]


def _text_files() -> dict[Path, str]:
    texts = {}
    for path in _repository_files():
        try:
            texts[path] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


@pytest.fixture(scope="module")
def texts() -> dict[Path, str]:
    return _text_files()


def test_no_file_cites_the_design_notes_or_a_path_outside_the_repository(texts):
    hits = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for path, text in texts.items()
        if path != THIS
        for m in OUTSIDE.finditer(text)
    ]
    assert not hits, (
        "cite docs/*.md (docs/model.md for the model) instead of files outside the repository:\n" + "\n".join(hits)
    )


def _model_sections() -> set[str]:
    return set(HEADING.findall(MODEL_DOC.read_text(encoding="utf-8")))


def test_model_doc_has_the_sections_the_code_cites():
    assert {"1", "1.1", "1.2", "2", "3", "3.1", "3.2", "3.3", "3.4", "4", "5", "5.1", "5.2", "6"} <= _model_sections()


def test_every_model_section_citation_points_to_an_existing_section(texts):
    sections = _model_sections()
    cited = 0
    missing = []
    for path, text in texts.items():
        for lineno, line in enumerate(text.splitlines(), 1):
            if path != MODEL_DOC and "docs/model.md §" not in line:
                continue
            start = line.index("docs/model.md §") if path != MODEL_DOC else 0
            for first, last in SECTION.findall(line[start:]):
                cited += 1
                missing += [
                    f"{path.relative_to(ROOT)}:{lineno}: §{n}" for n in (first, last) if n and n not in sections
                ]
    assert cited > 50, f"only {cited} citations of docs/model.md sections found: is the pattern still right?"
    assert not missing, "citations of sections docs/model.md does not have:\n" + "\n".join(missing)


def _test_file(name: str) -> Path:
    """A test file named by its file name (tests live in one folder per subpackage) or its path under tests/."""
    if "/" in name:
        return ROOT / "tests" / name
    found = sorted((ROOT / "tests").rglob(name))
    return found[0] if len(found) == 1 else ROOT / "tests" / name


def test_every_test_named_by_the_model_doc_exists():
    text = MODEL_DOC.read_text(encoding="utf-8")
    brackets = re.findall(r"\[test: (.*?)\]", text, flags=re.DOTALL)
    assert len(brackets) > 30
    missing = []
    for bracket in brackets:
        current = None
        for token in re.findall(r"`([^`]+)`", bracket):
            if token.endswith(".py"):
                current = _test_file(token)
                if not current.is_file():
                    missing.append(token)
                continue
            file_name, _, name = token.rpartition("::")
            if file_name:
                current = _test_file(file_name)
            found = (
                current is not None and current.is_file() and re.search(rf"^def {name}\(", current.read_text(), re.M)
            )
            if not found:
                missing.append(f"{current.name if current else '?'}::{name}")
    assert not missing, f"docs/model.md names tests that do not exist: {missing}"


def _data_path_names() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = text.index("<!-- data-path table")
    end = text.index("\n\n", text.index("\n|", start))
    return sorted(set(re.findall(r"`(dtb(?:\.\w+)+)`", text[start:end])))


def test_every_function_of_the_data_path_in_the_architecture_doc_imports():
    names = _data_path_names()
    assert len(names) >= 20
    broken = []
    for dotted in names:
        module_name, _, attribute = dotted.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            try:  # a module itself
                importlib.import_module(dotted)
                continue
            except ImportError as exc:
                broken.append(f"{dotted}: {exc}")
                continue
        if not hasattr(module, attribute):
            broken.append(f"{dotted}: {module_name} has no {attribute!r}")
    assert not broken, "docs/architecture.md names what does not exist:\n" + "\n".join(broken)


def _workflow_table() -> dict[str, object]:
    """key -> default as docs/workflow.md's config table states it."""
    text = (ROOT / "docs" / "workflow.md").read_text(encoding="utf-8")
    section = text[text.index("## Config") : text.index("## Inputs")]
    table = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        key_cell, default_cell, meaning = (c.strip() for c in row.strip("|").split("|", 2))
        keys = re.findall(r"`([^`]+)`", key_cell)
        if default_cell == "see right":
            (key,) = keys
            for name, value in re.findall(r"`(\w+)` \(([^),;]+?)(?: ms)?[),;]", meaning):
                table[f"{key}.{name}"] = yaml.safe_load(value)
            continue
        defaults = [yaml.safe_load(v) for v in re.findall(r"`([^`]*)`", default_cell)]
        defaults = defaults * len(keys) if len(defaults) == 1 else defaults
        assert len(defaults) == len(keys), f"docs/workflow.md row {row!r}: one default, or one per key"
        table.update(zip(keys, defaults))
    return table


def _flatten(mapping: dict, leaves: set[str], prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in mapping.items():
        name = prefix + str(key)
        if isinstance(value, dict) and name not in leaves:
            flat.update(_flatten(value, leaves, name + "."))
        else:
            flat[name] = value
    return flat


def test_workflow_doc_defaults_are_the_schema_defaults_and_the_demo_config_differs_only_where_it_says():
    from dtb.cli.workflow_config import check_workflow_config

    schema = ROOT / "pipeline" / "schemas" / "config.schema.yaml"
    documented = _workflow_table()
    leaves = set(documented)
    defaults = _flatten(check_workflow_config({}, schema), leaves)
    assert set(defaults) == leaves, f"keys the schema has and the page lacks, or the reverse: {set(defaults) ^ leaves}"
    wrong = {k: (documented[k], defaults[k]) for k in leaves if documented[k] != defaults[k]}
    assert not wrong, f"docs/workflow.md default vs the schema's (page, schema): {wrong}"

    demo_raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    demo = _flatten(check_workflow_config(copy.deepcopy(demo_raw), schema), leaves)
    page = (ROOT / "docs" / "workflow.md").read_text(encoding="utf-8")
    sentence = re.search(r"The demo \(`config/config.yaml`\) sets (.*?)\.\n", page, re.DOTALL)
    assert sentence, "docs/workflow.md must say which values the demo config sets"
    said = {}
    for item in re.findall(r"`([^`]+)`", sentence.group(1)):
        key, colon, value = item.partition(":")
        said[key.strip()] = yaml.safe_load(value) if colon else ...
    for key, value in said.items():
        assert key in demo, f"docs/workflow.md: the demo sets {key!r}, which is not a config key"
        assert value is ... or demo[key] == value, (
            f"docs/workflow.md: demo {key} = {value!r}, config.yaml: {demo[key]!r}"
        )
    undocumented = {k: (defaults[k], v) for k, v in demo.items() if v != defaults[k] and k not in said}
    assert not undocumented, f"config/config.yaml differs from the documented default (default, demo): {undocumented}"


def _twin_config_defaults() -> dict[str, object]:
    """Every twin-config key (dotted, as in the YAML) -> its default, from ``load_twin_config({})``."""
    from dtb.twin.config import load_twin_config

    config = load_twin_config({})
    hmda, enkf = config.hmda, config.hmda.enkf
    flat = {k: getattr(config, k) for k in ("seed", "backend", "device", "threads", "neurons_total")}
    flat.update({f"model.{k}": v for k, v in config.model.describe().items()})
    flat.update({f"assimilation.{k}": getattr(config, k) for k in ("members", "input_regions", "n_frames", "h_bounds")})
    flat["assimilation.heldout_fraction"] = config.heldout_fraction
    flat["assimilation.balloon_floor"], flat["assimilation.balloon_ceiling"] = hmda.clip, hmda.clip_upper
    for key in ("hyperparameter", "lower", "upper", "warmup_windows", "checkpoint_every", "balloon_update"):
        flat[f"assimilation.{key}"] = getattr(hmda, key)
    for key in ("obs_variance", "rho", "inflation", "random_walk_std", "variant"):
        flat[f"assimilation.filter.{key}"] = getattr(enkf, key)
    for key in ("low_hz", "high_hz", "detrend", "scaling", "scaling_params"):
        flat[f"observation.{key}"] = getattr(config, key)
    flat["resimulation.record_seconds"] = config.record_seconds
    return flat


def _twin_doc_defaults() -> list[tuple[str, str, object]]:
    """(where, key, value) for every twin-config default the docs state."""
    stated = []
    # docs/twin.md: "`model.dt_ms` defaults to **0.1 ms**" and "`assimilation.n_frames` (default `null`"
    twin = (ROOT / "docs" / "twin.md").read_text(encoding="utf-8")
    for key, value in re.findall(r"`([a-z_.]+)` defaults to \*\*([^*\s]+)", twin):
        stated.append(("docs/twin.md", key, yaml.safe_load(value)))
    for key, value in re.findall(r"`([a-z_.]+)`(?: \w+)? \(default `([^`]+)`", twin):
        stated.append(("docs/twin.md", key, yaml.safe_load(value)))
    # docs/workflow.md: the twin rows (`model`, `assimilation`, ...) name defaults as "`dt_ms` (default 0.1, ..."
    # or "`members` (8)"
    page = (ROOT / "docs" / "workflow.md").read_text(encoding="utf-8")
    for section in ("model", "assimilation", "observation", "resimulation"):
        (row,) = [r for r in page.splitlines() if r.startswith(f"| `{section}` |")]
        meaning = row.strip("|").split("|", 2)[2]
        for key, value in re.findall(r"`(\w+)` \((?:default )?([^),;]+?)[),;]", meaning):
            stated.append(("docs/workflow.md", f"{section}.{key}", yaml.safe_load(value)))
    # the sample config in dtb/twin/config.py's docstring
    from dtb.twin import config as twin_config

    sample = yaml.safe_load(twin_config.__doc__.split("::", 1)[1])
    for key, value in _flatten(sample, {"observation.scaling_params"}).items():
        if not key.endswith("..."):
            stated.append(("dtb/twin/config.py docstring", key, value))
    return stated


def test_twin_doc_defaults_are_the_twin_configs_defaults():
    defaults = _twin_config_defaults()
    stated = _twin_doc_defaults()
    assert {where for where, _, _ in stated} == {"docs/twin.md", "docs/workflow.md", "dtb/twin/config.py docstring"}
    unknown = [(where, key) for where, key, _ in stated if key not in defaults]
    assert not unknown, f"the docs state defaults of keys the twin config does not have: {unknown}"
    wrong = [(where, key, value, defaults[key]) for where, key, value in stated if value != defaults[key]]
    assert not wrong, f"stated default vs load_twin_config's (where, key, stated, actual): {wrong}"
    # the sample lists every top-level key and section
    sample = yaml.safe_load(importlib.import_module("dtb.twin.config").__doc__.split("::", 1)[1])
    assert set(sample) == {k.split(".")[0] for k in defaults}, "the sample config lacks a key or section"


def test_no_test_module_imports_another_and_none_loads_bench_code_by_path():
    test_modules = {p.stem for p in (ROOT / "tests").rglob("test_*.py")}
    assert len(test_modules) > 50, "the test modules were not found: did tests/ move?"
    problems = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if any(part in test_modules for part in parts):
                    problems.append(f"{path.name}:{node.lineno}: imports test module {name}")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "spec_from_file_location"
                and "bench" in ast.unparse(node)
            ):
                problems.append(f"{path.name}:{node.lineno}: loads bench code by path")
    assert not problems, "move shared pieces into tests/helpers.py or another support module:\n" + "\n".join(problems)
