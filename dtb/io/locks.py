"""One writer per output: an exclusive OS lock beside every store or file a command writes.

``with output_lock(path):`` takes ``fcntl.flock`` on ``<path>.lock`` for the whole write. A second
writer (another process, on this or another host sharing a POSIX file system with working
``flock``) is refused at once with an :class:`OutputLockedError` naming the output, the holder's
pid, host and start time (written into the lock file) and the fix. The kernel releases the lock
when its holder dies, so a killed run never blocks the next one; the lock file it leaves is
reused. A clean release removes the file.

The lock is re-entrant within one process (``dtb twin`` holds its store's lock while the
assimilation, the re-simulation and the report take it again). Within the lock, a full disk
(``OSError`` ENOSPC / EDQUOT) becomes a :class:`DiskFullError` naming the output and the fix.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from dtb.errors import DTBError

__all__ = ["OutputLockedError", "DiskFullError", "output_lock", "lock_path", "disk_full_error"]


class OutputLockedError(DTBError, RuntimeError):
    """Another process is writing the same output."""


class DiskFullError(DTBError, OSError):
    """The file system ran out of space (or quota) while an output was written."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_held: dict[str, list] = {}  # lock path -> [fd, depth, shared], this process's held locks
_guard = threading.Lock()


def lock_path(path: str | os.PathLike, suffix: str = ".lock") -> Path:
    """The lock file of ``path``: ``<path><suffix>`` beside it (``run.zarr`` -> ``run.zarr.lock``)."""
    p = Path(os.path.abspath(os.fspath(path)))
    return p.with_name(p.name + suffix)


def _holder(fd: int) -> tuple[str, str]:
    """(who holds the lock, how to stop it) from the lock file's record."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        pid = int(info["pid"])
        return f"pid {pid} on {info['host']} (started {info['started']}: {info.get('command', '?')})", f"kill {pid}"
    except Exception:  # a holder that is still starting, or a file that is not ours
        return "another process (its pid is not yet written)", "stop it"


def disk_full_error(exc: OSError, output) -> DiskFullError:
    """The :class:`DiskFullError` for ``exc`` (an ENOSPC/EDQUOT ``OSError``) while writing ``output``."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
    return DiskFullError(
        f"{what} while writing {output}{where}. The output is incomplete "
        "and is not marked complete; free space (or choose an --out on a larger file system) and run again "
        "(a twin run store continues with --resume; otherwise delete it first)"
    )


@contextmanager
def output_lock(path, *, shared: bool = False, suffix: str = ".lock", what: str = "output", wait: bool = False):
    """Hold an exclusive (or, with ``shared``, a shared) lock on ``path`` for the body.

    Parameters
    ----------
    path : the output (a store directory or a file); the lock is ``<path><suffix>`` beside it.
    shared : take a shared lock (several holders, no exclusive one), e.g. ranks filling one store.
    suffix : the lock file's suffix (another suffix locks a part, e.g. one rank's block).
    what : the output's kind for the message ("run store", "report", ...).
    wait : wait for the holder instead of refusing (for short read-modify-write steps on a file that
        several runs update in turn, e.g. a dataset's ``participants.tsv``).

    Raises
    ------
    OutputLockedError : at once, when another process holds a conflicting lock.
    DiskFullError : when the body raises ENOSPC/EDQUOT.
    """
    lock = lock_path(path, suffix)
    key = str(lock)
    with _guard:
        mine = _held.get(key)
        if mine is not None and (shared or not mine[2]):  # re-entry (an exclusive holder may re-take it shared)
            mine[1] += 1
            lock = None
    if lock is None:
        try:
            yield
        finally:
            with _guard:
                _held[key][1] -= 1
        return
    fd = _acquire(lock, shared, path, what, wait)
    with _guard:
        _held[key] = [fd, 1, shared]
    try:
        try:
            yield
        except OSError as exc:
            if exc.errno in _NO_SPACE and not isinstance(exc, DTBError):
                raise disk_full_error(exc, path) from exc
            raise
    finally:
        with _guard:
            _held.pop(key, None)
        try:
            # the last holder removes the file while it holds the lock exclusively, so nobody can take
            # this inode meanwhile (a shared holder tries to become the exclusive one first)
            if shared:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink(missing_ok=True)
        except OSError:  # BlockingIOError: other shared holders remain, one of them removes it
            pass
        os.close(fd)


def _acquire(lock: Path, shared: bool, path, what: str, wait: bool = False) -> int:
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise disk_full_error(exc, path) from exc
        raise
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder, stop = _holder(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{what} {path} is being written by {holder}; two runs writing it would interleave. Wait for it "
                f"to finish, or {stop} and run again (the lock, {lock}, is released when its holder exits)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the previous holder may have removed the file between our open and flock: start over
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        break
    # a shared holder records itself too (the last one to start is named)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["dtb", *sys.argv[1:3]])[:200],
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _NO_SPACE:
            raise disk_full_error(exc, path) from exc
        raise
    return fd
