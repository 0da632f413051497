"""The twin run store: its schema (groups, dimensions, variables, attributes, units), writer and reader.

A twin run store is one zarr v3 directory per subject run, written by ``dtb assimilate`` (root
attributes, ``/observation``, ``/network``, ``/assimilation``) and ``dtb resimulate``
(``/resimulation``, ``/resimulation_counts``, ``/resimulation_spikes``, ``/metrics``), and read by
the re-simulation, the report, ``dtb experiment``, the selftest and the fidelity benchmark.
Everything that writes or reads one goes through this module:

- the schema is :data:`ROOT_ATTRS` and :data:`GROUPS` (frozen :class:`Variable`, :class:`Attr` and
  :class:`Group` records); docs/formats.md shows :func:`schema_markdown`'s table (a test keeps
  them equal);
- writers: :func:`create_store`, :func:`update_root_attrs`, :func:`write_group_data` (a group built
  from the schema by :func:`make_dataset`: dimensions, units and long names come from here, and a
  variable the schema does not know is refused), :func:`truncate_time`;
- readers: :func:`root_attrs`, :func:`is_complete`, :func:`has_group`, :func:`read_group`,
  :func:`read_groups`.

The fitted quantity is h, the external-current hyperparameter (docs/model.md, "Names: the fitted
quantity"): ``/assimilation``'s ``h_*`` variables hold it in the units of the engine parameter it
is written into (the root attribute ``hyperparameter``, default ``i_ext``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import xarray as xr

from dtb.errors import DTBError
from dtb.io.store import json_safe, write_group

__all__ = [
    "Attr",
    "CHECKPOINT_NAME",
    "DIMENSIONS",
    "GROUPS",
    "Group",
    "ROOT_ATTRS",
    "StoreSchemaError",
    "Variable",
    "check_store",
    "create_store",
    "has_group",
    "is_complete",
    "make_dataset",
    "read_group",
    "read_groups",
    "root_attrs",
    "root_attrs_json",
    "schema_markdown",
    "truncate_time",
    "update_root_attrs",
    "write_group_data",
]

#: The assimilation's checkpoint inside the store directory (torch.save's bytes, then
#: ``\ndtb-sha256:`` and their sha256; written and checked by ``dtb.assim.hmda``).
CHECKPOINT_NAME = "checkpoint.pt"


class StoreSchemaError(DTBError, ValueError):
    """Data handed to the twin-store writer, or a store read back, does not follow the schema."""


@dataclass(frozen=True)
class Variable:
    """One array of a group.

    ``units`` and ``long_name`` are written as the array's attributes (None: not written); in the
    ``/assimilation`` group ``{h}`` and ``{h_units}`` stand for the engine parameter h is written
    into and its units (filled by the writer). ``optional`` arrays may be absent.
    """

    name: str
    dims: tuple[str, ...]
    units: str | None
    long_name: str | None
    meaning: str
    optional: bool = False


@dataclass(frozen=True)
class Attr:
    """One attribute (JSON) of the root or of a group; ``units`` "" when it has none."""

    name: str
    kind: str
    units: str
    meaning: str


@dataclass(frozen=True)
class Group:
    """One group of the store: who writes it, its arrays and attributes, and the dimension it is
    appended along (None: written whole)."""

    name: str
    written_by: str
    meaning: str
    variables: tuple[Variable, ...]
    attrs: tuple[Attr, ...] = ()
    append_dim: str | None = None

    def variable(self, name: str) -> Variable | None:
        for var in self.variables:
            if var.name == name:
                return var
        return None


#: Dimension names and what they index (coordinates carry the labels).
DIMENSIONS = MappingProxyType(
    {
        "time": "seconds (float, attribute units = s): the TR window's frame time, or the 1 ms bin in /resimulation_counts",
        "member": "ensemble member (0..n_members - 1)",
        "region": "region label (str, e.g. AAL2 names; the kept regions, store order)",
        "region_source": "the same labels, second axis of region x region matrices (row = source region for the connectome)",
        "parameter": "label `<region>:<engine parameter>` of one fitted h (e.g. `Thalamus_L:i_ext`), one per input region",
        "population": "population name",
        "lead": "forecast lead in TRs (1..K)",
        "spike": "one recorded spike event",
    }
)

ROOT_ATTRS: tuple[Attr, ...] = (
    Attr("dtb_version", "str", "", "the dtb that wrote the store"),
    Attr("subject", "str", "", "participant label"),
    Attr("seed", "int", "", "the run seed"),
    Attr(
        "seeds",
        "dict",
        "",
        "every seed derived from it by dtb.seeds (run, scheme, graph, gains, filter, wiring, resimulation, resimulation_gains, members)",
    ),
    Attr("config", "dict", "", "the full settings (TwinConfig.describe())"),
    Attr("tr_s", "float", "s", "repetition time"),
    Attr("n_members", "int", "", "ensemble members"),
    Attr("hyperparameter", "str", "", "the engine parameter h is written into (default `i_ext`, docs/model.md §5)"),
    Attr("input_regions", "list[str]", "", "regions whose excitatory populations receive h"),
    Attr("assimilated_regions", "list[str]", "", "regions whose BOLD the filter assimilates"),
    Attr("assimilation_settings", "dict", "", "HMDASettings.describe()"),
    Attr("engine", "dict", "", "the engine's provenance (arithmetic contract, dt, delay, ...); --resume compares it"),
    Attr("backend", "str", "", "engine backend"),
    Attr("device", "str", "", "torch device"),
    Attr("n_neurons", "int", "", "neurons of the twin's network"),
    Attr("n_synapses", "int", "", "synapses of the twin's network"),
    Attr("network", "dict", "", "digest of the network and the network store it came from (or null)"),
    Attr("atlas", "str", "", "atlas of the region labels"),
    Attr("sources", "dict", "", "where the subject's inputs came from"),
    Attr("distributed", "dict", "", "n_ranks and layout of an MPI run (only then)"),
    Attr("warnings", "list[str]", "", "warnings of the stages that wrote the store"),
    Attr("started", "str", "", "UTC time the assimilation started (ISO 8601)"),
    Attr("finished", "str", "", "UTC time it finished"),
    Attr("wall_time_s", "float", "s", "wall time of the assimilation"),
    Attr("complete", "bool", "", "true once the assimilation and its static groups are all written (set last)"),
    Attr("n_windows", "int", "", "TR windows run"),
    Attr("assimilated_frames", "int", "", "frames whose observation was used (the rest are held out)"),
)

_ROOT_NAMES = frozenset(a.name for a in ROOT_ATTRS)

_H = 'in the units of h, the external-current hyperparameter (docs/model.md, "Names: the fitted quantity")'

GROUPS: Mapping[str, Group] = MappingProxyType(
    {
        g.name: g
        for g in (
            Group(
                "observation",
                "dtb assimilate",
                "the observed BOLD the filter saw",
                (
                    Variable(
                        "bold",
                        ("time", "region"),
                        "1",
                        "observed BOLD, scaled (what the filter saw)",
                        "scaled observed BOLD (model units)",
                    ),
                    Variable(
                        "bold_clean",
                        ("time", "region"),
                        "1",
                        "observed BOLD, cleaned, before scaling",
                        "cleaned BOLD before scaling",
                    ),
                ),
                (
                    Attr("scaling", "dict", "", "the scaling's method and its parameters"),
                    Attr("tr_s", "float", "s", "repetition time"),
                ),
            ),
            Group(
                "network",
                "dtb assimilate",
                "the network built for the twin",
                (
                    Variable("neuron_count", ("region",), "neurons", None, "neurons per region"),
                    Variable(
                        "connectome",
                        ("region", "region_source"),
                        "streamlines",
                        "structural connectome the twin was built from (model.wiring), row = source region",
                        "streamline counts as given (row = source region; the builder transposes it and row-normalises)",
                    ),
                    Variable("population_size", ("population",), "neurons", None, "neurons per population"),
                    Variable("population_region", ("population",), None, None, "region label of each population (str)"),
                    Variable("population_kind", ("population",), None, None, '"E" or "I"'),
                ),
                (
                    Attr("config", "dict", "", "the network layout's settings (indegree, model, ...)"),
                    Attr("model", "str", "", "network model"),
                    Attr("seed", "int", "", 'the graph\'s seed: derive_seed(run seed, "graph")'),
                    Attr("kept_regions", "list[int]", "", "indices of the subject's regions kept in the twin"),
                    Attr(
                        "(more)",
                        "various",
                        "",
                        "the rest of the network's metadata (builder, long_range, population_*, dropped_*, ...; dtb.network)",
                    ),
                ),
            ),
            Group(
                "assimilation",
                "dtb assimilate",
                "forecast and analysis per TR window (one entry per window along time)",
                (
                    Variable(
                        "h_forecast_mean",
                        ("time", "parameter"),
                        "{h_units}",
                        "forecast ensemble mean of {h}",
                        f"forecast ensemble mean of h, {_H}",
                    ),
                    Variable(
                        "h_forecast_std",
                        ("time", "parameter"),
                        "{h_units}",
                        "forecast ensemble SD of {h}",
                        "forecast ensemble SD of h",
                    ),
                    Variable(
                        "h_analysis_mean",
                        ("time", "parameter"),
                        "{h_units}",
                        "analysis ensemble mean of {h}",
                        "analysis ensemble mean of h (the h track; the forecast mean in the warm-up)",
                    ),
                    Variable(
                        "h_analysis_std",
                        ("time", "parameter"),
                        "{h_units}",
                        "analysis ensemble SD of {h}",
                        "analysis ensemble SD of h",
                    ),
                    Variable(
                        "h_members",
                        ("time", "member", "parameter"),
                        "{h_units}",
                        "analysis {h} per member",
                        "analysis h per member",
                    ),
                    Variable(
                        "bold_forecast",
                        ("time", "member", "region"),
                        "1",
                        "forecast BOLD per member",
                        "forecast BOLD per member",
                    ),
                    Variable(
                        "rate_forecast",
                        ("time", "member", "region"),
                        "Hz",
                        "mean firing rate over the window",
                        "mean firing rate per member over the window",
                    ),
                    Variable(
                        "innovation",
                        ("time", "region"),
                        "1",
                        "observed minus forecast mean BOLD (assimilated regions)",
                        "observed minus forecast-mean BOLD (NaN outside the assimilated regions and windows)",
                    ),
                    Variable(
                        "innovation_spread",
                        ("time", "region"),
                        "1",
                        "forecast ensemble SD of BOLD (assimilated regions)",
                        "forecast ensemble SD of BOLD (NaN as innovation)",
                    ),
                    Variable(
                        "warmup", ("time",), None, "warm-up window (no analysis)", "bool: warm-up window (no analysis)"
                    ),
                    Variable(
                        "heldout",
                        ("time",),
                        None,
                        "held-out window (free forecast, h frozen)",
                        "bool: held-out window (free forecast, h frozen)",
                    ),
                    Variable(
                        "bold_lead",
                        ("time", "lead", "region"),
                        "1",
                        "ensemble-mean forecast of frame time + lead made after this window (h frozen)",
                        "only with lead forecasts: the ensemble-mean forecast of frame time + lead made after this window (docs/fidelity.md)",
                        optional=True,
                    ),
                ),
                (),
                "time",
            ),
            Group(
                "resimulation",
                "dtb resimulate",
                "one brain driven by the h track",
                (
                    Variable("bold", ("time", "region"), "1", "re-simulated BOLD", "re-simulated BOLD"),
                    Variable("rate", ("time", "region"), "Hz", "mean firing rate per TR", "mean firing rate per TR"),
                ),
                (
                    Attr(
                        "seed",
                        "int",
                        "",
                        "run seed of the re-simulated brain (dtb resimulate --seed; default the run's)",
                    ),
                    Attr("seeds", "dict", "", "noise, gains, graph, scheme"),
                    Attr("h_track", "str", "", "which h drove it"),
                    Attr("wall_time_s", "float", "s", "wall time of the re-simulation"),
                ),
            ),
            Group(
                "resimulation_counts",
                "dtb resimulate",
                "spike counts per population and 1 ms bin of the first record_seconds",
                (
                    Variable(
                        "spike_count",
                        ("time", "population"),
                        "spikes",
                        "spikes per population and 1 ms bin",
                        "spikes per population and bin",
                    ),
                ),
                (Attr("bin_s", "float", "s", "bin width"),),
            ),
            Group(
                "resimulation_spikes",
                "dtb resimulate",
                "spike events of the first record_seconds",
                (
                    Variable("time", ("spike",), "s", None, "spike time"),
                    Variable("neuron", ("spike",), None, "global neuron id", "global neuron id"),
                ),
                (
                    Attr("duration_s", "float", "s", "span recorded"),
                    Attr("start_s", "float", "s", "start of the span"),
                ),
            ),
            Group(
                "metrics",
                "dtb resimulate",
                "fidelity metrics (dtb.assim.metrics.compute_fidelity), written last",
                (
                    Variable(
                        "region_r",
                        ("region",),
                        None,
                        None,
                        "Pearson r of re-simulated vs observed BOLD per region (after warm-up)",
                        optional=True,
                    ),
                    Variable("region_r_lag1", ("region",), None, None, "the same with a 1-TR lag", optional=True),
                    Variable("region_r_best", ("region",), None, None, "the best r over lags", optional=True),
                    Variable(
                        "fc_empirical",
                        ("region", "region_source"),
                        None,
                        None,
                        "FC of the observed BOLD (after warm-up)",
                        optional=True,
                    ),
                    Variable(
                        "fc_simulated",
                        ("region", "region_source"),
                        None,
                        None,
                        "FC of the re-simulated BOLD",
                        optional=True,
                    ),
                ),
                (
                    Attr("fc_similarity", "float", "", "r of the FC upper triangles"),
                    Attr("fnorm", "float", "", "||FC_emp - FC_sim||_F / ||FC_emp||_F"),
                    Attr("forecast_r", "float", "", "forecast ensemble mean vs data"),
                    Attr("resim_region_r", "float", "", "mean region_r"),
                    Attr("resim_input_r", "float", "", "mean region_r of the input regions"),
                    Attr("resim_noninput_r", "float", "", "mean region_r of the other regions"),
                    Attr("resim_region_r_best", "float", "", "mean region_r_best"),
                    Attr("heldout_r", "float", "", "free forecast of the held-out frames vs data"),
                    Attr("persistence_r", "float", "", "baseline: the last observed frame"),
                    Attr("climatology_r", "float", "", "baseline: the mean observation"),
                    Attr("heldout_rmse", "float", "1", "RMSE of the held-out forecast"),
                    Attr("persistence_rmse", "float", "1", "RMSE of persistence on the held-out frames"),
                    Attr("climatology_rmse", "float", "1", "RMSE of climatology on the held-out frames"),
                    Attr("rmse", "float", "1", "forecast mean vs observation"),
                    Attr("spread", "float", "1", "ensemble SD"),
                    Attr("crps", "float", "1", "continuous ranked probability score"),
                    Attr("rank_histogram", "list[int]", "", "rank of the observation among the forecast members"),
                    Attr("innovation_mean", "float", "1", "mean innovation of the analysed windows"),
                    Attr("innovation_rms", "float", "1", "RMS innovation"),
                    Attr("innovation_nis", "float", "", "normalised innovation squared (about 1 when calibrated)"),
                    Attr("warmup_frames", "int", "", "frames left out as warm-up"),
                    Attr("frames_scored", "int", "", "frames scored (before the held-out part)"),
                    Attr("warnings", "list[str]", "", "e.g. a forecast BOLD outside the physiological range"),
                    Attr("dtb_version", "str", "", "the dtb that computed them"),
                ),
            ),
        )
    }
)


# ---------------------------------------------------------------------------------------- writing
def _group(name: str) -> Group:
    try:
        return GROUPS[name]
    except KeyError:
        raise StoreSchemaError(f"the twin run store has no group {name!r}; its groups are {list(GROUPS)}") from None


def make_dataset(
    group: str,
    data: Mapping[str, np.ndarray],
    coords: Mapping | None = None,
    attrs: Mapping | None = None,
    *,
    fill: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Build group ``group`` from its arrays: dimensions, units and long names from :data:`GROUPS`.

    Parameters
    ----------
    data : variable name -> array, in the schema's dimension order.
    coords : coordinates (labels of region, population, ... and time in seconds).
    attrs : the group's attributes.
    fill : values of ``{h}`` and ``{h_units}`` in the ``/assimilation`` units and long names.

    Raises
    ------
    StoreSchemaError : a variable the schema does not know, a required one missing, or an array whose
        number of dimensions differs from the schema's.
    """
    spec = _group(group)
    fill = dict(fill or {})
    unknown = [name for name in data if spec.variable(name) is None]
    if unknown:
        raise StoreSchemaError(
            f"/{group} has no variable(s) {unknown} in the twin-store schema (dtb.io.twin_store.GROUPS); "
            f"its variables are {[v.name for v in spec.variables]}"
        )
    missing = [v.name for v in spec.variables if not v.optional and v.name not in data]
    if missing:
        raise StoreSchemaError(f"/{group} needs the variable(s) {missing} (dtb.io.twin_store.GROUPS)")
    variables = {}
    for var in spec.variables:
        if var.name not in data:
            continue
        value = np.asarray(data[var.name])
        if value.ndim != len(var.dims):
            raise StoreSchemaError(
                f"/{group}/{var.name} must have dimensions {var.dims}, got an array of shape {value.shape}"
            )
        meta = {}
        if var.units is not None:
            meta["units"] = var.units.format(**fill)
        if var.long_name is not None:
            meta["long_name"] = var.long_name.format(**fill)
        variables[var.name] = (var.dims, value, meta)
    return xr.Dataset(variables, coords=dict(coords or {}), attrs=dict(attrs or {}))


