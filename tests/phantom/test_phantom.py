"""The phantom subject: valid BIDS, known answers recovered by the diffusion stage, determinism, atomicity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dtb.assembly.settings import ModelSettings
from dtb.errors import InputDataError, ParameterError
from dtb.phantom import BOLD_BASELINE, PhantomSettings, generate_phantom, phantom_paths
from dtb.phantom.bold import h_track

ROOT = Path(__file__).resolve().parents[2]
SMALL = PhantomSettings(seed=3, n_volumes=2, tr_s=0.2, warmup_s=0.1, neurons_total=1600)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("phantom") / "bids", SMALL, progress="none")


@pytest.fixture(scope="module")
def recovered(phantom, tmp_path_factory) -> Path:
    from dtb.preproc.dwi import DwiSettings
    from dtb.preproc.dwi_stage import run_dwi_stage

    paths = phantom_paths(phantom)
    return run_dwi_stage(
        phantom,
        "phantom",
        tmp_path_factory.mktemp("derivatives"),
        atlas=paths["atlas"],
        atlas_labels=paths["atlas_labels"],
        settings=DwiSettings(seeds_per_axis=1, step_size_mm=1.0),
    )


def _relmat(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", index_col="region")


def test_recovered_region_connectome_correlates_with_the_true_bundles(phantom, recovered):
    paths = phantom_paths(phantom)
    counts = _relmat(recovered / "sub-phantom_atlas-phantom_desc-streamlines_relmat.tsv")
    volume = _relmat(paths["volume"])
    strength = _relmat(paths["strength"])
    assert list(counts.index) == list(volume.index) == list(pd.read_csv(paths["atlas_labels"], sep="\t")["name"])
    upper = np.triu_indices(len(counts), 1)
    r_volume = np.corrcoef(counts.values[upper], volume.values[upper])[0, 1]
    r_strength = np.corrcoef(counts.values[upper], strength.values[upper])[0, 1]
    print(
        f"phantom connectome recovery: r(counts, bundle volume) = {r_volume:.3f}, r(counts, strength) = {r_strength:.3f}"
    )
    assert r_volume > 0.8 and r_strength > 0.8
    bundles = strength.values[upper] > 0
    assert counts.values[upper][bundles].min() > 0  # every true bundle is found
    lengths = _relmat(recovered / "sub-phantom_atlas-phantom_desc-length_relmat.tsv").values[upper][bundles]
    true_lengths = _relmat(paths["length"]).values[upper][bundles]
    assert np.all(np.abs(lengths - true_lengths) < 0.35 * true_lengths)  # streamlines run centre to centre [mm]


def test_images_share_one_grid_and_bold_has_the_requested_tr_and_volumes(phantom):
    paths = phantom_paths(phantom)
    t1w, dwi, bold, atlas = (nib.load(paths[k]) for k in ("t1w", "dwi", "bold", "atlas"))
    grid = t1w.shape
    t1 = t1w.get_fdata()
    assert t1.max() > 0 and np.count_nonzero(t1) > 0.2 * t1.size  # a real anatomy, not an empty image
    assert dwi.shape == grid + (1 + SMALL.n_directions,)
    assert bold.shape == grid + (SMALL.n_volumes,) and atlas.shape == grid
    for img in (dwi, bold, atlas):
        np.testing.assert_allclose(img.affine, t1w.affine)
    assert nib.aff2axcodes(t1w.affine) == ("R", "A", "S") and t1w.header.get_zooms()[:3] == (4.0, 4.0, 4.0)
    assert bold.header.get_zooms()[3] == pytest.approx(SMALL.tr_s)
    sidecar = json.loads(paths["bold"].with_name("sub-phantom_task-rest_bold.json").read_text())
    assert sidecar["RepetitionTime"] == SMALL.tr_s and sidecar["TaskName"] == "rest"
    bvals = np.loadtxt(paths["bval"])
    bvecs = np.loadtxt(paths["bvec"])
    assert bvals.shape == (1 + SMALL.n_directions,) and bvecs.shape == (3, 1 + SMALL.n_directions)
    np.testing.assert_allclose(np.linalg.norm(bvecs[:, 1:], axis=0), 1.0, atol=1e-6)


def test_every_image_and_table_has_a_valid_sidecar(phantom):
    description = json.loads((phantom / "dataset_description.json").read_text())
    assert description["BIDSVersion"] and description["Name"] and description["DatasetType"] == "raw"
    truth_description = json.loads((phantom / "derivatives" / "phantom-truth" / "dataset_description.json").read_text())
    assert truth_description["DatasetType"] == "derivative"
    assert (phantom / "participants.tsv").read_text().splitlines() == ["participant_id", "sub-phantom"]
    data_files = [p for p in phantom.rglob("sub-phantom_*") if p.name.endswith((".nii.gz", ".tsv"))]
    assert len(data_files) >= 12
    for path in data_files:
        if path.name.endswith("_dseg.tsv"):
            continue  # the labels table belongs to the dseg image
        stem = path.name.removesuffix(".nii.gz").removesuffix(".tsv")
        json.loads(path.with_name(stem + ".json").read_text())
    assert not list(phantom.parent.glob(".bids.tmp-*"))


def test_region_bold_is_painted_into_the_regions_and_follows_the_truth(phantom):
    paths = phantom_paths(phantom)
    bold = nib.load(paths["bold"]).get_fdata()
    labels = np.asarray(nib.load(paths["atlas"]).dataobj)
    truth = pd.read_csv(paths["region_bold"], sep="\t")
    assert truth.shape == (SMALL.n_volumes, SMALL.n_regions)
    for k, name in enumerate(truth.columns):
        voxels = bold[labels == k + 1] / BOLD_BASELINE - 1.0  # (n_voxels, T) fractional change
        noise_of_mean = 4 * SMALL.bold_noise / np.sqrt(voxels.shape[0])
        np.testing.assert_allclose(voxels.mean(axis=0), truth[name].values, atol=noise_of_mean)
    # within 0.5 s of onset the Balloon model is still near rest (its initial dip is below 1e-2)
    assert np.all(np.isfinite(truth.values)) and np.abs(truth.values).max() < 1e-2


def test_twin_truth_neuron_counts_input_and_rates(phantom):
    paths = phantom_paths(phantom)
    counts = pd.read_csv(paths["neuron_counts"], sep="\t")
    total = SMALL.neurons_total
    assert counts["neuron_count"].sum() == total  # no region is below the population floors here
    share = counts["neuron_count"] / counts["neuron_count"].sum()
    np.testing.assert_allclose(share, counts["grey_matter_mm3"] / counts["grey_matter_mm3"].sum(), atol=2 / total)
    inputs = pd.read_csv(paths["input"], sep="\t")
    np.testing.assert_allclose(inputs["time_s"], SMALL.warmup_s + SMALL.tr_s * np.arange(1, SMALL.n_volumes + 1))
    np.testing.assert_allclose(inputs["h"], h_track(SMALL, inputs["time_s"] - SMALL.tr_s))
    rates = inputs[[c for c in inputs.columns if c.startswith("rate_hz_")]].values
    assert 2 < np.median(rates) < 25  # the DTB's ~10 Hz regime
    driven = rates[:, SMALL.input_regions[0]]
    others = np.delete(rates, SMALL.input_regions[0], axis=1)
    assert driven.mean() > others.mean()  # h(t) > 0 drives the input region's E population


@pytest.fixture
def one_thread():
    """torch on one thread: the small networks run several times faster without thread contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_truth_bold_is_the_twin_forward_model_driven_by_the_true_h(one_thread):
    """The phantom's truth run is the twin's forward model, so a twin bug shows in the phantom.

    A twin of the phantom's regions, built by the twin's own path (config -> region inputs -> network,
    dtb.twin.network) with the phantom's seed, neurons_total and model, its assimilation ensemble
    (2 members) driven by the true h track (warm-up window, then one window per TR) reproduces the
    truth BOLD and rates of member 0 bit for bit: the same graph, g scaling, gains, noise and
    Balloon-Windkessel path, evaluated under the arithmetic contract (docs/architecture.md), leave no
    room for a tolerance. A twin with another excitatory weight does not.
    """
    from dtb.assembly.forward import drive_h_track, make_simulation
    from dtb.io.region_inputs import RegionSubject
    from dtb.phantom.bold import HYPERPARAMETER, simulate_region_bold, truth_windows
    from dtb.phantom.bundles import bundle_pairs, true_connectome
    from dtb.seeds import derive_seed
    from dtb.twin.config import load_twin_config, resolve_input_regions
    from dtb.twin.network import twin_network_inputs, twin_region_model

    model = {"indegree": 20, "dt_ms": 1.0, "delay_ms": 1.0}
    settings = PhantomSettings(
        seed=5, n_regions=4, n_volumes=3, tr_s=0.1, warmup_s=0.1, neurons_total=400,
        model=ModelSettings(**model), input_regions=(1,), backend="torch", bold_noise=0.0,
    )  # fmt: skip
    names = ("lA", "rA", "lB", "rB")
    grey_matter = np.array([3100.0, 2900.0, 4200.0, 3600.0])
    strength = true_connectome(bundle_pairs(4), 4)
    truth = simulate_region_bold(settings, grey_matter, strength, names, progress="none")

    def twin_bold(model_settings):
        config = load_twin_config(
            {"seed": 5, "neurons_total": 400, "model": model_settings, "backend": "torch",
             "assimilation": {"members": 2, "input_regions": ["rA"]}}
        )  # fmt: skip
        subject = RegionSubject(
            label="phantom", atlas="phantom", labels=names, bold=np.zeros((3, 4)), tr_s=0.1, sc=strength,
            grey_matter_mm3=grey_matter,
        )  # fmt: skip
        region_model = twin_region_model(twin_network_inputs(subject, config), config)
        ensemble = make_simulation(  # as dtb.twin.run.assimilate_subject makes the assimilation's ensemble
            region_model, n_members=config.members, seed=config.seed, gain_seed=derive_seed(config.seed, "gains"),
            backend=config.backend, device=config.device,
        )  # fmt: skip
        _, h, lengths, values = truth_windows(settings)
        np.testing.assert_array_equal(h, truth.h)
        inputs = resolve_input_regions(config, region_model.region_labels)
        bold, rate, _, _ = drive_h_track(ensemble, config.hmda.hyperparameter, inputs, values[:, None], lengths)
        first = len(lengths) - settings.n_volumes
        return bold[first:], rate[first:]

    assert HYPERPARAMETER == load_twin_config({}).hmda.hyperparameter
    bold, rate = twin_bold(model)
    np.testing.assert_array_equal(bold, truth.bold)
    np.testing.assert_array_equal(rate, truth.rate_hz)
    assert np.abs(truth.bold).max() > 0 and truth.rate_hz.mean() > 1  # a live network, not a trivial match
    other, _ = twin_bold({**model, "weight_excitatory": 120})
    assert not np.array_equal(other, truth.bold)


