"""Networks: populations and synapses (the graph the engine consumes) and their builders.

Building a twin's network (docs/model.md §3)::

    layout = make_layout(neuron_counts, connectome, NetworkConfig(model="laminar", seed=1))
    network = build_network(layout)                      # or build_block(layout, start, stop) per rank
    network = build_network(layout, threads=2)           # compiled C++ sampler, 2 OpenMP threads
    network = build_network(layout, device="cuda")       # torch sampler on a GPU: the same graph
    partition = partition_populations([p.size for p in layout.populations], layout.indegrees, n_ranks)
"""

from dtb.network.build import SynapseBlock, assemble_network, build_block, build_network
from dtb.network.gains import gamma_gains
from dtb.network.graph import KINDS, Network, Population
from dtb.network.layout import Layout, NetworkConfig, make_layout
from dtb.network.memory import MemoryEstimate, check_fits, estimate_rank_memory, plan_ranks
from dtb.network.partition import Partition, partition_populations
from dtb.network.populations import ei_model, laminar_model, neuron_counts_from_grey_matter

__all__ = [
    "KINDS",
    "Layout",
    "MemoryEstimate",
    "Network",
    "NetworkConfig",
    "Partition",
    "Population",
    "SynapseBlock",
    "assemble_network",
    "build_block",
    "build_network",
    "check_fits",
    "ei_model",
    "estimate_rank_memory",
    "gamma_gains",
    "laminar_model",
    "make_layout",
    "neuron_counts_from_grey_matter",
    "partition_populations",
    "plan_ranks",
]
