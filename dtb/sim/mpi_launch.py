"""Start a command on N MPI ranks: ``mpiexec`` locally, ``srun`` inside a SLURM job.

``dtb simulate --ranks N`` (and other multi-rank commands) re-execute themselves under
the launcher this module picks:

1. ``--launcher`` (the ``launcher`` argument) or the ``DTB_MPI_LAUNCHER`` environment
   variable: a command line such as ``"srun --mpi=pmix"`` or ``"mpiexec -bind-to core"``;
   ``{n}`` in it is replaced by the rank count, otherwise ``-n N`` is appended;
2. ``srun`` when ``SLURM_JOB_ID`` is set (inside an allocation);
3. ``mpiexec`` next to the running Python (the pip ``mpich`` wheel installs it into the
   environment's ``bin``), else on ``PATH``.

The child processes get ``DTB_MPI_CHILD=1`` so they run the work instead of launching
again.

No hangs. ``srun`` gets ``--kill-on-bad-exit=1`` unless the launcher names it (or ``-K``): when
one rank exits with an error, SLURM ends the others (Hydra's ``mpiexec`` does this by itself).
A rank whose ``MPI_Init`` has not returned after ``DTB_MPI_INIT_TIMEOUT`` seconds (default 300;
0 disables) ends itself with a message (:func:`dtb.sim.distributed.mpi_world`): two MPI jobs
started at the same moment on one node have been seen to cross-talk in ``MPI_Init`` (pip mpich
under ``srun --mpi=pmi2``), one rank aborting and its peer spinning for ever.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from dtb.errors import BackendUnavailableError, ConfigError

__all__ = [
    "CHILD_ENV",
    "INIT_TIMEOUT_ENV",
    "LAUNCHER_ENV",
    "MPI_HINT",
    "init_timeout_s",
    "inside_mpi_job",
    "launcher_command",
    "relaunch",
]

CHILD_ENV = "DTB_MPI_CHILD"
LAUNCHER_ENV = "DTB_MPI_LAUNCHER"
INIT_TIMEOUT_ENV = "DTB_MPI_INIT_TIMEOUT"
#: seconds a rank waits in MPI_Init before it ends itself (DTB_MPI_INIT_TIMEOUT overrides; 0: wait)
DEFAULT_INIT_TIMEOUT_S = 300.0
MPI_HINT = "pip install mpi4py mpich"
#: variables that MPI launchers set in every rank (MPICH/Hydra, PMIx, Open MPI)
_RANK_VARIABLES = ("PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")


def inside_mpi_job() -> bool:
    """True when this process was started by an MPI launcher (it is one of the ranks)."""
    return os.environ.get(CHILD_ENV) == "1" or any(v in os.environ for v in _RANK_VARIABLES)


def init_timeout_s() -> float:
    """Seconds a rank may spend in ``MPI_Init`` (``DTB_MPI_INIT_TIMEOUT``, default 300; 0: no limit)."""
    raw = os.environ.get(INIT_TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_INIT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{INIT_TIMEOUT_ENV} must be a number of seconds >= 0 (0: no limit), got {raw!r}")
    return value


def _kill_on_bad_exit(parts: list[str]) -> list[str]:
    """``srun`` with ``--kill-on-bad-exit=1`` unless the command line already says (``-K``/``--kill-on-bad-exit``)."""
    if Path(parts[0]).name != "srun":
        return parts
    if any(p == "-K" or p.startswith(("--kill-on-bad-exit", "-K")) for p in parts[1:]):
        return parts
    return [parts[0], "--kill-on-bad-exit=1", *parts[1:]]


def launcher_command(n_ranks: int, launcher: str | None = None) -> list[str]:
    """The launcher prefix that starts ``n_ranks`` processes (see the module docstring).

    Raises
    ------
    BackendUnavailableError
        When mpi4py is not installed or the launcher program cannot be found.
    """
    if int(n_ranks) < 1:
        raise ConfigError(f"--ranks must be >= 1, got {n_ranks}")
    if importlib.util.find_spec("mpi4py") is None:
        raise BackendUnavailableError(
            f"--ranks {n_ranks} needs mpi4py and an MPI runtime, and mpi4py is not installed; "
            f"install them with `{MPI_HINT}`"
        )
    spec = launcher or os.environ.get(LAUNCHER_ENV)
    if spec:
        parts = shlex.split(spec)
        if not parts:
            raise ConfigError(f"the MPI launcher ({LAUNCHER_ENV} or --launcher) is empty")
        source = "--launcher" if launcher else LAUNCHER_ENV
    elif os.environ.get("SLURM_JOB_ID"):
        parts, source = ["srun"], "SLURM_JOB_ID is set"
    else:
        local = Path(sys.executable).parent / "mpiexec"
        parts, source = [str(local) if local.exists() else "mpiexec"], "default"
    if shutil.which(parts[0]) is None:
        raise BackendUnavailableError(
            f"MPI launcher {parts[0]!r} ({source}) was not found; install an MPI runtime with `{MPI_HINT}`, "
            f"or name another launcher with --launcher or {LAUNCHER_ENV}"
        )
    parts = _kill_on_bad_exit(parts)
    if any("{n}" in p for p in parts):
        return [p.replace("{n}", str(int(n_ranks))) for p in parts]
    return [*parts, "-n", str(int(n_ranks))]


def relaunch(n_ranks: int, argv: list[str], launcher: str | None = None) -> int:
    """Run ``python -m dtb.cli <argv>`` on ``n_ranks`` ranks and return its exit code."""
    command = [*launcher_command(n_ranks, launcher), sys.executable, "-m", "dtb.cli", *argv]
    env = dict(os.environ, **{CHILD_ENV: "1"})
    try:
        return subprocess.run(command, env=env, check=False).returncode
    except OSError as exc:
        raise BackendUnavailableError(f"could not start {command[0]!r}: {exc}; `{MPI_HINT}`") from None
