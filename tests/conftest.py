"""Shared fixtures and the resource markers (gpu, hipcpu, mpi, slow, slurm, browser).

Each marker is skipped automatically when its resource is absent; the terminal summary
lists which markers were skipped and why, so CI says what it did not test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _gpu_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return None if torch.cuda.is_available() else "no CUDA GPU visible to torch"


def _hipcpu_reason() -> str | None:
    """None when the GPU kernels can be built against HIP-CPU here (cheap: compiler, TBB, headers)."""
    try:
        from cuda_ext.cuda_backend import hipcpu_unavailable_reason
    except ImportError as exc:
        return f"cuda_ext cannot be imported: {exc}"
    return hipcpu_unavailable_reason()


def _mpi_reason() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    launcher = shutil.which("mpiexec") or (Path(sys.executable).parent / "mpiexec")
    if not Path(launcher).exists():
        return "no mpiexec launcher found (pip install mpich)"
    return None


def _slow_reason(config) -> str | None:
    if config.getoption("--run-slow") or os.environ.get("DTB_RUN_SLOW") == "1":
        return None
    return "slow tests need --run-slow or DTB_RUN_SLOW=1"


def _slurm_reason() -> str | None:
    # a running cluster, or one the tests can start themselves (tests/slurm_cluster.py)
    from tests.slurm_cluster import cannot_start_reason, slurm_running

    if slurm_running():
        return None
    reason = cannot_start_reason()
    return None if reason is None else f"no running SLURM (sinfo) and {reason}"


BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


def browser_binary() -> str | None:
    """The first Chromium-like browser on PATH (None when there is none)."""
    return next((path for path in map(shutil.which, BROWSER_NAMES) if path), None)


def _browser_reason() -> str | None:
    """None when a headless Chromium really renders a page and selenium can drive it."""
    binary = browser_binary()
    if binary is None:
        return "no headless Chromium on PATH (apt-get install chromium chromium-driver)"
    try:
        done = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "about:blank"],
            capture_output=True,
            text=True,
            timeout=90,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"{binary} --headless failed to start: {exc}"
    if "<html" not in done.stdout:
        return f"{binary} --headless rendered nothing (exit {done.returncode}): {done.stderr.strip()[-200:]}"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


_SKIPPED: dict[str, str] = {}


def pytest_collection_modifyitems(config, items):
    reasons = {
        "gpu": _gpu_reason(),
        "hipcpu": _hipcpu_reason() if any("hipcpu" in i.keywords for i in items) else None,
        "mpi": _mpi_reason(),
        "slow": _slow_reason(config),
        "slurm": _slurm_reason() if any("slurm" in i.keywords for i in items) else None,
        "browser": _browser_reason() if any("browser" in i.keywords for i in items) else None,
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason is not None and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"[{marker}] {reason}"))
                _SKIPPED.setdefault(marker, reason)


def _fuzz_summary(terminalreporter, config) -> None:
    """Counts of the fuzz tests (tests/fuzz_support.py), printed and written to <basetemp>/fuzz_counts.json."""
    import json

    fuzz = sys.modules.get("tests.fuzz_support")
    if fuzz is None or not fuzz.COUNTS:
        return
    counts = fuzz.summary()
    terminalreporter.section("fuzzed bad input")
    for suite, numbers in counts.items():
        terminalreporter.write_line(
            f"{suite}: {numbers.get('mutations', 0)} mutated inputs, {numbers.get('tried', 0)} checks: "
            f"{numbers.get('harmless', 0)} harmless (accepted), {numbers.get('clean_error', 0)} clean errors naming "
            "the file or key, 0 tracebacks (any other exception fails the test)"
        )
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        path = Path(factory.getbasetemp()) / "fuzz_counts.json"
        path.write_text(json.dumps(counts, indent=2) + "\n")
        terminalreporter.write_line(f"counts written to {path}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    _fuzz_summary(terminalreporter, config)
    if _SKIPPED:
        terminalreporter.section("markers skipped")
        for marker, reason in sorted(_SKIPPED.items()):
            n = sum(1 for r in terminalreporter.stats.get("skipped", []) if f"[{marker}]" in str(r.longrepr))
            terminalreporter.write_line(f"{marker}: {n} test(s) skipped: {reason}")
