"""Drawing the report's figures: once each, in this process or in forked worker processes.

The sections only describe their figures (:class:`PendingFigure`: a key, a title, a caption and a
function that builds a matplotlib Figure from arrays already read); :func:`draw_figures` draws
them all at the end, each exactly once, rendered to PNG bytes by
:func:`dtb.report.figures.figure_png`.  With ``jobs > 1`` the figures are shared out over ``jobs``
worker processes started by ``fork`` (they inherit the arrays; nothing is pickled but the PNG bytes
coming back), in the same order, so the page is the same as with one process.  Where ``fork`` is
not available, or a worker dies, the figures are drawn here, one after the other, and a log line
says so.  A figure that raises becomes its error message (``Type: message``, and the ``file:line`` where it
was raised), never an exception.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from dtb.report.figures import figure_png

__all__ = ["PendingFigure", "draw_figures"]

log = logging.getLogger("dtb")


@dataclass(frozen=True)
class PendingFigure:
    """A figure to draw: ``make()`` returns a matplotlib Figure; ``key`` names its PNG file."""

    key: str
    title: str
    caption: str
    make: Callable


#: The figures of the current :func:`draw_figures` call, read by the forked workers (inherited).
_PENDING: list[PendingFigure] = []
_DPI = [90]


def _draw(index: int) -> tuple[bool, bytes | str, str]:
    """(True, PNG bytes, "") or (False, why, where) for figure ``index`` of :data:`_PENDING`."""
    try:
        return True, figure_png(_PENDING[index].make(), dpi=_DPI[0]), ""
    except Exception as exc:  # one bad figure must not cost the others
        frames = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f"{Path(frames[0].filename).name}:{frames[0].lineno}" if frames else "unknown"
        return False, f"{type(exc).__name__}: {exc}", where


def draw_figures(pending: Sequence[PendingFigure], dpi: int = 90, jobs: int = 1) -> list[tuple[bool, bytes | str, str]]:
    """Draw every pending figure once, in order: ``(True, png, "")``, or ``(False, why, where)`` with
    ``why`` the exception's type and message and ``where`` its innermost ``file:line``.

    ``jobs``: worker processes (1: draw here). Peak memory per process is one figure at a time.
    """
    _PENDING[:] = list(pending)
    _DPI[0] = int(dpi)
    try:
        n = len(_PENDING)
        if jobs > 1 and n > 1 and "fork" in multiprocessing.get_all_start_methods():
            workers = min(int(jobs), n)
            try:
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                    return list(pool.map(_draw, range(n), chunksize=max(1, n // (4 * workers))))
            except BrokenProcessPool as exc:  # a worker was killed (e.g. out of memory): draw here instead
                log.warning("report: a figure worker process died (%s); drawing the figures in this process", exc)
        elif jobs > 1 and n > 1:
            log.info("report: no 'fork' start method here; drawing the figures in this process")
        return [_draw(i) for i in range(n)]
    finally:
        _PENDING.clear()
