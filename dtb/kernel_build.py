"""The one build path for compiled code: cache folder and key, flags, lock, log line, failure message.

Every compiled part of `dtb` is built here on first use and loaded from the cache afterwards
(docs/kernels.md, "One build path"):

* the ``cuda_ext`` C++/OpenMP CPU kernels (a torch extension; :mod:`cuda_ext.loader`),
* the ``cuda_ext`` GPU kernels for CUDA (nvcc) and for the HIP-CPU emulation (torch extensions;
  :mod:`cuda_ext.cuda_backend`),
* the graph sampler (a plain shared library loaded with ctypes; :mod:`dtb.network.compiled`).

A build is described by a frozen :class:`KernelBuild`. Its **cache key** hashes what the build's
output depends on and nothing else: the contents of the sources, of every header they include
with ``#include "..."`` (followed transitively through the source folder and the include
folders) and of any extra files (the vendored HIP-CPU runtime), each named by its path relative
to the repository root; the flags; the compilers' identity (``--version``); and, for torch
extensions, the versions of torch, CUDA and Python. The checkout's absolute path is not in it,
so two checkouts of the same commit share one build, and any changed source, header or flag
builds anew. The build lives in ``$DTB_CACHE_DIR/kernels/<slug>-<key>/`` (default
``~/.cache/dtb``); a ``built.json`` stamp, written last and atomically, marks it complete, so a
build killed mid-way is never loaded (the next run builds again in the same folder).

One builder at a time per folder: :func:`build_lock` holds an OS lock (``flock``, released by
the kernel when its holder dies) and removes the ``lock`` file an interrupted
``torch.utils.cpp_extension`` build leaves behind. Before the compiler starts, one INFO line on
logger ``dtb`` says ``building kernels (<label>), about N s, once; cached in <folder>`` (N: the
last build of that kind on this machine, else the build's estimate). A failure raises the
build's error type with one message: what could not be built and where, the compiler's last
lines, and the fix.

The arithmetic contract (docs/architecture.md, "The engine") forbids contracting ``a * b + c``
into fused multiply-adds and fast-math reassociation: every host build gets
:data:`CONTRACT_CFLAGS`, every nvcc build :data:`CONTRACT_NVCC_FLAGS`.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from dtb.errors import BackendUnavailableError, DTBError, ParameterError

__all__ = [
    "CONTRACT_CFLAGS",
    "CONTRACT_NVCC_FLAGS",
    "HOST_CFLAGS",
    "NVCC_CFLAGS",
    "KernelBuild",
    "build_folder",
    "build_lock",
    "cache_key",
    "cache_root",
    "cxx_compiler",
    "ensure_built",
    "failure_message",
    "included_files",
    "load_shared_library",
    "load_torch_extension",
]

#: Host compiler flags of the arithmetic contract: no fused multiply-adds, no fast-math.
CONTRACT_CFLAGS = ("-ffp-contract=off", "-fno-fast-math")
#: nvcc flags of the arithmetic contract (nvcc contracts to FMA by default; no --use_fast_math).
CONTRACT_NVCC_FLAGS = ("--fmad=false",)
#: Every host build: optimised, under the contract.
HOST_CFLAGS = ("-O3", *CONTRACT_CFLAGS)
#: Every nvcc build: optimised, under the contract, with line info for profilers.
NVCC_CFLAGS = ("-O3", *CONTRACT_NVCC_FLAGS, "-lineinfo")

#: Bump to invalidate every cached build (a change of how builds are laid out).
_LAYOUT_VERSION = 1
_STAMP = "built.json"
_REPOSITORY = Path(__file__).resolve().parents[1]
_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)
_logger = logging.getLogger("dtb")


@dataclass(frozen=True)
class KernelBuild:
    """One compiled library: what it is, its inputs and flags, and how a failure is reported.

    ``kind`` is ``"torch"`` (a torch C++/CUDA extension module, built with
    :func:`torch.utils.cpp_extension.load`) or ``"shared"`` (a plain shared library, built
    with the host C++ compiler, loaded with ctypes). ``expected_s`` [s] is the build time the
    log line announces when this machine has not built that ``slug`` before.
    """

    slug: str  #: cache folder prefix, e.g. ``"cuda_ext-cpu-x86-64-v3"``
    what: str  #: names the library in errors, e.g. ``"the cuda_ext C++ kernels"``
    label: str  #: names it in the log line, e.g. ``"cuda_ext CPU, x86-64-v3"``
    fix: str  #: the last line of a failure: what to do instead
    sources: tuple[Path, ...]
    kind: str = "torch"
    include_dirs: tuple[Path, ...] = ()
    extra_files: tuple[Path, ...] = ()  #: hashed into the key too (e.g. a vendored runtime)
    cflags: tuple[str, ...] = HOST_CFLAGS
    cuda_cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    optional_cflags: tuple[str, ...] = ()  #: "shared" only: dropped, with a retry, when the first try fails
    expected_s: float = 30.0
    error: type[DTBError] = BackendUnavailableError

    def __post_init__(self) -> None:
        if self.kind not in ("torch", "shared"):
            raise ParameterError(f"KernelBuild.kind must be 'torch' or 'shared', got {self.kind!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.slug):
            raise ParameterError(
                f"KernelBuild.slug must be a plain folder name (letters, digits, _ . -), got {self.slug!r}"
            )


def cache_root() -> Path:
    """``$DTB_CACHE_DIR``, else ``~/.cache/dtb``: the root of every build folder."""
    return Path(os.environ.get("DTB_CACHE_DIR") or Path.home() / ".cache" / "dtb")


def cxx_compiler() -> str | None:
    """The host C++ compiler every build uses: ``$CXX``, else ``c++``, else ``g++`` (None: none found).

    torch's extension builds call ``$CXX`` (else ``c++``) themselves; the plain shared libraries
    call this one, so both kinds use the same compiler."""
    for name in (os.environ.get("CXX"), "c++", "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and Path(home, "bin", "nvcc").exists():
        return str(Path(home, "bin", "nvcc"))
    return shutil.which("nvcc")


@functools.cache
def _identity(path: str | None) -> str:
    """A compiler's identity: its ``--version`` text (not its path), or ``"none"``."""
    if path is None:
        return "none"
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unusable: {type(exc).__name__}"
    return (result.stdout or result.stderr).strip()


