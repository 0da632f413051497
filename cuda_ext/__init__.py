"""Custom C++/CUDA kernels for the `dtb` engine.

The kernels (fused neuron substeps, spike compaction, integer synaptic delivery) are
built on first use and registered with :func:`dtb.sim.backends.get_backend` under the
name ``"cuda_ext"`` through a ``load_backend(device)`` function in this package.  Until
that function exists, ``get_backend("cuda_ext")`` reports that no kernels are available
and the torch reference backend is used.
"""
