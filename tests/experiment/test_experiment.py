"""Virtual experiments on a small fitted twin (tests/experiment_fixtures.py): the API, the studies, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dtb.errors import ConfigError, DTBError
from dtb.experiment.analysis import conditional_granger, h_spectra
from dtb.experiment.perturb import Lesion, Perturbation, Stimulation, resolve_regions, rewire_local
from dtb.experiment.run import perturbed_region_model, run_perturbed
from dtb.io.store import open_tree
from dtb.twin.run import load_fitted
from tests.experiment_fixtures import LABELS, make_fitted_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_fitted_store(tmp_path_factory.mktemp("twin"))


@pytest.fixture(scope="module")
def fitted(store):
    return load_fitted(store)


@pytest.fixture(scope="module")
def baseline(fitted):
    return run_perturbed(fitted)


def _neuron_region(model) -> np.ndarray:
    return np.repeat(model.population_region, np.diff(model.network.offsets))


def _region_edges(model) -> np.ndarray:
    """Synapse counts (source region, target region) of a built network."""
    net = model.network
    nr = _neuron_region(model)
    src = nr[np.repeat(np.arange(net.n_neurons), np.diff(net.indptr))]
    tgt = nr[net.targets.astype(np.int64)]
    n = model.n_regions
    return np.bincount(src * n + tgt, minlength=n * n).reshape(n, n)


def test_unperturbed_experiment_reproduces_the_stores_resimulation_bitwise(store, baseline):
    resim = open_tree(store)["resimulation"]
    assert np.array_equal(baseline["bold"].values, resim["bold"].values)
    assert np.array_equal(baseline["rate"].values, resim["rate"].values)
    assert baseline.attrs["seed"] == resim.attrs["seed"]


def test_an_empty_lesion_and_rewiring_p0_are_bitwise_unperturbed(fitted, baseline):
    for pert in (
        Perturbation(lesion=Lesion((), "both")),
        Perturbation(rewire_p=0.0),
        Perturbation(stimulation=Stimulation(("Calcarine_L",), 0.0)),
    ):
        ds = run_perturbed(fitted, pert)
        assert np.array_equal(ds["bold"].values, baseline["bold"].values), pert
        assert np.array_equal(ds["rate"].values, baseline["rate"].values), pert


def test_lesion_cuts_the_regions_connections_in_the_built_network(fitted, baseline):
    calc = LABELS.index("Calcarine_L")
    intact = _region_edges(perturbed_region_model(fitted, Perturbation()))
    assert (np.delete(intact[calc], calc) > 0).all() and (np.delete(intact[:, calc], calc) > 0).all()
    out = _region_edges(perturbed_region_model(fitted, Perturbation(lesion=Lesion(("Calcarine",), "outgoing"))))
    assert (np.delete(out[calc], calc) == 0).all()  # nothing leaves Calcarine_L
    assert (np.delete(out[:, calc], calc) > 0).all()  # it still receives
    assert out[calc, calc] > 0  # local synapses stay
    inc = _region_edges(perturbed_region_model(fitted, Perturbation(lesion=Lesion(("Calcarine_L",), "incoming"))))
    assert (np.delete(inc[:, calc], calc) == 0).all() and (np.delete(inc[calc], calc) > 0).all()
    assert np.array_equal(np.delete(np.delete(inc, calc, 0), calc, 1), np.delete(np.delete(intact, calc, 0), calc, 1))
    both = _region_edges(perturbed_region_model(fitted, Perturbation(lesion=Lesion(("Calcarine_L",), "both"))))
    assert (np.delete(both[calc], calc) == 0).all() and (np.delete(both[:, calc], calc) == 0).all()
    ds = run_perturbed(fitted, Perturbation(lesion=Lesion(("Calcarine_L",), "both")))
    assert not np.array_equal(ds["bold"].values, baseline["bold"].values)


def test_stimulation_raises_the_stimulated_regions_rate_in_its_window_only(fitted, baseline):
    calc = LABELS.index("Calcarine_L")
    ds = run_perturbed(fitted, Perturbation(stimulation=Stimulation(("Calcarine_L",), 0.1, 2.0, 4.0)))
    t = baseline["time"].values
    d = ds["rate"].values[:, calc] - baseline["rate"].values[:, calc]
    assert np.array_equal(ds["rate"].values[t < 2.0], baseline["rate"].values[t < 2.0])  # before: same bits
    assert d[(t >= 2.0) & (t < 4.0)].mean() > 2.0


def test_rewire_local_moves_a_share_p_to_the_nearest_neighbours():
    rng = np.random.default_rng(0)
    sc = rng.uniform(1, 10, size=(6, 6))
    np.fill_diagonal(sc, 0)
    assert np.array_equal(rewire_local(sc, 0.0), sc)
    for p in (0.25, 1.0):
        out = rewire_local(sc, p, k=2)
        np.testing.assert_allclose(out.sum(axis=0), sc.sum(axis=0))  # each region's total input kept
        assert (np.diag(out) == 0).all()
    full = rewire_local(sc, 1.0, k=2)
    assert ((full > 0).sum(axis=0) == 2).all()
    centres = np.arange(6)[:, None] * np.array([[10.0, 0, 0]])
    near = rewire_local(sc, 1.0, k=1, centres=centres)
    assert near[1, 0] > 0 and near[4, 5] > 0 and (near > 0).sum() == 6
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        rewire_local(sc, 1.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        Perturbation(rewire_p=-0.1)


def test_unknown_regions_are_refused_with_the_valid_names():
    with pytest.raises(ConfigError) as err:
        resolve_regions(["Calcarine", "V1"], LABELS)
    assert "['V1']" in str(err.value) and "Hippocampus_L" in str(err.value)
    assert resolve_regions(["Thalamus"], LABELS) == [0, 1]


def test_spectra_find_the_peak_of_a_known_frequency():
    tr = 2.0
    t = np.arange(240) * tr
    rng = np.random.default_rng(3)
    h = np.stack([0.1 + 0.02 * np.sin(2 * np.pi * f * t) + 0.004 * rng.normal(size=t.size) for f in (0.05, 0.12)], 1)
    freqs, power, peak = h_spectra(h, 1 / tr, nperseg=64)
    step = freqs[1] - freqs[0]
    assert abs(peak[0] - 0.05) <= step and abs(peak[1] - 0.12) <= step
    assert power.shape == (freqs.size, 2)


def test_granger_finds_a_planted_dependency_and_not_the_reverse():
    rng = np.random.default_rng(1)
    n = 300
    x, y, z = np.zeros(n), np.zeros(n), rng.normal(size=n)
    e = rng.normal(size=(n, 2))
    for t in range(1, n):
        x[t] = 0.5 * x[t - 1] + e[t, 0]
        y[t] = 0.4 * y[t - 1] + 0.6 * x[t - 1] + e[t, 1]
    res = conditional_granger(np.c_[x, y, z], order=1, n_surrogates=199, seed=2)
    assert res.p_value[0, 1] <= 0.01 and res.significant_fdr[0, 1]
    assert res.p_value[1, 0] > 0.05 and not res.significant_fdr[1, 0]
    assert res.significant_fdr.sum() == 1
    assert np.nanmin(res.gc) >= 0


def test_studies_write_zarr_json_and_figure(store, tmp_path):
    from dtb.cli import main

    out = tmp_path / "out"
    assert main(["experiment", "lesion", "--store", str(store), "--out", str(out), "--regions", "Calcarine"]) == 0
    summary = json.loads((out / "lesion.json").read_text())
    assert summary["lesioned_regions"] == ["Calcarine_L"] and summary["report_regions"] == ["Hippocampus_L"]
    assert set(summary["delta_r"]) == set(LABELS) and summary["delta_r_whole_brain"] is not None
    assert (out / "lesion.png").stat().st_size > 1000 and open_tree(out / "lesion.zarr")["delta_r"].shape == (5,)
    # the noise control: the next seed, no lesion; another seed moves region r (it is not the baseline)
    assert summary["noise_seed"] == summary["seed"] + 1 and set(summary["delta_r_noise"]) == set(LABELS)
    assert any(abs(v) > 1e-9 for v in summary["delta_r_noise"].values() if v is not None)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "rewiring: {p: [0.0, 1.0], k: 2}\nspectra: {nperseg: 16}\ngranger: {n_surrogates: 39}\n"
        "stimulation: {regions: [Calcarine_L], amplitude: 0.1, start_s: 2.0, stop_s: 4.0}\n"
    )
    for name in ("rewiring", "spectra", "granger", "stimulation"):
        assert main(["experiment", name, "--store", str(store), "--out", str(out), "--config", str(cfg)]) == 0
        assert (out / f"{name}.json").is_file() and (out / f"{name}.png").is_file() and (out / f"{name}.zarr").is_dir()
    rows = json.loads((out / "rewiring.json").read_text())["rows"]
    assert [r["p"] for r in rows] == [0.0, 1.0] and rows[0]["fc_similarity_to_unperturbed"] == pytest.approx(1.0)
    control = json.loads((out / "rewiring.json").read_text())["noise_control"]
    assert control["fc_similarity_to_unperturbed"] < 1.0  # the noise floor of "similarity to P = 0"
    spectra = json.loads((out / "spectra.json").read_text())
    assert set(spectra["peak_hz"]) == {"Thalamus_L", "Thalamus_R"}
    for region, hz in spectra["peak_hz"].items():  # a peak in the first bin above 0 Hz is flagged
        assert spectra["peak_at_lowest_bin"][region] == (abs(hz - spectra["lowest_bin_hz"]) < 1e-12)
    stim = json.loads((out / "stimulation.json").read_text())
    assert stim["windows_stimulated"] == 10 and stim["delta_rate_hz_during"]["Calcarine_L"] > 2.0
    # the report's Experiments section: each study's figure and its summary beside the DTB's claim
    from dtb.report.experiments import experiments_section, load_experiment_results

    results = load_experiment_results([out])
    assert sorted(r.name for r in results) == ["granger", "lesion", "rewiring", "spectra", "stimulation"]
    section = experiments_section(results)
    assert [f.png for f in section.figures()] == [(out / f"{r.name}.png").read_bytes() for r in results]
    tables = [b for b in section.blocks if b.kind == "table"]
    assert all(t.rows[0] == ("DTB's claim", r.summary["dtb_claim"]) for t, r in zip(tables, results))
    lesion = dict(tables[[r.name for r in results].index("lesion")].rows)
    assert float(lesion["delta_r_whole_brain"]) == pytest.approx(summary["delta_r_whole_brain"], rel=1e-3)


def test_bad_input_is_refused_before_anything_is_written(store, tmp_path, capsys):
    from dtb.cli import main

    out = tmp_path / "never"
    assert main(["experiment", "lesion", "--store", str(store), "--out", str(out), "--regions", "V1"]) == 2
    err = capsys.readouterr().err
    assert "unknown lesion region name(s) ['V1']" in err and "Calcarine_L" in err
    assert main(["experiment", "rewiring", "--store", str(store), "--out", str(out), "--p", "0", "1.5"]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    broken = tmp_path / "broken.zarr"
    shutil.copytree(store, broken)
    shutil.rmtree(broken / "assimilation" / "h_analysis_mean")
    assert main(["experiment", "spectra", "--store", str(broken), "--out", str(out)]) == 2
    assert "no fitted h track" in capsys.readouterr().err
    assert main(["experiment", "rewiring", "--store", str(store), "--out", str(out), "--regions", "Calcarine"]) == 2
    assert "unknown rewiring setting(s) ['regions']" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="without any long-range input"):
        run_perturbed(load_fitted(store), Perturbation(lesion=Lesion(LABELS[1:], "outgoing")))
    with pytest.raises(DTBError, match="not a twin run store"):
        load_fitted(tmp_path / "missing.zarr")
    assert not out.exists()


def test_cli_lists_the_librarys_studies():
    from dtb.cli.experiment import STUDIES as cli
    from dtb.experiment.studies import STUDIES

    assert cli == STUDIES


def _critical_branching_avalanches(rng, n: int) -> np.ndarray:
    """Binned activity of ``n`` avalanches of a critical (m = 1, Poisson offspring) branching process."""
    series = [0]
    for _ in range(n):
        active, steps = 1, 0
        while active and steps < 5000:
            series.append(active)
            active, steps = int(rng.poisson(active)), steps + 1
        series.append(0)
    return np.asarray(series)


def test_avalanches_of_a_critical_branching_process_have_the_mean_field_exponents():
    from dtb.experiment.criticality import avalanches, exponent_relation, fit_power_law

    sizes, durations = avalanches(_critical_branching_avalanches(np.random.default_rng(1), 4000))
    assert sizes.size == 4000 and durations.min() == 1
    size_fit, duration_fit = fit_power_law(sizes), fit_power_law(durations)
    assert size_fit.alpha == pytest.approx(1.5, abs=0.1)  # mean field: P(S) ~ S^-3/2
    assert duration_fit.alpha == pytest.approx(2.0, abs=0.15)  # P(T) ~ T^-2
    assert size_fit.r_exponential > 0 and size_fit.p_exponential < 0.01  # power law beats an exponential
    rel = exponent_relation(sizes, durations, size_fit.alpha, duration_fit.alpha)
    assert rel["gamma_fitted"] == pytest.approx(2.0, abs=0.2) and rel["dcc"] < 0.2  # <S>(T) ~ T^2


def test_avalanche_extraction_drops_runs_cut_by_the_recording():
    from dtb.experiment.criticality import avalanches, bin_spikes

    sizes, durations = avalanches([3, 0, 1, 2, 0, 0, 4, 0, 5])
    assert sizes.tolist() == [3, 4] and durations.tolist() == [2, 1]
    counts, width = bin_spikes([0.0, 0.0004, 0.0021, 0.0099], duration_s=0.01, resolution_s=0.001)
    assert width == pytest.approx(0.003) and counts.tolist() == [
        3,
        0,
        0,
    ]  # mean IEI 2.5 ms -> 3 steps; 9.9 ms is past the last whole bin


def test_mr_branching_ratio_is_unbiased_under_subsampling():
    from dtb.experiment.criticality import branching_ratio_mr

    rng = np.random.default_rng(2)
    activity = np.zeros(20000, dtype=np.int64)
    activity[0] = 50
    for t in range(1, activity.size):  # driven branching process, m = 0.9, drive 5 per step
        activity[t] = rng.poisson(0.9 * activity[t - 1] + 5.0)
    full = branching_ratio_mr(activity)["m"]
    sampled = branching_ratio_mr(rng.binomial(activity, 0.1))["m"]  # observe 10 % of the units
    assert full == pytest.approx(0.9, abs=0.02) and sampled == pytest.approx(0.9, abs=0.03)
    naive = np.polyfit(rng.binomial(activity, 0.1)[:-1], rng.binomial(activity, 0.1)[1:], 1)[0]
    assert naive < 0.5  # the one-step ratio of a subsample is biased far below m


def test_criticality_study_on_the_twins_recorded_spikes(store, tmp_path, capsys):
    from dtb.cli import main

    out = tmp_path / "crit"
    assert main(["experiment", "criticality", "--store", str(store), "--out", str(out)]) == 0
    summary = json.loads((out / "criticality.json").read_text())
    assert summary["n_neurons"] == 100 and summary["n_avalanches"] >= 10
    assert summary["size_fit"]["alpha"] > 1.0 and summary["bin_s"] >= 0.001
    assert summary["n_spikes"] <= summary["network_neurons"] * 1000  # under 1 spike per neuron and ms
    tree = open_tree(out / "criticality.zarr")
    assert int(tree["size"].sum()) <= summary["n_spikes"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("criticality: {n_neurons: 0}\n")
    assert (
        main(["experiment", "criticality", "--store", str(store), "--out", str(tmp_path / "no"), "--config", str(bad)])
        == 2
    )
    assert "criticality.n_neurons" in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_group_statistics_set_each_effect_beside_its_noise_control():
    """Over subjects: the lesion's |change| of region r against the next seed's, the rewiring noise
    floor, and the share of spectral peaks that sit in the lowest frequency bin."""
    from dtb.experiment.group import summarize_study

    lesion = [
        {"subject": str(i), "delta_r_report_regions": -0.1, "delta_r_whole_brain": 0.0, "delta_r_outside_lesion": 0.0,
         "delta_r_noise_report_regions": 0.01, "delta_r_noise_whole_brain": 0.0,
         "abs_delta_r_outside_lesion": 0.3 + 0.01 * i, "abs_delta_r_noise_outside_lesion": 0.1}
        for i in range(8)
    ]  # fmt: skip
    stats = summarize_study("lesion", lesion)["statistics"]
    versus = stats["abs_delta_r_outside_lesion_vs_noise"]
    assert versus["n"] == 8 and versus["n_better"] == 8 and versus["p"] < 0.01
    rewiring = [
        {"subject": str(i), "rows": [{"p": 0.0, "region_r": 0.2, "fc_similarity": 0.1}, {"p": 1.0, "region_r": 0.1, "fc_similarity": 0.05}],
         "noise_control": {"region_r": 0.2 - 0.01 * i, "fc_similarity": 0.1, "fc_similarity_to_unperturbed": 0.5}}
        for i in range(6)
    ]  # fmt: skip
    stats = summarize_study("rewiring", rewiring)["statistics"]
    assert stats["noise_control_fc_similarity_to_unperturbed"]["mean"] == pytest.approx(0.5)
    assert stats["noise_control_region_r_vs_p0"]["n"] == 6
    spectra = [
        {"subject": "a", "peak_hz": {"x": 0.02, "y": 0.05}, "lowest_bin_hz": 0.02, "peak_at_lowest_bin": {"x": True, "y": False}},
        {"subject": "b", "peak_hz": {"x": 0.02, "y": 0.02}, "lowest_bin_hz": 0.02, "peak_at_lowest_bin": {"x": True, "y": True}},
    ]  # fmt: skip
    stats = summarize_study("spectra", spectra)["statistics"]
    assert stats["share_of_peaks_at_the_lowest_bin"] == pytest.approx(0.75) and stats["lowest_bin_hz"] == [0.02]
