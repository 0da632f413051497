"""Custom C++/CUDA kernels for the `dtb` engine.

The kernels (a fused interval of neuron steps, integer synaptic delivery) are built on
first use and registered with :func:`dtb.sim.backends.get_backend` under the name
``"cuda_ext"`` through :func:`load_backend`: C++/OpenMP kernels on CPU devices
(:mod:`cuda_ext.loader`), CUDA kernels on CUDA devices (:mod:`cuda_ext.cuda_backend`,
built only with a CUDA build of torch, a GPU and nvcc).
"""

from __future__ import annotations

import torch

from dtb.errors import BackendUnavailableError

__all__ = ["build_error", "load_backend"]


def build_error(device: str | torch.device = "cpu") -> str | None:
    """None when the kernels for ``device`` can be loaded here, else why not (builds once)."""
    if torch.device(device).type == "cuda":
        from cuda_ext.cuda_backend import cuda_build_error

        return cuda_build_error()
    from cuda_ext.loader import build_error as cpu_build_error

    return cpu_build_error()


def load_backend(device: str | torch.device = "cpu"):
    """The ``cuda_ext`` backend for ``device`` (C++/OpenMP kernels on CPU, CUDA kernels on GPUs)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        from cuda_ext.cuda_backend import CudaKernelBackend

        return CudaKernelBackend(dev)
    if dev.type != "cpu":
        raise BackendUnavailableError(f"cuda_ext has no kernels for device type {dev.type!r}; use backend 'torch'")
    from cuda_ext.loader import CpuKernelBackend

    return CpuKernelBackend(dev)
