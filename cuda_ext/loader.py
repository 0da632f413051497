"""Build (once, cached) and load the C++ kernels, and wrap them as a dtb backend.

The extension is compiled on first use with :func:`torch.utils.cpp_extension.load` into
``~/.cache/dtb/cuda_ext/<torch version>/`` (or ``$DTB_CACHE_DIR/cuda_ext/...``), so later
runs only load the cached library.  Flags: ``-O3 -fopenmp -ffp-contract=off`` and no
``-ffast-math``: contraction to fused multiply-adds or reassociation would change float32
results and break bitwise agreement with the torch reference backend.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

from dtb.errors import BackendUnavailableError
from dtb.sim.backends.base import DeviceNetwork, EngineState, ExpandedParams, IntervalResult

__all__ = ["CpuKernelBackend", "build_error", "load_cpu_extension"]

_SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
#: headers the source includes; their contents enter the module name, so an edit rebuilds
_HEADERS = (Path(__file__).with_name("lif_common.h"),)
_NAME = "dtb_cuda_ext_cpu"
_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-fast-math"]
_lock = threading.Lock()
_module = None
_error: str | None = None


def build_directory() -> Path:
    root = Path(os.environ.get("DTB_CACHE_DIR") or Path.home() / ".cache" / "dtb")
    return root / "cuda_ext" / torch.__version__.replace("+", "_")


def module_name() -> str:
    """The extension's name: a digest of the source and headers, so stale builds never load."""
    digest = hashlib.sha256()
    for path in (_SOURCE, *_HEADERS):
        digest.update(path.read_bytes())
    return f"{_NAME}_{digest.hexdigest()[:12]}"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def load_cpu_extension():
    """The compiled module (building it on first use); raises BackendUnavailableError."""
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is not None:
            raise BackendUnavailableError(_error)
        from torch.utils import cpp_extension

        folder = build_directory()
        log = io.StringIO()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with redirect_stdout(log), redirect_stderr(log):
                _module = cpp_extension.load(
                    name=module_name(),
                    sources=[str(_SOURCE)],
                    extra_include_paths=[str(_SOURCE.parent)],
                    extra_cflags=_FLAGS,
                    extra_ldflags=["-fopenmp"],
                    build_directory=str(folder),
                    verbose=False,
                )
        except Exception as exc:  # compiler missing, compile error, ninja missing, ...
            detail = _tail(f"{log.getvalue()}\n{exc}")
            _error = (
                f"the cuda_ext C++ kernels could not be built in {folder}: {type(exc).__name__}:\n{detail}\n"
                "Use backend 'torch' (the reference backend needs no compiler)."
            )
            raise BackendUnavailableError(_error) from None
        return _module


def build_error() -> str | None:
    """None when the CPU kernels build (or are already built) here, else why not."""
    try:
        load_cpu_extension()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


