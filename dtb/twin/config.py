"""The twin configuration: one YAML file, validated once, turned into frozen settings.

Sections (every key optional; unknown keys are errors)::

    seed: 1                     # the run's seed: graph, gains, members, filter, re-simulation derive from it
    backend: auto               # auto (cuda_ext where it builds, else torch) | torch | cuda_ext (C++/OpenMP, CUDA)
    device: cpu
    threads: 1                  # torch/OpenMP threads per process
    neurons_total: 10000        # neurons distributed over regions by their neuron counts
    model: {indegree: 50, weight_excitatory: 133, weight_inhibitory: 255, dt_ms: 0.1, wiring: dti, knn_k: 8, ...}
                                # dt_ms 0.1 is the reference; 1.0 is an approximation (docs/twin.md, "The model's step")
    assimilation:
      members: 8
      input_regions: thalamus   # "thalamus" | "interoceptive" | "all" | [label, ...]; sets per atlas: docs/data.md
      hyperparameter: i_ext
      lower: 0.01
      upper: 0.3
      h_bounds: fixed           # fixed: h in [lower, upper]; calibrated: measured on the network within them (docs/twin.md)
      warmup_windows: 10
      checkpoint_every: 10
      n_frames: null            # use only the first n frames of the run (null: all); docs/twin.md
      heldout_fraction: 0.0     # the last round(f * frames) frames: free forecast, h frozen, no analysis
      balloon_floor: 1.0e-5     # bounds of the Balloon states f, v, q the analysis writes back
      balloon_ceiling: 10.0
      balloon_update: bounded   # how the analysis updates f, v, q: bounded | linear (the DTB's) | log | none (docs/twin.md)
      filter: {rho: 0.8, obs_variance: 1.0e-8, random_walk_std: 1.0, variant: perturbed}
    observation: {low_hz: 0.01, high_hz: 0.1, detrend: true, scaling: minmax, scaling_params: {low: 0.02, high: 0.05}}
    resimulation: {record_seconds: 10.0}
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from dtb.assembly.settings import WIRINGS, ModelSettings
from dtb.assim.enkf import EnKFSettings
from dtb.assim.hmda import BALLOON_UPDATES, HMDASettings
from dtb.assim.observation import SCALINGS, get_scaling
from dtb.docstrings import fill_doc
from dtb.errors import ConfigError, DTBError
from dtb.io.atlases import INPUT_REGION_SETS, region_set_names, resolve_region_set
from dtb.seeds import derive_seed
from dtb.sim.params import DTB_RECEPTORS, HYPERPARAMETERS
from dtb.validation import (
    check_backend,
    check_choice,
    check_device_name,
    check_in_range,
    check_integer,
    check_positive,
    check_seed,
    check_unknown_keys,
)

__all__ = ["TwinConfig", "load_twin_config", "INPUT_SETS", "resolve_input_regions", "fit_warnings"]

log = logging.getLogger("dtb")

#: Named sets of input regions in AAL2 labels (docs/model.md §5); every atlas's sets: dtb.io.atlases.
INPUT_SETS = INPUT_REGION_SETS["AAL2"]

_TOP = {
    "seed",
    "backend",
    "device",
    "threads",
    "neurons_total",
    "model",
    "assimilation",
    "observation",
    "resimulation",
}
_ASSIM = {
    "members",
    "input_regions",
    "hyperparameter",
    "lower",
    "upper",
    "h_bounds",
    "warmup_windows",
    "checkpoint_every",
    "n_frames",
    "heldout_fraction",
    "balloon_floor",
    "balloon_ceiling",
    "balloon_update",
    "filter",
}
#: assimilation.h_bounds: the configured [lower, upper], or bounds calibrated on the network within them
H_BOUNDS = ("fixed", "calibrated")
_OBS = {"low_hz", "high_hz", "detrend", "scaling", "scaling_params"}
_RESIM = {"record_seconds"}


@fill_doc
@dataclass(frozen=True, kw_only=True)
class TwinConfig:
    """Everything a region-level twin run needs besides its input data (the YAML above, docs/twin.md).

    Attributes
    ----------
    %(seed)s
    %(backend)s
    %(device)s
    %(threads)s
    neurons_total : neurons of the whole twin, shared out over the regions by grey matter.
    model : the network and step (``model:`` section).
    members : ensemble size of the filter (>= 2).
    input_regions : the region set (``thalamus``, ``all``, ...) or the labels whose h is fitted.
    hmda : the assimilation settings (``assimilation:`` section and its ``filter:``).
    h_bounds : ``"fixed"`` (h within ``hmda.lower``, ``hmda.upper``) or ``"calibrated"`` (bounds measured
        on the twin's network within that search range, :mod:`dtb.twin.calibration`).
    n_frames : the first n BOLD frames are used (None: all).
    heldout_fraction : fraction of the frames, at the end, kept out of the assimilation [0, 1).
    low_hz, high_hz : band-pass of the observation [Hz] (None: that side off).
    detrend : remove a linear trend from the observation.
    scaling, scaling_params : the map of the BOLD onto the model's range (``observation:`` section).
    record_seconds : seconds of spikes the re-simulation keeps [s].
    """

    seed: int = 1
    backend: str = "auto"
    device: str = "cpu"
    threads: int = 1
    neurons_total: int = 10_000
    model: ModelSettings = field(default_factory=ModelSettings)
    members: int = 8
    input_regions: str | tuple[str, ...] = "thalamus"
    hmda: HMDASettings = field(default_factory=HMDASettings)
    h_bounds: str = "fixed"
    n_frames: int | None = None
    heldout_fraction: float = 0.0
    low_hz: float = 0.01
    high_hz: float = 0.1
    detrend: bool = True
    scaling: str = "minmax"
    scaling_params: dict = field(default_factory=lambda: {"low": 0.02, "high": 0.05})
    record_seconds: float = 10.0

    def __post_init__(self) -> None:
        error = ConfigError
        check_seed(self.seed, "seed", error=error)
        # the filter's seed is never set on its own: it follows the run seed (also after dataclasses.replace)
        filter_seed = derive_seed(self.seed, "filter")
        if self.hmda.enkf.seed != filter_seed:
            enkf = dataclasses.replace(self.hmda.enkf, seed=filter_seed)
            object.__setattr__(self, "hmda", dataclasses.replace(self.hmda, enkf=enkf))
        check_integer(self.members, "assimilation.members", 2, error=error, fix="the filter needs an ensemble")
        check_integer(
            self.n_frames,
            "assimilation.n_frames",
            1,
            2**63 - 1,
            whole_floats=False,
            allow_none=True,
            error=error,
            requirement="a whole number >= 1 (use the first n frames of the run) or null (all frames)",
        )
        check_in_range(self.heldout_fraction, "assimilation.heldout_fraction", 0.0, 1.0, high_open=True, error=error)
        check_positive(self.neurons_total, "neurons_total", integer=True, error=error)
        check_positive(self.threads, "threads", integer=True, error=error)
        check_backend(self.backend, error=error)
        check_choice(self.h_bounds, "assimilation.h_bounds", H_BOUNDS, error=error)
        if self.h_bounds == "calibrated" and self.scaling != "minmax":
            raise ConfigError(
                "assimilation.h_bounds: calibrated maps the observation's model range onto h and needs "
                f"observation.scaling: minmax (got {self.scaling!r}); use h_bounds: fixed with lower and upper"
            )
        if isinstance(self.input_regions, str) and self.input_regions not in region_set_names():
            raise ConfigError(
                f"assimilation.input_regions must be one of {region_set_names()} or a list of region labels, "
                f"got {self.input_regions!r}"
            )

    def describe(self) -> dict:
        out = asdict(self)
        out["hmda"] = self.hmda.describe()
        return out


_MODEL = {
    "indegree",
    "weight_excitatory",
    "weight_inhibitory",
    "dt_ms",
    "delay_ms",
    "min_excitatory",
    "min_inhibitory",
    "wiring",
    "knn_k",
}
_FILTER = {"obs_variance", "rho", "inflation", "random_walk_std", "variant"}
#: settings that no longer exist, and why (refused with this message rather than as unknown keys)
_RETIRED = {
    ("model", "graph_seed"): "model.graph_seed is no longer a setting: the graph's seed derives from the run's "
    "`seed` (dtb.seeds.derive_seed(seed, 'graph')); remove graph_seed and set the top-level seed",
    ("assimilation.filter", "seed"): "assimilation.filter.seed is not a setting: the filter's seed derives from the "
    "run's `seed` (dtb.seeds.derive_seed(seed, 'filter')); remove it and set the top-level seed",
}
_SEED_END = 2**63
#: hyperparameters the twin's engine accepts (``g_<receptor>`` and the background/external inputs)
HYPERPARAMETER_NAMES = tuple(f"g_{r.name}" for r in DTB_RECEPTORS) + HYPERPARAMETERS


def _section(values, name: str, allowed: set[str]) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section {name!r} must be a mapping, got {type(values).__name__} {values!r}")
    for key in values:
        if (name, key) in _RETIRED:
            raise ConfigError(_RETIRED[(name, key)])
    where = "at the top level" if name == "top level" else f"in config section {name!r}"
    check_unknown_keys(values, allowed, where=where)
    return dict(values)


def _integer(values: dict, key: str, name: str, default: int, low: int, high: int = 2**63 - 1) -> int:
    return check_integer(values.get(key, default), name, low, high, whole_floats=False, error=ConfigError)


def _number(
    values: dict, key: str, name: str, default, *, low=None, high=None, open_low=False, open_high=False, none=False
):
    value = values.get(key, default)
    return check_in_range(
        value, name, low, high, low_open=open_low, high_open=open_high, allow_none=none, error=ConfigError
    )


def _choice(values: dict, key: str, name: str, default: str, choices) -> str:
    return check_choice(values.get(key, default), name, choices, error=ConfigError)


def _input_regions(value) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if value not in region_set_names():
            raise ConfigError(
                f"assimilation.input_regions must be one of {region_set_names()} or a list of region labels, "
                f"got {value!r}"
            )
        return value
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(x, str) and x for x in value)
        or len(set(value)) != len(value)
    ):
        raise ConfigError(
            f"assimilation.input_regions must be one of {region_set_names()} or a list of distinct region labels "
            f"(strings), got {value!r}"
        )
    return tuple(value)


def _model(values: dict) -> ModelSettings:
    dt = _number(values, "dt_ms", "model.dt_ms", ModelSettings.dt_ms, low=0, open_low=True)
    delay = _number(values, "delay_ms", "model.delay_ms", 1.0, low=0, open_low=True)
    steps = delay / dt
    if not math.isfinite(steps) or abs(steps - round(steps)) > 1e-6 * max(1.0, steps) or round(steps) < 1:
        raise ConfigError(
            f"model.delay_ms ({delay:g}) must be a positive integer multiple of model.dt_ms ({dt:g}); it is "
            f"{steps:.6g} steps"
        )
    return ModelSettings(
        indegree=_integer(values, "indegree", "model.indegree", 50, 1),
        weight_excitatory=_integer(values, "weight_excitatory", "model.weight_excitatory", 133, 1, 255),
        weight_inhibitory=_integer(values, "weight_inhibitory", "model.weight_inhibitory", 255, 1, 255),
        dt_ms=dt,
        delay_ms=delay,
        min_excitatory=_integer(values, "min_excitatory", "model.min_excitatory", 8, 1),
        min_inhibitory=_integer(values, "min_inhibitory", "model.min_inhibitory", 2, 1),
        wiring=_choice(values, "wiring", "model.wiring", "dti", WIRINGS),
        knn_k=_integer(values, "knn_k", "model.knn_k", 8, 1),
    )


def _filter(values: dict, seed: int) -> EnKFSettings:
    name = "assimilation.filter."
    return EnKFSettings(
        obs_variance=_number(values, "obs_variance", name + "obs_variance", 1e-8, low=0, open_low=True),
        rho=_number(values, "rho", name + "rho", 0.8, low=0, high=1),
        inflation=_number(values, "inflation", name + "inflation", 1.0, low=1),
        random_walk_std=_number(values, "random_walk_std", name + "random_walk_std", 1.0, low=0),
        variant=_choice(values, "variant", name + "variant", "perturbed", ("perturbed", "sqrt")),
        seed=derive_seed(seed, "filter"),
    )


def _observation(values: dict) -> dict:
    low = _number(values, "low_hz", "observation.low_hz", 0.01, low=0, open_low=True, none=True)
    high = _number(values, "high_hz", "observation.high_hz", 0.1, low=0, open_low=True, none=True)
    if low is not None and high is not None and not low < high:
        raise ConfigError(f"observation.low_hz ({low:g}) must be below observation.high_hz ({high:g})")
    detrend = values.get("detrend", True)
    if not isinstance(detrend, bool):
        raise ConfigError(f"observation.detrend must be true or false, got {detrend!r}")
    scaling = _choice(values, "scaling", "observation.scaling", "minmax", sorted(SCALINGS))
    params = values.get("scaling_params", {"low": 0.02, "high": 0.05} if scaling == "minmax" else {})
    if not isinstance(params, dict):
        raise ConfigError(f"observation.scaling_params must be a mapping, got {params!r}")
    try:
        if not all(isinstance(k, str) for k in params):
            raise ConfigError(f"parameter names must be strings, got {sorted(map(repr, params))}")
        get_scaling(scaling, **params)  # checks names and values
    except DTBError as exc:
        raise ConfigError(f"observation.scaling_params (scaling {scaling!r}): {exc}") from None
    return {"low_hz": low, "high_hz": high, "detrend": detrend, "scaling": scaling, "scaling_params": dict(params)}


def _build(raw) -> TwinConfig:
    top = _section(raw, "top level", _TOP)
    assim = _section(top.pop("assimilation", None), "assimilation", _ASSIM)
    obs = _section(top.pop("observation", None), "observation", _OBS)
    resim = _section(top.pop("resimulation", None), "resimulation", _RESIM)
    model_values = _section(top.pop("model", None), "model", _MODEL)
    filter_values = _section(assim.pop("filter", None), "assimilation.filter", _FILTER)
    seed = check_seed(top.get("seed", 1), "seed", high=_SEED_END, error=ConfigError)
    device = check_device_name(top.get("device", "cpu"), error=ConfigError)
    lower = _number(assim, "lower", "assimilation.lower", 0.01)
    upper = _number(assim, "upper", "assimilation.upper", 0.3)
    if not lower < upper:
        raise ConfigError(f"assimilation.lower ({lower:g}) must be below assimilation.upper ({upper:g})")
    floor = _number(assim, "balloon_floor", "assimilation.balloon_floor", HMDASettings.clip, low=0, open_low=True)
    ceiling = _number(
        assim, "balloon_ceiling", "assimilation.balloon_ceiling", HMDASettings.clip_upper, low=0, open_low=True
    )
    if not floor < ceiling:
        raise ConfigError(
            f"assimilation.balloon_floor ({floor:g}) must be below assimilation.balloon_ceiling ({ceiling:g})"
        )
    hmda = HMDASettings(
        hyperparameter=_choice(assim, "hyperparameter", "assimilation.hyperparameter", "i_ext", HYPERPARAMETER_NAMES),
        lower=lower,
        upper=upper,
        warmup_windows=_integer(assim, "warmup_windows", "assimilation.warmup_windows", 10, 0),
        checkpoint_every=_integer(assim, "checkpoint_every", "assimilation.checkpoint_every", 10, 1),
        # bounds of the Balloon states f, v, q the analysis writes back (HMDASettings.clip, clip_upper)
        clip=floor,
        clip_upper=ceiling,
        balloon_update=_choice(
            assim, "balloon_update", "assimilation.balloon_update", HMDASettings.balloon_update, BALLOON_UPDATES
        ),
        enkf=_filter(filter_values, seed),
    )
    return TwinConfig(
        seed=seed,
        backend=check_backend(top.get("backend", "auto"), error=ConfigError),
        device=device,
        threads=_integer(top, "threads", "threads", 1, 1),
        neurons_total=_integer(top, "neurons_total", "neurons_total", 10_000, 1),
        model=_model(model_values),
        members=_integer(assim, "members", "assimilation.members", 8, 2),
        input_regions=_input_regions(assim.get("input_regions", "thalamus")),
        hmda=hmda,
        h_bounds=assim.get("h_bounds", "fixed"),  # checked by TwinConfig
        n_frames=assim.get("n_frames"),
        heldout_fraction=_number(
            assim, "heldout_fraction", "assimilation.heldout_fraction", 0.0, low=0, high=1, open_high=True
        ),
        **_observation(obs),
        # 0: keep no spikes (the report says so)
        record_seconds=_number(resim, "record_seconds", "resimulation.record_seconds", 10.0, low=0),
    )


#: Fewest ensemble members that fitted every held-out twin measured here (docs/experiments.md, scaling).
MIN_RELIABLE_MEMBERS = 8


def fit_warnings(config: TwinConfig) -> list[str]:
    """Settings that are valid but measured to fit badly; the run store lists them (the report shows them)."""
    out = []
    if config.members < MIN_RELIABLE_MEMBERS:
        out.append(
            f"assimilation.members is {config.members}: with fewer than {MIN_RELIABLE_MEMBERS} members the filter "
            "has failed held-out forecasts (4 members: 1-frame R^2 -6.7 where 8 gave 0.5-0.9, docs/experiments.md, "
            f"scaling); set assimilation.members to {MIN_RELIABLE_MEMBERS} or more for a twin to use"
        )
    return out


def load_twin_config(source: str | Path | dict | None = None) -> TwinConfig:
    """Build a :class:`TwinConfig` from a YAML file or a mapping (defaults for what is absent).

    Every key is checked (type and range, unknown keys refused) before anything runs.

    Raises
    ------
    ConfigError
        Naming the file (when read from one) and the key, e.g.
        ``twin.yaml: assimilation.members must be an integer >= 2 (at most 2**63 - 1), got 1``.
    """
    where = ""
    if source is None:
        raw: object = {}
    elif not isinstance(source, str | os.PathLike):
        raw = source  # a mapping (anything else is refused as "must be a mapping")
    else:
        path = Path(source)
        where = f"{path}: "
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc}); save it as UTF-8 text") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        raw = {} if raw is None else raw
    try:
        return _build(raw)
    except DTBError as exc:
        raise ConfigError(f"{where}{exc}") from None


def resolve_input_regions(config: TwinConfig, labels, atlas: str | None = None) -> list[int]:
    """Indices of the input regions among ``labels`` (errors name what is missing).

    A set name (``thalamus``, ``interoceptive``, ``all``) is resolved for the subject's ``atlas``
    (the ``atlas-<name>`` entity of its files; :func:`dtb.io.atlases.resolve_region_set`); a list
    of labels is taken as it is.
    """
    labels = [str(x) for x in labels]
    if isinstance(config.input_regions, str):
        wanted = resolve_region_set(config.input_regions, labels, atlas)
        log.info("input regions (%s, atlas %s): %s", config.input_regions, atlas, ", ".join(wanted))
        return [labels.index(x) for x in wanted]
    wanted = config.input_regions
    missing = [x for x in wanted if x not in labels]
    if missing:
        raise ConfigError(
            f"input region(s) {missing} are not among the subject's regions ({len(labels)} labels, e.g. "
            f"{labels[:4]}); give assimilation.input_regions as labels of this atlas"
        )
    return [labels.index(x) for x in wanted]
