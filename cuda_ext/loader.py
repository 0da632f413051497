"""Load the C++ CPU kernels (built once through :mod:`dtb.kernel_build`) and wrap them as a dtb backend.

Sources: ``cpu_kernels.cpp`` (the kernels: plain C++ and OpenMP on raw pointers, no torch header,
interface ``cpu_kernels.h``) and ``cpu_binding.cpp`` (the torch binding: shape, dtype and
device checks, then pointers to the kernels). The build, its cache, key, flags, lock, log line
and failure message are :mod:`dtb.kernel_build`'s; this module only names the sources and the
flavour's flags: the contract's ``-ffp-contract=off -fno-fast-math`` (no fused multiply-adds,
no reassociation: either would change float32 results and break bitwise agreement with the
torch reference backend), ``-O3 -fopenmp``.

Two flavours: ``x86-64-v3`` (``-march=x86-64-v3``: AVX2 8-lane blocks, cpu_block.h) where
the CPU has AVX2 and FMA (as torch's own dispatch reports), else ``generic`` (scalar code
only).  Both compute the same bits; ``DTB_CPU_KERNELS=generic`` forces the generic build.
"""

from __future__ import annotations

import os
import platform
import threading
from pathlib import Path

import torch

from dtb.errors import BackendUnavailableError
from dtb.kernel_build import HOST_CFLAGS, KernelBuild, load_torch_extension
from dtb.sim.backends.base import DeviceNetwork, EngineState, ExpandedParams, IntervalResult
from dtb.sim.backends.poisson_tables import poisson_tables

__all__ = ["CPU_SOURCES", "CpuKernelBackend", "build_error", "cpu_build", "flavour", "load_cpu_extension"]

_HERE = Path(__file__).parent
#: Sources of the CPU extension: the kernels, then their torch binding.
CPU_SOURCES = (_HERE / "cpu_kernels.cpp", _HERE / "cpu_binding.cpp")
_lock = threading.Lock()
_module = None
_error: str | None = None


_FLAVOURS = {"x86-64-v3": ("-march=x86-64-v3",), "generic": ()}


def flavour() -> str:
    """``"x86-64-v3"`` where this CPU runs AVX2 + FMA code, else ``"generic"`` (env DTB_CPU_KERNELS overrides)."""
    forced = os.environ.get("DTB_CPU_KERNELS", "").strip()
    if forced:
        if forced not in _FLAVOURS:
            raise BackendUnavailableError(f"DTB_CPU_KERNELS={forced!r} is not one of {sorted(_FLAVOURS)}")
        return forced
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic"
    capability = torch.backends.cpu.get_cpu_capability()  # "DEFAULT", "AVX2", "AVX512", ...
    return "x86-64-v3" if capability.startswith(("AVX2", "AVX512")) else "generic"


def cpu_build() -> KernelBuild:
    """The build of the CPU kernels for this machine's flavour."""
    kind = flavour()
    return KernelBuild(
        slug=f"cuda_ext-cpu-{kind}",
        what="the cuda_ext C++ kernels",
        label=f"cuda_ext CPU, {kind}",
        fix="Use backend 'torch' (the reference backend needs no compiler).",
        sources=CPU_SOURCES,
        include_dirs=(_HERE,),
        cflags=(*HOST_CFLAGS, "-fopenmp", *_FLAVOURS[kind]),
        ldflags=("-fopenmp",),
        expected_s=60.0,
    )


def load_cpu_extension():
    """The compiled module (building it on first use); raises BackendUnavailableError."""
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is not None:
            raise BackendUnavailableError(_error)
        try:
            _module = load_torch_extension(cpu_build())
        except BackendUnavailableError as exc:
            _error = str(exc)
            raise
        return _module


