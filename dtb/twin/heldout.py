"""A twin under the held-out fidelity protocol (docs/fidelity.md): assimilate, forecast, free-run, score.

:func:`assimilate_heldout` assimilates a subject's whole run with the observation preprocessed by
:mod:`dtb.fidelity` (detrend, causal band-pass and z-score fitted on the assimilated frames; the
twin's scaling, e.g. min-max, fitted on the same frames) and records, after every window from
``split.start - max(horizons)`` on, the ensemble-mean forecasts of the next frames made from the
analysis state before those frames are seen (:meth:`dtb.assim.hmda.HMDA.lead_forecast`). The filter
keeps assimilating the held-out frames (each only after every forecast of it was made), as an
operational forecast would.

:func:`heldout_forecasts` reads the k-step forecasts of the held-out frames back in the protocol's
units (the twin's scaling inverted). :func:`free_run_heldout` runs one brain through the whole run:
the assimilated frames with the fitted h track, the held-out span with h drawn from a per-region
AR(1) fitted to the h track of the assimilated frames (after warm-up), so nothing of the held-out
frames reaches it. :func:`score_twin` scores both with :mod:`dtb.fidelity.protocol`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from dtb.assembly.forward import drive_h_track
from dtb.assim.observation import get_scaling, scaling_from_description
from dtb.errors import AssimilationError
from dtb.fidelity.protocol import HORIZONS, PreparedRun, SubjectBaselines, prepare_run, score_forecasts, score_free_run
from dtb.fidelity.scores import fc
from dtb.io.region_inputs import RegionSubject
from dtb.seeds import derive_seed
from dtb.twin.config import TwinConfig, load_twin_config
from dtb.twin.run import assimilate_subject, fitted_region_model, load_fitted, resimulation_brain

__all__ = ["assimilate_heldout", "heldout_forecasts", "h_ar1_track", "free_run_heldout", "score_twin"]


def _prepared(subject: RegionSubject, split: str) -> PreparedRun:
    dataset = str(subject.metadata.get("SourceDataset", "")) if subject.metadata else ""
    return prepare_run(subject.label, subject.bold, subject.tr_s, split, dataset=dataset)


def assimilate_heldout(
    subject: RegionSubject,
    config: TwinConfig | dict,
    split: str,
    out: str | Path,
    *,
    horizons=HORIZONS,
    lead_every: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    progress: str | None = None,
) -> tuple[Path, PreparedRun]:
    """Assimilate ``subject``'s whole run under ``split``; the store and the prepared run.

    The config's ``n_frames`` and ``heldout_fraction`` are ignored (whole runs; every frame is
    analysed after its forecasts were made). Costs ``max(horizons)`` extra windows per held-out frame,
    or per ``lead_every``-th one.
    """
    config = config if isinstance(config, TwinConfig) else load_twin_config(config)
    config = dataclasses.replace(config, n_frames=None, heldout_fraction=0.0)
    run = _prepared(subject, split)
    start = run.split.start
    scaling = get_scaling(config.scaling, **config.scaling_params).fit(run.clean[:start])
    observation = (run.clean, scaling.apply(run.clean), scaling.describe())
    lead = int(max(horizons))
    store = assimilate_subject(
        subject,
        config,
        out,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        observation=observation,
        lead_forecasts=lead,
        lead_from=max(0, start - lead),
        lead_every=lead_every,
    )
    return store, run


def heldout_forecasts(
    store: str | Path, run: PreparedRun, horizons=HORIZONS
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """k-step forecasts of the held-out frames in ``run.clean``'s units, and which frames they are.

    Returns ``(forecasts, frames)``: ``forecasts[k]`` (frame, region) for the held-out frames
    ``frames[k]`` (indices into the held-out frames; all of them unless the store was run with
    ``lead_every`` > 1). The twin's regions must be the run's.
    """
    fitted = load_fitted(store)
    assim = fitted.assimilation
    if "bold_lead" not in assim:
        raise AssimilationError(f"{store} has no lead forecasts; assimilate it with assimilate_heldout")
    if len(fitted.labels) != run.clean.shape[1]:
        raise AssimilationError(
            f"{store}: the twin kept {len(fitted.labels)} of {run.clean.shape[1]} regions; score it on the kept ones"
        )
    lead = assim["bold_lead"].values  # (time, lead, region): forecast of frame time + lead
    scaling = scaling_from_description(fitted.observation.attrs["scaling"])
    forecasts, frames = {}, {}
    for k in horizons:
        if k > lead.shape[1]:
            raise AssimilationError(f"{store} holds lead forecasts up to {lead.shape[1]} frames, not {k}")
        model_units = lead[run.targets - k, k - 1]
        have = np.isfinite(model_units).all(axis=1)
        if have.sum() < 3:
            raise AssimilationError(f"{store}: fewer than 3 held-out frames have {k}-step forecasts")
        forecasts[int(k)] = scaling.inverse(model_units[have])
        frames[int(k)] = np.flatnonzero(have)
    return forecasts, frames


def h_ar1_track(
    h_track: np.ndarray, fit_frames: slice, n_draw: int, lower: float, upper: float, seed: int
) -> np.ndarray:
    """Draw ``n_draw`` frames of h continuing ``h_track`` from a per-region AR(1) fitted on ``h_track[fit_frames]``.

    ``h[t] = c + a h[t - 1] + sd * e``, e standard normal (seeded), started from the last fitted frame
    and clipped to [lower, upper] (the filter's bounds).
    """
    h = np.asarray(h_track[fit_frames], dtype=np.float64)
    x, z = h[:-1], h[1:]
    xm, zm = x.mean(axis=0), z.mean(axis=0)
    var = ((x - xm) ** 2).sum(axis=0)
    a = np.where(var > 0, ((x - xm) * (z - zm)).sum(axis=0) / np.where(var > 0, var, 1.0), 0.0)
    a = np.clip(a, -0.999, 0.999)
    c = zm - a * xm
    sd = (z - (c + a * x)).std(axis=0)
    rng = np.random.default_rng(seed)
    out = np.empty((n_draw, h.shape[1]))
    prev = h[-1]
    for t in range(n_draw):
        prev = np.clip(c + a * prev + sd * rng.standard_normal(h.shape[1]), lower, upper)
        out[t] = prev
    return out


def free_run_heldout(store: str | Path, run: PreparedRun, *, seed: int | None = None) -> np.ndarray:
    """One brain through the whole run; its BOLD over the held-out span (held-out frame, region).

    Assimilated frames: the fitted h track (analysis means); held-out frames: h from
    :func:`h_ar1_track` fitted on the analysed, assimilated windows (seed ``derive_seed(run seed,
    "heldout_h")``).
    """
    fitted = load_fitted(store)
    start = run.split.start
    warm = int(fitted.assimilation["warmup"].values.sum())
    s = fitted.config.hmda
    run_seed = fitted.run_seed(seed)
    lower, upper = fitted.h_bounds
    drawn = h_ar1_track(
        fitted.h_track, slice(warm, start), run.split.n_heldout, lower, upper, derive_seed(run_seed, "heldout_h")
    )
    h = np.concatenate([fitted.h_track[:start], drawn])
    regional, _ = resimulation_brain(fitted, fitted_region_model(fitted), seed=seed)
    bold, *_ = drive_h_track(regional, s.hyperparameter, fitted.inputs, h, round(fitted.tr_s * 1000.0))
    return bold[start:]


def score_twin(
    store: str | Path, run: PreparedRun, baselines: SubjectBaselines, *, template_fc=None, horizons=HORIZONS
) -> dict:
    """k-step R^2/r per region and free-run FC/FCD scores of a twin, beside ``baselines``' values.

    Returns ``{"forecast": {k: {"r2", "r", "r2_regions", "r_regions", "frames", "frame_index"}},
    "free_run": {...}, "free_fc": (region, region), "free_bold": (frame, region)}``; ``frames`` counts
    the held-out frames scored at that horizon and ``frame_index`` lists them (indices into the held-out
    frames: score the baselines on them with ``subject_baselines(run, frames=...)``).
    """
    forecasts, frames = heldout_forecasts(store, run, horizons)
    skill = score_forecasts(run, forecasts, frames)
    free = free_run_heldout(store, run)

    return {
        "forecast": {
            k: {
                "r2": s.r2_mean,
                "r": s.r_mean,
                "r2_regions": s.r2.tolist(),
                "r_regions": s.r.tolist(),
                "frames": int(frames[k].size),
                "frame_index": frames[k],
            }
            for k, s in skill.items()
        },
        "free_run": score_free_run(run, free, baselines, template_fc),
        "free_fc": fc(free),
        "free_bold": free,
    }
