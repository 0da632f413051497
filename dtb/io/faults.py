"""A test hook that stops a stage at a named point inside its write, so a test can kill it there.

``DTB_FAULT_AT=<stage>:<point>:<marker>`` makes the process that reaches that point create the
file ``<marker>`` (with its pid) and stop itself (``SIGSTOP``); the test then sends ``SIGKILL`` to
it (and to Snakemake, like a job's time limit would) and checks what was left on disk
(docs/reliability.md, "Killed at every stage"). It cannot fire by accident: the value must name a
point listed in :data:`POINTS` and an absolute ``<marker>`` path in an existing folder, and it fires
once only (the marker is created with ``O_EXCL``; while it exists the point is passed). A value of
another form is refused with a :class:`~dtb.errors.ConfigError` at the first point reached.
"""

from __future__ import annotations

import os
import signal

from dtb.errors import ConfigError

__all__ = ["ENV", "POINTS", "fault_point"]

#: The environment variable of the hook.
ENV = "DTB_FAULT_AT"

#: stage -> the points it passes, each inside its write (nothing is under its final name yet).
POINTS: dict[str, tuple[str, ...]] = {
    "fetch": ("staged",),  # every file of the subject in its temporary folder, not renamed
    "anat": ("staged",),  # the stage's derivatives in the staging folder, not moved into place
    "dwi": ("staged",),
    "func": ("staged",),
    "network": ("staged",),  # the store built beside its final name, not renamed
    "plan": ("staged",),  # the plan written to a temporary file, not renamed
    "assimilate": ("checkpoint",),  # the first checkpoint of the work store written
    "resimulate": ("resimulation",),  # /resimulation written, /metrics (the completion mark) not
    "report": ("staged",),  # the figures in their temporary folder, no HTML yet
}


def fault_point(stage: str, point: str) -> None:
    """Stop this process here when ``DTB_FAULT_AT`` names ``stage:point`` (a test hook; see the module)."""
    value = os.environ.get(ENV)
    if not value:
        return
    parts = value.split(":", 2)
    if (
        len(parts) != 3
        or parts[1] not in POINTS.get(parts[0], ())
        or not os.path.isabs(parts[2])
        or not os.path.isdir(os.path.dirname(parts[2]))
    ):
        known = ", ".join(f"{s}:{p}" for s, points in POINTS.items() for p in points)
        raise ConfigError(
            f"{ENV}={value!r} is not <stage>:<point>:<absolute marker path in an existing folder> with a point among {known}; "
            f"unset {ENV} (it is a test hook that stops a stage)"
        )
    if (parts[0], parts[1]) != (stage, point):
        return
    try:
        fd = os.open(parts[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return  # fired already
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGSTOP)
