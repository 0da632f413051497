"""The compiled synapse sampler: ``cuda_ext/graph_kernels.cpp`` built on first use, loaded with ctypes.

The C++ sampler (C++17 + OpenMP) implements the algorithm of :mod:`dtb.network.sampling`
target by target, with the same Philox4x32-10 words (``dtb.philox``), so it builds the
bitwise identical graph, for any thread count, about 5x faster per thread than the
numpy/torch reference.  It is built once through :mod:`dtb.kernel_build` (the one build path
of compiled code: the host C++ compiler, the arithmetic contract's flags, the cache
``$DTB_CACHE_DIR/kernels/graph_kernels-<key>/`` keyed by the source, the header it includes,
the flags and the compiler; its lock, log line and failure message); later processes only load
the cached library.  When no compiler is found or the build fails, :func:`compiled_error` says
why and the builder falls back to the numpy path with a one-time warning.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
import weakref
from pathlib import Path

import numpy as np

from dtb.errors import NetworkError
from dtb.kernel_build import HOST_CFLAGS, KernelBuild, build_folder, ensure_built, load_shared_library

__all__ = [
    "build_block_arrays",
    "transpose_to_sources",
    "compiled_error",
    "graph_build",
    "library_path",
    "max_threads",
    "source_path",
]

_ABI_VERSION = 3
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_error: str | None = None
_tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_i64p = ctypes.POINTER(ctypes.c_int64)


class _Layout(ctypes.Structure):
    """Mirror of ``struct DtbGraphLayout`` in graph_kernels.cpp (same field order)."""

    _fields_ = [
        ("n_populations", ctypes.c_int64),
        ("n_columns", ctypes.c_int64),
        ("offsets", _i64p),
        ("pop_voxel", _i64p),
        ("pop_first", _i64p),
        ("pop_local", _i64p),
        ("indegree", _i64p),
        ("column_counts", _i64p),
        ("thresholds", _i64p),
        ("needs_subset", ctypes.POINTER(ctypes.c_uint8)),
        ("weight", ctypes.POINTER(ctypes.c_uint8)),
        ("lr_indptr", _i64p),
        ("lr_population", _i64p),
        ("lr_cdf", ctypes.POINTER(ctypes.c_double)),
        ("multinomial", ctypes.c_int64),
        ("min_output_size", ctypes.c_int64),
        ("max_redraws", ctypes.c_int64),
        ("key0", ctypes.c_uint32),
        ("key1", ctypes.c_uint32),
    ]


def source_path() -> Path:
    """``graph_kernels.cpp`` of the installed ``cuda_ext`` package (its ``__init__`` is not run)."""
    spec = importlib.util.find_spec("cuda_ext")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "graph_kernels.cpp"
            if candidate.exists():
                return candidate
    return Path(__file__).resolve().parents[2] / "cuda_ext" / "graph_kernels.cpp"


def graph_build(source: Path | None = None) -> KernelBuild:
    """The build of the graph sampler: C++17, the contract's flags, OpenMP where the compiler has it."""
    source = source or source_path()
    return KernelBuild(
        slug="graph_kernels",
        what="the compiled graph sampler",
        label="graph sampler",
        fix="Install a C++ compiler (g++), or use method='numpy' (the reference sampler needs no compiler).",
        sources=(source,),
        kind="shared",
        cflags=(*HOST_CFLAGS, "-std=c++17"),
        optional_cflags=("-fopenmp",),  # without OpenMP the library still works, on one thread
        expected_s=5.0,
        error=NetworkError,
    )


def library_path(source: Path | None = None) -> Path:
    """Where the library for this source (and these flags, this compiler) is cached."""
    build = graph_build(source)
    return build_folder(build) / ensure_built(build)[0].name


def _load() -> ctypes.CDLL:
    global _library, _error
    with _lock:
        if _library is not None:
            return _library
        if _error is not None:
            raise NetworkError(_error)
        source = source_path()
        build = graph_build(source)
        if not source.exists():
            _error = f"{source} is missing (is the cuda_ext package installed with its .cpp files?)"
        elif not source.with_name("lif_common.h").exists():
            _error = f"{source.with_name('lif_common.h')} is missing (installed without its headers?)"
        if _error is not None:
            _error = f"the compiled graph sampler is unavailable: {_error}\n{build.fix}"
            raise NetworkError(_error)
        try:
            lib = load_shared_library(build)  # its failure message names the fix
        except NetworkError as exc:
            _error = str(exc)
            raise
        if lib.dtb_graph_abi_version() != _ABI_VERSION:
            _error = (
                f"the compiled graph sampler in {library_path(source).parent} has ABI "
                f"{lib.dtb_graph_abi_version()}, expected {_ABI_VERSION}: remove that folder to rebuild it"
            )
            raise NetworkError(_error)
        lib.dtb_graph_build.restype = ctypes.c_int64
        lib.dtb_graph_build.argtypes = [
            ctypes.POINTER(_Layout),
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int,
            _i64p,
            _i64p,
            ctypes.POINTER(ctypes.c_uint32),
            ctypes.POINTER(ctypes.c_uint8),
        ]
        lib.dtb_graph_transpose.restype = ctypes.c_int64
        lib.dtb_graph_transpose.argtypes = [
            ctypes.c_int64,
            _i64p,
            ctypes.POINTER(ctypes.c_uint32),
            ctypes.POINTER(ctypes.c_uint8),
            _i64p,
            ctypes.POINTER(ctypes.c_uint32),
            ctypes.POINTER(ctypes.c_uint8),
        ]
        lib.dtb_graph_draw_sources.restype = ctypes.c_int64
        lib.dtb_graph_draw_sources.argtypes = [
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.c_uint32,
            _i64p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            _i64p,
            ctypes.c_int,
            _i64p,
        ]
        lib.dtb_graph_max_threads.restype = ctypes.c_int
        _library = lib
        return lib