def _label(path: Path) -> str:
    """A file's name in the key: relative to the repository root, never the checkout's absolute path."""
    resolved = path.resolve()
    for root in (_REPOSITORY, resolved.parents[1] if len(resolved.parents) > 1 else resolved.parent):
        try:
            return resolved.relative_to(root).as_posix()
        except ValueError:
            continue
    return resolved.name


def included_files(sources: tuple[Path, ...], include_dirs: tuple[Path, ...] = ()) -> list[Path]:
    """The sources and every file they include with ``#include "..."``, transitively, in first-seen order.

    A quoted include is looked up beside the including file, then in ``include_dirs``; one found
    nowhere is the system's (not hashed: the compiler's identity stands for it)."""
    seen: dict[Path, None] = {}
    pending = [Path(s).resolve() for s in sources]
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen[path] = None
        for name in _INCLUDE.findall(path.read_text(encoding="utf-8", errors="replace")):
            for folder in (path.parent, *include_dirs):
                candidate = (Path(folder) / name).resolve()
                if candidate.is_file():
                    pending.append(candidate)
                    break
    return list(seen)


def _torch_versions(with_cuda: bool) -> list[str]:
    import torch

    versions = [f"torch {torch.__version__}", f"cxx11 abi {torch._C._GLIBCXX_USE_CXX11_ABI}"]
    if with_cuda:
        versions.append(f"cuda {torch.version.cuda}")
    return versions


