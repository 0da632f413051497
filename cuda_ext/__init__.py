"""Custom C++/CUDA kernels for the `dtb` engine.

The kernels (a fused interval of neuron steps, integer synaptic delivery) are built on
first use and registered with :func:`dtb.sim.backends.get_backend` under the name
``"cuda_ext"`` through :func:`load_backend`.  This version provides C++/OpenMP kernels for
CPU devices; on CUDA devices it reports that no CUDA kernels are built yet.
"""

from __future__ import annotations

import torch

from dtb.errors import BackendUnavailableError

__all__ = ["build_error", "load_backend"]


def build_error(device: str | torch.device = "cpu") -> str | None:
    """None when the kernels for ``device`` can be loaded here, else why not (builds once)."""
    if torch.device(device).type == "cuda":
        return "CUDA kernels not built in this version; use backend 'torch' on CUDA devices"
    from cuda_ext.loader import build_error as cpu_build_error

    return cpu_build_error()


def load_backend(device: str | torch.device = "cpu"):
    """The ``cuda_ext`` backend for ``device`` (C++/OpenMP kernels on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        raise BackendUnavailableError("CUDA kernels not built in this version; use backend 'torch' on CUDA devices")
    if dev.type != "cpu":
        raise BackendUnavailableError(f"cuda_ext has no kernels for device type {dev.type!r}; use backend 'torch'")
    from cuda_ext.loader import CpuKernelBackend

    return CpuKernelBackend(dev)
