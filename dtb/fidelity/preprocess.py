"""Preprocessing whose every parameter comes from the assimilated frames only.

The DTB band-passes BOLD to 0.01-0.1 Hz with a zero-phase Butterworth filter over the whole run
(:func:`dtb.assim.observation.clean_bold`); a zero-phase filter mixes later frames into earlier
ones, so a forecast scored on its output has seen the frames it predicts. Here, per region:

1. a linear trend is fitted (least squares) on the assimilated frames and subtracted from the
   whole run (extrapolated over the held-out frames);
2. the same Butterworth band-pass (order 5, 0.01-0.1 Hz, as second-order sections) is run
   *causally* (forward only) over the whole run: the cleaned frame t depends on raw frames <= t
   only. Its start-up transient is removed by starting the filter on an odd reflection of the
   first ``pad`` assimilated frames (as :func:`scipy.signal.filtfilt` pads), ``pad`` = 3 periods
   of the high-pass cut-off, capped below the split;
3. the band-passed series is z-scored with the mean and SD of the assimilated frames.

Nothing here reads a held-out frame before the frame it is computed for: changing held-out frames
changes neither the fitted parameters nor any assimilated frame's output (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtb.errors import InputDataError, ParameterError
from dtb.fidelity.splits import Split

__all__ = ["BAND_HZ", "FILTER_ORDER", "FittedPreprocessing", "fit_preprocessing", "check_bold"]

#: The DTB's band-pass [Hz].
BAND_HZ = (0.01, 0.1)
#: Butterworth order (nilearn's default, as :func:`dtb.assim.observation.clean_bold` uses).
FILTER_ORDER = 5


def check_bold(bold, *, subject: str = "?") -> np.ndarray:
    """A (time, region) float64 copy of ``bold``; an error naming the subject on NaN or constant regions."""
    array = np.array(bold, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 2:
        raise InputDataError(f"sub-{subject}: BOLD must be (time, region) with >= 2 regions, got shape {array.shape}")
    bad = ~np.isfinite(array).all(axis=0)
    if bad.any():
        regions = np.flatnonzero(bad)
        raise InputDataError(
            f"sub-{subject}: BOLD region(s) {regions[:10].tolist()} contain NaN or infinite values; drop those regions "
            "for every subject (or interpolate the frames) before scoring fidelity"
        )
    flat = array.std(axis=0) == 0
    if flat.any():
        raise InputDataError(
            f"sub-{subject}: BOLD region(s) {np.flatnonzero(flat)[:10].tolist()} are constant over time; drop them "
            "for every subject before scoring fidelity"
        )
    return array


@dataclass(frozen=True)
class FittedPreprocessing:
    """Preprocessing fitted on a run's assimilated frames.

    Attributes
    ----------
    split : where the run is cut.
    trend : (2, region) intercept and slope per frame of the linear trend [data units, per frame].
    sos : second-order sections of the band-pass (``scipy.signal.butter(..., output="sos")``).
    pad : frames of the odd reflection that start the causal filter.
    mean, sd : (region,) mean and SD of the band-passed assimilated frames [data units].
    band_hz : (low, high) cut-offs [Hz].
    """

    split: Split
    trend: np.ndarray
    sos: np.ndarray
    pad: int
    mean: np.ndarray
    sd: np.ndarray
    band_hz: tuple[float, float]

    def bandpass(self, bold) -> np.ndarray:
        """Detrend and causally band-pass a whole run (time, region) [data units]."""
        from scipy.signal import sosfilt, sosfilt_zi

        raw = np.asarray(bold, dtype=np.float64)
        t = np.arange(raw.shape[0], dtype=np.float64)[:, None]
        detrended = raw - (self.trend[0] + self.trend[1] * t)
        # odd reflection of frames 1 .. pad about frame 0 (scipy's "odd" padding), assimilated frames only
        head = 2.0 * detrended[0] - detrended[self.pad : 0 : -1]
        padded = np.concatenate([head, detrended])
        zi = sosfilt_zi(self.sos)[:, :, None] * padded[0]
        out, _ = sosfilt(self.sos, padded, axis=0, zi=zi)
        return out[self.pad :]

    def apply(self, bold) -> np.ndarray:
        """The whole run cleaned and z-scored with the assimilated part's mean and SD."""
        return (self.bandpass(bold) - self.mean) / self.sd

    def describe(self) -> dict:
        """JSON description (method and fitted sizes)."""
        return {
            "detrend": "linear, fitted on the assimilated frames",
            "bandpass": f"causal Butterworth order {FILTER_ORDER} (sos), {self.band_hz[0]}-{self.band_hz[1]} Hz",
            "pad_frames": self.pad,
            "scaling": "z-score with the assimilated frames' mean and SD",
            "split": self.split.name,
            "assimilated_frames": self.split.start,
            "heldout_frames": self.split.n_heldout,
        }


def fit_preprocessing(bold, split: Split, *, band_hz=BAND_HZ, subject: str = "?") -> FittedPreprocessing:
    """Fit the trend, filter start-up and scaling on ``bold[split.assimilated]``.

    Parameters
    ----------
    bold : array-like (time, region), the whole raw run [scanner units]; only its assimilated
        frames are read.
    split : from :func:`dtb.fidelity.splits.make_split` for this run.
    band_hz : (low, high) band-pass cut-offs [Hz], below the Nyquist frequency 1 / (2 TR).
    subject : label for error messages.
    """
    from scipy.signal import butter

    array = check_bold(bold, subject=subject)
    if array.shape[0] != split.n_frames:
        raise InputDataError(
            f"sub-{subject}: BOLD has {array.shape[0]} frames but the split was made for {split.n_frames}; "
            "make the split from this run's frame count"
        )
    low, high = (float(x) for x in band_hz)
    nyquist = 0.5 / split.tr_s
    if not 0 < low < high < nyquist:
        raise ParameterError(
            f"band_hz must satisfy 0 < low < high < Nyquist ({nyquist:.4g} Hz at TR {split.tr_s:g} s), got {band_hz}"
        )
    train = array[split.assimilated]
    t = np.arange(train.shape[0], dtype=np.float64)
    slope, intercept = np.polyfit(t, train, 1)
    trend = np.stack([intercept, slope])
    sos = butter(FILTER_ORDER, [low, high], btype="bandpass", fs=1.0 / split.tr_s, output="sos")
    pad = min(int(np.ceil(3.0 / (low * split.tr_s))), split.start - 1)
    partial = FittedPreprocessing(
        split, trend, sos, pad, np.zeros(array.shape[1]), np.ones(array.shape[1]), (low, high)
    )
    filtered = partial.bandpass(train)
    mean, sd = filtered.mean(axis=0), filtered.std(axis=0)
    if (sd == 0).any():
        raise InputDataError(
            f"sub-{subject}: region(s) {np.flatnonzero(sd == 0)[:10].tolist()} are flat after filtering"
        )
    return FittedPreprocessing(split, trend, sos, pad, mean, sd, (low, high))