def compiled_error() -> str | None:
    """None when the compiled sampler loads (building it on first use), else why not."""
    try:
        _load()
    except NetworkError as exc:
        return str(exc)
    return None


def max_threads() -> int:
    """OpenMP threads available to the compiled sampler (1 when built without OpenMP)."""
    return int(_load().dtb_graph_max_threads())


def _ptr(array: np.ndarray, ctype):
    return array.ctypes.data_as(ctypes.POINTER(ctype))


def _thresholds(probabilities: np.ndarray) -> np.ndarray:
    """Per-population 32-bit categorical thresholds (as ``sampling._thresholds``, all rows at once)."""
    cdf = np.cumsum(probabilities, axis=1)
    total = cdf[:, -1:]
    thr = np.floor(cdf / np.where(total > 0, total, 1.0) * 2.0**32).astype(np.int64)
    positive = probabilities > 0
    last = probabilities.shape[1] - 1 - np.argmax(positive[:, ::-1], axis=1)
    thr[np.arange(thr.shape[1])[None, :] >= last[:, None]] = 2**32
    return thr


def _layout_tables(layout) -> tuple[_Layout, list]:
    """The C struct of a layout (cached per layout object) and the arrays it points into."""
    cached = _tables.get(layout)
    if cached is not None:
        return cached
    from dtb.network.sampling import needs_subset_table
    from dtb.philox import split_seed

    cfg = layout.config
    offsets = np.ascontiguousarray(layout.offsets, dtype=np.int64)
    sizes = np.diff(offsets)
    i64 = [
        offsets,
        np.ascontiguousarray(layout.population_voxel, dtype=np.int64),
        np.ascontiguousarray(layout.voxel_first_population[layout.population_voxel], dtype=np.int64),
        np.ascontiguousarray(layout.population_local, dtype=np.int64),
        np.ascontiguousarray(layout.indegrees, dtype=np.int64),
        np.ascontiguousarray(layout.column_counts, dtype=np.int64),
        np.ascontiguousarray(_thresholds(np.asarray(layout.column_probabilities, dtype=np.float64))),
        np.ascontiguousarray(layout.lr_indptr, dtype=np.int64),
        np.ascontiguousarray(layout.lr_population, dtype=np.int64),
    ]
    subset = np.ascontiguousarray(needs_subset_table(layout), dtype=np.uint8)
    w_inh = cfg.weight if cfg.weight_inhibitory is None else cfg.weight_inhibitory
    weight = np.array([w_inh if p.kind == "I" else cfg.weight for p in layout.populations], dtype=np.uint8)
    cdf = np.ascontiguousarray(layout.lr_cdf, dtype=np.float64)
    if cdf.size == 0:  # keep valid pointers for empty tables
        cdf = np.zeros(1)
        i64[8] = np.zeros(1, np.int64)
    key0, key1 = split_seed(cfg.seed)
    struct = _Layout(
        n_populations=len(layout.populations),
        n_columns=int(layout.column_counts.shape[1]),
        offsets=_ptr(i64[0], ctypes.c_int64),
        pop_voxel=_ptr(i64[1], ctypes.c_int64),
        pop_first=_ptr(i64[2], ctypes.c_int64),
        pop_local=_ptr(i64[3], ctypes.c_int64),
        indegree=_ptr(i64[4], ctypes.c_int64),
        column_counts=_ptr(i64[5], ctypes.c_int64),
        thresholds=_ptr(i64[6], ctypes.c_int64),
        needs_subset=_ptr(subset, ctypes.c_uint8),
        weight=_ptr(weight, ctypes.c_uint8),
        lr_indptr=_ptr(i64[7], ctypes.c_int64),
        lr_population=_ptr(i64[8], ctypes.c_int64),
        lr_cdf=_ptr(cdf, ctypes.c_double),
        multinomial=int(cfg.split == "multinomial"),
        min_output_size=int(sizes[layout.lr_population].min()) if layout.lr_population.size else 0,
        max_redraws=int(cfg.max_redraws),
        key0=key0,
        key1=key1,
    )
    entry = (struct, [*i64, subset, weight, cdf])
    _tables[layout] = entry
    return entry


