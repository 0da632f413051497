"""Small synthetic inputs for the network tests (one generator, shared)."""

from __future__ import annotations

import numpy as np

from dtb.network.layout import NetworkConfig, make_layout


def random_connectome(n_voxels: int, density: float = 1.0, seed: int = 0) -> np.ndarray:
    """Non-negative streamline counts with a zero diagonal and every row connected."""
    rng = np.random.default_rng(seed)
    c = rng.gamma(0.7, 10.0, (n_voxels, n_voxels)) * (rng.random((n_voxels, n_voxels)) < density)
    c[np.arange(n_voxels), (np.arange(n_voxels) + 1) % n_voxels] += 1.0
    np.fill_diagonal(c, 0.0)
    return c


def small_layout(model: str = "ei", n_voxels: int = 4, per_voxel: int = 1000, seed: int = 7, **config):
    defaults = dict(model=model, seed=seed, min_excitatory=1, min_inhibitory=1)
    defaults.update(config)
    return make_layout(np.full(n_voxels, per_voxel), random_connectome(n_voxels), NetworkConfig(**defaults))