def _key_lines(build: KernelBuild) -> list[str]:
    with_cuda = bool(build.cuda_cflags)
    lines = [
        f"layout {_LAYOUT_VERSION}",
        f"kind {build.kind}",
        f"cflags {' '.join(build.cflags)}",
        f"optional {' '.join(build.optional_cflags)}",
        f"cuda_cflags {' '.join(build.cuda_cflags)}",
        f"ldflags {' '.join(build.ldflags)}",
        f"cxx {_identity(cxx_compiler())}",
        f"machine {os.uname().machine}",
    ]
    if with_cuda:
        lines.append(f"nvcc {_identity(_nvcc())}")
    if build.kind == "torch":
        lines += [f"python {sys.implementation.cache_tag}", *_torch_versions(with_cuda)]
    files = included_files(build.sources, build.include_dirs) + sorted(p.resolve() for p in build.extra_files)
    lines += [f"file {_label(p)} {hashlib.sha256(p.read_bytes()).hexdigest()}" for p in files]
    return lines


def cache_key(build: KernelBuild) -> str:
    """20 hex digits of the SHA-256 of the build's inputs (module docstring); no absolute path enters it."""
    return hashlib.sha256("\n".join(_key_lines(build)).encode()).hexdigest()[:20]


def build_folder(build: KernelBuild) -> Path:
    """``<cache_root()>/kernels/<slug>-<key>``: where this build is (or will be) cached."""
    return cache_root() / "kernels" / f"{build.slug}-{cache_key(build)}"


@contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold an OS lock on ``folder`` while a build runs or loads there, and clear a stale torch lock.

    ``cpp_extension.load`` guards a build with a plain ``lock`` file and waits, without limit and
    without a word, for it to disappear; a build killed mid-way (Ctrl-C, a job's time limit, OOM)
    leaves that file behind, and every later run hung. Our ``flock`` is released by the kernel
    when its holder dies, so whoever holds it knows that no build of ours is running and removes a
    ``lock`` file that is left. A process that has to wait says so once.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "dtb-build.flock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _logger.info("waiting for another process that builds kernels in %s", folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = folder / "lock"
            if stale.exists():
                _logger.warning("removing the stale build lock %s of an interrupted build", stale)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def failure_message(build: KernelBuild, folder: Path, output: str, exc: BaseException | None = None) -> str:
    """What could not be built and where, the compiler's last 15 lines, and the fix."""
    head = f"{build.what} could not be built in {folder}"
    if exc is not None:
        head += f": {type(exc).__name__}"
        output = f"{output}\n{exc}"
    detail = "\n".join(output.strip().splitlines()[-15:])
    return f"{head}:\n{detail}\n{build.fix}"


def _expected_seconds(build: KernelBuild) -> int:
    """The last measured build time of this slug on this machine [s], else the build's estimate."""
    stamps = sorted(
        (cache_root() / "kernels").glob(f"{build.slug}-*/{_STAMP}"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for stamp in stamps:
        try:
            return max(1, round(float(json.loads(stamp.read_text())["seconds"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(1, round(build.expected_s))


def _read_stamp(folder: Path) -> dict | None:
    try:
        stamp = json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or not (folder / str(stamp.get("library", ""))).is_file():
        return None
    return stamp


def _write_stamp(folder: Path, stamp: dict) -> None:
    tmp = folder / f".{_STAMP}.{os.getpid()}"
    tmp.write_text(json.dumps(stamp, indent=1) + "\n")
    os.replace(tmp, folder / _STAMP)  # whole or not at all


def _module_name(build: KernelBuild, key: str) -> str:
    return "dtb_" + re.sub(r"[^A-Za-z0-9]", "_", build.slug) + "_" + key[:12]


def _compile_torch(build: KernelBuild, folder: Path, name: str):
    """Build with torch's JIT; returns (library file name, module name, the loaded module)."""
    from torch.utils import cpp_extension

    module = cpp_extension.load(
        name=name,
        sources=[str(s) for s in build.sources],
        extra_cflags=list(build.cflags),
        extra_cuda_cflags=list(build.cuda_cflags) or None,
        extra_ldflags=list(build.ldflags),
        extra_include_paths=[str(d) for d in build.include_dirs],
        build_directory=str(folder),
        verbose=False,
    )
    built = Path(getattr(module, "__file__", "") or folder / f"{name}.so")  # torch names it <name>[_vN].so
    return built.name, module.__name__, module


def _compile_shared(build: KernelBuild, folder: Path, name: str) -> tuple[str, str, None]:
    """Build a plain shared library with the host compiler (retrying without ``optional_cflags``)."""
    compiler = cxx_compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found ($CXX, c++ or g++); install g++ (e.g. apt-get install g++)")
    library = f"lib{name}.so"
    includes = [f"-I{d}" for d in build.include_dirs]
    errors = []
    for optional in (build.optional_cflags, ()) if build.optional_cflags else ((),):
        tmp = folder / f".{library}.{os.getpid()}"
        command = [compiler, *build.cflags, *optional, "-fPIC", "-shared", *includes]
        command += [*(str(s) for s in build.sources), "-o", str(tmp), *build.ldflags]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(tmp, folder / library)  # atomic: a reader never sees half a library
                return library, name, None
            errors.append(f"{' '.join(command)}\n{result.stdout}{result.stderr}")
        finally:
            tmp.unlink(missing_ok=True)
    raise RuntimeError(f"{compiler} failed:\n{errors[0]}")


def ensure_built(build: KernelBuild) -> tuple[Path, str, object]:
    """The cached library of ``build``, building it first if needed.

    Returns ``(library path, module name, module or None)``: the module when this call built a
    torch extension (torch has imported it already), else None (load it from the path).
    Raises ``build.error`` with :func:`failure_message` when the build fails.
    """
    try:
        folder = build_folder(build)
    except OSError as exc:  # a source or header that cannot be read
        raise build.error(failure_message(build, cache_root() / "kernels", "", exc)) from None
    stamp = _read_stamp(folder)
    if stamp is not None:
        return folder / stamp["library"], stamp["module"], None
    name = _module_name(build, folder.name[-20:])
    log = io.StringIO()
    try:
        with build_lock(folder):
            stamp = _read_stamp(folder)  # built by another process while we waited
            if stamp is not None:
                return folder / stamp["library"], stamp["module"], None
            _logger.info(
                "building kernels (%s), about %d s, once; cached in %s", build.label, _expected_seconds(build), folder
            )
            started = time.monotonic()
            with redirect_stdout(log), redirect_stderr(log):
                compile_ = _compile_torch if build.kind == "torch" else _compile_shared
                library, module_name, module = compile_(build, folder, name)
            seconds = time.monotonic() - started
            _write_stamp(
                folder,
                {"library": library, "module": module_name, "seconds": round(seconds, 1), "key": _key_lines(build)},
            )
            return folder / library, module_name, module
    except build.error:
        raise
    except Exception as exc:  # compiler missing, compile error, ninja missing, unwritable cache, ...
        raise build.error(failure_message(build, folder, log.getvalue(), exc)) from None


def load_torch_extension(build: KernelBuild):
    """The torch extension module of ``build`` (built on first use, else imported from the cache)."""
    import importlib.util

    import torch  # noqa: F401  (the extension links against the torch libraries loaded here)

    library, name, module = ensure_built(build)
    if module is not None:
        return module
    try:
        spec = importlib.util.spec_from_file_location(name, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise build.error(failure_message(build, library.parent, f"cannot import {library}", exc)) from None
    return module


def load_shared_library(build: KernelBuild):
    """The ctypes handle of the shared library of ``build`` (built on first use)."""
    import ctypes

    library, _, _ = ensure_built(build)
    try:
        return ctypes.CDLL(str(library))
    except OSError as exc:
        raise build.error(failure_message(build, library.parent, f"cannot load {library}", exc)) from None