def build_error() -> str | None:
    """None when the CPU kernels build (or are already built) here, else why not."""
    try:
        load_cpu_extension()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def words_as_int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 values held in int64 -> the same bit patterns as a flat int32 tensor."""
    flat = words.to(torch.int64).reshape(-1)
    return torch.where(flat >= 2**31, flat - 2**32, flat).to(torch.int32).contiguous()


def _members_equal(t: torch.Tensor) -> bool:
    """Whether every member row (dim -2) of a (..., 1 or M, N) table is bitwise the first row."""
    if t.shape[-2] == 1:
        return True
    bits = t.view(torch.int64 if t.element_size() == 8 else torch.int32) if t.is_floating_point() else t
    return bool(torch.equal(bits, bits.narrow(-2, 0, 1).expand_as(bits)))


class CpuKernelBackend:
    """The ``cuda_ext`` backend on a CPU device: fused C++/OpenMP kernels."""

    name = "cuda_ext"
    consumes_drive = True  #: integrate zeroes the drive slots it reads

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise BackendUnavailableError(f"CpuKernelBackend runs on CPU devices only, not {self.device}")
        self._ext = load_cpu_extension()
        self._expanded_cache: tuple | None = None
        self._no_samples: torch.Tensor | None = None
        self._empty_int32 = torch.zeros(0, dtype=torch.int32)
        self._empty_samples = tuple(torch.empty(0, dtype=torch.float32) for _ in range(4))

    @property
    def kernels(self):
        """The compiled module (its ``balloon_window_counts`` integrates a twin window's BOLD)."""
        return self._ext

    @staticmethod
    def _expanded(params: ExpandedParams, M: int, N: int) -> dict:
        """Per-neuron tables as contiguous tensors, (1, N) where all members share them.

        A table that differs between members is (M, N); one that does not stays (1, N) and
        the kernel reads it with member stride 0, so an ensemble reads it once per neuron
        rather than once per member.  ``member_strides`` lists the strides in the kernel's
        order.  The engine replaces its ExpandedParams object whenever a parameter changes,
        never edits one in place, so :meth:`integrate` caches the tables per params object.
        """

        def table(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            t = t.to(dtype)
            return (t.narrow(-2, 0, 1) if _members_equal(t) else t).contiguous()

        def member_stride(t: torch.Tensor) -> int:
            return N if t.shape[-2] == M and M > 1 else 0

        f32, i32, i64 = torch.float32, torch.int32, torch.int64
        lam, p0 = params.poisson_lam, params.poisson_p0
        if _members_equal(lam) and _members_equal(p0):
            lam, p0 = lam.narrow(-2, 0, 1), p0.narrow(-2, 0, 1)
        poisson = poisson_tables(lam, p0, params.poisson_max_events, (lam.shape[-2], N))
        tables = {
            "g_L": table(params.g_L, f32),
            "gLVL": table(params.gLVL, f32),
            "V_th": table(params.V_th, f32),
            "V_reset": table(params.V_reset, f32),
            "dt_over_C": table(params.dt_over_C, f32),
            "n_ref": table(params.n_ref, i32),
            "ou_a": table(params.ou_a, f32),
            "ou_mu": table(params.ou_mu, f32),
            "ou_b_sigma": table(params.ou_b_sigma, f32),
            "i_ext": table(params.i_ext, f32),
            "k": table(params.poisson_k, i32),
        }
        g = table(params.g, f32)
        return {
            **tables,
            "g": g,
            "poisson": poisson,
            # the kernel's order: the tables above, the Poisson table index, g
            "member_strides": [member_stride(t) for t in (*tables.values(), poisson.index, g)],
            "decay": [float(x) for x in params.decay.reshape(-1).tolist()],
            "E_rev": [float(x) for x in params.E_rev],
            "kind": [int(x) for x in params.receptor_kind],
            "key0": params.keys[0].to(i64).reshape(-1).expand(M).contiguous(),
            "key1": params.keys[1].to(i64).reshape(-1).expand(M).contiguous(),
            # uint32 id words as int32 bit patterns
            "id_lo": words_as_int32(params.neuron_ids[0]),
            "id_hi": words_as_int32(params.neuron_ids[1]),
        }

    def _prepared(self, state: EngineState, params: ExpandedParams) -> dict:
        """The kernel's tables for ``params`` (cached per params object); state made contiguous."""
        M, N = state.V.shape
        cache = self._expanded_cache
        if cache is None or cache[0] is not params or cache[1] != (M, N):
            cache = (params, (M, N), self._expanded(params, M, N))
            self._expanded_cache = cache
        for name in ("V", "J", "I_ou", "refractory"):
            value = getattr(state, name)
            if not value.is_contiguous():
                setattr(state, name, value.contiguous())
        return cache[2]

    def _no_sample_slots(self, N: int) -> torch.Tensor:
        if self._no_samples is None or self._no_samples.numel() != N:
            self._no_samples = torch.full((N,), -1, dtype=torch.int64)
        return self._no_samples

    def _run(self, state, drive, params, p, n_steps, drive_offset, slot, every, samples, counting) -> torch.Tensor:
        if not drive.is_contiguous():
            raise ValueError("the drive tensor must be contiguous (integrate zeroes the slots it reads)")
        pt = p["poisson"]
        rows = self._ext.integrate(
            state.V, state.J, state.I_ou, state.refractory, drive, int(drive_offset), True,
            p["g"], p["g_L"], p["gLVL"], p["V_th"], p["V_reset"], p["dt_over_C"], p["n_ref"],
            p["ou_a"], p["ou_mu"], p["ou_b_sigma"], p["i_ext"], p["k"],
            pt.index, p["member_strides"], pt.base, pt.length, pt.thresholds, p["decay"], p["E_rev"], p["kind"],
            p["key0"], p["key1"], p["id_lo"], p["id_hi"],
            params.integrator == "exponential_euler", bool(params.ou_on), bool(params.poisson_on),
            int(state.step), int(n_steps), slot, every, *samples, *counting,
        )  # fmt: skip
        state.step += n_steps
        return rows

    def integrate_counts(
        self,
        state: EngineState,
        drive: torch.Tensor,
        params: ExpandedParams,
        n_steps: int,
        drive_offset: int,
        counts: torch.Tensor,
        population: torch.Tensor,
        count_phase: int,
        count_bin_steps: int,
    ) -> torch.Tensor:
        """Advance ``state`` by ``n_steps`` and count spikes per (bin, member, population) in the kernel.

        The lean path of a twin window (:meth:`dtb.sim.engine.Simulation.run_counts`): no samples,
        no recorder. ``counts`` (B, M, P) int32 is added to: step ``t`` of the call counts into bin
        ``(count_phase + t) // count_bin_steps``; ``population`` (N,) int32 is each neuron's
        population. Returns the spike rows (step in the call, member, neuron), as ``integrate``.
        """
        p = self._prepared(state, params)
        N = state.V.shape[1]
        empty = self._empty_samples
        return self._run(
            state, drive, params, p, n_steps, drive_offset, self._no_sample_slots(N), 1, empty,
            (population, counts, int(count_phase), int(count_bin_steps)),
        )  # fmt: skip

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
        p = self._prepared(state, params)
        step0 = state.step
        every = max(int(sample_every), 1)
        sample_steps = (
            [s for s in range(step0, step0 + n_steps) if (s + 1) % every == 0] if sample_ids is not None else []
        )
        if sample_ids is not None and sample_steps:
            slot = torch.full((N,), -1, dtype=torch.int64)
            unique, inverse = torch.unique(sample_ids.to(torch.int64).cpu(), return_inverse=True)
            slot[unique] = torch.arange(len(unique), dtype=torch.int64)
            C = len(unique)
        else:
            slot, inverse, C = self._no_sample_slots(N), None, 0
        S = len(sample_steps)
        V_s = torch.empty((S, M, C), dtype=torch.float32)
        J_s = torch.empty((S, M, R, C), dtype=torch.float32)
        Isyn_s = torch.empty((S, M, R, C), dtype=torch.float32)
        Ibg_s = torch.empty((S, M, C), dtype=torch.float32)
        no_counts = (self._empty_int32, self._empty_int32, 0, 1)
        rows = self._run(
            state, drive, params, p, n_steps, drive_offset, slot, every, (V_s, J_s, Isyn_s, Ibg_s), no_counts
        )
        samples: dict[str, torch.Tensor] = {}
        if sample_ids is not None and S:
            samples = {
                "V": V_s[..., inverse],
                "J": J_s[..., inverse],
                "I_syn": Isyn_s[..., inverse],
                "I_bg": Ibg_s[..., inverse],
                "I_ext": p["i_ext"][:, sample_ids.cpu()].unsqueeze(0).expand(S, M, -1).clone(),
            }
        return IntervalResult(None, samples, sample_steps, spike_rows=rows)

    def deliver(self, spikes: torch.Tensor, network: DeviceNetwork, out: torch.Tensor) -> None:
        if spikes.numel() == 0:
            return
        if not out.is_contiguous():
            raise ValueError("the drive tensor must be contiguous")
        self._ext.deliver(
            spikes, network.indptr.contiguous(), network.targets.contiguous(), network.weights.contiguous(),
            network.source_kind.contiguous(), out,
        )  # fmt: skip
