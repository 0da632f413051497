"""The spiking engine: conductance LIF neurons with OU background, ensembles, recording."""

from dtb.sim.backends import available_backends, get_backend
from dtb.sim.engine import Ensemble, Simulation
from dtb.sim.params import DTB_G, DTB_RECEPTORS, ModelParams, NeuronParams, Receptor
from dtb.sim.recording import RecordSpec

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
