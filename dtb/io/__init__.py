"""Input/output: stores (zarr/xarray) and, later, BIDS inputs and derivatives."""
