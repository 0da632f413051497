"""The per-subject twin report: one self-contained HTML page (jinja2 + matplotlib/nilearn figures).

>>> build_report("sub-01_run.zarr", "sub-01_report.html", figures_dir="figures")  # doctest: +SKIP
"""

from dtb.report.html import build_report
from dtb.report.run import TwinRun, open_run

__all__ = ["build_report", "open_run", "TwinRun"]
