"""Per-neuron Gamma gains xi_i ~ Gamma(shape, rate) (docs/model.md §2 and §5), keyed by (seed, neuron id).

Drawn by Marsaglia and Tsang's method (ACM TOMS 26, 2000) from the Philox stream
``Stream.GAIN`` with counter ``(id_lo, id_hi, try + 64 * parameter_index, GAIN)``: try t
uses word 0 and 1 for a Box-Muller normal and word 2 for the acceptance uniform.  Every
operation is a correctly rounded float64 one or from :mod:`dtb.fpmath` (log, cos 2 pi u), so the
gains are the same bits on every machine.  At most
``max_tries`` tries are made (acceptance is about 0.98 per try for shape 5); a neuron that
is still rejected (probability < 1e-40 with the defaults) gets the mode-free fallback
``(shape - 1/3) / rate``.  The result depends only on (seed, id, parameter index).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dtb import fpmath
from dtb.errors import NetworkError
from dtb.philox import Stream, box_muller, philox4x32, split_seed, uniform_from_uint32

__all__ = ["gamma_gains"]


def gamma_gains(
    seed: int,
    neuron_ids,
    shape: float = 5.0,
    rate: float = 5.0,
    parameter_index: int = 0,
    max_tries: int = 24,
) -> np.ndarray:
    """Gamma(shape, rate) gains of the given neurons (mean shape/rate, variance shape/rate^2).

    Parameters
    ----------
    seed : graph/gain seed (non-negative int < 2**64).
    neuron_ids : int array, global neuron ids.
    shape, rate : Gamma shape (>= 1) and rate [1]; defaults give mean 1, variance 0.2.
    parameter_index : which assimilated parameter the gains are for (0..63 give independent sets).
    max_tries : bound on the rejection tries per neuron (<= 64).

    Returns
    -------
    ndarray of float64, shape (len(neuron_ids),)
    """
    if not (np.isfinite(shape) and shape >= 1.0) or not (np.isfinite(rate) and rate > 0):
        raise NetworkError(f"gamma_gains needs shape >= 1 and rate > 0, got shape={shape}, rate={rate}")
    if not 0 <= int(parameter_index) < 2**26 or not 1 <= int(max_tries) <= 64:
        raise NetworkError("gamma_gains: parameter_index must be in [0, 2**26) and max_tries in [1, 64]")
    ids = torch.as_tensor(np.asarray(neuron_ids, dtype=np.int64).ravel())
    key = split_seed(seed)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.full(ids.shape, d / rate, dtype=torch.float64)
    todo = torch.arange(ids.numel())
    for attempt in range(int(max_tries)):
        if todo.numel() == 0:
            break
        tid = ids[todo]
        w = philox4x32((tid & 0xFFFFFFFF, tid >> 32, attempt + 64 * int(parameter_index), int(Stream.GAIN)), key)
        u1, u2, u = (uniform_from_uint32(x) for x in w[:3])
        x = box_muller(u1, u2)
        t = 1.0 + c * x
        v = t * t * t
        ok = (v > 0) & (fpmath.log(u) < 0.5 * x * x + d - d * v + d * fpmath.log(v.clamp(min=1e-300)))
        out[todo[ok]] = d * v[ok] / rate
        todo = todo[~ok]
    return out.numpy()
