"""The twin's cost model (dtb.twin.cost) against the measurements it is built from.

Cheap (analytic): the projection reproduces the measured twin windows of
``bench/results/twin_throughput.json`` and the 1e5-neuron twin run of ``bench/results/twin_1e5.json``
within the stated tolerance (20 %; they lie within 16 %), grows with neurons, members and frames, shrinks with ranks while the
exchange is small, and refuses bad settings naming the parameter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtb.errors import ParameterError
from dtb.twin.cost import CPU_MEASURED, GPU_H100, estimate_twin_time, gpu_bytes_per_update, twin_seconds

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
#: the model's stated tolerance against the measurements it was fitted to (CPU seconds)
TOLERANCE = 0.2


def _window(row: dict) -> float:
    """CPU seconds of the twin's simulation predicted for one bench row (window_ms, one process)."""
    est = estimate_twin_time(row["neurons"], row["K"], row["dt_ms"], row["members"], 1, tr_s=row["window_ms"] / 1000.0)
    return est.simulate_s


def test_the_measured_twin_windows_are_reproduced():
    files = ("twin_throughput.json", "twin_throughput_quick.json", "twin_throughput_ranks.json")
    rows = [r for f in files for r in json.loads((RESULTS / f).read_text())["rows"] if r["ranks"] == 1]
    assert {r["neurons"] for r in rows} >= {10_000, 100_000} and {r["dt_ms"] for r in rows} == {0.1, 1.0}
    for row in rows:
        measured = row["twin"]["t_cpu_s"]
        assert _window(row) == pytest.approx(measured, rel=TOLERANCE), row


def test_the_1e5_neuron_twin_run_is_reproduced():
    run = json.loads((RESULTS / "twin_1e5.json").read_text())
    settings = run["settings"]
    est = estimate_twin_time(
        settings["neurons_total"],
        settings["indegree"],
        settings["dt_ms"],
        settings["members"],
        1,
        tr_s=run["tr_s"],
    )
    assert est.simulate_s + est.window_s == pytest.approx(run["cpu_s_per_frame"], rel=TOLERANCE)


def test_the_projection_grows_with_the_work_and_shrinks_with_ranks():
    base = dict(indegree=100, dt_ms=0.1, members=8, frames=1200)
    sizes = [twin_seconds(n, **base) for n in (10**4, 10**5, 10**6, 10**7)]
    assert sizes == sorted(sizes) and sizes[-1] > 900 * sizes[0]
    assert twin_seconds(10**6, 100, 0.1, 16, 1200) > twin_seconds(10**6, 100, 0.1, 8, 1200)
    assert twin_seconds(10**6, 100, 0.1, 8, 1200) > twin_seconds(10**6, 100, 0.1, 8, 600)
    ranked = [twin_seconds(10**6, ranks=r, layout="neurons", **base) for r in (1, 2, 8, 64)]
    assert ranked == sorted(ranked, reverse=True)
    members = estimate_twin_time(10**6, ranks=8, **base)
    assert members.layout == "members" and members.exchange_s == 0.0
    neurons = estimate_twin_time(10**6, ranks=64, **base)
    assert neurons.layout == "neurons" and neurons.exchange_s > 0.0


def test_the_gpu_model_is_the_roofline_of_the_kernels_docs():
    assert gpu_bytes_per_update() == pytest.approx(23.3, abs=0.05)  # docs/kernels.md, "Roofline"
    est = estimate_twin_time(10**6, 100, 0.1, 8, 1200, device="cuda")
    assert est.model == "roofline model" and est.memory_gib_per_rank < GPU_H100.memory_gib
    per_update = est.simulate_s / est.updates
    assert per_update > 23.3 / GPU_H100.bandwidth_bytes_per_s  # never faster than the bandwidth bound
    cpu = estimate_twin_time(10**6, 100, 0.1, 8, 1200)
    assert est.seconds < cpu.seconds and cpu.model == "measured"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"neurons": 0}, "neurons must be a whole number >= 1"),
        ({"frames": 2.5}, "frames must be a whole number >= 1"),
        ({"dt_ms": 0.05}, r"no measured CPU cost at dt_ms 0.05 \(measured: \[0.1, 1.0\]\)"),
        ({"device": "tpu"}, "device must be 'cpu' or 'cuda'"),
        ({"ranks": 16, "layout": "members"}, r"8 member\(s\) < 16 ranks\); use layout 'neurons'"),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(kwargs, message):
    args = {"neurons": 10**6, "indegree": 100, "dt_ms": 0.1, "members": 8, "frames": 1200, **kwargs}
    with pytest.raises(ParameterError, match=message):
        estimate_twin_time(**args)
    assert CPU_MEASURED.seconds_per_update  # the constants the messages refer to exist