def write_group_data(
    store: str | Path,
    group: str,
    data: Mapping[str, np.ndarray],
    coords: Mapping | None = None,
    attrs: Mapping | None = None,
    *,
    fill: Mapping[str, str] | None = None,
    first: bool = True,
) -> xr.Dataset:
    """Write (``first``) or append (along the group's ``append_dim``) group ``group``; returns the Dataset.

    Arrays end with the crc32c codec (:func:`dtb.io.store.write_group`); an appended group's
    chunks follow the written blocks, so a killed writer leaves every earlier block whole.
    """
    spec = _group(group)
    ds = make_dataset(group, data, coords, attrs, fill=fill)
    if not first and spec.append_dim is None:
        raise StoreSchemaError(f"/{group} is written whole, not appended")
    write_group(store, group, ds, spec.append_dim, first=first)
    return ds


def create_store(store: str | Path, attrs: Mapping) -> None:
    """Create the store's root group (replacing any) with the root attributes ``attrs``."""
    import zarr

    zarr.open_group(store, mode="w", zarr_format=3).attrs.update(json_safe(dict(attrs)))


def update_root_attrs(store: str | Path, attrs: Mapping) -> None:
    """Add or replace root attributes (e.g. ``complete``, ``finished``)."""
    import zarr

    zarr.open_group(store, mode="a", zarr_format=3).attrs.update(json_safe(dict(attrs)))


