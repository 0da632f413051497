"""The fidelity bench's table and statistics, and the twin's wiring variants (issue #8).

Fast: no spiking simulation except one tiny twin whose random wiring must survive the
assimilation -> store -> re-simulation round trip.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from dtb.assembly.wiring import rewire
from dtb.errors import ConfigError
from dtb.experiment.protocols import heldout_inputs, twin_setting
from dtb.fidelity import ablation, ceiling, table
from dtb.io.region_inputs import RegionSubject
from dtb.seeds import derive_seed
from dtb.twin.config import load_twin_config

ROOT = Path(__file__).resolve().parents[2]


def _connectome(n: int = 12, seed: int = 0, density: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(3.0, 1.5, size=(n, n)) * (rng.random((n, n)) < density)
    sc = np.triu(weights, 1)
    return sc + sc.T


# ------------------------------------------------------------------------------------------
# wiring


def test_dti_wiring_is_the_connectome_with_zero_diagonal():
    sc = _connectome()
    sc_diag = sc + np.eye(sc.shape[0])
    out = rewire(sc_diag, "dti")
    np.testing.assert_array_equal(out, sc)
    assert out is not sc_diag


def test_random_wiring_keeps_degrees_weights_and_symmetry_but_moves_tracts():
    sc = _connectome()
    out = rewire(sc, "random", seed=4)
    np.testing.assert_array_equal(out, out.T)
    np.testing.assert_array_equal(np.diag(out), 0.0)
    np.testing.assert_array_equal((out > 0).sum(axis=1), (sc > 0).sum(axis=1))  # binary degree per region
    np.testing.assert_array_equal((out > 0), (sc > 0))  # same edges ...
    upper = np.triu_indices(sc.shape[0], 1)
    np.testing.assert_allclose(np.sort(out[upper]), np.sort(sc[upper]))  # ... same weights ...
    moved = np.mean(out[upper][sc[upper] > 0] != sc[upper][sc[upper] > 0])
    assert moved > 0.8  # ... on other edges
    strength_r = np.corrcoef(out.sum(axis=1), sc.sum(axis=1))[0, 1]
    assert strength_r < 0.9  # which region is a hub is not kept
    np.testing.assert_array_equal(rewire(sc, "random", seed=4), out)
    assert not np.array_equal(rewire(sc, "random", seed=5), out)


def test_random_wiring_of_a_directed_connectome_keeps_its_weights():
    rng = np.random.default_rng(2)
    sc = rng.random((8, 8)) * (rng.random((8, 8)) < 0.5)
    np.fill_diagonal(sc, 0)
    out = rewire(sc, "random", seed=1)
    off = ~np.eye(8, dtype=bool)
    np.testing.assert_allclose(np.sort(out[off]), np.sort(sc[off]))
    np.testing.assert_array_equal(np.diag(out), 0.0)


def test_knn_wiring_keeps_each_regions_strongest_connections_and_the_total():
    sc = _connectome(n=20, seed=3, density=1.0)
    k = 3
    out = rewire(sc, "knn", knn_k=k)
    np.testing.assert_array_equal(out, out.T)
    assert out.sum() == pytest.approx(sc.sum())
    for i in range(sc.shape[0]):
        strongest = np.argsort(-sc[i])[:k]
        assert (out[i, strongest] > 0).all()
    assert ((out > 0).sum(axis=1) >= k).all()
    assert (out > 0).sum() < 2 * k * sc.shape[0] + 1  # union of two kNN lists at most
    kept = out > 0
    ratio = out[kept] / sc[kept]
    np.testing.assert_allclose(ratio, ratio[0])  # one common rescaling


def test_wiring_errors_name_the_setting():
    with pytest.raises(ConfigError, match="model.wiring"):
        rewire(_connectome(), "small-world")
    with pytest.raises(ConfigError, match="knn_k"):
        rewire(_connectome(n=5), "knn", knn_k=5)
    with pytest.raises(ConfigError, match="non-negative"):
        rewire(-_connectome(), "dti")
    with pytest.raises(ConfigError, match="model.wiring"):
        load_twin_config({"model": {"wiring": "lattice"}})
    assert load_twin_config({"model": {"wiring": "knn", "knn_k": 4}}).model.wiring == "knn"


def test_random_wiring_survives_the_store_and_the_resimulation(tmp_path):
    """The stored connectome is the rewired one, and re-simulation rebuilds exactly that network."""
    from dtb.io.store import open_tree
    from dtb.twin.run import assimilate_subject, resimulate_store

    labels = ("Thalamus_L", "Thalamus_R", "Frontal_Sup_2_L", "Frontal_Sup_2_R", "Insula_L")
    rng = np.random.default_rng(0)
    sc = _connectome(n=len(labels), seed=1, density=1.0)
    subject = RegionSubject(
        label="w01",
        atlas="AAL2",
        labels=labels,
        bold=1000 + np.cumsum(rng.normal(size=(36, len(labels))), axis=0),
        tr_s=0.5,
        sc=sc,
        neuron_counts=np.full(len(labels), 60),
    )
    config = {
        "seed": 2,
        "neurons_total": 300,
        "model": {"indegree": 10, "dt_ms": 1.0, "min_excitatory": 4, "min_inhibitory": 1, "wiring": "random"},
        "assimilation": {"members": 2, "warmup_windows": 3, "n_frames": 36, "heldout_fraction": 1 / 3},
        "observation": {"low_hz": None, "high_hz": 0.2},
        "resimulation": {"record_seconds": 0.0},
    }
    store = assimilate_subject(subject, config, tmp_path / "run.zarr", progress="none")
    stored = open_tree(store)["network"]["connectome"].values
    expected = rewire(sc, "random", seed=derive_seed(load_twin_config(config).seed, "wiring"))
    np.testing.assert_allclose(stored, expected)
    assert not np.allclose(stored, sc)
    resimulate_store(store, progress="none")
    assert np.isfinite(open_tree(store)["resimulation"]["bold"].values).all()
    # the bench's held-out score over the input regions: 12 free frames, persistence from frame 23
    skill = heldout_inputs(store, ["Thalamus_L", "Thalamus_R"])
    observed = open_tree(store)["observation"]["bold"].values[:, :2]
    expected = np.sqrt(np.mean((observed[24:] - observed[23]) ** 2))
    assert skill["persistence_input_rmse"] == pytest.approx(expected)
    assert skill["heldout_input_rmse"] > 0 and -1 <= skill["heldout_input_r"] <= 1


# ------------------------------------------------------------------------------------------
# table and statistics


def _row(subject, protocol, **values):
    row = {k: 0.1 for k in table.FIELDS[2:]}
    row.update(subject=subject, protocol=protocol, **values)
    return row


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_runs_file_keeps_the_last_line_per_pair_and_rejects_missing_fields(tmp_path):
    path = _write(tmp_path / "runs.jsonl", [_row("1", "B", fc_similarity=0.2), _row("1", "B", fc_similarity=0.7)])
    runs = table.read_runs(path)
    assert len(runs) == 1 and runs[0]["fc_similarity"] == 0.7
    bad = _row("2", "B")
    del bad["heldout_r"]
    _write(tmp_path / "bad.jsonl", [bad])
    with pytest.raises(ValueError, match="heldout_r"):
        table.read_runs(tmp_path / "bad.jsonl")
    assert table.read_runs(tmp_path / "absent.jsonl") == []
    appended = tmp_path / "appended.jsonl"  # the runners' append: one line per row, read back in order
    table.append_run_line(appended, _row("3", "B", fc_similarity=0.3))
    table.append_run_line(appended, _row("3", "B", fc_similarity=0.4))
    assert len(appended.read_text().splitlines()) == 2 and table.read_runs(appended)[0]["fc_similarity"] == 0.4


def test_summary_means_targets_and_null_values(tmp_path):
    rows = [
        _row("1", "B", resim_region_r=0.5, fc_similarity=0.6, forecast_r=0.96, heldout_rmse=1.0, persistence_rmse=2.0),
        _row("2", "B", resim_region_r=0.9, fc_similarity=None, forecast_r=0.86, heldout_rmse=1.0, persistence_rmse=2.0),
    ]
    summary = table.summarize_runs(rows)
    b = summary["protocols"]["B"]
    assert b["mean"]["resim_region_r"]["mean"] == pytest.approx(0.7)
    assert b["mean"]["resim_region_r"]["sd"] == pytest.approx(np.std([0.5, 0.9], ddof=1))
    assert b["mean"]["fc_similarity"] == {"mean": 0.6, "sd": None, "n": 1}  # the null is left out
    assert b["targets"]["resim_region_r"]["met"] is True  # 0.7 >= 0.624
    assert b["targets"]["fc_similarity"]["met"] is True
    assert b["targets"]["forecast_r"]["met"] is True  # 0.91 >= 0.9
    assert b["targets"]["heldout_beats_persistence"]["met"] is True
    assert summary["published"]["fc_similarity"] == 0.551


def test_heldout_beats_persistence_needs_the_mean_and_most_subjects():
    # one subject far better, eight a little worse: the mean is lower, the majority is not
    rows = [_row("0", "B", heldout_rmse=0.1, persistence_rmse=1.0, dataset="HCP")]
    rows += [_row(str(i), "B", heldout_rmse=1.01 + 0.001 * i, persistence_rmse=1.0, dataset="GW") for i in range(1, 9)]
    b = table.summarize_runs(rows)["protocols"]["B"]
    target = b["targets"]["heldout_beats_persistence"]
    assert b["mean"]["heldout_rmse"]["mean"] < b["mean"]["persistence_rmse"]["mean"]
    assert target["met"] is False
    assert target["paired"]["n"] == 9 and target["paired"]["n_lower"] == 1
    better = [dict(r, heldout_rmse=0.5 - 0.01 * i) for i, r in enumerate(rows)]
    test = table.summarize_runs(better)["protocols"]["B"]["targets"]["heldout_beats_persistence"]
    assert test["met"] is True and test["paired"]["p"] == pytest.approx(2 / 2**9)
    split = b["by_dataset"]
    assert split["HCP"]["heldout_rmse"]["n"] == 1 and split["GW"]["heldout_rmse"]["n"] == 8
    assert split["GW"]["persistence_rmse"]["mean"] == pytest.approx(1.0)
    md = table.markdown(table.summarize_runs(rows))
    assert "held-out RMSE lower than persistence's in 1 of 9 subjects" in md and "| B | GW |" in md
    assert md.startswith("**In-sample**") and "docs/fidelity.md" in md


def test_paired_wilcoxon_over_subjects_reports_either_direction():
    subjects = [str(i) for i in range(9)]
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 0.1, size=9)
    up = [_row(s, "A-thalamus", fc_similarity=b) for s, b in zip(subjects, base)]
    up += [
        _row(s, "A-interoceptive", fc_similarity=b + 0.05 + 0.01 * i) for i, (s, b) in enumerate(zip(subjects, base))
    ]
    test = table.paired_comparison(up, "fc_similarity")
    assert test["n"] == 9 and test["n_higher"] == 9
    assert test["p"] == pytest.approx(2 / 2**9)  # exact two-sided p: all 9 signs the same
    down = [dict(r, fc_similarity=-r["fc_similarity"]) for r in up]
    test = table.paired_comparison(down, "fc_similarity")
    assert test["n_higher"] == 0 and test["p"] == pytest.approx(2 / 2**9)
    assert test["mean_difference"] < 0
    same = [_row(s, p, fc_similarity=0.3) for s in subjects for p in ("A-thalamus", "A-interoceptive")]
    assert table.paired_comparison(same, "fc_similarity")["p"] is None
    lonely = up[:9] + up[9:10]  # one pair only
    assert table.paired_comparison(lonely, "fc_similarity")["n"] == 1


def test_results_files_carry_field_names_published_values_and_every_run(tmp_path):
    rows = [_row(s, p) for s in ("101309", "NAP001") for p in ("A-thalamus", "A-interoceptive", "B")]
    path = _write(tmp_path / "runs.jsonl", rows)
    table.write_results(path, tmp_path, {"neurons_total": 1000})
    summary = json.loads((tmp_path / "results.json").read_text())
    assert list(summary["protocols"]) == ["A-thalamus", "A-interoceptive", "B"]
    assert len(summary["runs"]) == 6 and summary["setting"] == {"neurons_total": 1000}
    for run in summary["runs"]:
        assert set(table.FIELDS) <= set(run)
    md = (tmp_path / "results.md").read_text()
    for text in ("0.551", "0.624", "0.271", "Wilcoxon", "NAP001", *table.FIELDS[2:]):
        assert text in md


# ------------------------------------------------------------------------------------------
# the data-only ceiling of protocol A and the ablation summary


def test_linear_ceiling_recovers_the_explained_share_of_a_linear_brain():
    rng = np.random.default_rng(5)
    n_t, inputs, n_other = 3000, [0, 1], 6
    x = rng.normal(size=(n_t, 2))
    b = rng.normal(size=(2, n_other))
    noise_sd = np.linspace(0.5, 3.0, n_other)
    y = x @ b + rng.normal(size=(n_t, n_other)) * noise_sd
    explained = np.sqrt((b**2).sum(axis=0) / ((b**2).sum(axis=0) + noise_sd**2))
    out = ceiling.linear_ceiling(np.column_stack([x, y]), inputs)
    assert out["noninput_r_insample"] == pytest.approx(explained.mean(), abs=0.02)
    assert out["noninput_r_heldout"] == pytest.approx(explained.mean(), abs=0.03)
    assert out["fc_ceiling"] > 0.97  # the data are this model: its FC is theirs up to sampling
    unrelated = ceiling.linear_ceiling(np.column_stack([x, rng.normal(size=(n_t, n_other))]), inputs)
    assert abs(unrelated["noninput_r_heldout"]) < 0.06
    assert unrelated["noninput_r_heldout"] < out["noninput_r_heldout"] - 0.3


def test_ablation_summary_pairs_variants_with_dti_by_subject():
    rows = [
        {"variant": "dti", "subject": "a", "fc_similarity": 0.8},
        {"variant": "dti", "subject": "b", "fc_similarity": 0.6},
        {"variant": "random", "subject": "a", "fc_similarity": 0.5},
        {"variant": "random", "subject": "b", "fc_similarity": 0.5},
        {"variant": "knn", "subject": "c", "fc_similarity": 0.1},  # no dti partner
    ]
    summary = ablation.summarize(rows)
    assert summary["random"]["fc_similarity"] == pytest.approx(0.5)
    assert summary["random"]["fc_similarity_minus_dti"] == pytest.approx(-0.2)
    assert summary["knn"]["fc_similarity_minus_dti"] is None
    assert summary["dti"]["fc_similarity_minus_dti"] is None
    assert summary["dti"]["resim_region_r"] is None
    md = ablation.markdown(summary)
    assert "random | 2 | 0.500 (-0.200)" in md
    paired = summary["random"]["paired"]["fc_similarity"]
    assert paired["n"] == 2 and paired["n_higher"] == 0 and paired["mean_difference"] == pytest.approx(-0.2)
    assert summary["knn"]["paired"]["fc_similarity"]["n"] == 0 and "paired" not in summary["dti"]
    assert "random vs dti, fc_similarity: n = 2 subjects, 0 higher with random" in md


PRESETS = sorted((ROOT / "config" / "twin").glob("*.yaml"))


def preset_table() -> dict[str, dict[str, object]]:
    """docs/twin.md's preset table as {preset name: {dotted config key: value}}.

    The table is the one whose header starts with ``key`` followed by backticked preset names;
    each value is the YAML inside the cell's backticks (``a/b`` is a fraction).
    """
    lines = (ROOT / "docs" / "twin.md").read_text().splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    starts = [i for i, row in enumerate(cells) if row[0] == "key" and len(row) > 2 and row[1].startswith("`")]
    assert len(starts) == 1, f"docs/twin.md must hold exactly one preset table, found {len(starts)}"
    header = cells[starts[0]]
    names = [h.strip("`") for h in header[1:] if h.startswith("`")]
    table: dict[str, dict[str, object]] = {name: {} for name in names}
    i = starts[0] + 2  # after the header and its |---| line
    while i < len(lines) and lines[i].startswith("|"):
        row, i = cells[i], i + 1
        key = row[0].strip("`")
        for name, cell in zip(names, row[1:]):
            assert cell.startswith("`") and cell.endswith("`"), (
                f"docs/twin.md, {key} / {name}: {cell!r} not in backticks"
            )
            text = cell.strip("`")
            if re.fullmatch(r"\d+/\d+", text):
                value: object = int(text.split("/")[0]) / int(text.split("/")[1])
            else:
                value = yaml.safe_load(text)
            assert key not in table[name], f"docs/twin.md lists {key} twice"
            table[name][key] = value
    return table


def _flat(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and key != "scaling_params":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _resolved(config) -> dict:
    """Every setting of a loaded config, defaults included, as {dotted YAML key: value}."""
    from dtb.twin.run import _config_mapping

    return _flat(_config_mapping(config.describe()))


def test_the_doc_table_has_one_column_per_preset_file():
    assert sorted(preset_table()) == sorted(p.stem for p in PRESETS)
    assert {"fast-cpu", "faithful-gpu"} <= {p.stem for p in PRESETS}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_each_preset_file_is_what_the_doc_table_says(path):
    documented = preset_table()[path.stem]
    resolved = _resolved(load_twin_config(path))
    written = _flat(yaml.safe_load(path.read_text()))
    undocumented = sorted(set(written) - set(documented))
    assert not undocumented, f"{path.name} sets {undocumented}, which docs/twin.md's preset table does not list"
    for key, value in documented.items():
        assert key in resolved, f"docs/twin.md lists {key!r}, which is not a twin config key"
        actual = resolved[key]
        if isinstance(value, float) or isinstance(actual, float):
            assert actual == pytest.approx(value, rel=1e-12), f"{path.name}: {key} is {actual!r}, docs say {value!r}"
        else:
            assert actual == value, f"{path.name}: {key} is {actual!r}, docs/twin.md says {value!r}"


def test_fast_cpu_is_the_setting_the_fidelity_numbers_were_measured_with():
    """dtb.experiment.protocols.twin_setting's defaults (protocol A-thalamus), which bench/fidelity/run.py's
    defaults pass on, are the fast-cpu preset, up to threads and recording."""
    mapping = twin_setting()
    mapping["assimilation"]["input_regions"] = table.PROTOCOLS["A-thalamus"]
    bench = _resolved(load_twin_config(mapping))
    preset = _resolved(load_twin_config(ROOT / "config" / "twin" / "fast-cpu.yaml"))
    not_results = {"threads", "resimulation.record_seconds"}  # bitwise-neutral / recording only
    differ = {k: (preset[k], bench[k]) for k in bench if k not in not_results and preset[k] != bench[k]}
    assert not differ, f"fast-cpu.yaml vs twin_setting() (preset, setting): {differ}"
    assert preset["assimilation.n_frames"] == 60 and preset["model.indegree"] == 20


def test_a_result_file_refuses_lines_of_another_setting():
    """A line that does not record a key counts as what was used before it was recorded."""
    lines = [("101309", {"members": 8}), ("NAP001", {"members": 8, "balloon_update": "bounded"})]
    before = {"balloon_update": "linear"}
    assert table.other_setting("r.jsonl", lines[1:], {"members": 8, "balloon_update": "bounded"}, before) is None
    assert table.other_setting("r.jsonl", lines[:1], {"members": 8, "balloon_update": "linear"}, before) is None
    refused = table.other_setting("r.jsonl", lines, {"members": 8, "balloon_update": "bounded"}, before)
    assert refused == (
        "r.jsonl holds twins of another setting (sub-101309: balloon_update 'linear' there, 'bounded' asked); "
        "give this setting its own --out"
    )
    assert "members 8 there, 16 asked" in table.other_setting("r.jsonl", lines[1:], {"members": 16}, before)
