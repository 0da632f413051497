"""Imaging stages: anatomy (GM, neuron counts), diffusion (connectomes), function (time series)."""
