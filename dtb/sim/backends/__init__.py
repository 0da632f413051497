"""Simulation backends, selected by name.

``torch`` is the readable reference and runs on any torch device.  ``cuda_ext`` (custom
C++/CUDA kernels) plugs in here when it is built; asking for a backend that cannot run
here raises :class:`~dtb.errors.BackendUnavailableError` with the reason and the fix.
``cuda_ext:hipcpu`` (device ``cpu``) runs the GPU kernels emulated on the CPU by HIP-CPU,
to check them where no GPU is; ``auto`` never picks it.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from dtb import validation
from dtb.errors import BackendUnavailableError
from dtb.sim.backends.base import Backend, DeviceNetwork, EngineState, ExpandedParams, IntervalResult
from dtb.sim.backends.torch_backend import TorchBackend
from dtb.validation import BACKEND_NAMES

log = logging.getLogger("dtb")

__all__ = [
    "resolve_backend_name",
    "Backend",
    "DeviceNetwork",
    "EngineState",
    "ExpandedParams",
    "IntervalResult",
    "BACKEND_NAMES",
    "EMULATED_BACKENDS",
    "available_backends",
    "get_backend",
    "resolve_device",
]

#: Flavours of a backend that emulate another device, for checking only (never chosen by "auto").
EMULATED_BACKENDS = ("cuda_ext:hipcpu",)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when present, else CPU; validate explicit devices
    (:func:`dtb.validation.resolve_device`: ParameterError for a bad name, BackendUnavailableError for
    a CUDA device without a GPU)."""
    return validation.resolve_device(device)


def _cuda_ext_reason(device: torch.device | None = None, flavour: str | None = None) -> str | None:
    """None when the cuda_ext kernels for ``device`` (default CPU) can be loaded, else why not."""
    if importlib.util.find_spec("cuda_ext") is None:
        return "the cuda_ext package is not installed (pip install -e . from the repository)"
    import cuda_ext

    load = getattr(cuda_ext, "load_backend", None)
    if load is None:
        return "this checkout's cuda_ext provides no compiled kernels yet; use backend 'torch'"
    build_error = getattr(cuda_ext, "build_error", None)
    if build_error is None:
        return None
    if flavour is not None:
        return build_error(device or torch.device("cpu"), flavour)
    return build_error(device) if device is not None and device.type != "cpu" else build_error()


def available_backends() -> dict[str, str | None]:
    """Map every backend name to None (usable) or the reason it is not usable here."""
    return {"torch": None, "cuda_ext": _cuda_ext_reason()}


def resolve_backend_name(name: str, device: str | torch.device | None = None) -> str:
    """``"auto"`` -> ``"cuda_ext"`` when it can be used here (on ``device``, default CPU), else
    ``"torch"``; other names unchanged."""
    if name != "auto":
        return name
    reason = available_backends().get("cuda_ext") if device is None else _cuda_ext_reason(resolve_device(device))
    if reason is None:
        return "cuda_ext"
    log.info("backend auto: cuda_ext is not available here (%s); using the torch backend", reason)
    return "torch"


def get_backend(name: str, device: str | torch.device | None = "cpu") -> Backend:
    """Instantiate backend ``name`` on ``device``.

    Raises
    ------
    BackendUnavailableError
        When the name is unknown or the backend cannot run here; the message says why.
    """
    if name not in BACKEND_NAMES + EMULATED_BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of {list(BACKEND_NAMES)} "
            "(dtb.sim.available_backends() says which can run here)"
        )
    dev = resolve_device(device)
    if name == "torch":
        return TorchBackend(dev)
    flavour = name.partition(":")[2] or None
    reason = _cuda_ext_reason(dev, flavour)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")
    import cuda_ext

    return cuda_ext.load_backend(dev, flavour) if flavour else cuda_ext.load_backend(dev)
