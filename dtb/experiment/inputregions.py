"""The ``input-regions`` study: one subject's twin with the thalamus vs the interoceptive set as inputs.

Each protocol (default ``A-thalamus`` and ``A-interoceptive``; :data:`dtb.fidelity.table.PROTOCOLS`)
fits the subject's twin with the same setting and seed (:func:`dtb.experiment.protocols.fit_protocol`:
first 2/3 of the frames assimilated, one brain re-simulated with the fitted h track) and scores it
from the store's ``/metrics``. Paired statistics within the subject: the Wilcoxon signed-rank
test of the per-region re-simulation r of the second protocol against the first over the regions
that are inputs of neither (the regions each twin had to predict). Over subjects, the runner
(``bench/experiments/run.py``) pairs the subjects' lines with
:func:`dtb.fidelity.table.paired_comparison`. docs/experiments.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr

from dtb.errors import ConfigError
from dtb.io.region_inputs import RegionSubject
from dtb.validation import check_in_range

__all__ = ["INPUT_REGIONS_DEFAULTS", "check_input_regions", "run_input_regions", "paired_regions"]

log = logging.getLogger("dtb")

INPUT_REGIONS_DEFAULTS = {
    "protocols": ["A-thalamus", "A-interoceptive"],
    "neurons": 1000,
    "indegree": 20,
    "members": 8,
    "frames": 60,  # frames used (the first 2/3 assimilated); null: the whole run
    "warmup": 10,
    "seed": 1,
    "backend": "auto",
    "keep_stores": False,
    "record_seconds": 0.0,  # [s] of re-simulation spikes kept in the kept stores (criticality needs > 0)
}

#: The DTB's claim this study is put beside (docs/experiments.md).
CLAIM = (
    "DTB: assimilating the interoceptive set (thalamus, hippocampus, insula, ACC, vmPFC/sgACC) rather than the "
    "thalamus alone gives a twin closer to the data (the DTB fits its h in these regions)."
)

#: Scalars of a run line shown per protocol.
SCALARS = (
    "resim_region_r",
    "resim_input_r",
    "resim_noninput_r",
    "fc_similarity",
    "fnorm",
    "forecast_r",
    "heldout_input_r",
)


def check_input_regions(subject: RegionSubject, settings: dict) -> dict:
    """Check the protocols and build each protocol's twin config before anything runs."""
    from dtb.experiment.protocols import input_labels, protocol_config, twin_setting
    from dtb.fidelity.table import PROTOCOLS
    from dtb.twin.config import resolve_input_regions

    s = dict(settings)
    protocols = s["protocols"] if isinstance(s["protocols"], list | tuple) else [s["protocols"]]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or len(protocols) < 2 or len(set(protocols)) != len(protocols):
        raise ConfigError(
            f"input-regions.protocols must name at least two different protocols of {list(PROTOCOLS)}, got {protocols}"
        )
    for key in ("neurons", "indegree", "members", "warmup", "seed"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < (0 if key in ("warmup", "seed") else 1):
            raise ConfigError(f"input-regions.{key} must be a whole number, got {s[key]!r}")
    if s["frames"] is not None and (not isinstance(s["frames"], int) or s["frames"] < 10):
        raise ConfigError(f"input-regions.frames must be a whole number >= 10 or null (whole run), got {s['frames']!r}")
    rec = check_in_range(s["record_seconds"], "input-regions.record_seconds", 0, unit="s", error=ConfigError)
    setting = twin_setting(
        neurons=s["neurons"],
        indegree=s["indegree"],
        members=s["members"],
        frames=s["frames"],
        warmup=s["warmup"],
        seed=s["seed"],
        backend=s["backend"],
        record_seconds=rec,
    )
    configs = {p: protocol_config(setting, p) for p in protocols}
    for p, config in configs.items():
        resolve_input_regions(config, list(subject.labels), subject.atlas)
        if not input_labels(p, subject.labels):
            raise ConfigError(f"sub-{subject.label} has none of protocol {p}'s input regions {PROTOCOLS[p]!r}")
    s["protocols"], s["setting"] = list(protocols), setting
    return s


def paired_regions(r_a: dict, r_b: dict, regions) -> dict:
    """Paired Wilcoxon signed-rank test of per-region r (``r_b`` - ``r_a``) over ``regions`` with both finite."""
    from dtb.fidelity.scores import paired_wilcoxon

    keep = [x for x in regions if r_a.get(x) is not None and r_b.get(x) is not None]
    a = np.array([r_a[x] for x in keep], dtype=np.float64)
    b = np.array([r_b[x] for x in keep], dtype=np.float64)
    test = paired_wilcoxon(b, a)
    return {"regions": keep, "n": test["n"], "n_higher": test["n_better"], "mean_difference": test["mean_difference"], "p": test["p"]}  # fmt: skip


def run_input_regions(subject: RegionSubject, settings: dict, out: Path, *, progress: str | None = "none"):
    """The study as a generator: checks, yields once, then fits each protocol; returns (ds, summary, fig)."""
    from dtb.experiment.protocols import fit_protocol
    from dtb.experiment.studies import _figure

    s = check_input_regions(subject, settings)
    yield
    out.mkdir(parents=True, exist_ok=True)
    work = out / "input-regions_stores"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for protocol in s["protocols"]:
        store = work / f"sub-{subject.label}_{protocol}.zarr"
        log.info("input-regions: sub-%s %s: fitting", subject.label, protocol)
        rows.append(
            fit_protocol(subject, s["setting"], protocol, store, keep_store=s["keep_stores"], progress=progress)
        )
    if not any(work.iterdir()):
        work.rmdir()
    labels = list(subject.labels)
    first, second = rows[0], rows[-1]
    shared_outputs = [x for x in labels if x not in set(first["input_regions"]) | set(second["input_regions"])]
    summary = {
        "experiment": "input-regions",
        "subject": subject.label,
        "dtb_claim": CLAIM,
        "protocols": s["protocols"],
        "runs": rows,
        "by_protocol": {r["protocol"]: {k: r.get(k) for k in SCALARS} for r in rows},
        "paired_regions": {
            "a": first["protocol"],
            "b": second["protocol"],
            "what": "re-simulation r per region, b - a, over the regions that are inputs of neither",
            **paired_regions(first["region_r"], second["region_r"], shared_outputs),
        },
    }
    r = np.array([[np.nan if row["region_r"][x] is None else row["region_r"][x] for x in labels] for row in rows])
    ds = xr.Dataset(
        {
            "region_r": (("protocol", "region"), r),
            "is_input": (("protocol", "region"), [[x in row["input_regions"] for x in labels] for row in rows]),
            **{k: ("protocol", [np.nan if row.get(k) is None else float(row[k]) for row in rows]) for k in SCALARS},
        },
        coords={"protocol": s["protocols"], "region": np.asarray(labels, dtype=str)},
    )
    fig, axes = _figure(10.0, 3.6, ncols=2)
    x = np.arange(len(SCALARS))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        axes[0].bar(
            x + i * width, [np.nan if row.get(k) is None else row[k] for k in SCALARS], width, label=row["protocol"]
        )
    axes[0].set_xticks(x + 0.4 - width / 2, SCALARS, rotation=40, ha="right", fontsize=7)
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"sub-{subject.label}: scores per input set", fontsize=9)
    pr = summary["paired_regions"]
    ra = [first["region_r"][k] for k in pr["regions"]]
    rb = [second["region_r"][k] for k in pr["regions"]]
    axes[1].plot(ra, rb, ".", ms=4)
    lim = [min(ra + rb + [0.0]) - 0.05, max(ra + rb + [0.0]) + 0.05] if ra else [-1, 1]
    axes[1].plot(lim, lim, color="grey", lw=0.8)
    axes[1].set_xlabel(f"region r, {first['protocol']}")
    axes[1].set_ylabel(f"region r, {second['protocol']}")
    p = "-" if pr["p"] is None else f"{pr['p']:.3g}"
    axes[1].set_title(f"non-input regions: {pr['n_higher']}/{pr['n']} higher, Wilcoxon p {p}", fontsize=9)
    return ds, summary, fig
