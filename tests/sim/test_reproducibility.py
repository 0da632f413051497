"""The same results on every machine: the pinned cases of dtb.selftest, here and under every dispatch level.

Each dispatch level this machine offers is forced in a fresh process (ATen's ATEN_CPU_CAPABILITY,
numpy's NPY_DISABLE_CPU_FEATURES, the generic and x86-64-v3 builds of the C++ kernels, 1 and 2
threads; combined into at most three processes); every case must give the reference digest in all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dtb.selftest import CASES, REFERENCE, run_cases

ROOT = Path(__file__).resolve().parents[2]


def test_every_case_has_a_reference():
    assert set(REFERENCE) == set(CASES)


def test_this_machine_reproduces_the_reference():
    results = run_cases(threads=1)
    differ = {r.name: r.digest for r in results if r.ok is False}
    assert not differ, f"cases differ from the reference on this machine: {differ}"
    assert sum(r.ok is True for r in results) + sum(r.skipped is not None for r in results) == len(CASES)


def _numpy_dispatched_features() -> list[str]:
    """The CPU features numpy dispatches to on this machine (beyond its baseline)."""
    import numpy as np

    umath = getattr(np, "_core", None) or np.core
    mod = umath._multiarray_umath
    found = getattr(mod, "__cpu_features__", {})
    dispatch = getattr(mod, "__cpu_dispatch__", [])
    return [f for f in dispatch if found.get(f)]


def dispatch_levels() -> dict[str, dict[str, str]]:
    """Environments that force every dispatch level this machine offers, combined into few processes.

    The in-process test covers the native levels (ATen's best, numpy's dispatch, the x86-64-v3
    kernels, 1 thread); each level below appears in at least one run: ATen default/avx2/avx512,
    numpy at its baseline, the generic and x86-64-v3 kernel builds, 2 threads.  A failing run names
    its environment; run the levels one by one (``dtb selftest`` under each variable) to tell which.
    """
    capability = torch.backends.cpu.get_cpu_capability()  # DEFAULT, AVX2, AVX512 (x86)
    features = _numpy_dispatched_features()
    numpy_baseline = {"NPY_DISABLE_CPU_FEATURES": " ".join(features)} if features else {}
    levels: dict[str, dict[str, str]] = {
        "aten=default numpy=baseline kernels=generic threads=2": {
            "ATEN_CPU_CAPABILITY": "default",
            **numpy_baseline,
            "DTB_CPU_KERNELS": "generic",
            "DTB_SELFTEST_THREADS": "2",
        }
    }
    if capability in ("AVX2", "AVX512"):
        levels["aten=avx2 kernels=x86-64-v3 threads=2"] = {
            "ATEN_CPU_CAPABILITY": "avx2",
            "DTB_CPU_KERNELS": "x86-64-v3",
            "DTB_SELFTEST_THREADS": "2",
        }
    if capability == "AVX512":
        levels["aten=avx512 numpy=baseline kernels=generic"] = {
            "ATEN_CPU_CAPABILITY": "avx512",
            **numpy_baseline,
            "DTB_CPU_KERNELS": "generic",
        }
    return levels


@pytest.mark.parametrize("level", sorted(dispatch_levels()))
def test_same_digests_under_every_dispatch_level(level, tmp_path):
    env = dict(os.environ, **dispatch_levels()[level])
    threads = env.pop("DTB_SELFTEST_THREADS", "1")
    out = tmp_path / "selftest.json"
    res = subprocess.run(
        [sys.executable, "-m", "dtb.cli", "selftest", "--threads", threads, "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), res.stdout[-2000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    differ = [name for name, case in report["cases"].items() if case["ok"] is False]
    assert not differ, f"{level}: {differ} differ from the reference\n{res.stdout[-3000:]}"
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    forced = dict(part.split("=") for part in level.split())
    assert report["machine"]["torch_cpu_capability"] == forced["aten"].upper()
    assert report["machine"]["threads"] == int(threads)


def test_selftest_names_what_differs(tmp_path, monkeypatch):
    """A wrong reference is reported by name, with both digests, and the exit code says so."""
    from dtb.cli import main

    monkeypatch.setitem(REFERENCE, "normals", "0" * 64)
    code = main(["selftest", "--case", "normals", "--case", "gains:", "--json", str(tmp_path / "r.json")])
    assert code == 1
    cases = json.loads((tmp_path / "r.json").read_text())["cases"]
    assert cases["normals"]["ok"] is False and cases["normals"]["reference"] == "0" * 64
    assert all(c["ok"] is True for name, c in cases.items() if name.startswith("gains:"))
    assert main(["selftest", "--case", "gains:"]) == 0
