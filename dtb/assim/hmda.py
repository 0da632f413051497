"""The Vw-dHMDA driver: the ensemble Kalman filter run on the spiking ensemble, TR by TR.

docs/model.md §5.  Each *location* is an input region: its excitatory populations receive h, the
external-current hyperparameter (written into the engine parameter ``settings.hyperparameter``,
``i_ext`` by default; docs/model.md, "Names: the fitted quantity"), and its BOLD is assimilated.
Per window:

1. after the warm-up, a random walk on h~ (the unbounded parameter);
2. h = l + (u - l) sigmoid(h~ / 10) is set for every member (``Simulation.set_hyperparameters``);
3. one TR of neural time is simulated and the Balloon model integrated every 1 ms
   (:class:`~dtb.sim.regional.RegionalBold`);
4. after the warm-up, the analysis (:func:`dtb.assim.enkf.analysis`) updates the state
   [h~, rate, s, f, v, q, y] of every location from its own observation; only h~ and the
   Balloon states s, f, v, q are written back (f, v, q clipped to [clip, clip_upper]), never V,
   J or the OU current. ``balloon_update`` chooses how: ``"linear"`` (the DTB's)
   updates f, v, q themselves; ``"log"`` updates log f, log v, log q (positive by construction,
   as DCM's hemodynamic states are); ``"bounded"`` (the default) shrinks the linear update so that no
   state changes by more than a factor ``BOUNDED_RATIO`` (2); ``"none"`` writes back h~ only and lets
   the Balloon model follow the neural rate.

The forecast frame ``w`` is the model BOLD after simulating windows 0..w; it is compared with
observed frame ``w``.  Records are buffered and flushed to the zarr store every
``checkpoint_every`` windows together with a checkpoint (engine state, Balloon state, h~, window
index); ``resume=True`` continues from the last checkpoint and gives bitwise the same result
as an uninterrupted run, because every random number is keyed by (seed, member, window).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dtb import __version__, fpmath
from dtb.assim.enkf import EnKFSettings, analysis, initial_ensemble, random_walk, to_bounded
from dtb.errors import AssimilationError
from dtb.io import twin_store
from dtb.io.faults import fault_point
from dtb.io.store import StoreCorruptError, json_safe, verify_store
from dtb.io.twin_store import CHECKPOINT_NAME
from dtb.progress import Progress
from dtb.sim.regional import RegionalBold
from dtb.validation import check_in_range, check_integer, check_number, check_positive

__all__ = [
    "HMDASettings",
    "HMDA",
    "BALLOON_UPDATES",
    "BOUNDED_RATIO",
    "CHECKPOINT_NAME",
    "STATE_COMPONENTS",
    "save_checkpoint",
    "load_checkpoint",
]

log = logging.getLogger("dtb")

#: How the analysis may update the Balloon states (HMDASettings.balloon_update).
BALLOON_UPDATES = ("linear", "log", "bounded", "none")
#: balloon_update of a store or result line that does not record it: the only update there was, and
#: then the default, until 2026-12-08.
UNRECORDED_BALLOON_UPDATE = "linear"

#: balloon_update "bounded": no analysis changes f, v or q by more than this factor.
BOUNDED_RATIO = 2.0


def _bounded_increment(forecast: torch.Tensor, analysed: torch.Tensor, ratio: float) -> torch.Tensor:
    """The analysed Balloon states [s, f, v, q] (..., 4) with each increment shrunk, by one factor
    alpha in [0, 1] per member and location for all four states, so that f, v and q stay within
    [x / ratio, x * ratio] of their (positive) forecast x; small updates pass unchanged."""
    x = forecast[..., 1:]
    step = analysed[..., 1:] - x
    room = torch.where(step < 0, x * (1.0 - 1.0 / ratio), x * (ratio - 1.0))  # distance to the nearer bound
    allowed = torch.where(step != 0, room / step.abs().clamp(min=torch.finfo(step.dtype).tiny), torch.inf)
    alpha = torch.clamp(allowed.amin(dim=-1, keepdim=True), max=1.0)
    return forecast + alpha * (analysed - forecast)


#: Components of one location's state vector, in the order the filter sees them.
STATE_COMPONENTS = ("h_tilde", "rate", "s", "f", "v", "q", "bold")


@dataclass(frozen=True, kw_only=True)
class HMDASettings:
    """Settings of the assimilation driver.

    Parameters
    ----------
    hyperparameter : the engine parameter h is written into, per input region (``"i_ext"``: h is
        the mean external current of the Gamma-distributed input, DTB units; or ``"g_AMPA"``,
        ``"ou_mu"``, ...). The config key ``assimilation.hyperparameter`` and the store's root
        attribute of the same name hold it.
    lower, upper : bounds of h (docs/model.md §5: [0.01, 0.3] for the external current).
    warmup_windows : TR windows simulated before the first analysis.
    checkpoint_every : windows between flushes of the records and checkpoints; a killed
        run loses at most this many windows.
    clip : floor of the written-back Balloon states f, v, q (docs/model.md §5).
    clip_upper : ceiling of the written-back f, v, q (the steady state at 100 Hz has f = 9); keeps
        an analysis from a small or degenerate ensemble from sending the Balloon model to overflow.
    balloon_update : how the analysis updates the Balloon states: ``"linear"`` (f, v, q as they
        are; the DTB's), ``"log"`` (log f, log v, log q: a multiplicative update that cannot reach
        zero), ``"bounded"`` (the default: the linear update, shrunk where it would change f, v or q
        by more than a factor :data:`BOUNDED_RATIO`; docs/fidelity.md gives the held-out evidence) or ``"none"`` (s, f, v, q are not written back; only
        h~ is).
    enkf : the filter's settings.
    """

    hyperparameter: str = "i_ext"
    lower: float = 0.01
    upper: float = 0.3
    warmup_windows: int = 10
    checkpoint_every: int = 10
    clip: float = 1e-5
    clip_upper: float = 10.0
    balloon_update: str = "bounded"
    enkf: EnKFSettings = field(default_factory=EnKFSettings)

    def __post_init__(self) -> None:
        error = AssimilationError
        lower = check_number(self.lower, "assimilation.lower", error=error)
        check_in_range(
            self.upper, "assimilation.upper", lower, low_open=True, error=error, fix="bounds need lower < upper"
        )
        check_integer(self.warmup_windows, "assimilation.warmup_windows", 0, error=error)
        check_integer(self.checkpoint_every, "assimilation.checkpoint_every", 1, error=error)
        clip = check_positive(self.clip, "assimilation.clip", error=error)
        check_in_range(
            self.clip_upper,
            "assimilation.clip_upper",
            clip,
            low_open=True,
            error=error,
            fix="need 0 < clip < clip_upper",
        )
        if self.balloon_update not in BALLOON_UPDATES:
            raise AssimilationError(
                f"assimilation.balloon_update is {self.balloon_update!r}; choose one of {list(BALLOON_UPDATES)}"
            )

    def describe(self) -> dict:
        out = asdict(self)
        out["enkf"] = asdict(self.enkf)
        return json_safe(out)


class HMDA:
    """Vw-dHMDA on a :class:`RegionalBold` ensemble.

    Parameters
    ----------
    regional : RegionalBold
        The ensemble (N_e >= 2 members) with its per-region Balloon states.
    input_regions : sequence of int
        Region indices whose excitatory populations get h and whose BOLD is
        assimilated (one location each).
    region_labels : sequence of str, one per region.
    tr_ms : repetition time [ms]; a multiple of 1 ms and of the engine step.
    settings : HMDASettings
    """

    def __init__(
        self,
        regional: RegionalBold,
        input_regions,
        region_labels,
        tr_ms: float,
        settings: HMDASettings | None = None,
    ) -> None:
        self.regional = regional
        self.sim = regional.sim
        self.settings = settings or HMDASettings()
        self.region_labels = [str(x) for x in region_labels]
        if len(self.region_labels) != regional.n_regions:
            raise AssimilationError(
                f"region_labels has {len(self.region_labels)} names for {regional.n_regions} regions"
            )
        if self.sim.n_members < 2:
            raise AssimilationError(
                f"the ensemble has {self.sim.n_members} member(s); the filter needs at least 2 (30-100 typical)"
            )
        inputs = [int(r) for r in input_regions]
        if not inputs or len(set(inputs)) != len(inputs) or min(inputs) < 0 or max(inputs) >= regional.n_regions:
            raise AssimilationError(
                f"input_regions must be distinct region indices in [0, {regional.n_regions}), got {inputs}"
            )
        self.input_regions = np.asarray(inputs, dtype=np.int64)
        tr_steps = tr_ms / self.sim.model.dt_ms
        if not (tr_ms > 0 and abs(tr_steps - round(tr_steps)) < 1e-6 and abs(tr_ms - round(tr_ms)) < 1e-6):
            raise AssimilationError(
                f"TR ({tr_ms} ms) must be a positive whole number of milliseconds and a multiple of the "
                f"engine step dt ({self.sim.model.dt_ms} ms); resample the BOLD or change dt"
            )
        self.tr_ms = float(round(tr_ms))
        name = self.settings.hyperparameter
        if name not in self.sim.model.hyperparameter_names():
            raise AssimilationError(
                f"hyperparameter {name!r} is not an engine hyperparameter; choose one of "
                f"{list(self.sim.model.hyperparameter_names())}"
            )
        # every input region receives h through its excitatory populations
        for r in self.input_regions:
            if regional.excitatory_columns(int(r)).size == 0:
                raise AssimilationError(f"input region {self.region_labels[r]!r} has no excitatory population")
        self.parameter_labels = [f"{self.region_labels[r]}:{name}" for r in self.input_regions]
        s = self.settings
        L = self.n_locations
        self.h_tilde = initial_ensemble(self.sim.n_members, np.full(L, s.lower), np.full(L, s.upper), s.enkf.seed)
        self.window = 0
        self._comm = None  # the run's communicator while run() runs distributed

    # ------------------------------------------------------------------ pieces
    @property
    def n_locations(self) -> int:
        return int(self.input_regions.size)

    def h(self) -> torch.Tensor:
        """Current h per member and input region, (M, L), in the units of its engine parameter."""
        L = self.n_locations
        return to_bounded(self.h_tilde, np.full(L, self.settings.lower), np.full(L, self.settings.upper))

    def _apply_h(self) -> None:
        self.regional.set_region_hyperparameter(self.settings.hyperparameter, self.input_regions, self.h().numpy())

    def forecast(self, walk: bool = True) -> dict:
        """Random walk (after warm-up, when ``walk``), set h, simulate one TR; return the forecast records."""
        w = self.window
        if walk and w >= self.settings.warmup_windows:
            self.h_tilde = random_walk(self.h_tilde, self.settings.enkf, w)
        self._apply_h()
        h = self.h()
        out = self.regional.advance(self.tr_ms)
        return {
            "h_forecast": h.numpy().copy(),
            "bold_forecast": out.bold.numpy().copy(),
            "rate_forecast": out.rate_hz.numpy().copy(),
        }

    def analyse(self, observed_frame: np.ndarray, rate: torch.Tensor) -> dict:
        """Analysis of the current window from the observed BOLD of every region (R,)."""
        loc = torch.as_tensor(self.input_regions)
        st = self.regional.state
        bold = self.regional.bold()
        lo, hi = self.settings.clip, self.settings.clip_upper
        update = self.settings.balloon_update
        fvq = [st.f[:, loc], st.v[:, loc], st.q[:, loc]]
        if update == "log":
            fvq = [fpmath.log(torch.clamp(x, min=lo)) for x in fvq]  # not torch.log: no CPU-dependent libm
        state = torch.stack([self.h_tilde, rate[:, loc], st.s[:, loc], *fvq, bold[:, loc]], dim=-1)
        obs = torch.as_tensor(np.asarray(observed_frame, dtype=np.float64)[self.input_regions])
        result = analysis(state, bold[:, loc], obs, self.settings.enkf, self.window)
        a = result.state
        self.h_tilde = a[..., 0].clone()
        if update != "none":
            balloon = a[..., 2:6]
            if update == "log":
                balloon = torch.cat([balloon[..., :1], fpmath.exp(balloon[..., 1:])], dim=-1)
            elif update == "bounded":
                balloon = _bounded_increment(state[..., 2:6], balloon, BOUNDED_RATIO)
            st.s[:, loc] = balloon[..., 0]
            st.f[:, loc] = torch.clamp(balloon[..., 1], min=lo, max=hi)
            st.v[:, loc] = torch.clamp(balloon[..., 2], min=lo, max=hi)
            st.q[:, loc] = torch.clamp(balloon[..., 3], min=lo, max=hi)
        innovation = np.full(self.regional.n_regions, np.nan)
        innovation[self.input_regions] = result.innovation_mean.numpy()
        spread = np.full(self.regional.n_regions, np.nan)
        spread[self.input_regions] = result.forecast_obs_spread.numpy()
        return {"innovation": innovation, "innovation_spread": spread}

    def lead_forecast(self, leads: int) -> np.ndarray:
        """Forecast the next ``leads`` frames from the current (analysis) state; the state is left as it was.

        Runs ``leads`` windows with h frozen (no random walk, no analysis) and returns the ensemble-mean
        BOLD of each, (lead, region): row j is the (j + 1)-step forecast of frame ``window + j``. The
        engine's noise is counter-based (the step index is its state), so restoring the saved state
        makes the run continue bitwise as if no lead forecast had been made (tested).
        """
        saved = self.state_dict()
        try:
            out = np.empty((leads, self.regional.n_regions))
            for j in range(leads):
                out[j] = self.forecast(walk=False)["bold_forecast"].mean(axis=0)
                self.window += 1
        finally:
            self.load_state_dict(saved)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "window": self.window,
            "h_tilde": self.h_tilde.clone(),
            "regional": self.regional.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.window = int(state["window"])
        self.h_tilde = state["h_tilde"].clone().to(torch.float64)
        self.regional.load_state_dict(state["regional"])

    # ------------------------------------------------------------------ the run
    #: HMDASettings that may change between a run and its resumption (they do not change the result).
    RESUME_FREE_SETTINGS = ("checkpoint_every",)
    #: Engine provenance that must match for a checkpoint to continue bitwise (the backend may
    #: differ: backends agree bitwise by the arithmetic contract).
    RESUME_KEYS = (
        "arithmetic_contract", "seeds", "n_members", "n_neurons", "n_synapses", "dt_ms", "delay_ms", "integrator",
    )  # fmt: skip

    def _check_resumable(self, store: Path) -> None:
        """Refuse to continue a checkpoint written by another model, network or arithmetic."""
        try:
            root = twin_store.root_attrs(store)
            saved = root.get("engine", {})
        except Exception as exc:  # zarr and json raise several types for damaged metadata
            raise StoreCorruptError(
                f"{store} has a checkpoint but its metadata ({store / 'zarr.json'}) cannot be read "
                f"({type(exc).__name__}: {exc}). {_RESUME_FIX}"
            ) from None
        now = json_safe(self.sim.provenance())
        differ = [
            (k, saved.get(k, "absent"), now.get(k)) for k in self.RESUME_KEYS if saved.get(k, "absent") != now.get(k)
        ]
        if differ:
            detail = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, a, b in differ)
            raise AssimilationError(
                f"{store} was checkpointed by a different engine ({detail}); continuing would not give the run "
                "it started. Start it over: delete the store, or pass overwrite=True (dtb assimilate --overwrite)."
            )
        stored = root.get("assimilation_settings")
        if isinstance(stored, dict):
            stored = {"balloon_update": UNRECORDED_BALLOON_UPDATE, **stored}
            now = self.settings.describe()
            differ = [
                (k, stored[k], now[k])
                for k in now
                if k not in self.RESUME_FREE_SETTINGS and k in stored and stored[k] != now[k]
            ]
            if differ:
                detail = "; ".join(f"assimilation.{k}: stored {a!r}, now {b!r}" for k, a, b in differ)
                raise AssimilationError(
                    f"{store} was started with other assimilation settings ({detail}); continuing would splice two "
                    "runs. Resume with the settings it was started with, or start it over (delete the store, or "
                    "dtb assimilate --overwrite)."
                )

    def run(
        self,
        observed: np.ndarray,
        store: str | Path,
        *,
        n_windows: int | None = None,
        assimilate_frames: int | None = None,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool | str | None = None,
        attrs: dict | None = None,
        stop_after: int | None = None,
        before_complete=None,
        lead_forecasts: int = 0,
        lead_from: int = 0,
        lead_every: int = 1,
        comm=None,
    ) -> Path:
        """Assimilate ``observed`` (time, region) frame by frame into ``store``.

        Parameters
        ----------
        observed : float array (time, region), the scaled BOLD (model units), one frame per TR.
        store : zarr store written as described in docs/formats.md (groups ``assimilation``
            and root attributes; the caller adds ``observation`` and ``network``).
        n_windows : frames to run (default: all).
        assimilate_frames : frames whose observations are used (default: all run); later windows
            are free forecasts with h frozen at its last analysis (held-out prediction).
        resume : continue from the store's last checkpoint (a complete run is left as it is).
        overwrite : replace an existing store (otherwise an existing store is an error unless
            ``resume``).
        attrs : extra root attributes (provenance, config).
        stop_after : stop (as if killed) after this many windows of this call; for tests.
        before_complete : called with the store after the last window and before the ``complete``
            attribute is set, to write the caller's groups; a failure there leaves the run incomplete.
        lead_forecasts : K > 0 records ``bold_lead`` (time, lead, region): after window w (its
            analysis, if any), the ensemble-mean forecasts of frames w + 1 .. w + K made from that
            state before those frames are seen (:meth:`lead_forecast`), for windows w >= ``lead_from``
            (NaN before). K-fold extra simulation from ``lead_from`` on; docs/fidelity.md.
        lead_from : first window after which lead forecasts are made.
        lead_every : make them after every n-th window from ``lead_from`` only (NaN rows between), to
            bound the cost on slow machines.
        comm : the MPI communicator of a distributed ensemble (``regional.sim`` a
            :class:`~dtb.sim.distributed.DistributedSimulation`), or None. Every rank runs the same
            filter on the same gathered observations (bitwise the same numbers); rank 0 alone
            writes the store, the checkpoint holds every rank's engine state, and
            ``before_complete`` runs on rank 0.
        """
        observed = np.asarray(observed, dtype=np.float64)
        R = self.regional.n_regions
        if observed.ndim != 2 or observed.shape[1] != R:
            raise AssimilationError(f"observed BOLD must have shape (time, {R} regions), got {observed.shape}")
        total = observed.shape[0] if n_windows is None else int(n_windows)
        if not 0 < total <= observed.shape[0]:
            raise AssimilationError(f"n_windows must be in [1, {observed.shape[0]}] (the frames given), got {total}")
        bad = ~np.isfinite(
            observed[: (total if assimilate_frames is None else int(assimilate_frames))][:, self.input_regions]
        )
        if bad.any():
            t, r = np.argwhere(bad)[0]
            raise AssimilationError(
                f"observed BOLD has {int(bad.sum())} NaN/inf value(s) in assimilated regions (first: frame {t}, "
                f"region {self.region_labels[self.input_regions[r]]!r}); clean or interpolate the time series first"
            )
        if isinstance(lead_forecasts, bool) or not isinstance(lead_forecasts, int) or lead_forecasts < 0:
            raise AssimilationError(f"lead_forecasts must be a whole number of frames >= 0, got {lead_forecasts!r}")
        if isinstance(lead_every, bool) or not isinstance(lead_every, int) or lead_every < 1:
            raise AssimilationError(f"lead_every must be a whole number of windows >= 1, got {lead_every!r}")
        until = total if assimilate_frames is None else int(assimilate_frames)
        if not 0 < until <= total:
            raise AssimilationError(f"assimilate_frames must be in [1, {total}], got {assimilate_frames}")
        if until <= self.settings.warmup_windows:
            raise AssimilationError(
                f"{total} frame(s) leave nothing to assimilate after {self.settings.warmup_windows} warm-up windows; "
                "give a longer time series or fewer warmup_windows"
            )
        store = Path(store)
        checkpoint = store / CHECKPOINT_NAME
        rows_written = 0
        rank = 0 if comm is None else comm.Get_rank()
        self._comm = comm
        if rank == 0:
            action = self._prepare_store(store, resume=resume, overwrite=overwrite, attrs=attrs)
        else:
            action = None
        if comm is not None:
            action = comm.bcast(action, root=0)
        if action == "complete":
            return store
        if action == "resume":
            saved = load_checkpoint(checkpoint)
            self.load_state_dict(_rank_state(saved["driver"], comm, checkpoint))
            rows_written = int(saved["rows_written"])
            if rank == 0:
                log.info("resuming %s at window %d", store, self.window)
        buffer: list[dict] = []
        bar = Progress(total - self.window, "assimilate", progress if rank == 0 else "none", unit="TR")
        started = time.perf_counter()
        done_this_call = 0
        try:
            while self.window < total:
                w = self.window
                rec = self.forecast(walk=w < until)
                h_f = rec["h_forecast"]
                if self.settings.warmup_windows <= w < until:
                    rate = torch.as_tensor(rec["rate_forecast"])
                    rec.update(self.analyse(observed[w], rate))
                else:
                    rec["innovation"] = np.full(R, np.nan)
                    rec["innovation_spread"] = np.full(R, np.nan)
                h_a = self.h().numpy()
                rec.update(
                    window=w,
                    warmup=w < self.settings.warmup_windows,
                    heldout=w >= until,
                    h_forecast_mean=h_f.mean(0),
                    h_forecast_std=h_f.std(0, ddof=1),
                    h_analysis_mean=h_a.mean(0),
                    h_analysis_std=h_a.std(0, ddof=1),
                    h_members=h_a,
                )
                if lead_forecasts:
                    rec["bold_lead"] = (
                        self.lead_forecast(lead_forecasts)
                        if w >= lead_from and (w - lead_from) % lead_every == 0
                        else np.full((lead_forecasts, R), np.nan)
                    )
                buffer.append(rec)
                self.window += 1
                done_this_call += 1
                bar.update(1)
                if self.window % self.settings.checkpoint_every == 0 or self.window == total:
                    rows_written = self._flush(store, buffer, rows_written)
                    buffer = []
                if stop_after is not None and done_this_call >= stop_after:
                    return store
        finally:
            bar.close()
        if rank == 0:
            if before_complete is not None:
                before_complete(store)
            twin_store.update_root_attrs(
                store,
                {
                    "finished": _now(),
                    "wall_time_s": float(twin_store.root_attrs(store).get("wall_time_s", 0.0))
                    + time.perf_counter()
                    - started,
                    "complete": True,
                    "n_windows": total,
                    "assimilated_frames": until,
                },
            )
        if comm is not None:
            comm.Barrier()
        return store

    def _prepare_store(self, store: Path, *, resume: bool, overwrite: bool, attrs: dict | None) -> str:
        """Rank 0: check, trim or create the store; returns "complete", "resume" or "new"."""
        checkpoint = store / CHECKPOINT_NAME
        if store.exists():
            if resume and twin_store.is_complete(store):
                log.info("%s is complete; nothing to resume", store)
                return "complete"
            if resume and checkpoint.exists():
                self._check_resumable(store)
                rows_written = int(load_checkpoint(checkpoint)["rows_written"])
                twin_store.truncate_time(store, "assimilation", rows_written)
                verify_store(store, fix=_RESUME_FIX)  # the windows kept must be the ones written
                return "resume"
            elif overwrite or resume:
                shutil.rmtree(store)
            else:
                raise AssimilationError(f"{store} already exists; pass resume=True (--resume) or overwrite=True")
        if not store.exists():
            twin_store.create_store(
                store,
                {
                    **(attrs or {}),
                    "dtb_version": __version__,
                    "tr_s": self.tr_ms / 1000.0,
                    "n_members": self.sim.n_members,
                    "hyperparameter": self.settings.hyperparameter,
                    "input_regions": [self.region_labels[r] for r in self.input_regions],
                    "assimilated_regions": [self.region_labels[r] for r in self.input_regions],
                    "assimilation_settings": self.settings.describe(),
                    "engine": self.sim.provenance(),
                    "started": _now(),
                    "complete": False,
                },
            )
        return "new"

    def _flush(self, store: Path, buffer: list[dict], rows_written: int) -> int:
        """Append the buffered windows, then atomically replace the checkpoint (rank 0 writes;
        a distributed checkpoint holds every rank's engine state, gathered here)."""
        comm = self._comm
        driver = self.state_dict()
        if comm is not None:
            engines = comm.gather(driver["regional"]["engine"], root=0)
            driver["regional"] = {**driver["regional"], "engine": {"ranks": engines}}
            if comm.Get_rank() != 0:
                return rows_written + len(buffer)
        if buffer:
            try:
                self._write_records(store, buffer, first=rows_written == 0)
            except BaseException:
                # some arrays may have grown and others not (a full disk): cut them back to the last
                # checkpoint, so the store stays readable and --resume continues from there
                try:
                    twin_store.truncate_time(store, "assimilation", rows_written)
                except Exception as exc:  # best effort; --resume truncates again
                    log.debug("could not trim %s back to %d windows: %s", store, rows_written, exc)
                raise
            rows_written += len(buffer)
        save_checkpoint({"driver": driver, "rows_written": rows_written}, store / CHECKPOINT_NAME)
        fault_point("assimilate", "checkpoint")  # a test hook (dtb.io.faults); a no-op otherwise
        return rows_written

    def _write_records(self, store: Path, rows: list[dict], first: bool) -> None:
        """Write (or append) the buffered windows as ``/assimilation`` (schema: dtb.io.twin_store)."""
        tr_s = self.tr_ms / 1000.0
        hyper = self.settings.hyperparameter
        unit = "1" if hyper != "i_ext" else self.sim.current_unit
        names = [v.name for v in twin_store.GROUPS["assimilation"].variables]
        data = {name: np.stack([r[name] for r in rows]) for name in names if name in rows[0]}
        data["warmup"] = np.array([r["warmup"] for r in rows])
        data["heldout"] = np.array([r["heldout"] for r in rows])
        coords = {
            "time": ("time", np.array([r["window"] for r in rows]) * tr_s, {"units": "s", "long_name": "frame time"}),
            "member": np.arange(self.sim.n_members),
            "region": np.array(self.region_labels, dtype=object).astype(str),
            "parameter": np.array(self.parameter_labels, dtype=object).astype(str),
        }
        if "bold_lead" in rows[0]:
            coords["lead"] = ("lead", np.arange(1, rows[0]["bold_lead"].shape[0] + 1), {"units": "TR"})
        twin_store.write_group_data(
            store, "assimilation", data, coords, fill={"h": hyper, "h_units": unit}, first=first
        )


#: A checkpoint file is torch.save's bytes followed by this marker and their sha256 (hex).
_DIGEST_MARK = b"\ndtb-sha256:"
_DIGEST_LEN = len(_DIGEST_MARK) + 64
_RESUME_FIX = (
    "Start the run over: run it again without --resume, with --overwrite (or delete the store); the windows "
    "after the last good checkpoint cannot be trusted."
)


def _rank_state(driver: dict, comm, checkpoint: Path) -> dict:
    """This rank's part of a checkpoint's driver state (a distributed one holds every rank's engine)."""
    engine = driver["regional"]["engine"]
    distributed = isinstance(engine, dict) and set(engine) == {"ranks"}
    saved_ranks = len(engine["ranks"]) if distributed else 1
    n_ranks = 1 if comm is None else comm.Get_size()
    if distributed != (comm is not None) or saved_ranks != n_ranks:
        raise AssimilationError(
            f"{checkpoint} was written by a run on {saved_ranks} rank(s) and this one has {n_ranks}; "
            f"resume with --ranks {saved_ranks} (and the same layout), or start over with --overwrite"
        )
    if comm is None:
        return driver
    return {**driver, "regional": {**driver["regional"], "engine": engine["ranks"][comm.Get_rank()]}}


def save_checkpoint(obj, path: Path) -> None:
    """Write ``obj`` with torch.save and its sha256 to ``path``, atomically (temporary file + rename)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:  # a full disk raises OSError(ENOSPC) here, never a half-written checkpoint
        fh.write(payload + _DIGEST_MARK + hashlib.sha256(payload).hexdigest().encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path):
    """Read a checkpoint written by :func:`save_checkpoint` after checking its sha256.

    Raises
    ------
    StoreCorruptError : naming the file and the fix, when the digest is missing or differs.
    """
    data = Path(path).read_bytes()
    payload, mark, digest = data[:-_DIGEST_LEN], data[-_DIGEST_LEN:-64], data[-64:]
    if len(data) < _DIGEST_LEN or mark != _DIGEST_MARK:
        raise StoreCorruptError(
            f"checkpoint {path} carries no sha256 digest (it is truncated, or was written by a dtb without "
            f"checksummed checkpoints), so it cannot be trusted. {_RESUME_FIX}"
        )
    actual = hashlib.sha256(payload).hexdigest()
    if actual.encode() != digest:
        raise StoreCorruptError(
            f"checkpoint {path} is damaged: its sha256 is {actual[:16]}..., written as "
            f"{digest[:16].decode('ascii', 'replace')}.... {_RESUME_FIX}"
        )
    return torch.load(io.BytesIO(payload), weights_only=False)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
