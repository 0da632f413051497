"""The one build path of compiled code (dtb.kernel_build; docs/kernels.md, "One build path").

The cache key hashes contents, flags and compilers, never the checkout's path; a build is
announced once, marked done only when whole, done once under concurrent callers, and a failure
says what, where, the compiler's last lines and the fix.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from dtb import kernel_build
from dtb.errors import NetworkError
from dtb.kernel_build import (
    CONTRACT_CFLAGS,
    CONTRACT_NVCC_FLAGS,
    KernelBuild,
    build_folder,
    cache_key,
    ensure_built,
    included_files,
    load_shared_library,
)

ROOT = Path(__file__).resolve().parents[2]
needs_cxx = pytest.mark.skipif(kernel_build.cxx_compiler() is None, reason="no C++ compiler")

SOURCE = '#include "answer.h"\nextern "C" int dtb_answer() { return ANSWER; }\n'


def _checkout(root: Path, answer: int = 42) -> Path:
    """A tiny checkout at ``root``: one source and the header it includes (named ``<folder>/answer.*`` in the key)."""
    root.mkdir(parents=True)
    (root / "answer.h").write_text(f"#define ANSWER {answer}\n")
    (root / "answer.cpp").write_text(SOURCE)
    return root / "answer.cpp"


def _build(source: Path, **kw) -> KernelBuild:
    spec = dict(slug="test-answer", what="the test library", label="test answer", fix="Do X.", kind="shared")
    spec.update(kw)
    return KernelBuild(sources=(source,), **spec)


def _build_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "building kernels" in r.getMessage()]


def test_the_key_hashes_contents_and_flags_not_the_checkouts_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DTB_CACHE_DIR", str(tmp_path / "cache"))
    a = _build(_checkout(tmp_path / "a" / "src"))
    b = _build(_checkout(tmp_path / "elsewhere" / "b" / "src"))
    assert cache_key(a) == cache_key(b) and build_folder(a) == build_folder(b)
    assert str(tmp_path) not in "\n".join(kernel_build._key_lines(a))
    (tmp_path / "elsewhere" / "b" / "src" / "answer.h").write_text("#define ANSWER 43\n")  # an included header
    assert cache_key(b) != cache_key(a)
    assert cache_key(_build(a.sources[0], cflags=(*a.cflags, "-DX"))) != cache_key(a)
    assert cache_key(_build(a.sources[0], ldflags=("-lm",))) != cache_key(a)
    before = cache_key(a)
    monkeypatch.setattr(kernel_build, "_identity", lambda path: "another compiler 1.0")
    assert cache_key(a) != before and "cxx another compiler 1.0" in kernel_build._key_lines(a)


def test_the_real_kernels_of_two_checkouts_share_one_key(tmp_path):
    """cuda_ext copied to another folder (another checkout of this commit) gives the same keys."""
    from cuda_ext import cuda_backend, loader
    from dtb.network import compiled

    copy = tmp_path / "checkout" / "cuda_ext"
    shutil.copytree(ROOT / "cuda_ext", copy, ignore=shutil.ignore_patterns("__pycache__"))
    here = [loader.cpu_build(), cuda_backend.cuda_build(), compiled.graph_build()]
    for build in here:
        moved = tuple(copy / p.name for p in build.sources)
        other = KernelBuild(
            **{**build.__dict__, "sources": moved, "include_dirs": (copy,) if build.include_dirs else ()}
        )
        assert cache_key(other) == cache_key(build), build.slug
    (copy / "lif_common.h").write_text((copy / "lif_common.h").read_text() + "\n// edited\n")
    for build in here:  # every build includes the shared arithmetic
        moved = tuple(copy / p.name for p in build.sources)
        other = KernelBuild(
            **{**build.__dict__, "sources": moved, "include_dirs": (copy,) if build.include_dirs else ()}
        )
        assert cache_key(other) != cache_key(build), build.slug


def test_every_build_carries_the_arithmetic_contracts_flags():
    from cuda_ext import cuda_backend, loader
    from dtb.network import compiled

    builds = [loader.cpu_build(), cuda_backend.cuda_build(), cuda_backend.hipcpu_build(), compiled.graph_build()]
    for build in builds:
        assert set(CONTRACT_CFLAGS) <= set(build.cflags), build.slug
        assert not any(
            "fast-math" in f or "fast_math" in f for f in build.cflags + build.cuda_cflags if f != "-fno-fast-math"
        )
    assert set(CONTRACT_NVCC_FLAGS) <= set(cuda_backend.cuda_build().cuda_cflags)
    # the HIP-CPU build hashes the vendored runtime and the .cu its .cpp includes
    hip = cuda_backend.hipcpu_build()
    names = {p.name for p in included_files(hip.sources, hip.include_dirs)}
    assert {"lif_kernels.cu", "gpu_portability.h", "lif_common.h", "lif_kernels.h"} <= names
    assert any(p.name == "hip_runtime.h" for p in hip.extra_files)


@needs_cxx
def test_a_build_is_announced_once_and_a_second_checkout_loads_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DTB_CACHE_DIR", str(tmp_path / "cache"))
    first = _build(_checkout(tmp_path / "a" / "src"))
    with caplog.at_level(logging.INFO, logger="dtb"):
        assert load_shared_library(first).dtb_answer() == 42
    folder = build_folder(first)
    assert _build_lines(caplog) == [f"building kernels (test answer), about 30 s, once; cached in {folder}"]
    assert (folder / "built.json").is_file() and folder.parent == tmp_path / "cache" / "kernels"
    caplog.clear()
    second = _build(_checkout(tmp_path / "b" / "src"))  # the same files in another folder
    with caplog.at_level(logging.INFO, logger="dtb"):
        library, _, _ = ensure_built(second)
    assert library.parent == folder and not _build_lines(caplog)
    # an edited header builds anew, and the announced time is the last build's, measured
    third = _build(_checkout(tmp_path / "c" / "src", answer=7))
    with caplog.at_level(logging.INFO, logger="dtb"):
        assert load_shared_library(third).dtb_answer() == 7
    measured = max(1, round(kernel_build.json.loads((folder / "built.json").read_text())["seconds"]))
    assert _build_lines(caplog)[-1] == (
        f"building kernels (test answer), about {measured} s, once; cached in {build_folder(third)}"
    )


@needs_cxx
def test_a_library_without_its_stamp_is_never_loaded(tmp_path, monkeypatch):
    """A build killed before its stamp (half a library, say) is built again, not loaded."""
    monkeypatch.setenv("DTB_CACHE_DIR", str(tmp_path / "cache"))
    build = _build(_checkout(tmp_path / "a" / "src"))
    folder = build_folder(build)
    folder.mkdir(parents=True)
    (folder / f"{kernel_build._module_name(build, cache_key(build))}.so").write_bytes(b"\x7fELF half")
    (folder / "lock").touch()  # and torch's lock file of the killed build
    assert load_shared_library(build).dtb_answer() == 42
    assert (folder / "built.json").is_file() and not (folder / "lock").exists()


@needs_cxx
def test_a_failed_build_says_what_where_the_compilers_lines_and_the_fix(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DTB_CACHE_DIR", str(tmp_path / "cache"))
    source = _checkout(tmp_path / "a" / "src")
    source.write_text(SOURCE.replace("return ANSWER;", "return undeclared_name;"))
    build = _build(source, error=NetworkError)
    with pytest.raises(NetworkError) as caught, caplog.at_level(logging.INFO, logger="dtb"):
        ensure_built(build)
    message = str(caught.value)
    assert message.startswith(f"the test library could not be built in {build_folder(build)}: RuntimeError:\n")
    assert "undeclared_name" in message and message.endswith("\nDo X.")
    assert len(message.splitlines()) <= 1 + 15 + 1  # head, the compiler's last 15 lines, the fix
    assert len(_build_lines(caplog)) == 1 and not (build_folder(build) / "built.json").exists()


def test_concurrent_callers_build_once(tmp_path, monkeypatch):
    """Two threads (as two processes would, through flock) ask for one build: one compiles, both get it."""
    monkeypatch.setenv("DTB_CACHE_DIR", str(tmp_path / "cache"))
    build = _build(_checkout(tmp_path / "a" / "src"))
    calls = []

    def slow_compile(build, folder, name):
        calls.append(name)
        time.sleep(0.3)
        (folder / "libdone.so").write_bytes(b"")
        return "libdone.so", name, None

    monkeypatch.setattr(kernel_build, "_compile_shared", slow_compile)
    results = []
    workers = [threading.Thread(target=lambda: results.append(ensure_built(build)[0])) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert len(calls) == 1 and results == [build_folder(build) / "libdone.so"] * 2


def test_a_missing_source_or_a_bad_description_is_refused_clearly(tmp_path, monkeypatch):
    from dtb.errors import ParameterError

    monkeypatch.setenv("DTB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(NetworkError, match=r"the test library could not be built in .*kernels: FileNotFoundError"):
        ensure_built(_build(tmp_path / "gone.cpp", error=NetworkError))
    with pytest.raises(ParameterError, match="slug"):
        _build(tmp_path / "a.cpp", slug="a/b")
    with pytest.raises(ParameterError, match="kind"):
        _build(tmp_path / "a.cpp", kind="fortran")
