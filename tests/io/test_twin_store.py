"""The twin-store module: docs/formats.md shows its schema, its writer refuses what the schema does not
hold, and what it writes reads back bitwise with the schema's dimensions and units."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from dtb.io import twin_store
from dtb.io.store import open_tree

ROOT = Path(__file__).resolve().parents[2]


def test_docs_formats_shows_the_schema_of_the_module():
    text = (ROOT / "docs" / "formats.md").read_text()
    found = re.search(r"<!-- twin-store schema:[^>]*-->\n(.*?)<!-- end twin-store schema -->", text, re.S)
    assert found, "docs/formats.md lost its generated schema block"
    assert found.group(1) == twin_store.schema_markdown(), (
        "docs/formats.md differs from dtb.io.twin_store.schema_markdown(); paste its output between the markers"
    )


def test_every_variable_uses_documented_dimensions_and_appended_groups_start_with_it():
    for group in twin_store.GROUPS.values():
        for var in group.variables:
            assert set(var.dims) <= set(twin_store.DIMENSIONS), (group.name, var.name)
            if group.append_dim is not None:
                assert var.dims[0] == group.append_dim, (group.name, var.name)


def _assimilation_rows(n_time: int, start: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(start)
    members, regions = 3, ["A", "B"]
    data = {
        "h_forecast_mean": rng.random((n_time, 1)),
        "h_forecast_std": rng.random((n_time, 1)),
        "h_analysis_mean": rng.random((n_time, 1)),
        "h_analysis_std": rng.random((n_time, 1)),
        "h_members": rng.random((n_time, members, 1)),
        "bold_forecast": rng.random((n_time, members, 2)),
        "rate_forecast": rng.random((n_time, members, 2)),
        "innovation": rng.random((n_time, 2)),
        "innovation_spread": rng.random((n_time, 2)),
        "warmup": np.arange(start, start + n_time) < 2,
        "heldout": np.zeros(n_time, bool),
    }
    coords = {
        "time": ("time", np.arange(start, start + n_time) * 2.0, {"units": "s"}),
        "member": np.arange(members),
        "region": np.array(regions),
        "parameter": np.array(["A:i_ext"]),
    }
    return data, coords


def test_written_groups_read_back_bitwise_with_the_schema_units_and_appends_and_truncates(tmp_path):
    store = tmp_path / "run.zarr"
    twin_store.create_store(store, {"subject": "01", "tr_s": 2.0, "complete": False})
    first, coords = _assimilation_rows(4)
    fill = {"h": "i_ext", "h_units": "pA"}
    twin_store.write_group_data(store, "assimilation", first, coords, fill=fill)
    second, coords2 = _assimilation_rows(3, start=4)
    twin_store.write_group_data(store, "assimilation", second, coords2, fill=fill, first=False)
    ds = twin_store.read_group(store, "assimilation", load=True)
    for name, value in first.items():
        np.testing.assert_array_equal(ds[name].values, np.concatenate([value, second[name]]), err_msg=name)
    assert ds["h_members"].dims == ("time", "member", "parameter")
    assert ds["h_analysis_mean"].attrs == {"units": "pA", "long_name": "analysis ensemble mean of i_ext"}
    assert ds["rate_forecast"].attrs["units"] == "Hz"
    assert not twin_store.is_complete(store)
    twin_store.update_root_attrs(store, {"complete": True})
    assert twin_store.is_complete(store) and twin_store.root_attrs(store)["tr_s"] == 2.0
    assert twin_store.check_store(store) == []
    twin_store.truncate_time(store, "assimilation", 5)
    assert twin_store.read_group(store, "assimilation").sizes["time"] == 5
    open_tree(store)  # every chunk still matches its checksum
    groups, absent = twin_store.read_groups(store)
    assert set(groups) == {"assimilation"}
    assert absent["metrics"].startswith("the store has no /metrics group (written by dtb resimulate")


def test_the_writer_refuses_what_the_schema_does_not_hold_and_writes_nothing(tmp_path):
    store = tmp_path / "run.zarr"
    twin_store.create_store(store, {})
    data, coords = _assimilation_rows(2)
    with pytest.raises(twin_store.StoreSchemaError, match=r"/assimilation has no variable\(s\) \['h_true'\]"):
        twin_store.write_group_data(store, "assimilation", {**data, "h_true": data["h_forecast_mean"]}, coords)
    missing = {k: v for k, v in data.items() if k != "innovation"}
    with pytest.raises(twin_store.StoreSchemaError, match=r"needs the variable\(s\) \['innovation'\]"):
        twin_store.write_group_data(store, "assimilation", missing, coords)
    with pytest.raises(
        twin_store.StoreSchemaError, match=r"/observation/bold must have dimensions \('time', 'region'\)"
    ):
        twin_store.write_group_data(store, "observation", {"bold": np.zeros(3), "bold_clean": np.zeros((3, 1))})
    with pytest.raises(twin_store.StoreSchemaError, match="has no group 'assimilaton'"):
        twin_store.write_group_data(store, "assimilaton", data, coords)
    assert not any(twin_store.has_group(store, g) for g in twin_store.GROUPS)
    twin_store.update_root_attrs(store, {"h_tilde": 1})
    assert twin_store.check_store(store) == ["root attribute 'h_tilde' is not in the schema"]
