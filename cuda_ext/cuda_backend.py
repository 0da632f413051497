"""Build (once, cached) and load the GPU kernels, and wrap them as the ``cuda_ext`` backend on GPUs.

Sources: ``lif_kernels.cu`` (kernels; no torch headers, compiles standalone with nvcc),
``cuda_binding.cpp`` (thin torch binding), the shared per-neuron arithmetic
``lif_common.h`` and the runtime layer ``gpu_portability.h``.  Two builds of the same
kernels:

* ``cuda``: only when torch is a CUDA build, sees a GPU and finds nvcc.  nvcc gets
  ``--fmad=false`` and no fast-math: fused multiply-adds would change float32 results and
  break bitwise agreement with the torch and C++ backends.
* ``hipcpu``: the same kernels compiled by the host compiler against HIP-CPU
  (``third_party/hip-cpu``, header-only, needs TBB) and run on the CPU on CPU tensors:
  backend ``"cuda_ext:hipcpu"`` on device ``cpu``.  An emulation for checking the kernels'
  logic where no GPU is (docs/kernels.md says what it proves); never picked by ``auto``.

Both are built, cached and reported through :mod:`dtb.kernel_build` (the one build path:
cache key, contract flags, lock, log line, failure message); this module names their sources
and flags.

Per-neuron parameters are not streamed as (M, N) tables: neurons with identical
parameters (in practice one population) share a row of small per-class tables, so each
neuron-update reads its state, one class index and its drive.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from dtb.errors import BackendUnavailableError
from dtb.kernel_build import HOST_CFLAGS, NVCC_CFLAGS, KernelBuild, load_torch_extension
from dtb.sim.backends.base import DeviceNetwork, EngineState, ExpandedParams, IntervalResult

__all__ = [
    "CUDA_SOURCES",
    "NVCC_FLAGS",
    "HIPCPU_ROOT",
    "CudaKernelBackend",
    "HipCpuKernelBackend",
    "ParamTables",
    "cuda_build",
    "cuda_build_error",
    "hipcpu_build",
    "hipcpu_build_error",
    "hipcpu_unavailable_reason",
    "load_cuda_extension",
    "load_hipcpu_extension",
    "param_tables",
]

_HERE = Path(__file__).parent
#: Sources of the CUDA extension: the kernels, then their torch binding.
CUDA_SOURCES = (_HERE / "lif_kernels.cu", _HERE / "cuda_binding.cpp")
#: nvcc flags: the arithmetic contract forbids contraction to fused multiply-adds (dtb.kernel_build).
NVCC_FLAGS = list(NVCC_CFLAGS)
_lock = threading.Lock()
_module = None
_error: str | None = None

#: The vendored HIP-CPU runtime (MIT; header-only, runs HIP kernels on the CPU through TBB).
HIPCPU_ROOT = _HERE.parent / "third_party" / "hip-cpu"
#: Sources of the HIP-CPU build: the kernels (through a .cpp that includes the .cu) and the binding.
HIPCPU_SOURCES = (_HERE / "hipcpu_kernels.cpp", _HERE / "cuda_binding.cpp")
_hipcpu_module = None
_hipcpu_error: str | None = None


def cuda_build() -> KernelBuild:
    """The build of the CUDA kernels (nvcc for the .cu, the host compiler for the binding)."""
    return KernelBuild(
        slug="cuda_ext-cuda",
        what="the cuda_ext CUDA kernels",
        label="cuda_ext CUDA",
        fix="Use backend 'torch' on CUDA devices (the reference backend needs no compiler).",
        sources=CUDA_SOURCES,
        include_dirs=(_HERE,),
        cflags=HOST_CFLAGS,
        cuda_cflags=NVCC_CFLAGS,
        expected_s=180.0,
    )


def _hipcpu_files() -> tuple[Path, ...]:
    """Every vendored HIP-CPU file the build may read (headers, libco, half), in a fixed order."""
    return tuple(sorted(p for p in HIPCPU_ROOT.rglob("*") if p.is_file()))


def hipcpu_build() -> KernelBuild:
    """The HIP-CPU build of the GPU kernels: the host compiler against the vendored runtime (hashed whole)."""
    return KernelBuild(
        slug="cuda_ext-hipcpu",
        what="the cuda_ext GPU kernels for HIP-CPU",
        label="cuda_ext GPU kernels on HIP-CPU",
        fix="Install libtbb-dev, or use backend 'cuda_ext' (C++ kernels) or 'torch' on the CPU.",
        sources=HIPCPU_SOURCES,
        include_dirs=(_HERE, HIPCPU_ROOT / "include"),
        extra_files=_hipcpu_files(),
        cflags=(*HOST_CFLAGS, "-DDTB_HIP_CPU"),
        ldflags=("-ltbb", "-lpthread"),
        expected_s=90.0,
    )


def _tbb_found() -> bool:
    """Whether TBB's headers and library look installed (libstdc++'s parallel algorithms need them)."""
    dirs = [Path("/usr/include"), Path("/usr/local/include")]
    dirs += [Path(p) for p in os.environ.get("CPATH", "").split(os.pathsep) if p]
    header = any((d / "tbb" / "tbb.h").exists() or (d / "oneapi" / "tbb.h").exists() for d in dirs)
    return header and ctypes.util.find_library("tbb") is not None


def hipcpu_unavailable_reason() -> str | None:
    """Why the HIP-CPU build cannot even be attempted here (None: it can); cheap, builds nothing."""
    if not (HIPCPU_ROOT / "include" / "hip" / "hip_runtime.h").exists():
        return f"the vendored HIP-CPU headers are missing ({HIPCPU_ROOT} holds no include/hip/hip_runtime.h)"
    if shutil.which("c++") is None and shutil.which("g++") is None:
        return "no host C++ compiler (c++ / g++) found for the HIP-CPU build"
    if not _tbb_found():
        return "TBB is not installed (HIP-CPU runs kernels through it): apt-get install libtbb-dev"
    return None


def _unavailable_reason() -> str | None:
    """Why a CUDA build cannot even be attempted here (None: it can)."""
    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch to use the "
            "CUDA kernels (the C++ CPU kernels still work on device 'cpu')"
        )
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU here; use device 'cpu' (C++ kernels) or backend 'torch'"
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    has_nvcc = shutil.which("nvcc") is not None or (home is not None and Path(home, "bin", "nvcc").exists())
    if home is None or not has_nvcc:
        return "no CUDA compiler (nvcc) found; set CUDA_HOME or put nvcc on PATH, or use backend 'torch'"
    return None


def load_cuda_extension():
    """The compiled CUDA module (building it on first use); raises BackendUnavailableError."""
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is None:
            _error = _unavailable_reason()
        if _error is not None:
            raise BackendUnavailableError(_error)
        try:
            _module = load_torch_extension(cuda_build())
        except BackendUnavailableError as exc:
            _error = str(exc)
            raise
        return _module


def cuda_build_error() -> str | None:
    """None when the CUDA kernels build (or are already built) here, else why not."""
    try:
        load_cuda_extension()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def load_hipcpu_extension():
    """The HIP-CPU build of the GPU kernels (building it on first use); raises BackendUnavailableError."""
    global _hipcpu_module, _hipcpu_error
    with _lock:
        if _hipcpu_module is not None:
            return _hipcpu_module
        if _hipcpu_error is None:
            _hipcpu_error = hipcpu_unavailable_reason()
        if _hipcpu_error is not None:
            raise BackendUnavailableError(_hipcpu_error)
        try:
            _hipcpu_module = load_torch_extension(hipcpu_build())
        except BackendUnavailableError as exc:
            _hipcpu_error = str(exc)
            raise
        return _hipcpu_module


def hipcpu_build_error() -> str | None:
    """None when the HIP-CPU build of the GPU kernels works (or is built) here, else why not."""
    try:
        load_hipcpu_extension()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class ParamTables:
    """Per-class parameter tables on the device (see ``lif_kernels.h``)."""

    neuron_class: torch.Tensor  #: (N,) int32
    ftab: torch.Tensor  #: (M, C, 9 + R) float32
    itab: torch.Tensor  #: (M, C, 2) int32: n_ref, poisson_k
    dtab: torch.Tensor  #: (M, C, 2) float64: poisson lam, exp(-lam)
    keys: torch.Tensor  #: (M, 2) int64 Philox key words
    id_base: int  #: neuron i has global id id_base + i ...
    global_ids: torch.Tensor | None  #: ... unless this (N,) int64 table is given


def param_tables(params: ExpandedParams, M: int, N: int) -> ParamTables:
    """Compress the per-neuron tables of ``params`` into per-class tables.

    A new class starts wherever any parameter of any member differs bitwise from the
    previous neuron's, so contiguous populations give one class each and any
    per-neuron variation (e.g. an external-current gain per neuron) is kept exactly.
    """
    R = params.g.shape[0]
    f32, f64, i32 = torch.float32, torch.float64, torch.int32
    floats = [
        params.g_L, params.gLVL, params.V_th, params.V_reset, params.dt_over_C,
        params.ou_a, params.ou_mu, params.ou_b_sigma, params.i_ext, *[params.g[u] for u in range(R)],
    ]  # fmt: skip
    F = torch.stack([t.to(f32).expand(M, N) for t in floats], dim=1)  # (M, 9 + R, N)
    I = torch.stack([t.to(i32).expand(M, N) for t in (params.n_ref, params.poisson_k)], dim=1)
    D = torch.stack([t.to(f64).expand(M, N) for t in (params.poisson_lam, params.poisson_p0)], dim=1)
    device = F.device
    change = torch.zeros(N, dtype=torch.bool, device=device)
    if N:
        change[0] = True
    for bits in (F.view(i32), I, D.view(torch.int64)):
        flat = bits.reshape(-1, N)
        change[1:] |= (flat[:, 1:] != flat[:, :-1]).any(0)
    neuron_class = (torch.cumsum(change.to(torch.int64), 0) - 1).to(i32)
    starts = torch.nonzero(change).flatten()
    ids = (params.neuron_ids[1].reshape(-1).to(torch.int64) << 32) | params.neuron_ids[0].reshape(-1).to(torch.int64)
    ids = ids.to(device)
    base = int(ids[0]) if N else 0
    contiguous = bool(torch.equal(ids, base + torch.arange(N, dtype=torch.int64, device=device)))
    keys = torch.stack([k.reshape(-1).to(torch.int64).expand(M) for k in params.keys], dim=1).contiguous()
    return ParamTables(
        neuron_class=neuron_class.contiguous(),
        ftab=F[:, :, starts].permute(0, 2, 1).contiguous(),
        itab=I[:, :, starts].permute(0, 2, 1).contiguous(),
        dtab=D[:, :, starts].permute(0, 2, 1).contiguous(),
        keys=keys.to(device),
        id_base=base,
        global_ids=None if contiguous else ids.contiguous(),
    )


class CudaKernelBackend:
    """The ``cuda_ext`` backend on a CUDA device: fused CUDA kernels.

    :meth:`integrate` returns the dense spike tensor of the backend contract and clears
    each drive slot as it reads it (``consumes_drive``); :meth:`integrate_compact` is the
    engine-free fast path (spike rows by warp-aggregated compaction, per-population counts).
    """

    name = "cuda_ext"
    flavour = "cuda"
    consumes_drive = True  #: integrate zeroes the drive slots it reads (the engine skips its clear)

    def __init__(self, device: str | torch.device = "cuda") -> None:
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise BackendUnavailableError(f"CudaKernelBackend runs on CUDA devices only, not {self.device}")
        self._ext = load_cuda_extension()
        self._tables_cache: tuple | None = None

    def _stream(self) -> int:
        """torch's current stream on this device, as the raw handle the binding takes."""
        return int(torch.cuda.current_stream(self.device).cuda_stream)

    def philox(self, counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Philox4x32-10 computed by the device code: (n, 4) counters, (n, 2) keys -> (n, 4) words."""
        return self._ext.philox(
            counter.to(device=self.device, dtype=torch.int64).contiguous(),
            key.to(device=self.device, dtype=torch.int64).contiguous(),
            self._stream(),
        )

    def tables(self, params: ExpandedParams, M: int, N: int) -> ParamTables:
        """Per-class tables, cached per params object (the engine replaces, never edits, it)."""
        cache = self._tables_cache
        if cache is None or cache[0] is not params or cache[1] != (M, N):
            cache = (params, (M, N), param_tables(params, M, N))
            self._tables_cache = cache
        return cache[2]

    def _launch(self, state: EngineState, drive, params, tables: ParamTables, n_steps, drive_offset, **outputs):
        for name in ("V", "J", "I_ou", "refractory"):
            value = getattr(state, name)
            if not value.is_contiguous():
                setattr(state, name, value.contiguous())
        self._ext.integrate(
            state.V, state.J, state.I_ou, state.refractory,
            drive if drive.is_contiguous() else drive.contiguous(), int(drive_offset),
            bool(outputs.get("clear_drive", False)),
            tables.neuron_class, tables.ftab, tables.itab, tables.dtab,
            [float(x) for x in params.decay.reshape(-1).tolist()], [float(x) for x in params.E_rev],
            [int(x) for x in params.receptor_kind], tables.keys, tables.id_base, tables.global_ids,
            int(params.poisson_max_events), params.integrator == "exponential_euler", bool(params.ou_on),
            bool(params.poisson_on), int(state.step), int(n_steps),
            outputs.get("spiked"), outputs.get("spike_rows"), outputs.get("spike_count"),
            outputs.get("population"), outputs.get("pop_counts"), outputs.get("sample_slot"),
            int(outputs.get("sample_every", 1)), outputs.get("V_s"), outputs.get("J_s"),
            outputs.get("Isyn_s"), outputs.get("Ibg_s"), self._stream(),
        )  # fmt: skip
        state.step += n_steps

    def integrate(
        self,
        state: EngineState,
        drive: torch.Tensor,
        params: ExpandedParams,
        n_steps: int,
        drive_offset: int,
        sample_ids: torch.Tensor | None,
        sample_every: int,
    ) -> IntervalResult:
        M, N = state.V.shape
        R = state.J.shape[0]
        tables = self.tables(params, M, N)
        step0 = state.step
        every = max(int(sample_every), 1)
        sample_steps = (
            [s for s in range(step0, step0 + n_steps) if (s + 1) % every == 0] if sample_ids is not None else []
        )
        dev = self.device
        spiked = torch.empty((n_steps, M, N), dtype=torch.bool, device=dev)
        outputs: dict = {"spiked": spiked, "clear_drive": True}
        inverse = None
        if sample_ids is not None and sample_steps:
            ids = sample_ids.to(device=dev, dtype=torch.int64)
            unique, inverse = torch.unique(ids, return_inverse=True)
            slot = torch.full((N,), -1, dtype=torch.int64, device=dev)
            slot[unique] = torch.arange(len(unique), dtype=torch.int64, device=dev)
            S, C = len(sample_steps), len(unique)
            outputs.update(
                sample_slot=slot,
                sample_every=every,
                V_s=torch.empty((S, M, C), dtype=torch.float32, device=dev),
                J_s=torch.empty((S, M, R, C), dtype=torch.float32, device=dev),
                Isyn_s=torch.empty((S, M, R, C), dtype=torch.float32, device=dev),
                Ibg_s=torch.empty((S, M, C), dtype=torch.float32, device=dev),
            )
        self._launch(state, drive, params, tables, n_steps, drive_offset, **outputs)
        samples: dict[str, torch.Tensor] = {}
        if inverse is not None:
            S = len(sample_steps)
            samples = {
                "V": outputs["V_s"][..., inverse],
                "J": outputs["J_s"][..., inverse],
                "I_syn": outputs["Isyn_s"][..., inverse],
                "I_bg": outputs["Ibg_s"][..., inverse],
                "I_ext": params.i_ext.expand(M, N)[:, sample_ids.to(dev)].unsqueeze(0).expand(S, M, -1).clone(),
            }
        return IntervalResult(spiked, samples, sample_steps)

    def integrate_compact(
        self,
        state: EngineState,
        drive: torch.Tensor,
        params: ExpandedParams | ParamTables,
        n_steps: int,
        drive_offset: int,
        spike_rows: torch.Tensor,
        spike_count: torch.Tensor,
        population: torch.Tensor | None = None,
        pop_counts: torch.Tensor | None = None,
        *,
        expanded: ExpandedParams | None = None,
    ) -> None:
        """Advance ``state`` by ``n_steps``; spikes appended as (slot, member, neuron) rows.

        ``spike_rows`` (capacity, 3) int64 receives rows from ``spike_count[0]`` on (the
        count keeps growing past the capacity: the caller checks it); ``pop_counts``
        (n_steps, M, P) int32 accumulates spikes per step, member and population.  Each
        drive slot is zeroed once read, so delivery can write the next interval into the
        same ring without a separate clear.  ``params`` may be precomputed ParamTables (then
        ``expanded`` gives the scalar settings).
        """
        M, N = state.V.shape
        if isinstance(params, ParamTables):
            if expanded is None:
                raise ValueError("integrate_compact with ParamTables needs expanded= for the scalar settings")
            tables, settings = params, expanded
        else:
            tables, settings = self.tables(params, M, N), params
        outputs = {"clear_drive": True, "spike_rows": spike_rows, "spike_count": spike_count}
        if pop_counts is not None:
            outputs.update(population=population, pop_counts=pop_counts)
        self._launch(state, drive, settings, tables, n_steps, drive_offset, **outputs)

    def deliver(self, spikes: torch.Tensor, network: DeviceNetwork, out: torch.Tensor) -> None:
        if spikes.numel() == 0:
            return
        if not out.is_contiguous():
            raise ValueError("the drive tensor must be contiguous")
        self._ext.deliver(
            spikes.to(device=out.device, dtype=torch.int64).contiguous(), network.indptr.contiguous(),
            network.targets.contiguous(), network.weights.contiguous(), network.source_kind.contiguous(), out,
            self._stream(),
        )  # fmt: skip


class HipCpuKernelBackend(CudaKernelBackend):
    """The GPU kernels emulated on the CPU: backend ``"cuda_ext:hipcpu"`` on device ``cpu``.

    The same kernel source as :class:`CudaKernelBackend`, compiled by the host compiler
    against HIP-CPU (64-lane warps, one fiber per GPU thread, blocks in parallel through
    TBB) and run on CPU tensors; launches complete before they return.  For checking the
    kernels' logic without a GPU (docs/kernels.md), not for speed.
    """

    name = "cuda_ext:hipcpu"
    flavour = "hipcpu"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise BackendUnavailableError(
                f"the HIP-CPU build of the GPU kernels runs on device 'cpu', not {self.device}"
            )
        self._ext = load_hipcpu_extension()
        self._tables_cache = None

    def _stream(self) -> int:
        return 0  # unused: on HIP-CPU a launch runs to completion in the calling thread
