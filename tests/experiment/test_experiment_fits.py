"""The studies that fit new twins of one subject (`dtb experiment scaling | input-regions`).

Fast: every bad input is refused before a twin is fitted or anything is written; the statistics.
Slow (``--run-slow``): the scaling study on a 4-region twin at 2 sizes and 2 in-degrees (held-out
protocol, 400 s of BOLD per fit), the input-regions study on a 5-region twin, and the report's
Experiments section built from their outputs.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dtb.errors import ConfigError, DTBError, ReportError
from dtb.experiment.inputregions import paired_regions
from dtb.experiment.scaling import scaling_points, trend
from dtb.experiment.studies import run_subject_study
from dtb.io.region_inputs import write_region_subject
from dtb.report.experiments import experiments_section, load_experiment_results
from tests.experiment_fixtures import HELDOUT_LABELS, heldout_subject, small_subject, tiny_scaling_config


def _scaling(tmp_path, **changes):
    config = tiny_scaling_config()
    config["scaling"].update(changes)
    return run_subject_study("scaling", heldout_subject(), tmp_path / "out", config=config)


def test_scaling_refuses_bad_settings_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown scaling input region name\(s\) \['V1'\].*Insula_R"):
        _scaling(tmp_path, input_regions=["Thalamus", "V1"])
    with pytest.raises(ConfigError, match="scaling.neurons must be a list of positive whole number"):
        _scaling(tmp_path, neurons=[0, 240])
    with pytest.raises(ConfigError, match="scaling.indegrees lists a value twice"):
        _scaling(tmp_path, indegrees=[5, 5])
    with pytest.raises(ConfigError, match=r"unknown scaling setting\(s\) \['sizes'\]"):
        _scaling(tmp_path, sizes=[1, 2])
    with pytest.raises(ConfigError, match="scaling.twin .* does not exist"):
        _scaling(tmp_path, twin=str(tmp_path / "missing.yaml"))
    with pytest.raises(DTBError, match="too short for the 'halves' split"):
        _scaling(tmp_path, frames=150)  # the first 150 frames only: 300 s
    short = heldout_subject()
    short = dataclasses.replace(short, bold=short.bold[:150])  # 300 s: under halves' 200 s + 120 s
    with pytest.raises(DTBError, match="too short for the 'halves' split"):
        run_subject_study("scaling", short, tmp_path / "out", config=tiny_scaling_config())
    assert not (tmp_path / "out").exists()


def test_scaling_frames_cut_the_run_that_every_fit_sees():
    from dtb.experiment.scaling import SCALING_DEFAULTS, check_scaling

    subject = heldout_subject()  # 200 frames at TR 2 s; the thirds split needs 180 (360 s)
    settings = {**SCALING_DEFAULTS, **tiny_scaling_config()["scaling"], "split": "thirds", "frames": 190}
    checked = check_scaling(subject, settings)
    assert checked["subject"].bold.shape[0] == 190 < subject.bold.shape[0]
    np.testing.assert_array_equal(checked["subject"].bold, subject.bold[:190])
    assert checked["run"].split.n_frames == 190
    assert check_scaling(subject, {**settings, "frames": None})["subject"] is subject


def test_a_stored_point_is_reused_only_for_the_same_effective_fit(tmp_path):
    """A point fingerprints what the fit resolves to: leaving balloon_update out is the same fit as
    naming today's default, naming another mode is another fit, and a twin YAML counts by its contents."""
    from dtb.assim.hmda import HMDASettings
    from dtb.experiment.scaling import SCALING_DEFAULTS, _fingerprint, check_scaling

    subject = heldout_subject()
    base = {**SCALING_DEFAULTS, **tiny_scaling_config()["scaling"]}

    def key(twin) -> str:
        checked = check_scaling(subject, {**base, "twin": twin})
        return _fingerprint(checked["subject"], checked, scaling_points(checked)[0])

    twin = base["twin"]

    def assim(mode: str) -> dict:
        return {**twin, "assimilation": {"balloon_update": mode}}

    default = HMDASettings.balloon_update
    other = next(m for m in ("linear", "bounded") if m != default)
    assert key(twin) == key(assim(default)) != key(assim(other))
    path = tmp_path / "twin.yaml"
    path.write_text(json.dumps(assim(default)))  # JSON is YAML
    same = key(str(path))
    path.write_text(json.dumps(assim(other)))
    assert same == key(twin) and key(str(path)) == key(assim(other))


