"""A real one-node SLURM cluster for the ``slurm`` tests, started by the tests themselves.

``local_slurm`` (session fixture, imported by the test modules that need it) uses a cluster
that already answers ``sinfo``; otherwise, as root with Debian's apt, it runs
scripts/slurm_local.sh (installs slurmctld/slurmd/slurm-client/munge, writes
/etc/slurm/slurm.conf, starts munged, slurmctld and slurmd, waits for ``idle``) and stops
those daemons, by their PID files, at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / "scripts" / "slurm_local.sh"
SLURM_CONF = Path("/etc/slurm/slurm.conf")


def slurm_running() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        subprocess.run(["sinfo"], check=True, capture_output=True, timeout=20)
    except (subprocess.SubprocessError, OSError):
        return False
    return True


def cannot_start_reason() -> str | None:
    """Why this machine cannot start its own cluster (None: it can)."""
    if os.geteuid() != 0:
        return "not root: cannot install or start slurmctld/slurmd/munge"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "no apt-get to install slurmctld/slurmd/munge"
    return None


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory):
    """Yield the environment in which `sbatch`/`squeue` reach a running one-node cluster."""
    if slurm_running():
        yield {"started_here": False}
        return
    reason = cannot_start_reason()
    if reason is not None:
        pytest.skip(f"[slurm] {reason}")
    base = tmp_path_factory.mktemp("slurm")
    previous_conf = SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None
    env = dict(os.environ, BASE=str(base))
    result = subprocess.run(["bash", str(START_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        subprocess.run(["bash", str(START_SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        pytest.fail(f"could not start a local SLURM cluster:\n{result.stdout}\n{result.stderr}")
    try:
        yield {"started_here": True, "base": base}
    finally:
        subprocess.run(["bash", str(START_SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        if previous_conf is not None:
            SLURM_CONF.write_bytes(previous_conf)
        else:
            SLURM_CONF.unlink(missing_ok=True)
