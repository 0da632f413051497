"""Progress reporting for long loops: a tqdm bar on a terminal, plain log lines otherwise
(SLURM logs), nothing when disabled."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["Progress"]

log = logging.getLogger("dtb")


class Progress:
    """Count ``total`` units of work; call :meth:`update` as they finish, then :meth:`close`.

    Parameters
    ----------
    total : number of units (e.g. simulation steps).
    desc : what is being done.
    enabled : ``"auto"`` or None -> a bar when stderr is a terminal, log lines every ~10 %
        otherwise; ``"bar"`` or True -> a bar; ``"log"`` -> log lines; ``"none"`` or False -> silent.
    unit_scale : factor from units to the displayed quantity (e.g. steps -> ms).
    unit : name of the displayed quantity.
    """

    MODES = ("auto", "bar", "log", "none")

    def __init__(
        self, total: int, desc: str, enabled: bool | str | None = None, unit_scale: float = 1.0, unit: str = "it"
    ):
        self.total = total
        self.desc = desc
        self.done = 0
        self._unit_scale = unit_scale
        self._unit = unit
        self._bar = None
        mode = {None: "auto", True: "bar", False: "none"}.get(enabled, enabled)
        if mode not in self.MODES:
            raise ValueError(f"progress must be one of {self.MODES} (or True/False/None), got {enabled!r}")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self._silent = mode == "none"
        self._t0 = time.perf_counter()
        self._next_log = 0.1
        if mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total * unit_scale, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n * self._unit_scale)
        elif not self._silent and self.total and self.done / self.total >= self._next_log:
            elapsed = time.perf_counter() - self._t0
            frac = self.done / self.total
            eta = elapsed * (1 - frac) / frac if frac else float("nan")
            log.info(
                "%s: %3.0f%% (%.6g of %.6g %s), %.1f s elapsed, ETA %.1f s",
                self.desc,
                100 * frac,
                self.done * self._unit_scale,
                self.total * self._unit_scale,
                self._unit,
                elapsed,
                eta,
            )
            self._next_log = min(1.0, int(frac * 10 + 1) / 10)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
