"""Simulated DWI of the phantom (dipy ``single_tensor`` / ``multi_tensor`` + Rician ``add_noise``).

Signal model, S0 = 100:

- a voxel crossed by one bundle: one prolate tensor, eigenvalues (1.7, 0.3, 0.3) x 1e-3 mm^2/s
  along the bundle (FA about 0.80);
- a voxel crossed by several bundles: one such tensor per bundle with equal volume fractions;
- every other brain voxel: isotropic, D = 0.8e-3 mm^2/s (FA 0);
- outside the brain: no signal.

One b = 0 volume and one shell of ``n_directions`` directions spread by dipy's
electrostatic repulsion (``disperse_charges``).  Rician noise at ``snr`` (relative to S0) is
added by dipy's ``add_noise``; every random number comes from a numpy Philox generator keyed
by (seed, ``Stream.PHANTOM``, purpose), so a seed always gives the same images.
"""

from __future__ import annotations

import numpy as np

from dtb.philox import Stream

__all__ = ["S0", "FIBRE_EVALS", "ISOTROPIC_D", "gradient_scheme", "simulate_dwi", "phantom_rng"]

S0 = 100.0
FIBRE_EVALS = np.array([1.7e-3, 0.3e-3, 0.3e-3])
ISOTROPIC_D = 0.8e-3

_PURPOSE_DIRECTIONS, _PURPOSE_DWI_NOISE = 0, 1


def phantom_rng(seed: int, purpose: int) -> np.random.Generator:
    """A numpy Philox generator keyed by (seed, Stream.PHANTOM + 16 * purpose)."""
    return np.random.Generator(np.random.Philox(key=[int(seed), int(Stream.PHANTOM) + 16 * int(purpose)]))


def gradient_scheme(n_directions: int, bvalue: float, seed: int):
    """One b = 0 volume then ``n_directions`` unit directions at ``bvalue`` [s/mm^2].

    Returns
    -------
    (bvals, bvecs, gtab) : b-values (n + 1,), directions (n + 1, 3) with a zero row first,
        and the dipy GradientTable.
    """
    from dipy.core.gradients import gradient_table
    from dipy.core.sphere import HemiSphere, disperse_charges

    rng = phantom_rng(seed, _PURPOSE_DIRECTIONS)
    theta = np.pi * rng.random(n_directions)
    phi = 2 * np.pi * rng.random(n_directions)
    hemisphere, _ = disperse_charges(HemiSphere(theta=theta, phi=phi), 2000)
    bvecs = np.vstack([np.zeros((1, 3)), hemisphere.vertices])
    bvals = np.concatenate([[0.0], np.full(n_directions, float(bvalue))])
    return bvals, bvecs, gradient_table(bvals, bvecs=bvecs)


def simulate_dwi(
    gtab, brain: np.ndarray, fibres: dict[tuple[int, int, int], list[np.ndarray]], snr: float, seed: int
) -> np.ndarray:
    """DWI volumes (x, y, z, n_volumes) of the phantom; see the module docstring.

    Parameters
    ----------
    gtab : dipy GradientTable.
    brain : bool brain mask.
    fibres : voxel -> list of unit fibre directions (from :func:`~dtb.phantom.bundles.voxelise_bundles`).
    snr : S0 / noise SD.
    seed : noise seed.

    Returns
    -------
    float32 array.
    """
    from dipy.core.geometry import cart2sphere
    from dipy.sims.voxel import add_noise, all_tensor_evecs, multi_tensor, single_tensor

    n = len(gtab.bvals)
    data = np.zeros(brain.shape + (n,), dtype=np.float64)
    isotropic = single_tensor(gtab, S0=S0, evals=np.full(3, ISOTROPIC_D), evecs=np.eye(3))
    data[brain] = isotropic
    for voxel, directions in fibres.items():
        if len(directions) == 1:
            data[voxel] = single_tensor(gtab, S0=S0, evals=FIBRE_EVALS, evecs=all_tensor_evecs(directions[0]))
        else:
            angles = []
            for d in directions:
                _, theta, phi = cart2sphere(*d)
                angles.append((np.degrees(theta), np.degrees(phi)))
            fractions = [100.0 / len(directions)] * len(directions)
            signal, _ = multi_tensor(
                gtab, np.tile(FIBRE_EVALS, (len(directions), 1)), S0=S0, angles=angles, fractions=fractions, snr=None
            )
            data[voxel] = signal
    noisy = add_noise(data, snr, S0, noise_type="rician", rng=phantom_rng(seed, _PURPOSE_DWI_NOISE))
    return noisy.astype(np.float32)
