"""Shared pieces of the fuzz tests (tests/test_fuzz_*.py): hypothesis settings, the case counter and
the one check every fuzzed case ends with.

Every case ends in exactly one of two ways: success (the mutation was harmless, by the rule the
test states) or a :class:`~dtb.errors.DTBError` whose message names the offending file or key. Any
other exception is a traceback the user would see: the test fails and the validation is fixed.
The counts are printed at the end of the session by ``tests/conftest.py`` and written to
``<pytest basetemp>/fuzz_counts.json``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from hypothesis import HealthCheck, settings

from dtb.errors import DTBError

#: Per suite: ``mutations`` (inputs generated), ``tried`` (entry points run on them: the BIDS suite runs three
#: commands per mutation), ``harmless`` (ended in success), ``clean_error`` (DTBError naming the file/key).
COUNTS: dict[str, Counter] = {}


def fuzz_settings(max_examples: int):
    """Reproducible hypothesis settings: derandomized, no example database, no deadline."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def record(suite: str, outcome: str) -> None:
    COUNTS.setdefault(suite, Counter())[outcome] += 1


def summary() -> dict:
    total = Counter()
    for counter in COUNTS.values():
        total.update(counter)
    return {"total": dict(total), **{suite: dict(c) for suite, c in sorted(COUNTS.items())}}


class Untouched:
    """Snapshot of a folder tree (names, sizes, mtimes): ``check()`` fails when anything was written."""

    def __init__(self, *folders: Path):
        self.folders = folders
        self.before = self._state()

    def _state(self) -> dict:
        state = {}
        for folder in self.folders:
            if folder.exists():
                for path in sorted(folder.rglob("*")):
                    st = path.lstat()
                    state[str(path)] = (st.st_size, st.st_mtime_ns)
        return state

    def check(self, what: str) -> None:
        after = self._state()
        assert after == self.before, f"{what}: files written or changed: {sorted(set(after) ^ set(self.before))}"


def outcome(
    suite: str,
    call: Callable[[], object],
    *,
    expect_error: bool,
    names: Iterable[str] = (),
    what: str = "",
):
    """Run ``call``; check it ends as expected and count the case.

    Parameters
    ----------
    expect_error : the mutation is harmful: a DTBError must be raised.
    names : when an error is expected, the message must contain at least one of these
        (file names, paths or config keys).
    what : description of the case, for assertion messages.

    Returns
    -------
    The call's result (None on an error).
    """
    names = [str(n) for n in names]
    record(suite, "tried")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call()
    except DTBError as exc:
        message = str(exc)
        assert expect_error, f"{what}: a harmless mutation was refused: {type(exc).__name__}: {message}"
        assert any(n in message for n in names), f"{what}: the message names none of {names}: {message}"
        record(suite, "clean_error")
        return None
    # anything but a DTBError propagates: hypothesis reports it with the case that raised it
    assert not expect_error, f"{what}: accepted, but it must be refused naming one of {names}"
    record(suite, "harmless")
    return result


@contextlib.contextmanager
def captured_stderr():
    """Capture what the CLI prints (its one-line error message)."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer
