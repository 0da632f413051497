"""The spiking engine: conductance LIF neurons with OU background, ensembles, recording.

The names below load their modules on first use (PEP 562), so that ``dtb.sim.analysis`` or
``dtb.sim.bold`` (numpy only) do not pull in torch: ``dtb report`` reads spike statistics with
them and stays about 180 MB smaller for it (bench/report_scale.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - for type checkers and readers only
    from dtb.sim.backends import available_backends, get_backend
    from dtb.sim.engine import Ensemble, Simulation
    from dtb.sim.params import DTB_G, DTB_RECEPTORS, ModelParams, NeuronParams, Receptor
    from dtb.sim.recording import RecordSpec

#: exported name -> the module defining it
_LAZY = {
    "available_backends": "dtb.sim.backends",
    "get_backend": "dtb.sim.backends",
    "Ensemble": "dtb.sim.engine",
    "Simulation": "dtb.sim.engine",
    "DTB_G": "dtb.sim.params",
    "DTB_RECEPTORS": "dtb.sim.params",
    "ModelParams": "dtb.sim.params",
    "NeuronParams": "dtb.sim.params",
    "Receptor": "dtb.sim.params",
    "RecordSpec": "dtb.sim.recording",
}

__all__ = [
    "DTB_G",
    "DTB_RECEPTORS",
    "Ensemble",
    "ModelParams",
    "NeuronParams",
    "Receptor",
    "RecordSpec",
    "Simulation",
    "available_backends",
    "get_backend",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'dtb.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