def truncate_time(store: str | Path, group: str, n_rows: int) -> None:
    """Drop the records of ``group`` past ``n_rows`` along ``time`` (windows written after the last
    checkpoint); a missing group is left alone."""
    import zarr

    try:
        g = zarr.open_group(store, path=group, mode="a", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return
    for _, arr in g.arrays():
        dims = arr.metadata.dimension_names or ()
        if dims and dims[0] == "time" and arr.shape[0] > n_rows:
            arr.resize((n_rows, *arr.shape[1:]))


# ---------------------------------------------------------------------------------------- reading
def root_attrs(store: str | Path) -> dict:
    """The root attributes (JSON) of a store; raises what zarr raises for a non-store."""
    import zarr

    return dict(zarr.open_group(store, mode="r", zarr_format=3).attrs)


def is_complete(store: str | Path) -> bool:
    """Whether the assimilation of ``store`` finished (root attribute ``complete``); False for a non-store."""
    try:
        return bool(root_attrs(store).get("complete", False))
    except Exception:  # not a zarr group: not a complete run
        return False


def has_group(store: str | Path, group: str) -> bool:
    """Whether ``store`` holds group ``group`` (its metadata file exists)."""
    return (Path(store) / group / "zarr.json").is_file()


def read_group(store: str | Path, group: str, *, load: bool = False) -> xr.Dataset:
    """Open group ``group`` of ``store`` as a Dataset (lazily; ``load``: read into memory)."""
    _group(group)
    ds = xr.open_dataset(store, engine="zarr", group=group, consolidated=False, zarr_format=3, chunks=None)
    return ds.load() if load else ds


def read_groups(store: str | Path, on_error=None) -> tuple[dict[str, xr.Dataset], dict[str, str]]:
    """Every readable group of ``store`` (lazily) and, for the others, why they are not there.

    A damaged group costs only itself: ``on_error(name, exc)`` is called and the reason recorded.
    """
    groups: dict[str, xr.Dataset] = {}
    absent: dict[str, str] = {}
    for name, spec in GROUPS.items():
        if not has_group(store, name):
            absent[name] = f"the store has no /{name} group (written by {spec.written_by} ({spec.meaning}))"
            continue
        try:
            groups[name] = read_group(store, name)
        except Exception as exc:  # a damaged group must not stop the reader
            if on_error is not None:
                on_error(name, exc)
            absent[name] = f"the /{name} group could not be read ({type(exc).__name__}: {exc})"
    return groups, absent


def root_attrs_json(store: str | Path) -> dict:
    """Root attributes read straight from ``zarr.json`` (plain JSON types)."""
    attrs = json.loads((Path(store) / "zarr.json").read_text()).get("attributes", {})
    return json.loads(json.dumps(dict(attrs), default=str))


def check_store(store: str | Path) -> list[str]:
    """Where ``store`` departs from the schema: a root attribute, group or variable it does not know,
    a required variable missing, a variable on other dimensions (one line each; [] when it follows it).
    Missing groups are not departures (a partial run lacks some)."""
    problems = [f"root attribute {k!r} is not in the schema" for k in root_attrs(store) if k not in _ROOT_NAMES]
    for path in sorted(Path(store).iterdir()):
        if path.is_dir() and (path / "zarr.json").is_file() and path.name not in GROUPS:
            problems.append(f"group /{path.name} is not in the schema")
    for name, spec in GROUPS.items():
        if not has_group(store, name):
            continue
        ds = read_group(store, name)
        for var in ds.data_vars.values():
            known = spec.variable(str(var.name))
            if known is None:
                problems.append(f"/{name}/{var.name} is not in the schema")
            elif tuple(var.dims) != known.dims:
                problems.append(f"/{name}/{var.name} has dimensions {tuple(var.dims)}, the schema {known.dims}")
        problems += [
            f"/{name}/{v.name} is missing" for v in spec.variables if not v.optional and v.name not in ds.data_vars
        ]
    return problems


# ---------------------------------------------------------------------------------------- docs
def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def schema_markdown() -> str:
    """The schema as the markdown tables docs/formats.md shows (kept equal by a test)."""
    lines = ["| dimension | indexes |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(text)} |" for name, text in DIMENSIONS.items()]
    lines += ["", "Root attributes:", "", "| attribute | type | units | meaning |", "|---|---|---|---|"]
    lines += [f"| `{a.name}` | {a.kind} | {a.units or '—'} | {_cell(a.meaning)} |" for a in ROOT_ATTRS]
    for g in GROUPS.values():
        append = f", appended along `{g.append_dim}`" if g.append_dim else ""
        lines += ["", f"`/{g.name}` ({g.written_by}{append}): {g.meaning}.", ""]
        lines += ["| variable | dims | units | meaning |", "|---|---|---|---|"]
        for v in g.variables:
            units = (v.units or "—").replace("{h_units}", "units of h")
            note = " (optional)" if v.optional else ""
            lines.append(f"| `{v.name}` | ({', '.join(v.dims)}) | {units} | {_cell(v.meaning)}{note} |")
        for a in g.attrs:
            lines.append(f"| attr `{a.name}` | {a.kind} | {a.units or '—'} | {_cell(a.meaning)} |")
    return "\n".join(lines) + "\n"
