"""The report's cost: figures drawn once, the same in forked workers as in one process; spike counts
summed block by block; no torch in the report's process (bench/report_scale.py measures the cost)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from dtb.errors import ReportError
from dtb.report import figures
from dtb.report.html import build_report
from dtb.report.render import PendingFigure, draw_figures
from dtb.report.sections import _summed_counts

ROOT = Path(__file__).resolve().parents[2]


def _broken():
    raise RuntimeError("drawing exploded")


def _pending() -> list[PendingFigure]:
    rng = np.random.default_rng(3)
    ranks, cv = rng.integers(0, 50, 9), rng.random(200) * 2
    return [
        PendingFigure("ranks", "Ranks", "", lambda: figures.rank_histogram(ranks)),
        PendingFigure("broken", "Broken", "", _broken),
        PendingFigure("cv", "CV", "", lambda: figures.isi_cv_distribution(cv)),
        PendingFigure("bars", "Bars", "", lambda: figures.neuron_count_bars(["a", "b", "c"], np.array([3, 1, 2]))),
    ]


def test_forked_workers_draw_the_same_pngs_in_the_same_order():
    pending = _pending()
    serial = draw_figures(pending, dpi=40, jobs=1)
    forked = draw_figures(pending, dpi=40, jobs=2)
    assert [ok for ok, _, _ in serial] == [True, False, True, True]
    assert forked == serial  # bytes for bytes: the page does not depend on the number of processes
    assert all(png.startswith(b"\x89PNG") for ok, png, _ in serial if ok)
    _, why, where = serial[1]
    assert why == "RuntimeError: drawing exploded" and where.startswith("test_report_render.py:")


def test_spike_counts_are_summed_block_by_block_as_in_one_piece():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (1013, 7)).astype(np.int32)  # 1013 = 50 groups of 20 + 13 left over
    expected = counts[:1000].reshape(50, 20, 7).sum(axis=1)
    var = xr.DataArray(counts, dims=("time", "population"))
    for block in (20, 45, 1 << 16):  # blocks of whole groups, one group per block, one block
        np.testing.assert_array_equal(_summed_counts(var, 20, block_bins=block), expected)
    members = np.stack([counts, counts + 1], axis=1)  # (time, member, population): member 0 is drawn
    np.testing.assert_array_equal(
        _summed_counts(xr.DataArray(members, dims=("time", "member", "population")), 20), expected
    )
    assert _summed_counts(var[:13], 13).shape == (1, 7)  # shorter than one 20 ms bin: one bin of all


def test_jobs_must_be_a_whole_number_of_processes(tmp_path):
    with pytest.raises(ReportError, match="jobs .* must be a whole number >= 1, got 0"):
        build_report(tmp_path / "none.zarr", tmp_path / "r.html", jobs=0)
    assert not (tmp_path / "r.html").exists()


def test_the_report_does_not_load_torch():
    code = "import sys, dtb.report.html, dtb.report.sections; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", "dtb.report pulls in torch (about 180 MB): import it lazily"
