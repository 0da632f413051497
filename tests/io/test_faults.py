"""Faults at every stage (docs/reliability.md "Faults"): concurrent writers, corrupted stores and
checkpoints, a full disk. Every fault ends in a DTBError that names the output and the fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dtb.io.locks import OutputLockedError, lock_path, output_lock
from dtb.io.region_inputs import write_region_subject
from tests.helpers import small_twin_subject as _subject

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

_HOLD = """
import sys, time
from dtb.io.locks import output_lock
with output_lock(sys.argv[1], what="run store"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(path: Path) -> subprocess.Popen:
    """A second process that takes ``path``'s lock and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
    proc.wait(10)


def _dtb(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dtb.cli", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def _config(tmp_path: Path, **assimilation) -> Path:
    cfg = {
        "seed": 3,
        "backend": "torch",  # the reference backend starts at once (no kernel build or load)
        "neurons_total": 200,
        "threads": 1,
        "model": {"indegree": 10, "dt_ms": 1.0, "min_excitatory": 4, "min_inhibitory": 1},
        "assimilation": {
            "members": 3, "warmup_windows": 4, "checkpoint_every": 4, "n_frames": 12, "heldout_fraction": 0.0,
            **assimilation,
        },
        "observation": {"low_hz": None, "high_hz": None},
        "resimulation": {"record_seconds": 1.0},
    }  # fmt: skip
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    write_region_subject(root, _subject())
    return root


def _assimilate(inputs: Path, config: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return _dtb(
        "assimilate", "--config", config, "--inputs", inputs, "--participant-label", "synth01", "--out", out,
        "--progress", "none", *extra,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- locks


def test_a_second_writer_is_refused_with_the_holder_and_a_killed_holder_blocks_nobody(tmp_path):
    out = tmp_path / "run.zarr"
    holder = _holder(out)
    try:
        assert lock_path(out) == tmp_path / "run.zarr.lock" and lock_path(out).exists()
        started = time.monotonic()
        with pytest.raises(OutputLockedError) as err:
            with output_lock(out, what="run store"):
                pass
        assert time.monotonic() - started < 1.0  # refused at once, not waiting
        msg = str(err.value)
        assert str(out) in msg and f"pid {holder.pid} on {os.uname().nodename}" in msg and "started 20" in msg
        assert f"kill {holder.pid}" in msg and "Wait for it to finish" in msg
    finally:
        _kill(holder)
    assert lock_path(out).exists()  # the killed holder left its file ...
    with output_lock(out):  # ... which blocks nobody
        pass
    assert not lock_path(out).exists()  # a clean release removes it


def test_the_lock_is_reentrant_in_one_process_and_shared_locks_coexist(tmp_path):
    out = tmp_path / "net.zarr"
    with output_lock(out):
        with output_lock(out):
            with output_lock(out, shared=True):
                pass
        assert lock_path(out).exists()
    assert not lock_path(out).exists()
    with output_lock(out, shared=True):
        code = (
            "import sys; from dtb.io.locks import output_lock\nwith output_lock(sys.argv[1], shared=True): print('ok')"
        )
        shared = subprocess.run([sys.executable, "-c", code, str(out)], env=ENV, capture_output=True, text=True)
        assert shared.stdout.strip() == "ok", shared.stderr  # ranks filling one store share it
        code = "import sys; from dtb.io.locks import output_lock\nwith output_lock(sys.argv[1]): print('ok')"
        excl = subprocess.run([sys.executable, "-c", code, str(out)], env=ENV, capture_output=True, text=True)
        assert "OutputLockedError" in excl.stderr and "is being written by pid" in excl.stderr
    assert not lock_path(out).exists()


def test_cli_writers_are_refused_while_another_run_writes_and_proceed_after_it_is_killed(tmp_path, inputs):
    import numpy as np

    from dtb.cli import main
    from tests.network_fixtures import network_build_cli_args as _cli_inputs

    config = _config(tmp_path)
    out, twin_store, report, net = (
        tmp_path / "run.zarr", tmp_path / "t" / "sub-synth01_twin.zarr", tmp_path / "r.html", tmp_path / "net.zarr",
    )  # fmt: skip
    holders = {p: _holder(p) for p in (out, twin_store, report, net)}
    try:
        twin = ["twin", "--config", config, "--inputs", inputs, "--participant-label", "synth01"]
        for res, path in (
            (_assimilate(inputs, config, out), out),
            (_dtb("resimulate", out), out),
            (_dtb(*twin, "--out", tmp_path / "t", "--no-report"), twin_store),
            (_dtb("report", out, "--out", report), report),
        ):
            assert res.returncode == 2, res.stderr[-2000:]
            assert f"{path} is being written by pid {holders[path].pid}" in res.stderr, res.stderr[-2000:]
            assert f"kill {holders[path].pid}" in res.stderr and "Traceback" not in res.stderr
        assert main([*_cli_inputs(tmp_path), "--out", str(net)]) == 2
        assert not out.exists() and not twin_store.exists() and not report.exists() and not net.exists()
    finally:
        for proc in holders.values():
            _kill(proc)
    res = _assimilate(inputs, config, out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not lock_path(out).exists()
    assert main([*_cli_inputs(tmp_path), "--out", str(net)]) == 0 and np.load(tmp_path / "counts.npy").size == 3


# ------------------------------------------------------------------------------------------ checksums


def _flip(path: Path, at: float = 0.5) -> None:
    """Flip every bit of one byte of ``path`` (at this fraction of its length)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def complete_store(tmp_path_factory, inputs) -> Path:
    """A complete assimilation (12 windows, checkpoints every 4) written in-process."""
    from dtb.io.region_inputs import load_region_subject
    from dtb.twin.run import assimilate_subject

    base = tmp_path_factory.mktemp("complete")
    config = yaml.safe_load(_config(base).read_text())
    return assimilate_subject(load_region_subject(inputs, "synth01"), config, base / "run.zarr", progress="none")


def _copy(store: Path, tmp_path: Path, complete: bool = True) -> Path:
    import shutil

    import zarr

    copy = tmp_path / store.name
    shutil.copytree(store, copy)
    if not complete:  # as a run killed after its last checkpoint leaves it
        zarr.open_group(copy, mode="a", zarr_format=3).attrs["complete"] = False
    return copy


def test_every_array_carries_a_checksum_and_a_flipped_byte_is_named_on_open(complete_store, tmp_path):
    import zarr

    from dtb.io.store import StoreCorruptError, open_tree, verify_store

    root = zarr.open_group(complete_store, mode="r")
    for name, arr in root["assimilation"].arrays():
        assert type(arr.metadata.codecs[-1]).__name__ == "Crc32cCodec", name
    assert verify_store(complete_store) >= 20
    store = _copy(complete_store, tmp_path)
    _flip(store / "assimilation" / "bold_forecast" / "c" / "1" / "0" / "0")
    with pytest.raises(StoreCorruptError) as err:
        open_tree(store)
    msg = str(err.value)
    assert f"{store} is damaged" in msg and "array assimilation/bold_forecast, chunk 1.0.0" in msg
    assert str(store / "assimilation" / "bold_forecast" / "c" / "1" / "0" / "0") in msg and "Delete the store" in msg
    with pytest.raises(ValueError, match="checksum"):  # zarr checks it too, on any read
        zarr.open_array(store / "assimilation" / "bold_forecast", mode="r")[:]


def test_resimulate_and_report_refuse_a_damaged_store_by_name(complete_store, tmp_path, capsys):
    from dtb.cli import main

    store = _copy(complete_store, tmp_path)
    _flip(store / "observation" / "bold" / "c" / "0" / "0")
    for argv, fix in (
        (["resimulate", str(store)], "--overwrite, then dtb resimulate"),
        (["report", str(store), "--out", str(tmp_path / "r.html")], "then the report"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "array observation/bold, chunk 0.0" in err and fix in err, err
    assert not (tmp_path / "r.html").exists()


def test_resume_checks_the_checkpoint_and_the_kept_windows(complete_store, tmp_path, inputs, capsys):
    from dtb.cli import main

    argv = ["assimilate", "--config", str(_config(tmp_path)), "--inputs", str(inputs)]
    argv += ["--participant-label", "synth01", "--progress", "none", "--resume", "--out"]
    damaged = _copy(complete_store, tmp_path / "a", complete=False)
    _flip(damaged / "checkpoint.pt", 0.3)
    assert main([*argv, str(damaged)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {damaged / 'checkpoint.pt'} is damaged" in err and "without --resume, with --overwrite" in err
    truncated = _copy(complete_store, tmp_path / "b", complete=False)
    (truncated / "checkpoint.pt").write_bytes((truncated / "checkpoint.pt").read_bytes()[:-100])
    assert main([*argv, str(truncated)]) == 2
    assert "carries no sha256 digest (it is truncated" in capsys.readouterr().err
    chunk = _copy(complete_store, tmp_path / "c", complete=False)
    _flip(chunk / "assimilation" / "h_members" / "c" / "0" / "0" / "0")
    assert main([*argv, str(chunk)]) == 2
    err = capsys.readouterr().err
    assert "array assimilation/h_members, chunk 0.0.0" in err and "without --resume" in err
    good = _copy(complete_store, tmp_path / "d", complete=False)
    assert main([*argv, str(good)]) == 0  # an intact store resumes (and completes)
    import zarr

    assert zarr.open_group(good, mode="r").attrs["complete"] is True


def test_a_damaged_network_block_is_named_with_the_rank_to_rebuild(tmp_path, capsys):
    from dtb.cli import main
    from dtb.io.store import StoreCorruptError
    from dtb.network.store import load_network
    from tests.network_fixtures import network_build_cli_args as _cli_inputs

    net = tmp_path / "net.zarr"
    assert main([*_cli_inputs(tmp_path), "--out", str(net)]) == 0
    load_network(net)
    _flip(net / "rank_00001" / "sources" / "c" / "0")
    with pytest.raises(StoreCorruptError, match=r"array sources, chunk 0 .*--rank 1"):
        load_network(net)


# ------------------------------------------------------------------------------------------ full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root / CAP_SYS_ADMIN; skipped where mounting is not permitted)."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave_kib: int) -> Path:
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave_kib * 1024))
    return filler


def test_a_full_disk_is_a_clear_error_and_leaves_an_incomplete_store_that_resumes(
    small_disk, complete_store, inputs, tmp_path
):
    import numpy as np
    import zarr

    from dtb.io.store import open_tree

    config = _config(tmp_path)
    out = small_disk / "run.zarr"
    filler = _fill(small_disk, 160)  # the run store needs about 400 KiB on tmpfs
    res = _assimilate(inputs, config, out)
    assert res.returncode == 2, res.stderr[-3000:]
    assert f"no space left on device while writing {out}" in res.stderr and "Traceback" not in res.stderr
    assert "--resume" in res.stderr
    assert zarr.open_group(out, mode="r").attrs["complete"] is False  # not a store a reader trusts
    written = open_tree(out)["assimilation"].sizes["time"]
    assert 0 < written < 12 and written % 4 == 0  # whole checkpointed blocks only
    res = _dtb("resimulate", out)
    assert res.returncode == 2 and "holds no complete assimilation" in res.stderr
    filler.unlink()  # space freed: the run continues where it stopped, bitwise as if uninterrupted
    res = _assimilate(inputs, config, out, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = open_tree(out), open_tree(complete_store)
    assert a.attrs["complete"] is True and set(a.children) == set(b.children)
    for group in a.children:
        for name, var in a[group].data_vars.items():
            x, y = var.values, b[group][name].values
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (group, name)


def test_a_full_disk_while_the_last_groups_are_written_leaves_the_run_incomplete(tmp_path, inputs, monkeypatch):
    import errno

    import zarr

    import dtb.twin.run
    from dtb.io.locks import DiskFullError
    from dtb.io.region_inputs import load_region_subject

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    subject = load_region_subject(inputs, "synth01")
    config = yaml.safe_load(_config(tmp_path).read_text())
    store = tmp_path / "run.zarr"
    with monkeypatch.context() as m:
        m.setattr(dtb.twin.run, "_write_static_groups", full)
        with pytest.raises(DiskFullError, match=f"no space left on device while writing {store}"):
            dtb.twin.run.assimilate_subject(subject, config, store, progress="none")
    assert zarr.open_group(store, mode="r").attrs["complete"] is False
    dtb.twin.run.assimilate_subject(subject, config, store, resume=True, progress="none")
    root = zarr.open_group(store, mode="r")
    assert root.attrs["complete"] is True and "observation" in root and "network" in root
