"""Balloon-Windkessel haemodynamics (Friston et al. 2000), as in the DTB (docs/model.md §4).

Input ``u`` is the fraction of a voxel's (or region's) neurons that spiked in one 1 ms
step (floored at ``u_floor``).  States per (member, voxel): vasodilatory signal ``s``,
inflow ``f``, volume ``v`` and deoxyhaemoglobin ``q``::

    ds/dt = eps u - s/tau_s - (f - 1)/tau_f          df/dt = s
    tau_0 dv/dt = f - v^(1/alpha)
    tau_0 dq/dt = f (1 - (1 - E_0)^(1/f)) / E_0 - q v^(1/alpha - 1)
    y = V_0 [ 7 E_0 (1 - q) + 2 (1 - q/v) + (2 E_0 - 0.2)(1 - v) ]

integrated with forward Euler at ``dt_s`` = 1 ms from the resting state s = 0,
f = v = q = 1 (the DTB code starts q at 0, which makes a start-up transient; not copied).
Times in seconds.  Batched over any leading shape; float64.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np
import torch

from dtb import fpmath
from dtb.validation import check_in_range, check_positive

__all__ = [
    "BalloonParams",
    "BalloonState",
    "bold_signal",
    "balloon_step",
    "integrate_bold",
    "log_retained",
    "steady_state",
]


@dataclass(frozen=True)
class BalloonParams:
    """Balloon-Windkessel constants (times in s); defaults from docs/model.md §4."""

    eps: float = 200.0
    tau_s: float = 0.8
    tau_f: float = 0.4
    tau_0: float = 1.0
    alpha: float = 0.2
    E_0: float = 0.8
    V_0: float = 0.02
    dt_s: float = 0.001
    u_floor: float = 1e-5

    def __post_init__(self) -> None:
        for f in fields(self):
            check_positive(getattr(self, f.name), f"Balloon parameter {f.name}", requirement="a positive number")
        for name in ("E_0", "alpha"):
            check_in_range(getattr(self, name), f"Balloon parameter {name}", 0.0, 1.0, low_open=True, high_open=True)


@dataclass
class BalloonState:
    """Haemodynamic state tensors of one shape (e.g. (member, voxel))."""

    s: torch.Tensor
    f: torch.Tensor
    v: torch.Tensor
    q: torch.Tensor

    @classmethod
    def resting(cls, shape: tuple[int, ...], device: str | torch.device = "cpu") -> BalloonState:
        ones = torch.ones(shape, dtype=torch.float64, device=device)
        return cls(s=torch.zeros_like(ones), f=ones.clone(), v=ones.clone(), q=ones.clone())

    def clone(self) -> BalloonState:
        return BalloonState(self.s.clone(), self.f.clone(), self.v.clone(), self.q.clone())


def bold_signal(state: BalloonState, p: BalloonParams = BalloonParams()) -> torch.Tensor:
    """BOLD signal y of a state (dimensionless fractional change)."""
    E_0 = p.E_0
    return p.V_0 * (7.0 * E_0 * (1.0 - state.q) + 2.0 * (1.0 - state.q / state.v) + (2.0 * E_0 - 0.2) * (1.0 - state.v))


@functools.lru_cache(maxsize=8)
def log_retained(E_0: float) -> float:
    """log(1 - E_0), once per parameter set rather than every 1 ms step."""
    return fpmath.log(1.0 - E_0)


def balloon_step(state: BalloonState, u, p: BalloonParams = BalloonParams()) -> BalloonState:
    """One forward-Euler step of ``p.dt_s`` with input fraction ``u`` (same shape as the state).

    Works on torch tensors and on numpy arrays alike (float64).
    """
    u = torch.clamp(u.to(torch.float64), min=p.u_floor) if isinstance(u, torch.Tensor) else np.maximum(u, p.u_floor)
    s, f, v, q = state.s, state.f, state.v, state.q
    dt = p.dt_s
    v_pow = fpmath.pow(v, 1.0 / p.alpha)
    extraction = (1.0 - fpmath.exp(log_retained(p.E_0) / f)) / p.E_0  # (1 - E_0)^(1/f)
    f_new = f + dt * s
    v_new = v + dt * (f - v_pow) / p.tau_0
    q_new = q + dt * (f * extraction - q * v_pow / v) / p.tau_0
    # flow, volume and deoxyhaemoglobin are positive quantities: an assimilation update far
    # from the attractor (e.g. a large negative s) must not drive them through zero
    floor = p.u_floor
    if isinstance(f_new, torch.Tensor):
        f_new, v_new, q_new = (torch.clamp(x, min=floor) for x in (f_new, v_new, q_new))
    else:
        f_new, v_new, q_new = (np.maximum(x, floor) for x in (f_new, v_new, q_new))
    return BalloonState(s=s + dt * (p.eps * u - s / p.tau_s - (f - 1.0) / p.tau_f), f=f_new, v=v_new, q=q_new)


def integrate_bold(
    state: BalloonState, u_series: torch.Tensor, p: BalloonParams = BalloonParams()
) -> tuple[BalloonState, torch.Tensor]:
    """Integrate over ``u_series`` (time first, then the state's shape); return the final
    state and the BOLD signal after every step (same shape as ``u_series``).

    CPU tensors are integrated through numpy views (the same float64 arithmetic, without
    torch's per-operation overhead on small arrays); other devices stay in torch.
    """
    if u_series.device.type == "cpu":
        u_np = u_series.to(torch.float64).numpy()
        st = BalloonState(*(getattr(state, k).to(torch.float64).numpy() for k in ("s", "f", "v", "q")))
        y_np = np.empty(u_np.shape, dtype=np.float64)
        for t in range(u_np.shape[0]):
            st = balloon_step(st, u_np[t], p)
            y_np[t] = bold_signal(st, p)
        final = BalloonState(*(torch.from_numpy(np.ascontiguousarray(getattr(st, k))) for k in ("s", "f", "v", "q")))
        return final, torch.from_numpy(y_np)
    y = torch.empty(u_series.shape, dtype=torch.float64, device=u_series.device)
    for t in range(u_series.shape[0]):
        state = balloon_step(state, u_series[t], p)
        y[t] = bold_signal(state, p)
    return state, y


def steady_state(rate_hz: float, p: BalloonParams = BalloonParams()) -> dict[str, float]:
    """Fixed point for a constant firing rate [Hz] (u = rate * dt): s = 0,
    f = 1 + eps u tau_f, v = f^alpha, q = f E(f) / E_0 / v^(1/alpha - 1), and y."""
    u = max(rate_hz * p.dt_s, p.u_floor)
    f = 1.0 + p.eps * u * p.tau_f
    v = fpmath.pow(f, p.alpha)
    q = f * (1.0 - fpmath.pow(1.0 - p.E_0, 1.0 / f)) / p.E_0 / fpmath.pow(v, 1.0 / p.alpha - 1.0)
    state = BalloonState(*(torch.tensor(x, dtype=torch.float64) for x in (0.0, f, v, q)))
    return {"s": 0.0, "f": f, "v": v, "q": q, "bold": float(bold_signal(state, p))}
