"""Network description files (YAML): populations, projections, neuron parameters, run settings.

A description is the smallest complete input of ``dtb simulate``::

    name: ei-demo
    seed: 7                        # the run's seed: graph, initial state and noise derive from it
    model:                         # optional; these are the defaults
      dt_ms: 0.1
      delay_ms: 1.0
      integrator: exponential_euler
      receptors: dtb               # or a list of {name, tau_ms, E_rev_mV, source_kind}
    neuron: {}                     # NeuronParams defaults shared by all populations
    populations:
      E: {size: 1600, kind: E}
      I: {size: 400, kind: I, neuron: {T_ref_ms: 2.0}}   # per-population overrides
    projections:
      - {source: E, target: E, indegree: 57, weight: 255}
    simulate:                      # optional defaults for the command line
      duration_ms: 1000
      record: {count_bin_ms: 1.0, spikes: true, sample_neurons: [0, 1]}

Every key is checked; an unknown or mistyped one is an error that names the file, the
key and the keys allowed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dtb.errors import ConfigError, DTBError
from dtb.network.fixed_indegree import Projection, connect_fixed_indegree
from dtb.network.graph import Network, Population
from dtb.seeds import derive_seed
from dtb.sim.params import DTB_RECEPTORS, ModelParams, NeuronParams, Receptor
from dtb.sim.recording import RecordSpec
from dtb.validation import check_unknown_keys

__all__ = ["Description", "load_description"]

_TOP = {"name", "seed", "model", "neuron", "populations", "projections", "simulate"}
_MODEL = {"dt_ms", "delay_ms", "integrator", "receptors"}
_POP = {"size", "kind", "neuron"}
_PROJ = {"source", "target", "indegree", "weight", "autapses"}
_SIM = {"duration_ms", "record", "backend", "device", "initial_V"}
_RECORD = set(RecordSpec.__dataclass_fields__)
_RECEPTOR = {"name", "tau_ms", "E_rev_mV", "source_kind"}


@dataclass(frozen=True)
class Description:
    """A loaded description: the network, the model and the simulate defaults."""

    name: str
    seed: int  #: the run seed (the file's, or the override given to load_description)
    network: Network
    model: ModelParams
    simulate: dict = field(default_factory=dict)
    record: RecordSpec = field(default_factory=RecordSpec)
    source: str = ""


def _check_keys(where: str, mapping, allowed: set[str], path: Path) -> dict:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path}: {where} must be a mapping, got {type(mapping).__name__}")
    check_unknown_keys(mapping, allowed, where=f"in {where}", file=path)
    return mapping


def _neuron(where: str, values: dict, base: NeuronParams, path: Path) -> NeuronParams:
    allowed = set(NeuronParams.field_names())
    _check_keys(where, values, allowed, path)
    try:
        return base.with_values(**values) if values else base
    except (DTBError, TypeError) as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from None


def load_description(path: str | Path, seed: int | None = None) -> Description:
    """Read and validate a network description file and build its network.

    The run seed is ``seed`` when given (``dtb simulate --seed``), else the file's ``seed``; the graph
    uses ``derive_seed(run seed, "graph")`` and member m's noise ``derive_seed(run seed, "member", m)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"network description {path} does not exist (give the path of a .yaml file)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    _check_keys("the top level", raw, _TOP, path)
    for key in ("populations", "projections"):
        if key not in raw:
            raise ConfigError(f"{path}: missing required key {key!r}")
    file_seed = raw.get("seed", 0)
    if isinstance(file_seed, bool) or not isinstance(file_seed, int) or not 0 <= file_seed < 2**64:
        raise ConfigError(f"{path}: seed must be an integer in [0, 2**64), got {file_seed!r}")
    seed = file_seed if seed is None else int(seed)

    model_raw = _check_keys("model", raw.get("model", {}) or {}, _MODEL, path)
    receptors_raw = model_raw.get("receptors", "dtb")
    if receptors_raw == "dtb":
        receptors = DTB_RECEPTORS
    elif isinstance(receptors_raw, list):
        receptors = []
        for i, r in enumerate(receptors_raw):
            _check_keys(f"model.receptors[{i}]", r, _RECEPTOR, path)
            try:
                receptors.append(Receptor(**r))
            except (DTBError, TypeError) as exc:
                raise ConfigError(f"{path}: model.receptors[{i}]: {exc}") from None
        receptors = tuple(receptors)
    else:
        raise ConfigError(f"{path}: model.receptors must be 'dtb' or a list of receptors, got {receptors_raw!r}")

    shared = _neuron("neuron", raw.get("neuron", {}) or {}, NeuronParams(), path)
    if not isinstance(raw["populations"], dict) or not raw["populations"]:
        raise ConfigError(f"{path}: populations must map names to {{size, kind}}")
    populations, params = [], {}
    for name, spec in raw["populations"].items():
        _check_keys(f"populations.{name}", spec, _POP, path)
        for key in ("size", "kind"):
            if key not in spec:
                raise ConfigError(f"{path}: populations.{name} needs {key!r}")
        try:
            populations.append(Population(str(name), spec["size"], spec["kind"]))
        except DTBError as exc:
            raise ConfigError(f"{path}: populations.{name}: {exc}") from None
        params[str(name)] = _neuron(f"populations.{name}.neuron", spec.get("neuron", {}) or {}, shared, path)

    projections = []
    if not isinstance(raw["projections"], list):
        raise ConfigError(f"{path}: projections must be a list of {{source, target, indegree, weight}}")
    for i, spec in enumerate(raw["projections"]):
        _check_keys(f"projections[{i}]", spec, _PROJ, path)
        try:
            projections.append(Projection(**spec))
        except (DTBError, TypeError) as exc:
            raise ConfigError(f"{path}: projections[{i}]: {exc}") from None
    try:
        model = ModelParams(params, receptors, **{k: v for k, v in model_raw.items() if k != "receptors"})
        network = connect_fixed_indegree(
            populations, projections, derive_seed(seed, "graph"), {"description": str(path), "run_seed": seed}
        )
    except DTBError as exc:
        raise ConfigError(f"{path}: {exc}") from None

    simulate = dict(_check_keys("simulate", raw.get("simulate", {}) or {}, _SIM, path))
    record_raw = _check_keys("simulate.record", simulate.pop("record", {}) or {}, _RECORD, path)
    for key in ("sample_neurons", "spike_neurons"):
        if record_raw.get(key) is not None:
            record_raw[key] = tuple(int(v) for v in record_raw[key])
    try:
        record = RecordSpec(**record_raw)
    except TypeError as exc:
        raise ConfigError(f"{path}: simulate.record: {exc}") from None
    return Description(str(raw.get("name", path.stem)), seed, network, model, simulate, record, str(path))
