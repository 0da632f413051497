"""The held-out fidelity protocol (docs/fidelity.md): baselines and twin scores per subject and group.

Per subject and split (:func:`subject_baselines`): the run is preprocessed with parameters fitted
on its assimilated frames (:mod:`dtb.fidelity.preprocess`); every forecaster of
:mod:`dtb.fidelity.baselines` is fitted on those frames and predicts each held-out frame k = 1, 2, 5
frames ahead; FC and FCD of the held-out frames are the targets of the free-running scores, with the
subject's own assimilated part as the split-half ceiling. Per group (:func:`group_baselines`): the
leave-one-subject-out template FC, fingerprinting and group-level FC/FCD.

A twin is scored by the same functions: :func:`score_forecasts` for its k-step forecasts,
:func:`score_free_run` for a free run over the held-out span, :func:`group_scores` for its
fingerprinting and group-level FC/FCD. A twin with lead forecasts after every n-th window only
forecasts some held-out frames (:func:`lead_frames`); ``subject_baselines(run, frames=...)`` scores
the baselines on those frames, so twin and baselines are judged on identical frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dtb.errors import InputDataError, ParameterError
from dtb.fidelity.baselines import climatology, fit_ar1, fit_var, persistence
from dtb.fidelity.preprocess import FittedPreprocessing, check_bold, fit_preprocessing
from dtb.fidelity.scores import RegionSkill, fc, fc_scores, fcd_ks, fcd_values, identification, region_skill
from dtb.fidelity.splits import Split, make_split

__all__ = [
    "HORIZONS",
    "FORECASTERS",
    "lead_frames",
    "PreparedRun",
    "SubjectBaselines",
    "prepare_run",
    "subject_baselines",
    "score_forecasts",
    "score_free_run",
    "group_baselines",
    "group_scores",
]

#: Forecast horizons [frames (TR)].
HORIZONS = (1, 2, 5)
#: Baseline forecasters in table order.
FORECASTERS = ("persistence", "climatology", "AR(1)", "VAR(1)", "VAR(2)")


@dataclass(frozen=True)
class PreparedRun:
    """A subject's run cut by a split and preprocessed on its assimilated frames.

    ``clean`` is the whole run after preprocessing (frame, region), z-scored units.
    """

    subject: str
    dataset: str
    split: Split
    preprocessing: FittedPreprocessing
    clean: np.ndarray

    @property
    def heldout(self) -> np.ndarray:
        return self.clean[self.split.heldout]

    @property
    def assimilated(self) -> np.ndarray:
        return self.clean[self.split.assimilated]

    @property
    def targets(self) -> np.ndarray:
        """Frame indices of the held-out frames."""
        return np.arange(self.split.start, self.split.n_frames)


def prepare_run(
    subject: str, bold, tr_s: float | None, split: str, *, dataset: str = "", n_frames: int | None = None
) -> PreparedRun:
    """Cut and preprocess one subject's whole run (``bold`` (frame, region) in scanner units).

    ``n_frames`` shortens the run first (for tests and the in-sample comparison); the protocol uses
    whole runs.
    """
    array = check_bold(bold, subject=subject)
    if n_frames is not None:
        array = array[:n_frames]
    cut = make_split(split, array.shape[0], tr_s, subject=subject)
    fitted = fit_preprocessing(array, cut, subject=subject)
    return PreparedRun(subject, dataset, cut, fitted, fitted.apply(array))


def _skill_json(skill: RegionSkill) -> dict:
    return {"r2": skill.r2_mean, "r": skill.r_mean}


@dataclass(frozen=True)
class SubjectBaselines:
    """One subject's baseline scores on the held-out frames of one split.

    Attributes
    ----------
    forecasts : forecaster -> horizon k -> :class:`RegionSkill` (per region R^2 and r).
    models : forecaster -> fitted details (ridge alpha, CV R^2 on the assimilated frames).
    fc_heldout, fc_assimilated : (region, region) FC of the held-out and assimilated frames.
    fcd_heldout, fcd_assimilated : FCD upper-triangle values of the same frames.
    ceiling : the assimilated part's FC and FCD scored against the held-out part's
        (``fc_r``, ``fc_fnorm``, ``fcd_ks``): what the subject's own other data reach.
    """

    subject: str
    dataset: str
    split: str
    forecasts: dict[str, dict[int, RegionSkill]]
    models: dict[str, dict]
    fc_heldout: np.ndarray
    fc_assimilated: np.ndarray
    fcd_heldout: np.ndarray
    fcd_assimilated: np.ndarray
    ceiling: dict[str, float]
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """Scalars only (means over regions)."""
        return {
            "subject": self.subject,
            "dataset": self.dataset,
            "split": self.split,
            "forecast": {
                name: {str(k): _skill_json(s) for k, s in by_k.items()} for name, by_k in self.forecasts.items()
            },
            "models": self.models,
            "ceiling": self.ceiling,
            **self.extra,
        }


def lead_frames(run: PreparedRun, lead_every: int, horizons: Sequence[int] = HORIZONS) -> dict[int, np.ndarray]:
    """The held-out frames a twin forecasts k frames ahead when its lead forecasts are made after every
    ``lead_every``-th window from ``start - max(horizons)`` on (:func:`dtb.twin.heldout.assimilate_heldout`):
    k -> indices into the held-out frames (all of them for ``lead_every`` 1)."""
    if isinstance(lead_every, bool) or not isinstance(lead_every, int | np.integer) or lead_every < 1:
        raise ParameterError(f"lead_every must be a whole number of windows >= 1, got {lead_every!r}")
    lead_from = max(0, run.split.start - int(max(horizons)))
    out = {}
    for k in horizons:
        origin = np.asarray(run.targets, dtype=np.int64) - int(k)
        out[int(k)] = np.flatnonzero((origin >= lead_from) & ((origin - lead_from) % int(lead_every) == 0))
    return out


def subject_baselines(
    run: PreparedRun, *, horizons: Sequence[int] = HORIZONS, frames: Mapping[int, np.ndarray] | None = None
) -> SubjectBaselines:
    """Fit every baseline on ``run``'s assimilated frames and score it on its held-out frames.

    With ``frames`` (k -> indices into the held-out frames, e.g. :func:`lead_frames`) the k-step
    forecasts are scored on those frames only: the frames a twin's forecasts were scored on.
    """
    train = run.assimilated
    ar1 = fit_ar1(train)
    forecasts: dict[str, dict[int, RegionSkill]] = {name: {} for name in FORECASTERS}
    models: dict[str, dict] = {"AR(1)": {"coefficient_mean": float(np.mean(np.diag(ar1.coefs[0])))}}
    for k in horizons:
        pick = slice(None) if frames is None else np.asarray(frames[int(k)], dtype=np.int64)
        targets, truth = run.targets[pick], run.heldout[pick]
        if frames is not None and truth.shape[0] < 3:
            raise ParameterError(f"sub-{run.subject}: only {truth.shape[0]} held-out frames to score at k = {k}")
        forecasts["persistence"][k] = region_skill(persistence(run.clean, targets, k), truth)
        forecasts["climatology"][k] = region_skill(climatology(run.clean, run.split.start, targets), truth)
        forecasts["AR(1)"][k] = region_skill(ar1.forecast(run.clean, targets, k), truth)
        for lags in (1, 2):
            var = fit_var(train, lags, horizon=k)
            forecasts[var.name][k] = region_skill(var.forecast(run.clean, targets, k), truth)
            models.setdefault(var.name, {})[str(k)] = {"alpha": var.alpha, "cv_r2": var.cv_r2}
    truth = run.heldout
    tr = run.split.tr_s
    fc_held, fc_assim = fc(truth), fc(train)
    fcd_held, fcd_assim = fcd_values(truth, tr), fcd_values(train, tr)
    ceiling = {**fc_scores(fc_assim, fc_held), "fcd_ks": fcd_ks(fcd_assim, fcd_held)}
    return SubjectBaselines(
        subject=run.subject,
        dataset=run.dataset,
        split=run.split.name,
        forecasts=forecasts,
        models=models,
        fc_heldout=fc_held,
        fc_assimilated=fc_assim,
        fcd_heldout=fcd_held,
        fcd_assimilated=fcd_assim,
        ceiling=ceiling,
    )


def score_forecasts(
    run: PreparedRun, forecasts: Mapping[int, np.ndarray], frames: Mapping[int, np.ndarray] | None = None
) -> dict[int, RegionSkill]:
    """Score a model's k-step forecasts of the held-out frames.

    ``forecasts[k]`` is (held-out frame, region): the prediction of each held-out frame made from
    the model's state before frame ``t - k + 1`` was seen, in the units of ``run.clean`` (R^2 is not
    scale-free, r is). With ``frames[k]`` (indices into the held-out frames), ``forecasts[k]`` holds
    only those frames and the score covers only them.
    """
    out = {}
    for k, prediction in forecasts.items():
        pred = np.asarray(prediction, dtype=np.float64)
        target = run.heldout if frames is None else run.heldout[np.asarray(frames[k], dtype=np.int64)]
        if pred.shape != target.shape:
            raise ParameterError(
                f"sub-{run.subject}: the {k}-step forecast has shape {pred.shape}; it must cover the "
                f"{target.shape[0]} held-out frames scored, every region: {target.shape}"
            )
        if not np.isfinite(pred).all():
            raise InputDataError(f"sub-{run.subject}: the {k}-step forecast contains NaN or infinite values")
        out[int(k)] = region_skill(pred, target)
    return out


def score_free_run(run: PreparedRun, free_bold, baselines: SubjectBaselines, template_fc=None) -> dict:
    """FC r, normalised F-norm and FCD KS of a free run over the held-out span vs the held-out data.

    ``free_bold`` (frame, region) is the model's BOLD over the held-out span (any units: FC and FCD
    are scale-free), at least as many frames as the FCD window needs.
    """
    free = np.asarray(free_bold, dtype=np.float64)
    if free.ndim != 2 or free.shape[1] != run.heldout.shape[1] or not np.isfinite(free).all():
        raise InputDataError(
            f"sub-{run.subject}: the free run must be finite (frame, {run.heldout.shape[1]} regions), got {free.shape}"
        )
    free_fc = fc(free)
    out = {
        **fc_scores(free_fc, baselines.fc_heldout),
        "fcd_ks": fcd_ks(fcd_values(free, run.split.tr_s), baselines.fcd_heldout),
    }
    out["ceiling"] = baselines.ceiling
    if template_fc is not None:
        out["template"] = fc_scores(template_fc, baselines.fc_heldout)
    return out


def _template(index: int, fcs: Sequence[np.ndarray]) -> np.ndarray:
    return np.mean([m for j, m in enumerate(fcs) if j != index], axis=0)


def group_baselines(results: Sequence[SubjectBaselines], *, template_fcs: Sequence[np.ndarray] | None = None) -> dict:
    """Template, fingerprinting and group-level scores of a group of subjects (same split, same regions).

    Parameters
    ----------
    results : one :class:`SubjectBaselines` per subject.
    template_fcs : the FC each subject contributes to the others' template (default: its
        held-out FC; pass the whole-run FC to use all of a subject's frames, which never include the
        subject being predicted).

    Returns
    -------
    dict with ``template`` (per-subject FC r / F-norm of the leave-one-subject-out mean FC vs the
    subject's held-out FC, and the FCD KS of the others' pooled FCD), ``identification``
    (fingerprinting accuracy of the subjects' own assimilated FC; chance 1/n) and ``group`` (mean
    assimilated FC vs mean held-out FC, and pooled FCD KS).
    """
    if len(results) < 3:
        raise ParameterError(f"group scores need >= 3 subjects, got {len(results)}")
    held = [r.fc_heldout for r in results]
    contributed = list(template_fcs) if template_fcs is not None else held
    per_subject = {}
    for i, r in enumerate(results):
        others_fcd = np.concatenate([o.fcd_heldout for j, o in enumerate(results) if j != i])
        per_subject[r.subject] = {
            **fc_scores(_template(i, contributed), r.fc_heldout),
            "fcd_ks": fcd_ks(others_fcd, r.fcd_heldout),
        }
    return {
        "template": per_subject,
        "identification": {
            "own_assimilated_fc": identification([r.fc_assimilated for r in results], held),
            "chance": 1.0 / len(results),
        },
        "group": group_scores(
            [r.fc_assimilated for r in results],
            held,
            [r.fcd_assimilated for r in results],
            [r.fcd_heldout for r in results],
        ),
    }


def group_scores(predicted_fcs, target_fcs, predicted_fcds, target_fcds) -> dict[str, float]:
    """Group level: r of the mean predicted FC vs the mean target FC, and KS of the pooled FCDs.

    Also the identification accuracy of the predicted FCs (fingerprinting).
    """
    return {
        "fc_r": fc_scores(np.mean(predicted_fcs, axis=0), np.mean(target_fcs, axis=0))["fc_r"],
        "fcd_ks": fcd_ks(np.concatenate(list(predicted_fcds)), np.concatenate(list(target_fcds))),
        "identification": identification(list(predicted_fcs), list(target_fcs)),
    }