def test_generator_is_deterministic_for_a_seed(phantom, tmp_path):
    again = generate_phantom(tmp_path / "again", SMALL, progress="none")
    for key in ("dwi", "bold", "atlas", "t1w"):
        np.testing.assert_array_equal(
            nib.load(phantom_paths(phantom)[key]).get_fdata(), nib.load(phantom_paths(again)[key]).get_fdata()
        )
    for key in ("bval", "bvec", "region_bold", "input", "neuron_counts", "volume"):
        assert phantom_paths(phantom)[key].read_text() == phantom_paths(again)[key].read_text()


def test_dwi_noise_depends_on_the_seed():
    from dtb.phantom.diffusion import gradient_scheme, simulate_dwi

    brain = np.ones((3, 3, 3), bool)
    _, _, gtab = gradient_scheme(12, 1000.0, seed=0)
    a, b, c = (simulate_dwi(gtab, brain, {}, 20.0, seed) for seed in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(np.mean(a[..., 0]) - 100.0) < 5  # S0 = 100 under Rician noise at SNR 20


def test_existing_output_is_refused_and_a_failure_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "bids"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(InputDataError, match="already exists.*--overwrite"):
        generate_phantom(out, SMALL)

    import dtb.phantom.generate as generate

    def broken(*args, **kwargs):
        raise ParameterError("simulated failure")

    monkeypatch.setattr(generate, "simulate_dwi", broken)  # fails after the anatomy is staged
    with pytest.raises(ParameterError):
        generate_phantom(tmp_path / "fresh", SMALL)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bids"]  # no staging folder left
    with pytest.raises(ParameterError):
        generate_phantom(out, SMALL, overwrite=True)
    assert (out / "keep.txt").read_text() == "user data"  # the old dataset survives a failed overwrite


def test_cli_rejects_bad_settings_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dtb.cli", "phantom", "--out", str(tmp_path / "p"), "--regions", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "regions must be an even number" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("command", ["phantom", "dwi"])
def test_help_documents_every_option(command, capsys):
    from dtb.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    options = {
        "phantom": ["--out", "--seed", "--regions", "--tr", "--volumes", "--snr", "--overwrite"],
        "dwi": ["--bids", "--participant-label", "--out", "--atlas", "--atlas-labels", "--target-grid"],
    }
    for option in options[command]:
        assert option in text


@pytest.mark.slow
def test_input_region_bold_follows_h_one_tr_later(tmp_path):
    """Default settings (17 s of twin time): the driven region's BOLD tracks h(t) with a haemodynamic lag
    (measured r = 0.76 at 1 TR, seed 0, with the twin's truth network; 0.90 with the former own network)."""
    import torch

    settings = PhantomSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the small network runs ~3x faster without thread contention
    try:
        paths = phantom_paths(generate_phantom(tmp_path / "bids", settings, progress="none"))
    finally:
        torch.set_num_threads(threads)
    bold = pd.read_csv(paths["region_bold"], sep="\t").iloc[:, settings.input_regions[0]].values
    h = pd.read_csv(paths["input"], sep="\t")["h"].values
    assert np.corrcoef(h[:-1], bold[1:])[0, 1] > 0.7