def build_block_arrays(
    layout, start: int, stop: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Incoming synapses of targets ``start .. stop-1`` with the compiled sampler.

    Returns
    -------
    indptr : int64 (stop - start + 1,), CSR by target.
    sources : uint32 (n_synapses,), global source ids in draw order per target.
    weights : uint8 (n_synapses,), weight k.
    dropped : synapses dropped (surplus or duplicates left after the redraw rounds).
    """
    if int(threads) != threads or threads < 1:
        raise NetworkError(f"threads must be a positive integer, got {threads!r}")
    lib = _load()
    struct, _keep_alive = _layout_tables(layout)
    offsets = layout.offsets
    population = np.searchsorted(offsets, np.arange(start, stop), side="right") - 1 if stop > start else None
    capacity = np.zeros(stop - start + 1, dtype=np.int64)
    if population is not None:
        np.cumsum(layout.indegrees[population], out=capacity[1:])
    indptr = np.zeros(stop - start + 1, dtype=np.int64)
    sources = np.empty(int(capacity[-1]), dtype=np.uint32)
    weights = np.empty(int(capacity[-1]), dtype=np.uint8)
    dropped = lib.dtb_graph_build(
        ctypes.byref(struct),
        int(start),
        int(stop),
        int(threads),
        _ptr(capacity, ctypes.c_int64),
        _ptr(indptr, ctypes.c_int64),
        _ptr(sources, ctypes.c_uint32),
        _ptr(weights, ctypes.c_uint8),
    )
    if dropped < 0:
        raise NetworkError(f"compiled sampler rejected the target range [{start}, {stop})")
    if dropped:
        sources, weights = sources[: indptr[-1]].copy(), weights[: indptr[-1]].copy()
    return indptr, sources, weights, int(dropped)


def transpose_to_sources(
    target_indptr: np.ndarray, sources: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR by target (ids 0 .. n-1) -> CSR by source, by a stable counting sort.

    Returns ``(indptr, targets, weights)``: int64 (n + 1,), uint32 and uint8 (n_synapses,);
    every source keeps its synapses in target order, then in the given order.
    """
    lib = _load()
    target_indptr = np.ascontiguousarray(target_indptr, dtype=np.int64)
    sources = np.ascontiguousarray(sources, dtype=np.uint32)
    weights = np.ascontiguousarray(weights, dtype=np.uint8)
    n = target_indptr.size - 1
    if sources.size != target_indptr[-1] or weights.size != sources.size:
        raise NetworkError("transpose_to_sources: sources and weights must have target_indptr[-1] entries")
    indptr = np.empty(n + 1, dtype=np.int64)
    targets_out = np.empty(sources.size, dtype=np.uint32)
    weights_out = np.empty(sources.size, dtype=np.uint8)
    status = lib.dtb_graph_transpose(
        n,
        _ptr(target_indptr, ctypes.c_int64),
        _ptr(sources, ctypes.c_uint32),
        _ptr(weights, ctypes.c_uint8),
        _ptr(indptr, ctypes.c_int64),
        _ptr(targets_out, ctypes.c_uint32),
        _ptr(weights_out, ctypes.c_uint8),
    )
    if status != 0:
        raise NetworkError(f"synapse sources must lie in [0, {n}); a block holds a larger source id")
    return indptr, targets_out, weights_out


def draw_fixed_indegree(
    seed: int,
    stream: int,
    target_ids: np.ndarray,
    indegree: int,
    n_sources: int,
    exclude_local: np.ndarray | None = None,
    threads: int = 1,
) -> np.ndarray:
    """The draws of :func:`dtb.network.fixed_indegree.draw_sources`, compiled (int64 (n, K))."""
    from dtb.philox import split_seed

    lib = _load()
    ids = np.ascontiguousarray(target_ids, dtype=np.int64).ravel()
    out = np.empty((ids.size, int(indegree)), dtype=np.int64)
    exclude = None if exclude_local is None else np.ascontiguousarray(exclude_local, dtype=np.int64).ravel()
    if exclude is not None and exclude.size != ids.size:
        raise NetworkError(f"exclude_local needs one entry per target ({ids.size}), got {exclude.size}")
    key0, key1 = split_seed(seed)
    status = lib.dtb_graph_draw_sources(
        key0,
        key1,
        int(stream) & 0xFFFFFFFF,
        _ptr(ids, ctypes.c_int64),
        ids.size,
        int(indegree),
        int(n_sources),
        None if exclude is None else _ptr(exclude, ctypes.c_int64),
        int(threads),
        _ptr(out, ctypes.c_int64),
    )
    if status != 0:
        n_pool = int(n_sources) - (exclude is not None)
        raise NetworkError(f"cannot draw {indegree} sources from a pool of {n_pool} neurons")
    return out
