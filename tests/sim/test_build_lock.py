"""A kernel build killed mid-way must not make later runs wait forever on torch's lock file (dtb.kernel_build)."""

from __future__ import annotations

import fcntl
import threading
import time

from dtb.kernel_build import build_lock as _build_lock


def test_stale_torch_lock_of_an_interrupted_build_is_removed(tmp_path, caplog):
    (tmp_path / "lock").touch()  # what a killed cpp_extension.load leaves behind
    with _build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()
    assert "stale build lock" in caplog.text


def test_a_live_build_holds_the_lock(tmp_path):
    """While one builder holds the OS lock, another waits (and then finds no stale file to remove)."""
    entered = []
    with _build_lock(tmp_path):
        (tmp_path / "lock").touch()  # torch's own lock of the live build: must not be removed under it

        def second():
            with _build_lock(tmp_path):
                entered.append(time.monotonic())

        worker = threading.Thread(target=second)
        started = time.monotonic()
        worker.start()
        time.sleep(0.3)
        assert not entered and (tmp_path / "lock").exists()
        (tmp_path / "lock").unlink()
    worker.join(5)
    assert entered and entered[0] - started >= 0.3


def test_the_lock_dies_with_its_holder(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,time; f=open({str(tmp_path / 'dtb-build.flock')!r},'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with open(tmp_path / "dtb-build.flock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again: no exception
