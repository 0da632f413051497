"""Custom C++/CUDA kernels for the `dtb` engine.

The kernels (a fused interval of neuron steps, integer synaptic delivery) are built on
first use and registered with :func:`dtb.sim.backends.get_backend` under the name
``"cuda_ext"`` through :func:`load_backend`: C++/OpenMP kernels on CPU devices
(:mod:`cuda_ext.loader`), CUDA kernels on CUDA devices (:mod:`cuda_ext.cuda_backend`,
built only with a CUDA build of torch, a GPU and nvcc).  Flavour ``"hipcpu"`` (backend
name ``"cuda_ext:hipcpu"``) is the GPU kernels' source compiled against HIP-CPU and run
on CPU tensors: an emulation for checking them without a GPU.
"""

from __future__ import annotations

import torch

from dtb.errors import BackendUnavailableError

__all__ = ["FLAVOURS", "build_error", "load_backend"]

#: Builds other than the default one per device type, by the name after ``cuda_ext:``.
FLAVOURS = ("hipcpu",)


def _check_flavour(flavour: str | None, device: torch.device) -> None:
    if flavour is None:
        return
    if flavour not in FLAVOURS:
        raise BackendUnavailableError(f"cuda_ext has no flavour {flavour!r}; choose one of {list(FLAVOURS)}")
    if device.type != "cpu":
        raise BackendUnavailableError(f"cuda_ext:{flavour} runs on device 'cpu' (an emulation), not {device}")


def build_error(device: str | torch.device = "cpu", flavour: str | None = None) -> str | None:
    """None when the kernels for ``device`` (and ``flavour``) can be loaded here, else why not (builds once)."""
    try:
        _check_flavour(flavour, torch.device(device))
    except BackendUnavailableError as exc:
        return str(exc)
    if flavour == "hipcpu":
        from cuda_ext.cuda_backend import hipcpu_build_error

        return hipcpu_build_error()
    if torch.device(device).type == "cuda":
        from cuda_ext.cuda_backend import cuda_build_error

        return cuda_build_error()
    from cuda_ext.loader import build_error as cpu_build_error

    return cpu_build_error()


def load_backend(device: str | torch.device = "cpu", flavour: str | None = None):
    """The ``cuda_ext`` backend for ``device`` (C++/OpenMP kernels on CPU, CUDA kernels on GPUs;
    ``flavour="hipcpu"``: the GPU kernels emulated on the CPU)."""
    dev = torch.device(device)
    _check_flavour(flavour, dev)
    if flavour == "hipcpu":
        from cuda_ext.cuda_backend import HipCpuKernelBackend

        return HipCpuKernelBackend(dev)
    if dev.type == "cuda":
        from cuda_ext.cuda_backend import CudaKernelBackend

        return CudaKernelBackend(dev)
    if dev.type != "cpu":
        raise BackendUnavailableError(f"cuda_ext has no kernels for device type {dev.type!r}; use backend 'torch'")
    from cuda_ext.loader import CpuKernelBackend

    return CpuKernelBackend(dev)
