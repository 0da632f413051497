"""Splits of a run into the frames a model may learn from and the frames it is scored on.

A split cuts a run of ``n_frames`` frames (TRs) at ``start``: frames ``0 .. start - 1`` are the
*assimilated* part (a twin assimilates them, a baseline is fitted on them), frames
``start .. n_frames - 1`` are *held out*: they are only ever predicted and scored. Two splits are
used (docs/fidelity.md, "Protocol"): ``thirds`` (first 2/3 assimilated, last 1/3 held out) and
``halves`` (first half / second half).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dtb.errors import InputDataError, ParameterError

__all__ = ["SPLITS", "Split", "make_split", "MIN_HELDOUT_S", "MIN_ASSIMILATED_S"]

#: Split name -> fraction of the run that is assimilated.
SPLITS = {"thirds": 2.0 / 3.0, "halves": 0.5}

#: The held-out part must be long enough for a functional-connectivity dynamics window and a few
#: windows after it [s] (two 60 s windows).
MIN_HELDOUT_S = 120.0
#: The assimilated part must cover the band-pass start-up padding and the ridge cross-validation [s].
MIN_ASSIMILATED_S = 200.0


@dataclass(frozen=True)
class Split:
    """Where a run is cut.

    Attributes
    ----------
    name : ``"thirds"`` or ``"halves"``.
    n_frames : frames in the whole run.
    start : first held-out frame; frames ``[0, start)`` are assimilated.
    tr_s : repetition time [s].
    """

    name: str
    n_frames: int
    start: int
    tr_s: float

    @property
    def assimilated(self) -> slice:
        """Frames a model may learn from."""
        return slice(0, self.start)

    @property
    def heldout(self) -> slice:
        """Frames that are only predicted and scored."""
        return slice(self.start, self.n_frames)

    @property
    def n_heldout(self) -> int:
        return self.n_frames - self.start


def make_split(name: str, n_frames: int, tr_s: float | None, *, subject: str = "?") -> Split:
    """Cut a run of ``n_frames`` frames by the named split.

    Parameters
    ----------
    name : a key of :data:`SPLITS`.
    n_frames : frames (TRs) in the run.
    tr_s : repetition time [s]; None (missing) is an error.
    subject : label used in error messages.

    Raises
    ------
    ParameterError
        Unknown split name, TR missing or not positive.
    InputDataError
        A run too short for the split (held out < :data:`MIN_HELDOUT_S` or assimilated
        < :data:`MIN_ASSIMILATED_S`).
    """
    if name not in SPLITS:
        raise ParameterError(f"unknown split {name!r}; choose one of {sorted(SPLITS)}")
    if tr_s is None:
        raise ParameterError(
            f"sub-{subject}: the repetition time (TR) is missing; give RepetitionTime in the BOLD sidecar "
            "(seconds) or pass tr_s"
        )
    if isinstance(tr_s, bool) or not isinstance(tr_s, (int, float)) or not math.isfinite(tr_s) or tr_s <= 0:
        raise ParameterError(f"sub-{subject}: the repetition time must be a positive number of seconds, got {tr_s!r}")
    start = int(round(SPLITS[name] * n_frames))
    need_held = math.ceil(MIN_HELDOUT_S / tr_s)
    need_assim = math.ceil(MIN_ASSIMILATED_S / tr_s)
    if n_frames - start < need_held or start < need_assim:
        need = max(math.ceil(need_held / (1 - SPLITS[name])), math.ceil(need_assim / SPLITS[name]))
        raise InputDataError(
            f"sub-{subject}: a run of {n_frames} frames (TR {tr_s:g} s, {n_frames * tr_s:.0f} s) is too short for "
            f"the {name!r} split: it needs >= {MIN_ASSIMILATED_S:g} s assimilated and >= {MIN_HELDOUT_S:g} s held out, "
            f"i.e. >= {need} frames; use a longer (whole) run or leave this subject out"
        )
    return Split(name=name, n_frames=int(n_frames), start=start, tr_s=float(tr_s))
