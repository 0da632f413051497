"""Write the per-subject twin report: one self-contained HTML page (jinja2), plus figure files.

Figures are embedded as base64 PNG and the page's style and script are inline, so the file
opens offline with nothing beside it.  With ``figures_dir`` every figure is also written as
``<section>_<name>.png`` (for Snakemake's ``report()``).  Both are written to a temporary
name first and renamed, so an error never leaves half a report behind.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jinja2

from dtb import __version__
from dtb.errors import ReportError, ReportFigureError
from dtb.io.atomic import staged_output
from dtb.io.locks import output_lock
from dtb.report.anatomy import load_atlas
from dtb.report.experiments import experiments_section, load_experiment_results
from dtb.report.run import open_run
from dtb.report.sections import SectionBuilder

__all__ = ["build_report", "render_report"]

log = logging.getLogger("dtb")

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dtb.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"dtb": __version__, "python": platform.python_version()}
    for package in ("numpy", "xarray", "zarr", "matplotlib", "nilearn", "nibabel", "jinja2"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            versions[package] = "not installed"
    return versions


def render_report(
    builder: SectionBuilder, extra_warnings: Sequence[str] = (), experiments=(), jobs: int = 1
) -> tuple[str, list]:
    """Build every section, draw its figures (once each, ``jobs`` processes) and render the page;
    return (html, sections).

    ``experiments``: results of `dtb experiment` (:func:`dtb.report.experiments.load_experiment_results`),
    shown in an *Experiments* section after *Fidelity* when there are any.
    """
    anatomy = builder.anatomy()
    connectivity = builder.connectivity()
    simulation = builder.simulation()
    assimilation = builder.assimilation()
    fidelity, headline = builder.fidelity()
    builder.draw_figures([anatomy, connectivity, simulation, assimilation, fidelity], jobs=jobs)
    summary = builder.summary(headline)
    about = builder.about()
    warnings = builder.warnings(list(extra_warnings))
    sections = [summary, anatomy, connectivity, simulation, assimilation, fidelity, warnings, about]
    if experiments:
        sections.insert(6, experiments_section(experiments))
    run = builder.run
    subject = run.attrs.get("subject") or run.config.get("subject") or run.path.stem
    n_warnings = len(run.warnings) + len(extra_warnings)
    html = _ENV.get_template("report.html.j2").render(
        subject=str(subject),
        sections=sections,
        store=str(run.path),
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        versions=_versions(),
        n_warnings=n_warnings,
        n_missing=len(builder.missing),
        n_errors=len(builder.errors),
    )
    return html, sections


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_report(
    run_store: str | Path,
    out_html: str | Path,
    figures_dir: str | Path | None = None,
    extra_warnings: Sequence[str] = (),
    *,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    dpi: int = 90,
    jobs: int = 1,
    experiments: Sequence[str | Path] = (),
) -> Path:
    """Write the twin report of one run as a single self-contained HTML file.

    Parameters
    ----------
    run_store : the twin run store (zarr v3) written by ``dtb assimilate`` / ``dtb resimulate``.
    out_html : the HTML file to write (its directory is created; an existing file is replaced).
    figures_dir : also write every figure there as ``<section>_<name>.png`` (created if needed).
    extra_warnings : more warnings to list (e.g. from workflow stages that do not write the store).
    atlas : 3-D NIfTI of integer region labels in MNI space, for the brain figures (optional).
    atlas_labels : the atlas's label table (TSV ``index``/``name``), optional.
    dpi : resolution of the figures [dots per inch].
    jobs : processes drawing the figures (1: this one; more: forked workers, the same page).
    experiments : `dtb experiment` output folders or their NAME.json files; each study's figure and
        summary are shown beside the DTB's claim in an *Experiments* section (docs/experiments.md).

    Returns
    -------
    Path
        ``out_html``.

    Raises
    ------
    ReportError
        When the store cannot be opened, the atlas cannot be read, an experiment result cannot be
        read, or ``out_html`` is a directory.  Missing groups or variables never raise: the page says what is missing.
    ReportFigureError
        After the page and figures were written, when a figure failed to draw (a bug; the page
        shows an error note in its place and lists it under *Warnings and errors*).
    """
    out_html = Path(out_html)
    if out_html.is_dir():
        raise ReportError(
            f"--out {out_html} is a directory; give the path of the HTML file to write (e.g. report.html)"
        )
    if out_html.suffix.lower() not in (".html", ".htm"):
        log.warning("report: %s does not end in .html; browsers may not open it as a web page", out_html)
    if int(dpi) != dpi or not 30 <= dpi <= 600:
        raise ReportError(f"dpi must be an integer between 30 and 600, got {dpi!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ReportError(f"jobs (figure-drawing processes) must be a whole number >= 1, got {jobs!r}")
    if atlas is None and atlas_labels is not None:
        raise ReportError("--atlas-labels needs --atlas (the label image the table describes)")
    if figures_dir is not None and Path(figures_dir).exists() and not Path(figures_dir).is_dir():
        raise ReportError(f"--figures {figures_dir} exists and is not a directory; give a directory path")
    results = load_experiment_results(experiments)  # a bad path is refused before anything is written
    with output_lock(out_html, what="report"):
        run = open_run(run_store)
        atlas_obj = load_atlas(atlas, run.regions(), atlas_labels) if atlas is not None else None
        builder = SectionBuilder(run, atlas_obj, dpi=int(dpi))
        html, sections = render_report(builder, [str(w) for w in extra_warnings], results, jobs=jobs)
        out_html.parent.mkdir(parents=True, exist_ok=True)
        if figures_dir is not None:  # the folder is filled beside its final name, then renamed into place whole
            with staged_output(figures_dir, folder=True, keep_existing=True, stage="report") as staging:
                for section in sections:
                    for fig in section.figures():
                        _write_atomic(staging / f"{fig.key}.png", fig.png)
        _write_atomic(out_html, html.encode("utf-8"))
        log.info(
            "report: wrote %s (%d figures, %d not available)",
            out_html,
            sum(len(s.figures()) for s in sections),
            len(builder.missing),
        )
        if builder.errors:
            raise ReportFigureError(out_html, builder.errors)
    return out_html
