"""Networks: populations and synapses (the graph the engine consumes) and their builders."""

from dtb.network.graph import KINDS, Network, Population

__all__ = ["KINDS", "Network", "Population"]