def test_scaling_points_are_the_two_sweeps_with_the_shared_point_once():
    settings = {"neurons": [120, 240], "indegree": 10, "indegrees": [5, 10], "indegree_neurons": 120}
    points = scaling_points(settings)
    assert [(p["neurons"], p["indegree"]) for p in points] == [(120, 10), (240, 10), (120, 5)]
    assert points[0]["sweeps"] == ["neurons", "indegree"]


def test_trend_is_the_spearman_rank_correlation():
    up = trend([1000, 3162, 10000, 31623], [0.1, 0.2, 0.25, 0.4])
    assert up["rho"] == pytest.approx(1.0) and up["last_minus_first"] == pytest.approx(0.3) and up["n"] == 4
    down = trend([20, 50, 100, 200], [0.4, 0.3, np.nan, 0.1])
    assert down["rho"] == pytest.approx(-1.0) and down["n"] == 3  # the NaN point is left out
    assert trend([1, 2], [0.1, 0.2])["rho"] is None  # too few points for a rank correlation
    # a perfect trend over n sizes: exact p = 2 / n! (only the two monotone pairings are as extreme)
    assert up["p"] == pytest.approx(2 / 24) and down["p"] == pytest.approx(2 / 6)


def test_paired_regions_is_a_wilcoxon_over_the_shared_regions():
    a = {f"r{i}": 0.1 * i for i in range(8)}
    b = {k: v + 0.05 for k, v in a.items()} | {"r7": None}
    test = paired_regions(a, b, list(a))
    assert test["n"] == 7 and test["n_higher"] == 7 and test["regions"] == [f"r{i}" for i in range(7)]
    assert test["mean_difference"] == pytest.approx(0.05)
    assert test["p"] == pytest.approx(2 / 2**7)  # exact: all 7 signs the same


