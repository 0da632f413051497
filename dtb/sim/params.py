"""Typed, frozen model parameters of the spiking engine (docs/model.md §1-2).

Units: mV, ms, Hz.  Conductances and the capacitance share one unit system: either the
DTB's dimensionless one (C = 1, g_L = 0.03) or physical (C in pF with g in nS; then
currents are in pA).  The engine never converts units; it only needs them consistent.

Everything here is validated on construction, so an engine built from these objects can
trust every value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType

from dtb.errors import ParameterError
from dtb.validation import check_choice, check_integer, check_non_negative, check_number, check_positive

__all__ = [
    "Receptor",
    "DTB_RECEPTORS",
    "DTB_G",
    "NeuronParams",
    "ModelParams",
    "INTEGRATORS",
    "HYPERPARAMETERS",
]

INTEGRATORS = ("exponential_euler", "forward_euler")


def _finite(owner: str, name: str, value: float) -> float:
    return check_number(value, f"{owner}: {name}")


def _positive(owner: str, name: str, value: float) -> float:
    return check_positive(value, f"{owner}: {name}")


def _non_negative(owner: str, name: str, value: float) -> float:
    return check_non_negative(value, f"{owner}: {name}")


@dataclass(frozen=True)
class Receptor:
    """One synaptic receptor channel ``u``.

    ``dJ_u/dt = -J_u / tau_ms`` plus a jump of ``w`` per presynaptic spike of kind
    ``source_kind``; its current is ``g_u J_u (E_rev_mV - V)``.
    """

    name: str
    tau_ms: float  #: decay time constant [ms]
    E_rev_mV: float  #: reversal potential [mV]
    source_kind: str  #: "E" or "I": which presynaptic kind drives this channel

    def __post_init__(self) -> None:
        owner = f"receptor {self.name!r}"
        object.__setattr__(self, "tau_ms", _positive(owner, "tau_ms", self.tau_ms))
        object.__setattr__(self, "E_rev_mV", _finite(owner, "E_rev_mV", self.E_rev_mV))
        check_choice(self.source_kind, f"{owner}: source_kind", ("E", "I"))


#: The DTB's four channels (docs/model.md §1).
DTB_RECEPTORS = (
    Receptor("AMPA", 2.0, 0.0, "E"),
    Receptor("NMDA", 40.0, 0.0, "E"),
    Receptor("GABA_A", 10.0, -70.0, "I"),
    Receptor("GABA_B", 50.0, -100.0, "I"),
)

#: Calibrated g_u of the voxel E/I model at in-degree 100 (docs/model.md §1).
DTB_G = MappingProxyType({"AMPA": 6.16e-3, "NMDA": 9.0e-4, "GABA_A": 2.97e-2, "GABA_B": 1.91e-3})


@dataclass(frozen=True)
class NeuronParams:
    """Parameters of the neurons of one population (defaults: the DTB, docs/model.md §1-2).

    Attributes
    ----------
    C : membrane capacitance (1 in DTB units, or pF).
    g_L : leak conductance (same unit system as ``g``).
    V_L_mV, V_th_mV, V_reset_mV : leak reversal, threshold and reset potentials [mV].
    T_ref_ms : absolute refractory period [ms]; V is held at V_reset and input ignored.
    g : receptor name -> conductance scale g_u (multiplies J_u).
    ou_mu, ou_sigma : stationary mean and SD of the Ornstein-Uhlenbeck background current.
    ou_tau_ms : its correlation time [ms].
    poisson_rate_hz : rate of external Poisson spike input per neuron [Hz] (0 = none);
        each event adds ``poisson_weight / 255`` to every excitatory channel's J.
    poisson_weight : integer weight k in [0, 255] of one external Poisson event.
    i_ext : external current scale h; neuron i receives ``h * gain_i``.
    """

    C: float = 1.0
    g_L: float = 0.03
    V_L_mV: float = -75.0
    V_th_mV: float = -50.0
    V_reset_mV: float = -65.0
    T_ref_ms: float = 5.0
    g: Mapping[str, float] = field(default_factory=lambda: dict(DTB_G))
    ou_mu: float = 0.66
    ou_sigma: float = 0.12
    ou_tau_ms: float = 10.0
    poisson_rate_hz: float = 0.0
    poisson_weight: int = 255
    i_ext: float = 0.0

    def __post_init__(self) -> None:
        owner = "neuron parameters"
        for name in ("C", "g_L", "ou_tau_ms"):
            object.__setattr__(self, name, _positive(owner, name, getattr(self, name)))
        for name in ("V_L_mV", "V_th_mV", "V_reset_mV", "ou_mu", "i_ext"):
            object.__setattr__(self, name, _finite(owner, name, getattr(self, name)))
        for name in ("T_ref_ms", "ou_sigma", "poisson_rate_hz"):
            object.__setattr__(self, name, _non_negative(owner, name, getattr(self, name)))
        if self.V_reset_mV >= self.V_th_mV:
            raise ParameterError(f"{owner}: V_reset_mV ({self.V_reset_mV}) must be below V_th_mV ({self.V_th_mV})")
        k = check_integer(self.poisson_weight, f"{owner}: poisson_weight", 0, 255, fix="one event adds k/255 to J")
        object.__setattr__(self, "poisson_weight", k)
        if not isinstance(self.g, Mapping):
            raise ParameterError(f"{owner}: g must map receptor names to conductances, got {self.g!r}")
        g = {str(u): _non_negative(owner, f"g[{u!r}]", v) for u, v in self.g.items()}
        object.__setattr__(self, "g", MappingProxyType(g))

    def with_values(self, **changes) -> NeuronParams:
        """A copy with some fields changed (``g`` entries may be given as ``g_<receptor>``)."""
        g = dict(self.g)
        plain = {}
        for key, value in changes.items():
            if key.startswith("g_") and key != "g_L":
                g[key[2:]] = value
            else:
                plain[key] = value
        return replace(self, g=g, **plain)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


#: Per-population parameters an ensemble may vary across members (plus ``g_<receptor>``).
HYPERPARAMETERS = ("ou_mu", "ou_sigma", "i_ext", "poisson_rate_hz")


@dataclass(frozen=True)
class ModelParams:
    """The whole model: receptor channels, per-population neuron parameters, time grid.

    Parameters
    ----------
    populations : mapping population name -> NeuronParams
        Must name every population of the network it is used with.
    receptors : tuple of Receptor
        Channels in state order; each population's ``g`` must give all of them.
    dt_ms : integration step [ms].
    delay_ms : homogeneous synaptic delay [ms]; a positive multiple of ``dt_ms``.
        A spike emitted in step ``s`` enters its targets' J at the end of step ``s + D``.
    integrator : ``"exponential_euler"`` (default; exact for V over a step with the
        conductances and currents of the step's start) or ``"forward_euler"``.
    """

    populations: Mapping[str, NeuronParams]
    receptors: tuple[Receptor, ...] = DTB_RECEPTORS
    dt_ms: float = 0.1
    delay_ms: float = 1.0
    integrator: str = "exponential_euler"

    def __post_init__(self) -> None:
        owner = "model parameters"
        dt = _positive(owner, "dt_ms", self.dt_ms)
        delay = _positive(owner, "delay_ms", self.delay_ms)
        object.__setattr__(self, "dt_ms", dt)
        object.__setattr__(self, "delay_ms", delay)
        steps = delay / dt
        if not math.isfinite(steps) or abs(steps - round(steps)) > 1e-6 * max(1.0, steps) or round(steps) < 1:
            raise ParameterError(
                f"{owner}: delay_ms ({delay}) must be a positive integer multiple of dt_ms ({dt}); "
                f"it is {steps:.6g} steps. Choose e.g. delay_ms = "
                f"{max(1, round(steps)) * dt if math.isfinite(steps) else 1.0:g}."
            )
        check_choice(self.integrator, f"{owner}: integrator", INTEGRATORS)
        receptors = tuple(self.receptors)
        if not receptors:
            raise ParameterError(f"{owner}: at least one receptor channel is needed")
        names = [r.name for r in receptors]
        if len(set(names)) != len(names):
            raise ParameterError(f"{owner}: receptor names must be unique, got {names}")
        object.__setattr__(self, "receptors", receptors)
        if not isinstance(self.populations, Mapping) or not self.populations:
            raise ParameterError(f"{owner}: populations must map population names to NeuronParams")
        for pop, params in self.populations.items():
            if not isinstance(params, NeuronParams):
                raise ParameterError(f"{owner}: populations[{pop!r}] must be NeuronParams, got {type(params)}")
            missing = set(names) - set(params.g)
            unknown = set(params.g) - set(names)
            if missing or unknown:
                raise ParameterError(
                    f"population {pop!r}: g must give exactly the receptors {names}; "
                    f"missing {sorted(missing)}, unknown {sorted(unknown)}"
                )
            if params.T_ref_ms / dt - round(params.T_ref_ms / dt) > 1e-6:
                raise ParameterError(
                    f"population {pop!r}: T_ref_ms ({params.T_ref_ms}) must be a multiple of dt_ms ({dt})"
                )
        object.__setattr__(self, "populations", MappingProxyType(dict(self.populations)))

    @property
    def delay_steps(self) -> int:
        """The delay D in steps."""
        return int(round(self.delay_ms / self.dt_ms))

    @property
    def receptor_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.receptors)

    def hyperparameter_names(self) -> tuple[str, ...]:
        """Names accepted as ensemble hyperparameters: ``g_<receptor>`` and HYPERPARAMETERS."""
        return tuple(f"g_{u}" for u in self.receptor_names) + HYPERPARAMETERS

    def per_population(self, population_names: tuple[str, ...], name: str) -> list[float]:
        """The value of parameter ``name`` (a NeuronParams field or ``g_<receptor>``) per population."""
        values = []
        for pop in population_names:
            params = self.populations[pop]
            if name.startswith("g_") and name != "g_L":
                values.append(float(params.g[name[2:]]))
            else:
                values.append(float(getattr(params, name)))
        return values
