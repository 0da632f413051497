"""docs/data.md "Your own subject, with commands only", run as a user would: the documented commands,
in subprocesses, on a synthetic 12-region subject with Schaefer-style labels, to a fitted twin."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from dtb.io.region_inputs import load_region_subject
from dtb.io.store import open_tree
from tests import own_data

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> dict[str, str]:
    text = (ROOT / "docs" / "data.md").read_text()
    section = text.split("## Your own subject, with commands only", 1)[1].split("\n## ", 1)[0]
    blocks = dict((lang, body) for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S))
    assert set(blocks) == {"bash", "yaml", "text"}, f"docs/data.md own-data section has blocks {list(blocks)}"
    return blocks


def test_the_documented_commands_take_an_own_subject_to_a_fitted_twin(tmp_path):
    blocks = _blocks()
    own_data.write_own_data(tmp_path)
    (tmp_path / "first-look.yaml").write_text(blocks["yaml"])
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    printed = []
    for line in blocks["bash"].strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "dtb", line
        res = subprocess.run(
            [sys.executable, "-m", "dtb.cli", *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, f"{line}\n{res.stderr[-3000:]}"
        printed += res.stdout.splitlines()
        printed += [re.sub(r"^\d\d:\d\d:\d\d ", "", x) for x in res.stderr.splitlines()]
    for quoted in blocks["text"].strip().splitlines():
        assert quoted in printed, f"docs/data.md quotes {quoted!r}, the commands printed:\n" + "\n".join(printed)
    # the twin is fitted: a complete store, thalamus as the input regions, counts from grey matter
    subject = load_region_subject(tmp_path / "my-inputs", "01")
    assert subject.neuron_counts.sum() == 100_000 and subject.labels == own_data.LABELS
    store = tmp_path / "out" / "sub-01" / "sub-01_twin.zarr"
    tree = open_tree(store)
    assert tree.attrs["complete"] and tree.attrs["atlas"] == "Schaefer2018"
    parameters = [str(x) for x in tree["assimilation"].ds["parameter"].values]
    assert parameters == ["Left-Thalamus:i_ext", "Right-Thalamus:i_ext"]
    assert (
        "fc_similarity" in tree["metrics"].attrs and not (tmp_path / "out" / "sub-01" / "sub-01_report.html").exists()
    )
