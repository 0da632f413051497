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


def network_build_cli_args(tmp_path) -> list[str]:
    """``dtb network build`` arguments for a 3-voxel network (900/700/1100 neurons, 2 ranks, seed 9);
    writes its counts and connectome into ``tmp_path``."""
    import scipy.sparse as sp

    counts, sc = tmp_path / "counts.npy", tmp_path / "sc.npz"
    np.save(counts, np.array([900, 700, 1100]))
    sp.save_npz(sc, sp.csr_matrix(random_connectome(3, seed=2)))
    return ["network", "build", "--counts", str(counts), "--connectome", str(sc), "--ranks", "2", "--seed", "9"]