class CpuKernelBackend:
    """The ``cuda_ext`` backend on a CPU device: fused C++/OpenMP kernels."""

    name = "cuda_ext"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise BackendUnavailableError(f"CpuKernelBackend runs on CPU devices only, not {self.device}")
        self._ext = load_cpu_extension()
        self._expanded_cache: tuple | None = None

    @staticmethod
    def _expanded(params: ExpandedParams, M: int, N: int) -> dict:
        """Per-neuron tables as contiguous (M, N) tensors.

        The engine replaces its ExpandedParams object whenever a parameter changes, never
        edits one in place, so :meth:`integrate` caches the tables per params object.
        """

        def mn(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            return t.to(dtype).expand(M, N).contiguous()

        f32, f64, i32, i64 = torch.float32, torch.float64, torch.int32, torch.int64
        return {
            "g": params.g.to(f32).expand(-1, M, N).contiguous(),
            "g_L": mn(params.g_L, f32),
            "gLVL": mn(params.gLVL, f32),
            "V_th": mn(params.V_th, f32),
            "V_reset": mn(params.V_reset, f32),
            "dt_over_C": mn(params.dt_over_C, f32),
            "n_ref": mn(params.n_ref, i32),
            "ou_a": mn(params.ou_a, f32),
            "ou_mu": mn(params.ou_mu, f32),
            "ou_b_sigma": mn(params.ou_b_sigma, f32),
            "i_ext": mn(params.i_ext, f32),
            "lam": mn(params.poisson_lam, f64),
            "p0": mn(params.poisson_p0, f64),
            "k": mn(params.poisson_k, i32),
            "decay": [float(x) for x in params.decay.reshape(-1).tolist()],
            "E_rev": [float(x) for x in params.E_rev],
            "kind": [int(x) for x in params.receptor_kind],
            "key0": params.keys[0].to(i64).reshape(-1).expand(M).contiguous(),
            "key1": params.keys[1].to(i64).reshape(-1).expand(M).contiguous(),
            "id_lo": params.neuron_ids[0].to(i64).reshape(-1).contiguous(),
            "id_hi": params.neuron_ids[1].to(i64).reshape(-1).contiguous(),
        }

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
        cache = self._expanded_cache
        if cache is None or cache[0] is not params or cache[1] != (M, N):
            cache = (params, (M, N), self._expanded(params, M, N))
            self._expanded_cache = cache
        p = cache[2]
        for name in ("V", "J", "I_ou", "refractory"):
            value = getattr(state, name)
            if not value.is_contiguous():
                setattr(state, name, value.contiguous())
        step0 = state.step
        every = max(int(sample_every), 1)
        sample_steps = (
            [s for s in range(step0, step0 + n_steps) if (s + 1) % every == 0] if sample_ids is not None else []
        )
        slot = torch.full((N,), -1, dtype=torch.int64)
        if sample_ids is not None and sample_steps:
            unique, inverse = torch.unique(sample_ids.to(torch.int64).cpu(), return_inverse=True)
            slot[unique] = torch.arange(len(unique), dtype=torch.int64)
            C = len(unique)
        else:
            inverse, C = None, 0
        S = len(sample_steps)
        V_s = torch.empty((S, M, C), dtype=torch.float32)
        J_s = torch.empty((S, M, R, C), dtype=torch.float32)
        Isyn_s = torch.empty((S, M, R, C), dtype=torch.float32)
        Ibg_s = torch.empty((S, M, C), dtype=torch.float32)
        spiked = self._ext.integrate(
            state.V, state.J, state.I_ou, state.refractory,
            drive if drive.is_contiguous() else drive.contiguous(), int(drive_offset),
            p["g"], p["g_L"], p["gLVL"], p["V_th"], p["V_reset"], p["dt_over_C"], p["n_ref"],
            p["ou_a"], p["ou_mu"], p["ou_b_sigma"], p["i_ext"], p["lam"], p["p0"], p["k"],
            int(params.poisson_max_events), p["decay"], p["E_rev"], p["kind"],
            p["key0"], p["key1"], p["id_lo"], p["id_hi"],
            params.integrator == "exponential_euler", bool(params.ou_on), bool(params.poisson_on),
            int(step0), int(n_steps), slot, every, V_s, J_s, Isyn_s, Ibg_s,
        )  # fmt: skip
        state.step += n_steps
        samples: dict[str, torch.Tensor] = {}
        if sample_ids is not None and S:
            samples = {
                "V": V_s[..., inverse],
                "J": J_s[..., inverse],
                "I_syn": Isyn_s[..., inverse],
                "I_bg": Ibg_s[..., inverse],
                "I_ext": p["i_ext"][:, sample_ids.cpu()].unsqueeze(0).expand(S, M, -1).clone(),
            }
        return IntervalResult(spiked, samples, sample_steps)

    def deliver(self, spikes: torch.Tensor, network: DeviceNetwork, out: torch.Tensor) -> None:
        if spikes.numel() == 0:
            return
        if not out.is_contiguous():
            raise ValueError("the drive tensor must be contiguous")
        self._ext.deliver(
            spikes, network.indptr.contiguous(), network.targets.contiguous(), network.weights.contiguous(),
            network.source_kind.contiguous(), out,
        )  # fmt: skip
