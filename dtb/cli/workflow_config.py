"""The Snakemake workflow's config (``config/config.yaml``), checked once before any job.

``pipeline/rules/common.smk`` calls :func:`check_workflow_config` on Snakemake's ``config``: every
violation of ``pipeline/schemas/config.schema.yaml`` is reported on one line that names the key
(unknown keys with the keys allowed there and the nearest), the schema's defaults are filled in place, and the
settings that a later job would refuse are checked now: the twin's settings (``neurons_total``,
``model``, ``assimilation``, ``observation``, ``resimulation``, spelled as in a ``dtb twin --config``
file; :func:`twin_settings` joins them with ``seed`` and ``compute`` into the file that
``dtb network build``, ``dtb assimilate`` and ``dtb twin`` read) and ``voxel.phantom`` (the options
of ``dtb phantom``). Spellings of earlier versions are refused with what to write instead.
"""

from __future__ import annotations

import copy
import functools
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from dtb.errors import ConfigError, DTBError
from dtb.validation import unknown_keys_message

__all__ = ["check_workflow_config", "schema_errors", "twin_settings", "TWIN_KEYS"]

#: the top-level keys of the workflow config that are the twin config's own (docs/twin.md)
TWIN_KEYS = ("neurons_total", "model", "assimilation", "observation", "resimulation")
#: settings of earlier versions, refused with what to write instead
_RETIRED = {
    ("region", "total_neurons"): "region.total_neurons is no longer a setting: the twin's neurons are the top-level "
    "neurons_total (spelled as in a dtb twin config); write `neurons_total: N` instead",
    ("voxel", "total_neurons"): "voxel.total_neurons is no longer a setting: the twin's neurons are the top-level "
    "neurons_total (spelled as in a dtb twin config); write `neurons_total: N` instead",
    ("network",): "the network section is no longer a setting: the twin's network is described once, as in a dtb twin "
    "config, by neurons_total and model (e.g. `model: {indegree: 100, dt_ms: 0.1}` instead of "
    "`network: {indegree: 100}`; the twin's network is the E/I model, so network.model has no replacement)",
    ("voxel", "phantom", "neurons_per_region"): "voxel.phantom.neurons_per_region is no longer a setting: the "
    "phantom's truth network is the twin's; write the top-level `neurons_total: N` (the whole network) instead",
    ("voxel", "phantom", "dt_ms"): "voxel.phantom.dt_ms is no longer a setting: the phantom's truth network is the "
    "twin's; write `model: {dt_ms: X}` at the top level instead",
    ("assimilation", "settings"): "assimilation.settings is no longer a setting: write its keys at the top level, "
    "spelled as in a dtb twin config (assimilation.settings.neurons_total -> neurons_total, .model -> model, "
    ".assimilation.KEY -> assimilation.KEY, .observation -> observation, .resimulation -> resimulation, "
    ".threads -> compute.threads, .seed -> seed)",
}

_PREFIX = "dtb workflow config: "
_INT64 = (-(2**63), 2**63 - 1)
_LARGEST = int(sys.float_info.max)


