"""Settings of the diffusion stage (:mod:`dtb.preproc.dwi`), in a module of their own so that
``dtb dwi --help`` reads their defaults without importing nibabel, scipy or dipy."""

from __future__ import annotations

from dataclasses import dataclass

from dtb.validation import check_choice, check_in_range, check_non_negative, check_positive

__all__ = ["DwiSettings"]


@dataclass(frozen=True)
class DwiSettings:
    """Settings of the diffusion stage (defaults suit 2-4 mm single-shell data).

    Parameters
    ----------
    b0_threshold : b-values at or below this are b = 0 volumes [s/mm^2].
    median_radius, numpass : median filter radius [voxels] and passes of ``median_otsu``.
    response_fa : FA above which a brain voxel counts as single-fibre white matter for the
        CSD response function [1].
    sh_order_max : maximal spherical-harmonic order of CSD (even; 6 needs >= 28 directions,
        8 needs >= 45).
    relative_peak_threshold : ODF peaks below this fraction of the largest are ignored [1].
    min_separation_angle : peaks closer than this are merged [degrees].
    seed_fa : seeds are placed in brain voxels with FA above this [1].
    seeds_per_axis : seeds per voxel along each axis (``seeds_per_axis**3`` per voxel).
    stop_fa : tracking stops where FA falls below this [1].
    step_size_mm : tracking step [mm].
    max_angle : largest turn between two steps [degrees] (peaks further off stop a streamline).
    min_length_mm : shorter streamlines are discarded [mm].
    """

    b0_threshold: float = 50.0
    median_radius: int = 2
    numpass: int = 1
    response_fa: float = 0.7
    sh_order_max: int = 6
    relative_peak_threshold: float = 0.5
    min_separation_angle: float = 25.0
    seed_fa: float = 0.3
    seeds_per_axis: int = 2
    stop_fa: float = 0.2
    step_size_mm: float = 0.5
    max_angle: float = 45.0
    min_length_mm: float = 10.0

    def __post_init__(self) -> None:
        check_non_negative(self.b0_threshold, "DwiSettings.b0_threshold", unit="s/mm^2")
        check_positive(self.step_size_mm, "DwiSettings.step_size_mm", unit="mm")
        check_non_negative(self.min_length_mm, "DwiSettings.min_length_mm", unit="mm")
        for name in ("response_fa", "relative_peak_threshold", "seed_fa", "stop_fa"):
            check_in_range(getattr(self, name), f"DwiSettings.{name}", 0.0, 1.0)
        for name in ("median_radius", "numpass", "seeds_per_axis"):
            check_positive(getattr(self, name), f"DwiSettings.{name}", integer=True)
        check_choice(self.sh_order_max, "DwiSettings.sh_order_max", (2, 4, 6, 8, 10, 12), fix="an even order 2..12")
        for name in ("max_angle", "min_separation_angle"):
            check_in_range(getattr(self, name), f"DwiSettings.{name}", 0.0, 90.0, low_open=True, unit="degrees")
