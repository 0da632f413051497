"""One run seed, many random streams: :func:`derive_seed` is the only way a stage turns its seed into
the seed of a particular stream (graph, gains, member noise, filter, re-simulation).

A run has one seed (``--seed N`` on every ``dtb`` command, ``seed: N`` in a twin config or in the
workflow config; they mean the same thing).  Each random stream of the run gets its own 63-bit
seed ``derive_seed(run_seed, purpose, index)``: one Philox4x32-10 block keyed by the run seed,
counter ``(purpose tag, index lo, index hi, Stream.SEED)``, words 0 and 1 joined and the top bit
cleared.  Only integer arithmetic is involved, so the derived seeds are the same on every machine,
and distinct purposes or indices give unrelated seeds (no ``seed + 1`` collisions between the
gains of one run and the graph of the next).

Purposes (their integer tags are part of the results: never renumber them):

=====================  ===  ==============================================================
purpose                tag  stream
=====================  ===  ==============================================================
``graph``                1  synapse sampling (twin, ``dtb network build``, ``dtb simulate``, phantom)
``gains``                2  Gamma gains of the assimilation ensemble (and of the phantom's twin)
``member``               3  noise and initial state of member ``index`` (``dtb simulate``, twin, phantom)
``filter``               4  the ensemble Kalman filter (initial ensemble, random walk, perturbations)
``resimulation``         5  noise and initial state of the re-simulated brain
``resimulation_gains``   6  the re-simulated brain's fresh Gamma gains
``wiring``               7  the ``model.wiring: random`` shuffle of the connectome
``heldout_h``            8  h drawn for a free run over held-out frames (docs/fidelity.md)
=====================  ===  ==============================================================
"""

from __future__ import annotations

from dtb.errors import ParameterError
from dtb.philox import Stream, philox4x32, split_seed

__all__ = ["PURPOSES", "SEED_SCHEME", "derive_seed", "derived_seeds"]

#: Version of the derivation; stores record it (``seed_scheme``) so an older store is recognised.
SEED_SCHEME = 1

#: Named streams and their Philox counter tags (fixed forever; append new ones).
PURPOSES = {
    "graph": 1,
    "gains": 2,
    "member": 3,
    "filter": 4,
    "resimulation": 5,
    "resimulation_gains": 6,
    "wiring": 7,
    "heldout_h": 8,
    "h_calibration": 9,
}

_MASK32 = 0xFFFFFFFF


def derive_seed(run_seed: int, purpose: str, index: int = 0) -> int:
    """The seed of stream ``purpose`` (and sub-stream ``index``, e.g. the member) of a run.

    Parameters
    ----------
    run_seed : the run's seed, an integer in [0, 2**64).
    purpose : one of :data:`PURPOSES`.
    index : non-negative integer < 2**64 (member index; 0 for streams that have one instance).

    Returns
    -------
    int in [0, 2**63): usable as a Philox key anywhere in dtb and storable as int64.
    """
    if isinstance(run_seed, bool) or int(run_seed) != run_seed:
        raise ParameterError(f"run seed must be an integer in [0, 2**64), got {run_seed!r}")
    key = split_seed(int(run_seed))
    if purpose not in PURPOSES:
        raise ParameterError(f"unknown seed purpose {purpose!r}; known: {sorted(PURPOSES)}")
    index = int(index)
    if not 0 <= index < 2**64:
        raise ParameterError(f"seed index must be an integer in [0, 2**64), got {index}")
    w0, w1, _, _ = philox4x32((PURPOSES[purpose], index & _MASK32, index >> 32, int(Stream.SEED)), key)
    return ((int(w1) << 32) | int(w0)) & (2**63 - 1)


def derived_seeds(run_seed: int, n_members: int = 0) -> dict:
    """Provenance: the run seed and every derived seed of a run (``n_members`` member seeds)."""
    out = {"run": int(run_seed), "scheme": SEED_SCHEME}
    for purpose in PURPOSES:
        if purpose != "member":
            out[purpose] = derive_seed(run_seed, purpose)
    out["members"] = [derive_seed(run_seed, "member", m) for m in range(int(n_members))]
    return out