def _schema(schema_path: str | Path) -> dict:
    path = Path(schema_path)
    return copy.deepcopy(_parsed(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int) -> dict:
    return yaml.safe_load(Path(path).read_text())


@functools.lru_cache(maxsize=1)
def _validator_class():
    """Draft 2020-12 where an integer is an int of 64 bits (JSON Schema also counts 2.0 as one, but the dtb
    commands the workflow calls do not: ``--members 2.0``) and a number is finite and within float range
    (every comparison with NaN is false, so a NaN would pass any minimum)."""
    import jsonschema

    def integer(_, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]

    def number(_, value) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _LARGEST

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({"integer": integer, "number": number})
    return jsonschema.validators.extend(base, type_checker=checker)


def _where(path) -> str:
    return ".".join(map(str, path)) or "top level"


def schema_errors(instance, schema: dict) -> list[str]:
    """Every violation of the JSON ``schema`` by ``instance``, one line each, naming the key."""
    lines = []
    validator = _validator_class()(schema)
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        where = _where(error.absolute_path)
        if error.validator == "additionalProperties":
            lines.append(unknown_keys_message(error.instance, error.schema.get("properties", {}), where=f"at {where}"))
        else:
            description = " ".join(error.schema.get("description", "").split())
            hint = f" ({description})" if description else ""
            lines.append(f"{where}: {error.message}{hint}")
    return lines


def _fill_defaults(instance: dict, schema: dict) -> None:
    """Set the schema's ``default`` of every absent key, recursively (what Snakemake's validate does)."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)


def _plain_data(value, path=()) -> Iterator[str]:
    """What JSON Schema does not see: mapping keys that are not text (YAML allows ``1:``, and the schema's
    key patterns skip them) and NaN/inf numbers (every comparison with NaN is false, so ranges pass)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield f"{_where(path)}: key {key!r} must be text (quote it)"
            else:
                yield from _plain_data(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _plain_data(item, (*path, i))
    elif isinstance(value, float) and not math.isfinite(value):
        yield f"{_where(path)}: {value!r} is not a finite number"


def twin_settings(config: dict) -> dict:
    """The twin config of a workflow config: its twin keys, ``seed`` and ``compute``'s backend, device, threads.

    This is the settings file the workflow writes for ``dtb network build --inputs``, ``dtb assimilate``
    and ``dtb resimulate`` (one network, one seed: docs/workflow.md).
    """
    settings = {key: copy.deepcopy(config[key]) for key in TWIN_KEYS if key in config}
    if config.get("seed") is not None:
        settings["seed"] = config["seed"]
    compute = config.get("compute") or {}
    for key in ("backend", "device", "threads"):
        if key in compute:
            settings[key] = compute[key]
    return settings


def _retired(config: dict) -> Iterator[str]:
    for path, message in _RETIRED.items():
        value = config
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None or (len(path) == 1 and path[0] in config):
            yield message


def _later_checks(config: dict) -> Iterator[str]:
    """Settings the schema cannot express, checked with the code that will use them."""
    from dtb.phantom.settings import PhantomSettings
    from dtb.twin.config import load_twin_config

    try:
        twin = load_twin_config(twin_settings(config))
    except DTBError as exc:
        yield f"the twin's settings: {exc}"
        return
    compute = config["compute"]
    if compute["ranks"] > 1 and compute["layout"] == "members" and compute["ranks"] > twin.members:
        yield (
            f"compute.ranks: {compute['ranks']} ranks with compute.layout 'members' need at least one member per "
            f"rank (assimilation.members is {twin.members}); set compute.layout: neurons, or ranks <= members"
        )
    if config["entry"] == "voxel" and config["voxel"]["bids"] is None:
        phantom = config["voxel"]["phantom"]
        try:  # the options the workflow's phantom rule passes to `dtb phantom` (--config: the twin's network)
            PhantomSettings(
                n_regions=phantom["regions"],
                n_volumes=phantom["volumes"],
                tr_s=phantom["tr_s"],
                neurons_total=twin.neurons_total,
                model=twin.model,
            )
        except DTBError as exc:
            yield f"voxel.phantom: {exc} (`dtb phantom` would refuse it)"


def check_workflow_config(config, schema_path: str | Path) -> dict:
    """Check the workflow config; fill the schema's defaults into it (in place) and return it.

    Parameters
    ----------
    config : the config mapping (Snakemake's ``config``).
    schema_path : ``pipeline/schemas/config.schema.yaml``.

    Raises
    ------
    ConfigError
        ``dtb workflow config: <key>: <problem>; ...`` naming every offending key.
    """
    schema = _schema(schema_path)
    fix = f"Fix the config file; every key is described in {schema_path}"
    if not isinstance(config, dict):
        raise ConfigError(f"{_PREFIX}the config must be a mapping of keys, got {type(config).__name__}. {fix}")
    problems = list(_plain_data(config)) or list(_retired(config)) or schema_errors(config, schema)
    if problems:
        raise ConfigError(f"{_PREFIX}{'; '.join(problems)}. {fix}")
    _fill_defaults(config, schema)
    problems = list(_later_checks(config))
    if problems:
        raise ConfigError(f"{_PREFIX}{'; '.join(problems)}. {fix}")
    return config
