"""Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11, "Random123").

Every random number in `dtb` is a pure function of ``(key, counter)``: the key is the
64-bit seed, the counter names *what* the number is for (a neuron id, a step, a stream
tag).  Nothing depends on which process or thread draws it, or in which order, so
simulations are reproducible across rank counts, thread counts and ensemble layouts.

Counter layout used throughout the project (four 32-bit words)::

    c0 = low 32 bits of the global neuron id     c1 = high 32 bits of the neuron id
    c2 = step index (or draw index)              c3 = stream tag (see ``Stream``)

The arithmetic is done on int64 torch tensors holding uint32 values, so it runs on any
torch device.
The C++ and CUDA backends implement the same function on native uint32.
"""

from __future__ import annotations

import enum

import torch

from dtb import fpmath
from dtb.errors import ParameterError

__all__ = [
    "Stream",
    "philox4x32",
    "uniform_from_uint32",
    "normal_from_uint32",
    "box_muller",
    "split_seed",
    "standard_normals",
]

_MASK32 = 0xFFFFFFFF
_M0 = 0xD2511F53
_M1 = 0xCD9E8D57
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_ROUNDS = 10


class Stream(enum.IntEnum):
    """Stream tags (counter word c3): independent random streams per purpose."""

    STEP = 0  #: per-step noise of a neuron: OU normal (words 0, 1) and Poisson uniform (word 2)
    INITIAL_STATE = 1  #: initial membrane potential
    GRAPH = 2  #: synapse sampling (c2 = draw index, c3 = GRAPH + 16 * projection index)
    GAIN = 3  #: per-neuron parameter heterogeneity (Gamma gains)
    ASSIMILATION = 4  #: filter noise (c0 = member, c1 = location, c2 = window, c3 = 4 + 16 * purpose)
    PHANTOM = 5  #: phantom-subject synthesis (observation noise, h(t) tracks; c3 = 5 + 16 * purpose)
    SEED = 6  #: derivation of a stream's seed from the run seed (dtb.seeds: c0 = purpose, c1, c2 = index)


def split_seed(seed: int) -> tuple[int, int]:
    """Split a non-negative seed (< 2**64) into the two 32-bit Philox key words."""
    seed = int(seed)
    if seed < 0 or seed >= 2**64:
        raise ParameterError(f"seed must be an integer in [0, 2**64), got {seed}")
    return seed & _MASK32, (seed >> 32) & _MASK32


def _mulhilo(a: torch.Tensor, multiplier: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (hi, lo) 32-bit words of ``a * multiplier`` for uint32 values held in int64.

    The int64 product wraps modulo 2**64, so its bit pattern is exactly the unsigned
    64-bit product (< 2**64); the words are read off with a shift and a mask (the
    Random123 known-answer vectors in the tests guard this).
    """
    product = a * multiplier
    return (product >> 32) & _MASK32, product & _MASK32


def philox4x32(
    counter: tuple[torch.Tensor | int, ...], key: tuple[torch.Tensor | int, torch.Tensor | int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 block function.

    Parameters
    ----------
    counter : 4 tensors (or ints) of uint32 values in int64, broadcastable together
        The counter words ``(c0, c1, c2, c3)``.
    key : 2 tensors (or ints) of uint32 values in int64, broadcastable with the counter
        The key words ``(k0, k1)``, usually from :func:`split_seed`.

    Returns
    -------
    tuple of 4 int64 tensors
        Four independent uniformly distributed 32-bit words (values in [0, 2**32)).
    """
    # plain ints go to the device of the tensors given (a CPU word broadcast against CUDA
    # tensors would no longer be a 0-dim scalar, and mixing devices would fail)
    device = next((w.device for w in (*counter, *key) if isinstance(w, torch.Tensor)), None)
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64, device=device) for c in counter)
    k0, k1 = (torch.as_tensor(k, dtype=torch.int64, device=device) for k in key)
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for round_index in range(_ROUNDS):
        if round_index:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def uniform_from_uint32(word: torch.Tensor) -> torch.Tensor:
    """Map 32-bit words to float64 uniforms in the open interval (0, 1): ``(w + 0.5) / 2**32``."""
    return (word.to(torch.float64) + 0.5) * (1.0 / 4294967296.0)


def normal_from_uint32(word_a: torch.Tensor, word_b: torch.Tensor) -> torch.Tensor:
    """Standard normal deviates (float32) by Box-Muller from two 32-bit words.

    ``z = sqrt(-2 ln u_a) cos(2 pi u_b)``, evaluated in float64 with the machine-independent
    :func:`dtb.fpmath.log` and :func:`dtb.fpmath.cos_2pi` (the same operations as
    ``normal_from_uint32`` of cuda_ext/lif_common.h) and rounded once to float32.
    """
    return box_muller(uniform_from_uint32(word_a), uniform_from_uint32(word_b)).to(torch.float32)


def box_muller(u_a: torch.Tensor, u_b: torch.Tensor) -> torch.Tensor:
    """float64 ``sqrt(-2 ln u_a) cos(2 pi u_b)`` of uniforms in (0, 1), identical on every machine."""
    return torch.sqrt(-2.0 * fpmath.log(u_a)) * fpmath.cos_2pi(u_b)


def standard_normals(seed: int, stream: Stream, purpose: int, c2: int, shape: tuple[int, int]) -> torch.Tensor:
    """A (rows, cols) float64 block of N(0, 1) deviates keyed by (seed, row, col, c2, stream, purpose).

    Row index goes to counter word c0, column index to c1, ``c2`` names the draw (e.g. the
    assimilation window), and c3 = ``stream + 16 * purpose``.  The same call always returns the
    same numbers, whatever else was drawn before: resumed runs repeat them bitwise.
    """
    rows, cols = int(shape[0]), int(shape[1])
    key = split_seed(seed)
    r = torch.arange(rows, dtype=torch.int64)[:, None].expand(rows, cols)
    c = torch.arange(cols, dtype=torch.int64)[None, :].expand(rows, cols)
    c2_t = torch.full((rows, cols), int(c2) & 0xFFFFFFFF, dtype=torch.int64)
    c3_t = torch.full((rows, cols), (int(stream) + 16 * int(purpose)) & 0xFFFFFFFF, dtype=torch.int64)
    w0, w1, _, _ = philox4x32((r, c, c2_t, c3_t), key)
    return box_muller(uniform_from_uint32(w0), uniform_from_uint32(w1))