def test_input_regions_and_the_cli_refuse_bad_input_before_anything_is_written(tmp_path, capsys):
    from dtb.cli import main

    with pytest.raises(ConfigError, match="at least two different protocols"):
        run_subject_study(
            "input-regions", small_subject(), tmp_path / "o", config={"input-regions": {"protocols": ["B"]}}
        )
    with pytest.raises(ConfigError, match="at least two different protocols"):
        run_subject_study("input-regions", small_subject(), tmp_path / "o", config={"input-regions": {"protocols": ["A-thalamus", "C"]}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"input-regions.record_seconds must be >= 0 s, got -1"):
        run_subject_study("input-regions", small_subject(), tmp_path / "o", config={"input-regions": {"record_seconds": -1}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"input region\(s\) \['Hippocampus_R'.*of set 'interoceptive'"):
        run_subject_study("input-regions", small_subject(), tmp_path / "o")  # 5 regions: no insula, ACC, ...
    inputs = tmp_path / "inputs"
    write_region_subject(inputs, heldout_subject())
    out = tmp_path / "never"
    assert main(["experiment", "scaling", "--store", str(tmp_path / "x.zarr"), "--out", str(out)]) == 2
    assert "--inputs DIR and --subject LABEL" in capsys.readouterr().err
    assert main(["experiment", "lesion", "--inputs", str(inputs), "--subject", "s01", "--out", str(out)]) == 2
    assert "give --store" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("scaling: {input_regions: [Amygdala]}\n")
    args = ["experiment", "scaling", "--inputs", str(inputs), "--subject", "s01", "--out", str(out)]
    assert main([*args, "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "['Amygdala']" in err and ", ".join(HELDOUT_LABELS) in err
    assert main([*args[:5], "nobody", *args[6:]]) == 2
    assert "nobody" in capsys.readouterr().err
    assert main(["experiment", "input-regions", *args[2:], "--p", "0.5"]) == 2
    assert "--config" in capsys.readouterr().err
    assert not out.exists()


def test_report_refuses_an_experiment_path_that_is_no_result(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"subject": "x"}))
    with pytest.raises(ReportError, match="not a `dtb experiment` result"):
        load_experiment_results([tmp_path / "other.json"])
    with pytest.raises(ReportError, match="holds no study result"):
        load_experiment_results([tmp_path])
    with pytest.raises(ReportError, match="does not exist"):
        load_experiment_results([tmp_path / "missing"])


# ---------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_scaling_study_on_a_tiny_twin(tmp_path):
    from dtb.report.experiments import ExperimentResult

    out = tmp_path / "out"
    paths = run_subject_study("scaling", heldout_subject(), out, config=tiny_scaling_config())
    assert [p.name for p in paths] == ["scaling.zarr", "scaling.json", "scaling.png"]
    summary = json.loads((out / "scaling.json").read_text())
    points = {(p["neurons_requested"], p["indegree"]): p for p in summary["points"]}
    assert sorted(points) == [(120, 5), (120, 10), (240, 10)]
    for (n, _), p in points.items():  # the size asked for is the size each fitted network has
        assert p["neurons_built"] == n
        assert set(p["forecast"]) == {"1", "2"} and p["forecast"]["1"]["frames"] >= 10
        assert -1 <= p["free_run"]["fc_r"] <= 1
    assert summary["sizes_honoured"] is True and "DTB" in summary["dtb_claim"]
    assert summary["trends"]["neurons"]["free_fc_r"]["n"] == 2
    assert set(summary["baselines"]) >= {"persistence", "AR(1)"}
    from dtb.io.store import open_tree

    ds = open_tree(out / "scaling.zarr")
    assert ds["forecast_r2"].shape == (3, 2) and ds["in_neuron_sweep"].values.sum() == 2
    # resumable: a rerun reuses every scored point and writes the same results
    lines = (out / "scaling_points.jsonl").read_text()
    run_subject_study("scaling", heldout_subject(), out, config=tiny_scaling_config())
    assert (out / "scaling_points.jsonl").read_text() == lines
    assert json.loads((out / "scaling.json").read_text())["points"] == summary["points"]
    # the report's Experiments section shows the figure and the claim
    results = load_experiment_results([out])
    assert [r.name for r in results] == ["scaling"] and isinstance(results[0], ExperimentResult)
    section = experiments_section(results)
    assert len(section.figures()) == 1 and section.figures()[0].png == (out / "scaling.png").read_bytes()
    table = section.blocks[1]
    assert table.rows[0] == ("DTB's claim", summary["dtb_claim"])


@pytest.mark.slow
def test_input_regions_study_pairs_the_two_input_sets(tmp_path):
    from dtb.selftest import synthetic_region_subject
    from dtb.twin.config import INPUT_SETS

    labels = (*INPUT_SETS["interoceptive"], "Calcarine_L", "Frontal_Sup_2_L")
    subject = synthetic_region_subject(
        "ir01", labels, [40] * len(labels), n_frames=40, tr_s=0.2, kernel=np.exp(-np.arange(20) / 5.0), pad=50, seed=11
    )
    config = {
        "input-regions": {"neurons": 480, "indegree": 10, "members": 3, "frames": 40, "warmup": 4, "seed": 5}
    }  # > 33 frames: the band-pass
    run_subject_study("input-regions", subject, tmp_path / "out", config=config)
    summary = json.loads((tmp_path / "out" / "input-regions.json").read_text())
    assert summary["protocols"] == ["A-thalamus", "A-interoceptive"]
    thal, intero = summary["runs"]
    assert thal["input_regions"] == ["Thalamus_L", "Thalamus_R"]
    assert sorted(intero["input_regions"]) == sorted(INPUT_SETS["interoceptive"])
    paired = summary["paired_regions"]
    # the regions neither set assimilates: the visual and frontal ones of this twin
    assert paired["regions"] == ["Calcarine_L", "Frontal_Sup_2_L"] and paired["n"] == 2
    assert set(summary["by_protocol"]) == {"A-thalamus", "A-interoceptive"}
    assert all(-1 <= r <= 1 for run in summary["runs"] for r in run["region_r"].values() if r is not None)
    assert not (tmp_path / "out" / "input-regions_stores").exists()
