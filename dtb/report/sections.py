"""The sections of the twin report, built from a :class:`~dtb.report.run.TwinRun`.

Each ``*_section`` function reads what it needs from the run, describes its figures (functions of
:mod:`dtb.report.figures` on arrays already read) and returns a :class:`~dtb.report.blocks.Section`;
:meth:`SectionBuilder.draw_figures` then draws every figure once (:mod:`dtb.report.render`).  Whatever is
missing (a group, a variable, the atlas) becomes a visible ``not available: <why>`` note,
and the reason is also collected in :attr:`SectionBuilder.missing` for the Warnings section;
a figure that fails to draw becomes an error note (collected in :attr:`SectionBuilder.errors`, so
that :func:`~dtb.report.html.build_report` can fail after writing the page), never an exception
inside a section.  Nothing recorded (``resimulation.record_seconds: 0``) is a setting, not an error:
the simulation figures are then "not available" with that reason.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import xarray as xr

from dtb.assim import metrics as assim_metrics
from dtb.errors import AssimilationError
from dtb.report import figures
from dtb.report.anatomy import Atlas
from dtb.report.blocks import FigureBlock, Note, Paragraphs, Preformatted, Section, Selector, Table
from dtb.report.render import PendingFigure, draw_figures
from dtb.report.run import TwinRun
from dtb.sim.analysis import isi_cv

__all__ = ["SectionBuilder", "PUBLISHED", "REFERENCES"]

log = logging.getLogger("dtb")

#: The DTB's published values (NSR 2024 DTB paper; Lu et al. 2024), shown beside ours.
PUBLISHED = {
    "resim_input_r": "0.977 / 0.981 (thalamus L / R)",
    "resim_region_r": "0.624 (whole-brain voxel mean)",
    "fc_similarity": "0.551",
    "fnorm": "0.271",
    "forecast_r": "about 0.9",
}

REFERENCES = (
    "Lu W. et al. (2024). Simulation and assimilation of the digital human brain. Nature Computational Science.",
    "The Digital Twin Brain (DTB) paper, National Science Review (2024): voxel-wise diffusion hierarchical mesoscale "
    "data assimilation (Vw-dHMDA) of resting-state and task BOLD.",
    "Friston K.J., Mechelli A., Turner R., Price C.J. (2000). Nonlinear responses in fMRI: the Balloon model, "
    "Volterra kernels, and other hemodynamics. NeuroImage 12, 466-477.",
    "Evensen G. (1994). Sequential data assimilation with a nonlinear quasi-geostrophic model using Monte Carlo "
    "methods to forecast error statistics. Journal of Geophysical Research 99(C5), 10143-10162.",
    "Van Essen D.C. et al. (2013). The WU-Minn Human Connectome Project: an overview. NeuroImage 80, 62-79 "
    "(data: Human Connectome Project, WU-Minn Consortium).",
    "Welch P.D. (1967). The use of fast Fourier transform for the estimation of power spectra. IEEE Transactions on "
    "Audio and Electroacoustics 15, 70-73.",
    "Abraham A. et al. (2014). Machine learning for neuroimaging with scikit-learn. Frontiers in Neuroinformatics 8, "
    "14 (nilearn, used for the brain figures).",
)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "x"


def _number(value) -> float | None:
    """A finite float from an attribute value (numbers, or strings such as "nan"), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _h_bounds(attrs: dict) -> str:
    """The bounds of h the filter used, and whether they were calibrated on the network
    (``assimilation.h_bounds``; root attributes ``assimilation_settings`` and ``h_calibration``)."""
    used = attrs.get("assimilation_settings") or {}
    if used.get("lower") is None or used.get("upper") is None:
        return "not recorded"
    how = "calibrated on this network" if attrs.get("h_calibration") else "fixed"
    return f"[{_fmt(float(used['lower']))}, {_fmt(float(used['upper']))}] ({how})"


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 0.1 and value != 0 else f"{value:.{digits}f}"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)


def _strings(values) -> np.ndarray:
    """Labels as an object array of Python str (zarr v3 returns numpy StringDType arrays)."""
    return np.array([str(v) for v in np.asarray(values).ravel()], dtype=object)


