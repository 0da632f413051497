"""The twin configuration: one YAML file, validated once, turned into frozen settings.

Sections (every key optional; unknown keys are errors)::

    seed: 1                     # the run's seed: graph, gains, members, filter, re-simulation derive from it
    backend: cuda_ext           # torch | cuda_ext (C++/OpenMP on CPU, CUDA on GPU) | auto
    device: cpu
    threads: 1                  # torch/OpenMP threads per process
    neurons_total: 10000        # neurons distributed over regions by their neuron counts
    model: {indegree: 50, weight_excitatory: 133, weight_inhibitory: 255, dt_ms: 1.0, wiring: dti, knn_k: 8, ...}
    assimilation:
      members: 8
      input_regions: thalamus   # "thalamus" | "interoceptive" | "all" | [label, ...]
      hyperparameter: i_ext
      lower: 0.01
      upper: 0.3
      warmup_windows: 10
      checkpoint_every: 10
      n_frames: null            # use only the first n frames of the run (null: all); docs/twin.md
      heldout_fraction: 0.0     # the last round(f * frames) frames: free forecast, h frozen, no analysis
      filter: {rho: 0.8, obs_variance: 1.0e-8, random_walk_std: 1.0, variant: perturbed}
    observation: {low_hz: 0.01, high_hz: 0.1, detrend: true, scaling: minmax, scaling_params: {low: 0.02, high: 0.05}}
    resimulation: {record_seconds: 10.0}
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from dtb.assim.enkf import EnKFSettings
from dtb.assim.hmda import HMDASettings
from dtb.errors import ConfigError
from dtb.seeds import derive_seed
from dtb.twin.build import ModelSettings

__all__ = ["TwinConfig", "load_twin_config", "INPUT_SETS", "resolve_input_regions"]

#: Named sets of input regions (AAL2 labels; MODEL.md 5).
INPUT_SETS = {
    "thalamus": ("Thalamus_L", "Thalamus_R"),
    "interoceptive": (
        "Hippocampus_L",
        "Hippocampus_R",
        "Insula_L",
        "Insula_R",
        "Cingulate_Ant_L",
        "Cingulate_Ant_R",
        "Frontal_Med_Orb_L",
        "Frontal_Med_Orb_R",
        "Thalamus_L",
        "Thalamus_R",
    ),
}

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
    "warmup_windows",
    "checkpoint_every",
    "n_frames",
    "heldout_fraction",
    "filter",
}
_OBS = {"low_hz", "high_hz", "detrend", "scaling", "scaling_params"}
_RESIM = {"record_seconds"}


@dataclass(frozen=True, kw_only=True)
class TwinConfig:
    """Everything a region-level twin run needs besides its input data."""

    seed: int = 1
    backend: str = "auto"
    device: str = "cpu"
    threads: int = 1
    neurons_total: int = 10_000
    model: ModelSettings = field(default_factory=ModelSettings)
    members: int = 8
    input_regions: str | tuple[str, ...] = "thalamus"
    hmda: HMDASettings = field(default_factory=HMDASettings)
    n_frames: int | None = None
    heldout_fraction: float = 0.0
    low_hz: float = 0.01
    high_hz: float = 0.1
    detrend: bool = True
    scaling: str = "minmax"
    scaling_params: dict = field(default_factory=lambda: {"low": 0.02, "high": 0.05})
    record_seconds: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise ConfigError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        # the filter's seed is never set on its own: it follows the run seed (also after dataclasses.replace)
        filter_seed = derive_seed(self.seed, "filter")
        if self.hmda.enkf.seed != filter_seed:
            enkf = dataclasses.replace(self.hmda.enkf, seed=filter_seed)
            object.__setattr__(self, "hmda", dataclasses.replace(self.hmda, enkf=enkf))
        if self.members < 2:
            raise ConfigError(f"assimilation.members must be >= 2 (the filter needs an ensemble), got {self.members}")
        if self.n_frames is not None and (
            isinstance(self.n_frames, bool) or not isinstance(self.n_frames, int) or self.n_frames < 1
        ):
            raise ConfigError(
                f"assimilation.n_frames must be a whole number >= 1 (use the first n frames of the run) or null "
                f"(all frames), got {self.n_frames!r}"
            )
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"assimilation.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.neurons_total < 1 or self.threads < 1:
            raise ConfigError("neurons_total and threads must be positive integers")
        if self.backend not in ("auto", "torch", "cuda_ext"):
            raise ConfigError(f"backend must be auto, torch or cuda_ext, got {self.backend!r}")
        if isinstance(self.input_regions, str) and self.input_regions not in (*INPUT_SETS, "all"):
            raise ConfigError(
                f"assimilation.input_regions must be one of {[*INPUT_SETS, 'all']} or a list of region labels, "
                f"got {self.input_regions!r}"
            )

    def describe(self) -> dict:
        out = asdict(self)
        out["hmda"] = self.hmda.describe()
        return out


def _section(values, name: str, allowed: set[str]) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section {name!r} must be a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in config section {name!r}; allowed: {sorted(allowed)}")
    return dict(values)


def load_twin_config(source: str | Path | dict | None = None) -> TwinConfig:
    """Build a :class:`TwinConfig` from a YAML file or a mapping (defaults for what is absent)."""
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    top = _section(raw, "top level", _TOP)
    assim = _section(top.pop("assimilation", None), "assimilation", _ASSIM)
    obs = _section(top.pop("observation", None), "observation", _OBS)
    resim = _section(top.pop("resimulation", None), "resimulation", _RESIM)
    model_values = top.pop("model", None) or {}
    if not isinstance(model_values, dict):
        raise ConfigError("config section 'model' must be a mapping")
    try:
        model = ModelSettings.from_mapping(model_values)
        filter_values = dict(assim.pop("filter", None) or {})
        if "seed" in filter_values:
            raise ConfigError(
                "assimilation.filter.seed is not a setting: the filter's seed derives from the run's `seed` "
                "(dtb.seeds.derive_seed(seed, 'filter')); remove it and set the top-level seed"
            )
        enkf = EnKFSettings.from_mapping(filter_values)
        hmda_keys = ("hyperparameter", "lower", "upper", "warmup_windows", "checkpoint_every")
        hmda = HMDASettings(**{k: assim.pop(k) for k in hmda_keys if k in assim}, enkf=enkf)
        inputs = assim.pop("input_regions", "thalamus")
        if isinstance(inputs, list):
            inputs = tuple(str(x) for x in inputs)
        return TwinConfig(
            **top,
            model=model,
            hmda=hmda,
            input_regions=inputs,
            members=int(assim.pop("members", 8)),
            n_frames=assim.pop("n_frames", None),
            heldout_fraction=float(assim.pop("heldout_fraction", 0.0)),
            **obs,
            **resim,
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid config value: {exc}") from None


def resolve_input_regions(config: TwinConfig, labels) -> list[int]:
    """Indices of the input regions among ``labels`` (errors name what is missing)."""
    labels = list(labels)
    if config.input_regions == "all":
        return list(range(len(labels)))
    wanted = INPUT_SETS[config.input_regions] if isinstance(config.input_regions, str) else config.input_regions
    missing = [x for x in wanted if x not in labels]
    if missing:
        raise ConfigError(
            f"input region(s) {missing} are not among the subject's regions ({len(labels)} labels, e.g. "
            f"{labels[:4]}); give assimilation.input_regions as labels of this atlas"
        )
    return [labels.index(x) for x in wanted]
