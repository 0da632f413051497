"""docs/imaging.md "Your own BIDS subject, with commands only", run as a user would: the documented
commands, in subprocesses, on the phantom's BIDS subject (T1w, DWI, BOLD) through anat, dwi and func to
the twin's network, a fitted twin and its report (``slow``: minutes).

The commands are read from the page, so the page and the test cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dtb.io.store import open_tree

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Your own BIDS subject, with commands only"


def _blocks() -> dict[str, str]:
    text = (ROOT / "docs" / "imaging.md").read_text()
    assert SECTION in text, f"docs/imaging.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = dict((lang, body) for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S))
    assert set(blocks) == {"bash", "yaml", "text"}, f"docs/imaging.md own-BIDS section has blocks {list(blocks)}"
    return blocks


def _commands(bash: str) -> list[list[str]]:
    """The block's commands, a trailing backslash joining a line to the next."""
    return [shlex.split(line) for line in bash.replace("\\\n", " ").strip().splitlines()]


@pytest.mark.slow
def test_the_documented_commands_take_a_bids_subject_to_a_fitted_twin(tmp_path):
    blocks = _blocks()
    (tmp_path / "my-twin.yaml").write_text(blocks["yaml"])
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    printed = []
    for argv in _commands(blocks["bash"]):
        assert argv[0] == "dtb", argv
        res = subprocess.run(
            [sys.executable, "-m", "dtb.cli", *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, f"{shlex.join(argv)}\n{res.stderr[-3000:]}"
        printed += res.stdout.splitlines()
        printed += [re.sub(r"^\d\d:\d\d:\d\d ", "", x) for x in res.stderr.splitlines()]
    for quoted in blocks["text"].strip().splitlines():
        assert quoted in printed, f"docs/imaging.md quotes {quoted!r}, the commands printed:\n" + "\n".join(printed)
    # every table the twin needs was made by a command, named with the one atlas entity of the atlas file
    derived = tmp_path / "deriv" / "dtb" / "sub-phantom"
    truth = tmp_path / "my-bids" / "derivatives" / "phantom-truth" / "sub-phantom" / "anat"
    regions = list(pd.read_csv(truth / "sub-phantom_atlas-phantom_dseg.tsv", sep="\t")["name"])
    counts = pd.read_csv(derived / "anat" / "sub-phantom_atlas-phantom_desc-neuroncount_stats.tsv", sep="\t")
    assert list(counts["region"]) == regions and counts["neuron_count"].sum() <= 4000
    assert (counts["neuron_count"] > 0).all() and (counts["grey_matter_mm3"] > 0).all()
    relmat = pd.read_csv(
        derived / "dwi" / "sub-phantom_atlas-phantom_desc-streamlines_relmat.tsv", sep="\t", index_col=0
    )
    assert list(relmat.columns) == regions and np.allclose(relmat.values, relmat.values.T) and relmat.values.sum() > 0
    bold = pd.read_csv(derived / "func" / "sub-phantom_task-rest_atlas-phantom_timeseries.tsv", sep="\t")
    assert list(bold.columns) == regions and len(bold) == 24 and (bold.std() > 0).all()
    # the twin ran on the network the documented build wrote, fitted the one input region, and has its report
    out = tmp_path / "out" / "sub-phantom"
    tree = open_tree(out / "sub-phantom_twin.zarr")
    assert tree.attrs["complete"] and tree.attrs["atlas"] == "phantom" and tree.attrs["n_neurons"] >= 4000
    assert [str(x) for x in tree["assimilation"].ds["parameter"].values] == ["L_middle_frontal:i_ext"]
    h = tree["assimilation"].ds["h_analysis_mean"].values
    assert h.shape == (24, 1) and np.isfinite(h).all()
    assert "fc_similarity" in tree["metrics"].attrs
    report = (out / "sub-phantom_report.html").read_text()
    assert "could not be drawn" not in report and len(list((out / "figures").glob("*.png"))) > 5