def _summed_counts(spike_count: xr.DataArray, width: int, block_bins: int = 1 << 16) -> np.ndarray:
    """Sums of ``width`` consecutive time bins of (time, population) spike counts (member 0 of
    (time, member, population)), read ``block_bins`` time bins at a time: memory is bounded by one
    block, not the whole recording. A last partial group of bins is left out."""
    if spike_count.ndim == 3:  # (time, member, population) straight from the engine
        spike_count = spike_count.isel({spike_count.dims[1]: 0})
    n = spike_count.shape[0] // width
    step = width * max(1, block_bins // width)
    out = np.empty((n, spike_count.shape[1]), dtype=float)
    for start in range(0, n * width, step):
        block = np.asarray(spike_count[start : min(start + step, n * width)].values, dtype=float)
        out[start // width : start // width + block.shape[0] // width] = block.reshape(-1, width, block.shape[1]).sum(1)
    return out


class SectionBuilder:
    """Builds the report's sections from one run (and an optional atlas).

    Parameters
    ----------
    run : the opened twin run store.
    atlas : labelled atlas locating the run's regions (brain figures), optional.
    dpi : resolution of the embedded PNG figures.
    """

    def __init__(self, run: TwinRun, atlas: Atlas | None = None, dpi: int = 90) -> None:
        self.run = run
        self.atlas = atlas
        self.dpi = dpi
        self.missing: list[str] = []
        self.errors: list[str] = []

    # ------------------------------------------------------------------ helpers
    def _not_available(self, section: Section, what: str, why: str) -> None:
        section.blocks.append(Note(f"{what}: not available: {why}"))
        self.missing.append(f"{section.title} / {what}: {why}")

    def _figure(self, key: str, title: str, caption: str, make: Callable) -> PendingFigure:
        """Describe a figure; it is drawn once, with every other, by :meth:`draw_figures`."""
        return PendingFigure(key=key, title=title, caption=caption, make=make)

    def draw_figures(self, sections: Sequence[Section], jobs: int = 1) -> None:
        """Draw every pending figure of ``sections`` (once each, ``jobs`` processes) and put it in place.

        A figure that fails becomes an error note in its place (a failed region of a selector: a note
        before the selector) and a line in :attr:`errors`; the log says why, without a traceback.
        """
        pending = [
            block
            for section in sections
            for item in section.blocks
            for block in (item.figures if isinstance(item, Selector) else (item,))
            if isinstance(block, PendingFigure)
        ]
        drawn = dict(zip((id(p) for p in pending), draw_figures(pending, dpi=self.dpi, jobs=jobs), strict=True))

        def resolve(block: PendingFigure) -> FigureBlock | Note:
            ok, result, where = drawn[id(block)]
            if ok:
                return FigureBlock(key=block.key, title=block.title, caption=block.caption, png=result)
            log.error("report: figure %s could not be drawn: %s (at %s)", block.key, result, where)
            message = f"{block.title}: could not be drawn ({result})"
            self.errors.append(message)
            return Note(message, level="error")

        for section in sections:
            blocks = []
            for item in section.blocks:
                if isinstance(item, PendingFigure):
                    blocks.append(resolve(item))
                elif isinstance(item, Selector) and any(isinstance(f, PendingFigure) for f in item.figures):
                    done = [(option, resolve(f)) for option, f in zip(item.options, item.figures, strict=True)]
                    blocks.extend(block for _, block in done if isinstance(block, Note))
                    kept = [(option, block) for option, block in done if isinstance(block, FigureBlock)]
                    if kept:
                        options, figs = zip(*kept, strict=True)
                        blocks.append(Selector(item.name, item.label, tuple(options), tuple(figs)))
                else:
                    blocks.append(item)
            section.blocks[:] = blocks

    def _add(self, section: Section, key: str, title: str, caption: str, make: Callable) -> None:
        section.blocks.append(self._figure(f"{section.id}_{key}", title, caption, make))

    def _values(self, group: str, name: str) -> np.ndarray | None:
        var = self.run.variable(group, name)
        return None if var is None else np.asarray(var.values)

    def _warmup(self) -> np.ndarray | None:
        warmup = self._values("assimilation", "warmup")
        return None if warmup is None else warmup.astype(bool)

    def _observed_on(self, time_s: np.ndarray) -> xr.DataArray | None:
        """Observed BOLD (time, region) at the given window times (nearest within TR/2)."""
        obs = self.run.variable("observation", "bold")
        if obs is None:
            return None
        if obs.sizes["time"] == len(time_s) and np.allclose(obs["time"].values, time_s):
            return obs
        tolerance = 0.5 * (self.run.tr_s or 1.0)
        return obs.reindex(time=time_s, method="nearest", tolerance=tolerance)

    # ------------------------------------------------------------------ sections
    def summary(self, headline: Sequence[tuple[str, str]] = ()) -> Section:
        """Subject, inputs, TR, volumes, scale, backend, ranks, GPUs, seed, versions, run time."""
        run, attrs, config = self.run, self.run.attrs, self.run.config
        section = Section("summary", "Summary")
        obs = run.group("observation")
        net = run.group("network")
        n_volumes = obs.sizes.get("time") if obs is not None else None
        tr = run.tr_s
        regions = run.regions()

        def pick(*keys):
            for key in keys:
                if attrs.get(key) is not None:
                    return attrs[key]
                if config.get(key) is not None:
                    return config[key]
            return None

        rows = [
            ("Subject", _fmt(pick("subject", "participant_label"))),
            ("Regions", _fmt(len(regions)) if regions else "not recorded"),
            ("Input (assimilated) regions", _fmt(pick("input_regions"))),
            ("Assimilated regions", _fmt(pick("assimilated_regions"))),
            ("Observed regions", _fmt(obs.sizes.get("region")) if obs is not None else "no /observation group"),
            ("Inputs", _fmt(pick("inputs"))),
            ("Repetition time TR [s]", _fmt(tr)),
            ("Volumes", _fmt(n_volumes)),
            ("Duration [s]", _fmt(n_volumes * tr) if n_volumes and tr else "not recorded"),
            ("Neurons", _fmt(pick("n_neurons"))),
            ("Synapses", _fmt(pick("n_synapses"))),
            ("Populations", _fmt(net.sizes.get("population")) if net is not None else "no /network group"),
            ("Ensemble members", _fmt(pick("n_members"))),
            ("Fitted h, written into", _fmt(pick("hyperparameter"))),
            ("Bounds of h", _h_bounds(attrs)),
            ("Backend / device", f"{_fmt(pick('backend'))} / {_fmt(pick('device'))}"),
            ("Ranks", _fmt(pick("ranks", "n_ranks"))),
            ("GPUs", _fmt(pick("gpus", "n_gpus"))),
            ("Seed", _fmt(pick("seed"))),
            ("dtb version (run)", _fmt(pick("dtb_version"))),
            ("Started / finished", f"{_fmt(pick('started'))} / {_fmt(pick('finished'))}"),
            ("Wall time [s]", _fmt(_number(pick("wall_time_s")))),
        ]
        section.blocks.append(Table("The run", ("", "value"), tuple(rows), css_class="keyvalue"))
        if headline:
            section.blocks.append(
                Table("Fidelity at a glance", ("metric", "this run", "DTB published"), tuple(headline))
            )
        return section

    def anatomy(self) -> Section:
        """Neuron-count map over the anatomy (or a bar chart without an atlas), counts per region."""
        section = Section("anatomy", "Anatomy")
        counts = self.run.variable("network", "neuron_count")
        if counts is None:
            self._not_available(section, "neuron-count map", self.run.why_missing("network", "neuron_count"))
            self._not_available(section, "neurons per region", self.run.why_missing("network", "neuron_count"))
            return section
        regions = [str(r) for r in counts["region"].values]
        values = np.asarray(counts.values, dtype=float)
        coords = self.atlas.coords(regions) if self.atlas is not None else None
        if self.atlas is not None and self.atlas.label_of:
            cut = coords[int(np.argmax(values))] if coords is not None else None
            self._add(
                section,
                "neuron_count_map",
                "Neuron-count map",
                f"Neurons per region painted on the atlas regions ({self.atlas.source}) over the MNI152 template.",
                lambda: figures.neuron_count_map(self.atlas.paint(regions, values), cut_coords=cut),
            )
            if self.atlas.missing(regions):
                section.blocks.append(
                    Note(f"regions not in the atlas (not drawn): {', '.join(self.atlas.missing(regions))}", "info")
                )
        else:
            section.blocks.append(
                Note(
                    "neuron-count map over the anatomy: not available: no atlas image given (dtb report --atlas "
                    "NIFTI [--atlas-labels TSV]); a bar chart per region is shown instead",
                    "missing",
                )
            )
            self.missing.append("Anatomy / neuron-count map: no atlas image given (--atlas); bar chart shown instead")
            self._add(
                section,
                "neuron_count_bars",
                "Neurons per region (largest first)",
                "Neurons per region, sorted; the stand-in for the map when no atlas is given.",
                lambda: figures.neuron_count_bars(regions, values),
            )
        e, i = self._counts_by_kind(regions)
        self._add(
            section,
            "counts_per_region",
            "Neurons per region",
            "Neurons per region in the run's region order"
            + (", excitatory (red) and inhibitory (blue) stacked." if e is not None else "."),
            lambda: figures.counts_per_region(regions, e if e is not None else values, i),
        )
        return section

    def _counts_by_kind(self, regions: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
        sizes = self._values("network", "population_size")
        where = self._values("network", "population_region")
        kinds = self._values("network", "population_kind")
        if sizes is None or where is None or kinds is None:
            return None, None
        where, kinds = _strings(where), _strings(kinds)
        e = np.array([sizes[(where == r) & (kinds == "E")].sum() for r in regions], dtype=float)
        i = np.array([sizes[(where == r) & (kinds == "I")].sum() for r in regions], dtype=float)
        return e, i

    def connectivity(self) -> Section:
        """Connectome matrix, connectome on the glass brain, degree distributions."""
        section = Section("connectivity", "Connectivity")
        conn = self.run.variable("network", "connectome")
        if conn is None:
            why = self.run.why_missing("network", "connectome")
            for what in ("connectome matrix", "connectome on the glass brain", "degree distributions"):
                self._not_available(section, what, why)
            return section
        regions = [str(r) for r in conn["region"].values]
        weights = np.asarray(conn.values, dtype=float)
        self._add(
            section,
            "connectome_matrix",
            "Connectome",
            "Region x region structural connectome as used by the network builder (row = target, column = source, "
            "rows normalised to 1), log colour scale; white = no connection.",
            lambda: figures.connectome_matrix(weights, regions),
        )
        coords = self.atlas.coords(regions) if self.atlas is not None else None
        if coords is None:
            why = (
                "no atlas image given (dtb report --atlas NIFTI [--atlas-labels TSV]), so the region coordinates are unknown"
                if self.atlas is None
                else f"regions missing from the atlas: {', '.join(self.atlas.missing(regions)[:5])}"
            )
            self._not_available(section, "connectome on the glass brain", why)
        else:
            self._add(
                section,
                "connectome_glass_brain",
                "Connectome on the glass brain",
                "Connections (symmetrised; the strongest 10 % when there are more than 10) between the region "
                f"centres from {self.atlas.source}.",
                lambda: figures.connectome_glass_brain(weights, coords),
            )
        self._add(
            section,
            "degree_distributions",
            "Degree distributions",
            "Number of source regions per region (in-degree), of target regions (out-degree), and the summed "
            "outgoing weight (out-strength; in-strength is 1 after row normalisation).",
            lambda: figures.degree_distributions(weights),
        )
        return section

    def _nothing_recorded(self) -> str | None:
        """Why the re-simulation kept no spikes (a recording of 0 s), or None when it kept some."""
        spikes = self.run.group("resimulation_spikes")
        recorded_s = _number(spikes.attrs.get("duration_s")) if spikes is not None else None
        if recorded_s is None or recorded_s > 0:
            return None
        setting = _number(self.run.config.get("record_seconds"))
        because = (
            f"resimulation.record_seconds is {setting:g} in the run's config"
            if setting is not None
            else "the store's /resimulation_spikes has duration_s 0"
        )
        return (
            f"nothing was recorded ({because}); set resimulation.record_seconds > 0 to keep the spikes of the "
            "re-simulation's first seconds"
        )

    def simulation(self) -> Section:
        """Raster excerpt, population rates, rate distribution, CV of ISI (re-simulation)."""
        section = Section("simulation", "Simulation")
        nothing = self._nothing_recorded()
        if nothing is not None:  # a legitimate setting, not an error: say so where the figures would be
            for what in ("raster excerpt", "population rates", "rate distribution", "CV of inter-spike intervals"):
                self._not_available(section, what, nothing)
            return section
        spikes = self.run.group("resimulation_spikes")
        events = None
        if spikes is not None and "time" in spikes.variables and "neuron" in spikes.variables:
            events = (np.asarray(spikes["time"].values, dtype=float), np.asarray(spikes["neuron"].values, np.int64))
        self._raster(section, events)
        self._population_rates(section)
        if events is None:
            why = self.run.why_missing("resimulation_spikes")
            self._not_available(section, "rate distribution", why)
            self._not_available(section, "CV of inter-spike intervals", why)
        else:
            self._rates_and_irregularity(section, spikes.attrs, *events)
        return section

    def _populations(self):
        """(sizes, kinds, names) of the network's populations, or Nones when /network lacks them."""
        sizes = self._values("network", "population_size")
        kinds = self._values("network", "population_kind")
        if sizes is None or kinds is None:
            return None, None, None
        names = [str(p) for p in self.run.group("network")["population"].values]
        return sizes, _strings(kinds), names

    def _raster(self, section: Section, events) -> None:
        sizes, kinds, names = self._populations()
        if events is None:
            self._not_available(section, "raster excerpt", self.run.why_missing("resimulation_spikes"))
            return
        if sizes is None:
            self._not_available(section, "raster excerpt", self.run.why_missing("network", "population_size"))
            return
        spike_time, spike_neuron = events
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        start = float(spike_time.min()) if spike_time.size else 0.0
        window = (start, start + 0.5)
        self._add(
            section,
            "raster",
            "Raster excerpt",
            f"Spikes of the re-simulation from {window[0]:.2f} to {window[1]:.2f} s; up to 40 neurons per "
            "population (population order of the network), excitatory red, inhibitory blue.",
            lambda: figures.raster_excerpt(spike_time, spike_neuron, offsets, kinds, names, window),
        )

    def _population_rates(self, section: Section) -> None:
        sizes = self._values("network", "population_size")
        counts = self.run.group("resimulation_counts")
        rate = self.run.variable("resimulation", "rate")
        if counts is not None and "spike_count" in counts and counts["spike_count"].shape[0] == 0:
            self._not_available(
                section, "population rates", "/resimulation_counts holds no time bins (nothing recorded)"
            )
        elif counts is not None and "spike_count" in counts and sizes is not None:
            time_s = np.asarray(counts["time"].values, dtype=float)
            step_ms = 1000.0 * float(np.median(np.diff(time_s))) if time_s.size > 1 else 1.0
            bin_s = float(counts.attrs.get("bin_s", step_ms / 1000.0))  # dtb.io.twin_store: bin width [s]
            width = min(max(1, int(round(0.02 / bin_s))), time_s.size)  # input bins per 20 ms plotted bin
            summed = _summed_counts(counts["spike_count"], width)
            labels = [str(p) for p in counts["population"].values]
            self._add(
                section,
                "population_rates",
                "Population rates",
                f"Firing rate of each population (the 12 most active) and of all neurons, from spike counts in "
                f"{bin_s * 1000:g} ms bins, summed into 20 ms bins.",
                lambda: figures.population_rates(
                    time_s[::width][: summed.shape[0]], summed, sizes, labels, bin_s * width, smooth_s=bin_s * width
                ),
            )
        elif rate is not None:
            tr = self.run.tr_s or 1.0
            self._add(
                section,
                "population_rates",
                "Region rates",
                "Mean firing rate per region and TR window of the re-simulation (no per-population counts in "
                "the store: " + self.run.why_missing("resimulation_counts") + ").",
                lambda: figures.population_rates(
                    rate["time"].values,
                    rate.values * tr,
                    np.ones(rate.sizes["region"]),
                    [str(r) for r in rate["region"].values],
                    tr,
                    smooth_s=tr,
                ),
            )
        else:
            missing = "resimulation_counts" if sizes is not None else "network"
            self._not_available(section, "population rates", self.run.why_missing(missing))

    def _rates_and_irregularity(self, section: Section, attrs, spike_time, spike_neuron) -> None:
        sizes, kinds, _ = self._populations()
        n_neurons = int(attrs.get("n_neurons", 0) or (sizes.sum() if sizes is not None else 0))
        n_neurons = max(n_neurons, int(spike_neuron.max()) + 1 if spike_neuron.size else 0)
        duration = _number(attrs.get("duration_s"))
        if duration is None:  # not recorded: the excerpt runs from start_s (default 0) to the last spike's ms
            start_s = _number(attrs.get("start_s")) or 0.0
            duration = float(np.ceil(spike_time.max() * 1000.0) / 1000.0 - start_s) if spike_time.size else 0.0
        if duration <= 0:
            why = "the recorded excerpt has no duration (no spikes and no /resimulation_spikes duration_s attribute)"
            self._not_available(section, "rate distribution", why)
            self._not_available(section, "CV of inter-spike intervals", why)
            return
        rates = np.bincount(spike_neuron, minlength=n_neurons) / duration
        inhibitory = None
        if sizes is not None and int(sizes.sum()) == n_neurons:
            inhibitory = np.repeat(kinds == "I", sizes.astype(np.int64))
        self._add(
            section,
            "rate_distribution",
            "Rate distribution",
            f"Firing rate of every neuron over the recorded {duration:.2f} s of the re-simulation.",
            lambda: figures.rate_distribution(rates, inhibitory),
        )
        events = xr.Dataset(
            {
                "time": ("spike", spike_time),
                "neuron": ("spike", spike_neuron),
                "member": ("spike", np.zeros(spike_time.size, np.int32)),
            }
        )
        cv = isi_cv(events, min_spikes=3)
        if cv.size == 0:
            self._not_available(
                section, "CV of inter-spike intervals", "no neuron fired 3 or more spikes in the excerpt"
            )
            return
        self._add(
            section,
            "isi_cv",
            "CV of inter-spike intervals",
            "Coefficient of variation of each neuron's inter-spike intervals (neurons with at least 3 spikes); "
            "about 1 for irregular, Poisson-like firing, 0 for clock-like firing.",
            lambda: figures.isi_cv_distribution(cv),
        )

    def assimilation(self) -> Section:
        """Observed vs forecast BOLD (selectable), h trajectories and spectra, RMSE vs spread, ranks."""
        section = Section("assimilation", "Assimilation")
        asm = self.run.group("assimilation")
        if asm is None:
            why = self.run.why_missing("assimilation")
            for what in (
                "observed vs forecast BOLD",
                "h trajectories",
                "spectra of h",
                "RMSE vs spread",
                "rank histogram",
            ):
                self._not_available(section, what, why)
            return section
        time_s = np.asarray(asm["time"].values, dtype=float)
        warmup = self._warmup()
        forecast = asm.get("bold_forecast")
        observed = self._observed_on(time_s)
        inputs = [str(r) for r in self.run.attrs.get("input_regions") or []]
        if forecast is None or observed is None:
            why = (
                self.run.why_missing("assimilation", "bold_forecast")
                if forecast is None
                else self.run.why_missing("observation", "bold")
            )
            for what in ("observed vs forecast BOLD", "RMSE vs spread", "rank histogram"):
                self._not_available(section, what, why)
        else:
            known = set(_strings(observed["region"].values))
            regions = [str(r) for r in forecast["region"].values if str(r) in known]
            if regions:
                self._bold_selector(section, time_s, warmup, forecast, observed, inputs, regions)
                self._diagnostics(section, time_s, warmup, forecast, observed, inputs)
            else:
                why = "no region of /assimilation/bold_forecast is among the regions of /observation/bold"
                for what in ("observed vs forecast BOLD", "RMSE vs spread", "rank histogram"):
                    self._not_available(section, what, why)
        self._h_figures(section, asm, time_s, warmup)
        return section

    def _bold_selector(self, section, time_s, warmup, forecast, observed, inputs, regions) -> None:
        """One observed-vs-forecast figure per region (input regions first), behind a region selector."""
        resim = self.run.variable("resimulation", "bold")
        if resim is not None and (resim.sizes["time"] != time_s.size or not np.allclose(resim["time"].values, time_s)):
            resim = None
        resim_regions = set(_strings(resim["region"].values)) if resim is not None else set()
        blocks = []
        for region in [r for r in regions if r in inputs] + [r for r in regions if r not in inputs]:
            fc = forecast.sel(region=region).transpose("time", "member").values
            ob = observed.sel(region=region).values
            rs = resim.sel(region=region).values if region in resim_regions else None
            r = self._forecast_r(ob, fc, warmup)
            block = self._figure(
                f"assimilation_bold_{_slug(region)}",
                f"Observed vs forecast BOLD: {region}",
                f"{region}{' (input region)' if region in inputs else ''}: observed (black) and forecast "
                "BOLD (ensemble mean and 5-95 % band, orange)"
                + (", re-simulation dashed" if rs is not None else "")
                + "; warm-up windows shaded.",
                lambda fc=fc, ob=ob, rs=rs, region=region, r=r: figures.bold_observed_vs_forecast(
                    time_s, ob, fc, region, warmup, rs, r
                ),
            )
            blocks.append((region, block))
        if blocks:
            options = tuple(region for region, _ in blocks)
            section.blocks.append(Selector("bold-region", "Region", options, tuple(b for _, b in blocks)))

    @staticmethod
    def _forecast_r(observed: np.ndarray, forecast: np.ndarray, warmup) -> float | None:
        """Pearson r of one region's observed BOLD and forecast mean after warm-up (dtb.assim.metrics)."""
        keep = ~np.asarray(warmup, dtype=bool) if warmup is not None else np.ones(len(observed), bool)
        if keep.sum() <= 2:
            return None
        mean = np.nanmean(np.asarray(forecast, dtype=float), axis=1)
        return float(assim_metrics.pearson_columns(np.asarray(observed, float)[keep, None], mean[keep, None])[0])

    def _h_figures(self, section: Section, asm: xr.Dataset, time_s: np.ndarray, warmup) -> None:
        if "h_analysis_mean" not in asm:
            why = self.run.why_missing("assimilation", "h_analysis_mean")
            self._not_available(section, "h trajectories", why)
            self._not_available(section, "spectra of h", why)
            return
        mean = asm["h_analysis_mean"].transpose("time", "parameter").values
        std = (
            asm["h_analysis_std"].transpose("time", "parameter").values
            if "h_analysis_std" in asm
            else np.zeros_like(mean)
        )
        labels = [str(p) for p in asm["parameter"].values]
        members = asm["h_members"].transpose("time", "member", "parameter").values if "h_members" in asm else None
        unit = str(asm["h_analysis_mean"].attrs.get("units", self.run.attrs.get("hyperparameter", "")))
        shown = min(len(labels), 6)
        self._add(
            section,
            "h_trajectories",
            "h trajectories",
            f"Analysis ensemble mean (line), +-1 SD (band) and members (grey) of {shown} of {len(labels)} "
            f"input region(s): h, the external-current hyperparameter (written into "
            f"{self.run.attrs.get('hyperparameter', 'i_ext')}); warm-up shaded.",
            lambda: figures.h_trajectories(time_s, mean, std, labels, members, unit, warmup),
        )
        tr = self.run.tr_s
        keep = ~warmup if warmup is not None and warmup.size == mean.shape[0] else np.ones(mean.shape[0], bool)
        if tr is None:
            self._not_available(section, "spectra of h", "the TR is unknown (no tr_s attribute and no time axis)")
        elif keep.sum() < 8:
            self._not_available(
                section, "spectra of h", f"only {int(keep.sum())} windows after warm-up (8 or more needed)"
            )
        else:
            nyquist = 0.5 / tr
            resolution = 1.0 / (keep.sum() * tr)
            band_note = (
                ""
                if resolution < figures.DTB_SPECTRAL_PEAK_HZ[0] and nyquist > figures.DTB_SPECTRAL_PEAK_HZ[1]
                else f" This run is too short to resolve that band (frequency resolution {resolution:.3g} Hz)."
            )
            self._add(
                section,
                "h_spectra",
                "Spectra of h",
                "Welch power spectra of the analysis-mean track of each parameter after warm-up; the band where the "
                f"DTB found peaks (0.02-0.025 Hz) is marked.{band_note}",
                lambda: figures.h_spectra(mean[keep], tr, labels),
            )

    def _diagnostics(self, section, time_s, warmup, forecast, observed, inputs) -> None:
        known = set(_strings(forecast["region"].values))
        regions = [r for r in (self.run.attrs.get("assimilated_regions") or inputs) if r in known]
        regions = regions or [str(r) for r in forecast["region"].values]
        fc = forecast.sel(region=regions).transpose("time", "member", "region").values.astype(float)
        ob = observed.sel(region=regions).transpose("time", "region").values.astype(float)
        if fc.shape[1] < 2:
            why = f"the forecast ensemble has {fc.shape[1]} member(s); spread and ranks need 2 or more"
            for what in ("RMSE vs spread", "rank histogram"):
                self._not_available(section, what, why)
            return
        rmse, spread = assim_metrics.rmse_spread_per_frame(fc, ob)
        self._add(
            section,
            "rmse_vs_spread",
            "RMSE vs spread",
            f"Per window, over the assimilated region(s) {', '.join(regions[:5])}: RMSE of the forecast ensemble mean "
            "against the observation, and the ensemble spread (root mean ensemble variance). A well-calibrated "
            "ensemble has them about equal.",
            lambda: figures.rmse_vs_spread(time_s, rmse, spread, warmup),
        )
        stored = (
            self.run.group("metrics").attrs.get("rank_histogram") if self.run.group("metrics") is not None else None
        )
        if stored:
            counts, origin = np.asarray(stored, dtype=float), "as stored in /metrics"
        else:
            keep = ~warmup if warmup is not None else np.ones(len(time_s), bool)
            keep &= np.isfinite(ob).all(axis=1)  # windows with an observation of every region shown
            counts = assim_metrics.rank_histogram(fc[keep], ob[keep])
            origin = "computed here from the forecast BOLD after warm-up (no rank_histogram in /metrics)"
        self._add(
            section,
            "rank_histogram",
            "Rank histogram",
            f"Rank of the observed BOLD among the sorted forecast members, {origin}. Flat: the ensemble is "
            "reliable; U-shaped: too little spread; dome-shaped: too much.",
            lambda: figures.rank_histogram(counts),
        )

    def fidelity(self) -> tuple[Section, list[tuple[str, str, str]]]:
        """FC side by side, per-region r (bars and on the brain), metrics table with published values.

        Returns the section and the headline rows for the summary.
        """
        section = Section("fidelity", "Fidelity")
        self._fc(section)
        region_r = self._region_r(section)
        inputs = [str(r) for r in self.run.attrs.get("input_regions") or []]
        metrics = self.run.group("metrics")
        rows, headline = self._metrics_rows(metrics, region_r, inputs)
        section.blocks.append(
            Table(
                "Fidelity metrics of this run beside the DTB's published values (NSR 2024, 16,043 voxels in 374 regions, "
                "rest assimilated through the thalamus). The DTB's values are voxel-level; a region-level twin is "
                "not directly comparable.",
                ("metric", "this run", "DTB published", "what it measures"),
                tuple(rows),
                css_class="metrics",
            )
        )
        if metrics is None:
            section.blocks.append(Note(f"metrics table: values not available: {self.run.why_missing('metrics')}"))
            self.missing.append(f"Fidelity / metrics: {self.run.why_missing('metrics')}")
        headline.extend(self._skill(section))
        return section, headline

    def _skill(self, section: Section) -> list[tuple[str, str, str]]:
        """Skill vs horizon beside persistence and VAR, FC beside the ceiling; the headline verdict."""
        from dtb.report.skill import forecast_skill

        asm = self.run.group("assimilation")
        if asm is None or "bold_forecast" not in asm:
            self._not_available(section, "forecast skill vs baselines", self.run.why_missing("assimilation"))
            return []
        observed = self._observed_on(np.asarray(asm["time"].values, dtype=float))
        if observed is None:
            self._not_available(section, "forecast skill vs baselines", self.run.why_missing("observation"))
            return []
        have = set(_strings(observed["region"].values))
        common = [r for r in _strings(asm["region"].values) if r in have]
        if len(common) < 2 or np.isnan(observed.values).any():
            self._not_available(
                section,
                "forecast skill vs baselines",
                "/observation/bold does not cover the forecast's windows and at least 2 of its regions",
            )
            return []
        asm = asm.sel(region=common)
        resim = self.run.variable("resimulation", "bold")
        if resim is not None and set(common) <= set(_strings(resim["region"].values)):
            resim = np.asarray(resim.sel(region=common).values)
        else:
            resim = None
        table = forecast_skill(np.asarray(observed.sel(region=common).values, dtype=float), asm, resim)
        if isinstance(table, str):
            self._not_available(section, "forecast skill vs baselines", table)
            return []
        where = (
            f"{table.frames} held-out frames (baselines fitted on the frames before them)"
            if table.heldout
            else f"{table.frames} analysed frames, 1-step forecasts made before each frame was seen (no held-out "
            "lead forecasts in this store: the fitted baselines would be in-sample and are left out; "
            "docs/fidelity.md)"
        )
        self._add(
            section,
            "skill_vs_horizon",
            "Forecast skill vs horizon",
            f"R^2 per region (mean over regions) of the twin's k-step forecasts and of the baselines, on {where}.",
            lambda: figures.skill_vs_horizon(table.horizons, table.r2),
        )
        rows = [
            (name, *(_fmt(by_k.get(k)) if k in by_k else "—" for k in table.horizons))
            for name, by_k in table.r2.items()
        ]
        rows += [(f"FC r: {name}", _fmt(value), *("" for _ in table.horizons[1:])) for name, value in table.fc.items()]
        rows.append(
            (
                "FC r: group template",
                "not available here (needs other subjects; bench/fidelity/baselines.md)",
                *("" for _ in table.horizons[1:]),
            )
        )
        if table.losses:
            verdict = f"loses to {', '.join(table.losses)} at k = 1"
        else:
            verdict = "beats every baseline at k = 1"
        section.blocks.append(
            Table(
                f"Forecast R^2 by horizon and FC r against the scored frames' FC ({where}). "
                f"Verdict: the twin {verdict} (R^2 {_fmt(table.r2['twin'][1])}).",
                ("model", *(f"k = {k}" for k in table.horizons)),
                tuple(rows),
            )
        )
        return [("Forecast skill vs baselines", f"the twin {verdict}", "—")]

    def _fc(self, section: Section) -> None:
        fc_emp = self.run.variable("metrics", "fc_empirical")
        fc_sim = self.run.variable("metrics", "fc_simulated")
        origin = "from /metrics"
        if fc_emp is None or fc_sim is None:
            fc_emp, fc_sim = self._fc_from_bold()
            origin = "computed here from /observation/bold and /resimulation/bold after warm-up (no FC in /metrics)"
        if fc_emp is None:
            why = self.run.why_missing("metrics", "fc_empirical") + "; " + self.run.why_missing("resimulation", "bold")
            self._not_available(section, "empirical vs re-simulated FC", why)
            return
        regions = [str(r) for r in fc_emp["region"].values]
        emp, sim = fc_emp.values, fc_sim.values
        stored = self.run.group("metrics").attrs.get("fc_similarity") if origin == "from /metrics" else None
        similarity = _number(stored) if stored is not None else assim_metrics.fc_similarity(sim, emp)
        self._add(
            section,
            "fc",
            "Empirical vs re-simulated FC",
            f"Functional connectivity (Pearson r between region BOLD time series), {origin}.",
            lambda: figures.fc_side_by_side(emp, sim, regions, similarity),
        )

    def _region_r(self, section: Section) -> xr.DataArray | None:
        """Draw per-region r (bars, and on the brain with an atlas); return it (None when unknown)."""
        region_r = self.run.variable("metrics", "region_r")
        origin = "from /metrics"
        if region_r is None:
            region_r = self._region_r_from_bold()
            origin = "computed here from /observation/bold and /resimulation/bold after warm-up"
        if region_r is None:
            self._not_available(section, "per-region r", self.run.why_missing("metrics", "region_r"))
            return None
        inputs = [str(r) for r in self.run.attrs.get("input_regions") or []]
        regions = [str(r) for r in region_r["region"].values]
        values = np.asarray(region_r.values, dtype=float)
        lag1 = self._values("metrics", "region_r_lag1")
        lag1 = lag1 if lag1 is not None and lag1.size == values.size else None
        self._add(
            section,
            "region_r",
            "Per-region r",
            f"Pearson r between re-simulated and observed BOLD per region ({origin}); input regions orange, "
            "black dots: with a 1-TR lag; dashed: mean over regions.",
            lambda: figures.region_r_bars(regions, values, inputs, lag1),
        )
        coords = self.atlas.coords(regions) if self.atlas is not None else None
        if coords is None:
            why = (
                "no atlas image given (dtb report --atlas NIFTI), so the region coordinates are unknown"
                if self.atlas is None
                else f"regions missing from the atlas: {', '.join(self.atlas.missing(regions)[:5])}"
            )
            self._not_available(section, "per-region r on the brain", why)
        else:
            self._add(
                section,
                "region_r_brain",
                "Per-region r on the brain",
                f"Per-region r at the region centres ({self.atlas.source}).",
                lambda: figures.region_r_on_brain(values, coords),
            )
        return region_r

    def _bold_pair(self) -> tuple[xr.DataArray, xr.DataArray] | None:
        resim = self.run.variable("resimulation", "bold")
        if resim is None:
            return None
        observed = self._observed_on(np.asarray(resim["time"].values, dtype=float))
        if observed is None:
            return None
        known = set(_strings(observed["region"].values))
        regions = [str(r) for r in resim["region"].values if str(r) in known]
        warmup = self._warmup()
        keep = np.ones(resim.sizes["time"], bool)
        if warmup is not None and warmup.size == keep.size:
            keep = ~warmup
        observed = observed.sel(region=regions).isel(time=keep).transpose("time", "region")
        resim = resim.sel(region=regions).isel(time=keep).transpose("time", "region")
        valid = np.isfinite(observed.values).all(axis=1)
        return observed.isel(time=valid), resim.isel(time=valid)

    def _fidelity_from_bold(self) -> tuple[assim_metrics.FidelityMetrics, np.ndarray] | None:
        """For a store without /metrics: :func:`dtb.assim.metrics.compute_fidelity` of the observed
        and re-simulated BOLD after warm-up, computed once (None when fewer than 3 frames pair up);
        with the region labels."""
        if not hasattr(self, "_fallback"):
            pair = self._bold_pair()
            self._fallback = None
            if pair is not None and pair[0].sizes["time"] >= 3:
                observed, resim = pair
                try:
                    fid = assim_metrics.compute_fidelity(observed.values, resimulated=resim.values)
                except AssimilationError as exc:  # e.g. a non-finite re-simulation: the figures say "not available"
                    log.warning("report: no fidelity metrics from /observation and /resimulation: %s", exc)
                else:
                    self._fallback = fid, observed["region"].values
        return self._fallback

    def _fc_from_bold(self):
        fallback = self._fidelity_from_bold()
        if fallback is None or fallback[0].fc_empirical is None:
            return None, None
        fid, regions = fallback
        coords = {"region": regions, "region_source": regions}
        dims = ("region", "region_source")
        return (
            xr.DataArray(fid.fc_empirical, dims=dims, coords=coords),
            xr.DataArray(fid.fc_simulated, dims=dims, coords=coords),
        )

    def _region_r_from_bold(self):
        fallback = self._fidelity_from_bold()
        if fallback is None:
            return None
        fid, regions = fallback
        return xr.DataArray(fid.region_r, dims=("region",), coords={"region": regions})

    def _metrics_rows(self, metrics, region_r, inputs):
        attrs = dict(metrics.attrs) if metrics is not None else {}
        rows, headline = [], []

        def value(key):
            return _number(attrs.get(key))

        def add(label, number, key, meaning, in_headline=False):
            text = _fmt(number) if number is not None else ("n/a" if key in attrs else "not computed")
            published = PUBLISHED.get(key, "—")
            rows.append((label, text, published, meaning))
            if in_headline:
                headline.append((label, text, published))

        if region_r is not None:
            for region in inputs:
                if region in set(_strings(region_r["region"].values)):
                    add(
                        f"BOLD r, input region {region}",
                        _number(region_r.sel(region=region).item()),
                        "resim_input_r",
                        "re-simulation vs data in an assimilated region",
                    )
        add(
            "BOLD r, input regions (mean)",
            value("resim_input_r"),
            "resim_input_r",
            "re-simulation vs data, assimilated regions",
            True,
        )
        whole = value("resim_region_r")
        if whole is None and "resim_region_r" not in attrs and self._fidelity_from_bold() is not None:
            whole = _number(self._fidelity_from_bold()[0].scalars.get("resim_region_r"))
        add("BOLD r, all regions (mean)", whole, "resim_region_r", "re-simulation vs data, every region", True)
        add(
            "BOLD r, non-input regions (mean)",
            value("resim_noninput_r"),
            "resim_noninput_r",
            "regions driven only through the connectome: the real test",
        )
        add("FC similarity", value("fc_similarity"), "fc_similarity", "r of the FC upper triangles", True)
        add("FC F-norm", value("fnorm"), "fnorm", "||FC_emp - FC_sim||_F / ||FC_emp||_F (lower is better)", True)
        add("BOLD r during assimilation", value("forecast_r"), "forecast_r", "forecast ensemble mean vs data", True)
        add("Held-out r", value("heldout_r"), "heldout_r", "forecast of frames not assimilated")
        add("Persistence r", value("persistence_r"), "persistence_r", "baseline: the last observed frame")
        add("Climatology r", value("climatology_r"), "climatology_r", "baseline: the mean observation")
        add("RMSE", value("rmse"), "rmse", "forecast mean vs observation")
        add("Spread", value("spread"), "spread", "ensemble standard deviation (about RMSE when calibrated)")
        add("CRPS", value("crps"), "crps", "continuous ranked probability score (lower is better)")
        return rows, headline

    def warnings(self, extra: Sequence[str]) -> Section:
        """Warnings recorded by the stages, given by the caller, and what this report could not show."""
        section = Section("warnings", "Warnings and errors")
        stored = self.run.warnings
        recorded_errors = self.run.attrs.get("errors") or []
        if isinstance(recorded_errors, str):
            recorded_errors = [recorded_errors]
        if recorded_errors:
            section.blocks.append(
                Table("Errors recorded in the run", ("error",), tuple((str(e),) for e in recorded_errors), "errors")
            )
        if stored:
            section.blocks.append(
                Table("Warnings recorded in the run", ("warning",), tuple((w,) for w in stored), "warnings")
            )
        if extra:
            section.blocks.append(
                Table("Warnings from the workflow", ("warning",), tuple((str(w),) for w in extra), "warnings")
            )
        if self.errors:
            section.blocks.append(
                Table("Figures that could not be drawn", ("error",), tuple((e,) for e in self.errors), "errors")
            )
        if self.missing:
            section.blocks.append(
                Table("Not available in this report", ("what: why",), tuple((m,) for m in self.missing), "missing")
            )
        if not (stored or extra or recorded_errors or self.errors or self.missing):
            section.blocks.append(Note("No warnings or errors were recorded.", level="info"))
        return section

    def about(self) -> Section:
        """Methods text with citations, and the run's full configuration."""
        section = Section("about", "About")
        attrs = self.run.attrs
        hyper = attrs.get("hyperparameter", "i_ext")
        paragraphs = (
            "This twin is a network of conductance-based leaky integrate-and-fire neurons with four receptor channels "
            "(AMPA, NMDA, GABA-A, GABA-B) and Ornstein-Uhlenbeck background current, built per region from the "
            "neuron counts and the structural connectome shown above, with a fixed in-degree per neuron and "
            "long-range inputs drawn from the connectome, following the Digital Twin Brain (DTB; Lu et al. 2024 and "
            "the NSR 2024 DTB paper).",
            "Each region's BOLD signal is the Balloon-Windkessel model (Friston et al. 2000) driven by the fraction of "
            "its neurons that spike in every 1 ms step, sampled once per TR.",
            f"h, the external-current hyperparameter of the input regions' excitatory populations (the engine parameter "
            f"{hyper}), was estimated from the observed "
            "BOLD with the DTB's diffusion ensemble Kalman filter (Vw-dHMDA; ensemble Kalman filter after Evensen "
            "1994): per TR window the ensemble is forecast by simulation and then updated from the observation; the "
            "analysis-mean h track is then replayed in a single re-simulation, whose BOLD is compared with the data "
            "(Pearson r per region, FC similarity and Frobenius norm).",
            "Real data are from the Human Connectome Project (Van Essen et al. 2013) where the inputs are HCP "
            "subjects. Spectra use Welch's method (Welch 1967); brain figures use nilearn (Abraham et al. 2014).",
        )
        section.blocks.append(Paragraphs(paragraphs, REFERENCES))
        config = self.run.config
        if config:
            section.blocks.append(
                Preformatted(
                    "Full configuration of the run (root attribute config)", json.dumps(config, indent=2, default=str)
                )
            )
        else:
            self._not_available(section, "configuration", "the store's root attributes have no config")
        other = {k: v for k, v in attrs.items() if k not in ("config", "warnings")}
        section.blocks.append(
            Preformatted("Root attributes of the run store", json.dumps(other, indent=2, default=str))
        )
        return section
