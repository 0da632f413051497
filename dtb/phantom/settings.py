"""Settings of the phantom subject generator (one frozen dataclass, validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dtb.assembly.settings import ModelSettings
from dtb.docstrings import fill_doc
from dtb.errors import ParameterError
from dtb.validation import check_backend, check_device_name

__all__ = ["PhantomSettings", "SUBJECT", "MAX_REGIONS"]

#: Participant label of the phantom subject.
SUBJECT = "phantom"
#: Number of region centres defined in :mod:`dtb.phantom.anatomy`.
MAX_REGIONS = 12


@fill_doc
@dataclass(frozen=True)
class PhantomSettings:
    """What the phantom subject looks like.

    Parameters
    ----------
    seed : the run seed: the twin's graph, gains and noise use dtb.seeds.derive_seed(seed, ...); image noise and
        gradient directions use Philox streams keyed by it (Stream.PHANTOM); < 2**63.
    n_regions : number of atlas regions (even, 2..12; regions 2k and 2k+1 are left/right homologues).
    grid_mm : voxel size of every image [mm] (integer; the MNI template is resampled by nilearn).
    region_radius_mm : radius of the spherical regions [mm] (cut to grey matter).
    n_directions : diffusion directions of the single shell.
    bvalue : b-value of the shell [s/mm^2].
    snr : signal-to-noise ratio of the b = 0 signal (Rician noise, S0 = 100).
    tr_s : repetition time of the BOLD series [s].
    n_volumes : BOLD volumes.
    warmup_s : simulated time before the first volume [s] (network and haemodynamics settle).
    neurons_total : neurons of the truth network, shared by the regions' grey-matter volume (the
        twin config's ``neurons_total``; at least 20 per region).
    model : the truth network's ``model`` settings (in-degree, weights, ``dt_ms``, ``delay_ms``, floors,
        wiring), the twin config's ``model`` section (:class:`~dtb.assembly.settings.ModelSettings`):
        the truth run is the twin's forward model (docs/phantom.md). ``model.dt_ms`` must divide 1 ms
        (the BOLD takes 1 ms spike bins); the small workflow tests use 1 ms.
    input_regions : indices of the regions whose E population receives the external current h(t).
    h_mean, h_amplitude : mean and amplitude of h(t) (DTB current units).
    h_period_s : period of the sinusoidal h(t) [s].
    bold_noise : SD of the Gaussian noise added to each voxel's BOLD [BOLD units].
    %(backend)s
    %(device)s
    """

    seed: int = 0
    n_regions: int = 8
    grid_mm: int = 4
    region_radius_mm: float = 12.0
    n_directions: int = 32
    bvalue: float = 1000.0
    snr: float = 30.0
    tr_s: float = 1.0
    n_volumes: int = 16
    warmup_s: float = 1.0
    neurons_total: int = 2000
    model: ModelSettings = field(default_factory=ModelSettings)
    input_regions: tuple[int, ...] = (0,)
    h_mean: float = 0.15
    h_amplitude: float = 0.1
    h_period_s: float = 8.0
    bold_noise: float = 0.0005
    backend: str = "auto"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if int(self.seed) != self.seed or not 0 <= self.seed < 2**63:
            raise ParameterError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if int(self.n_regions) != self.n_regions or not 2 <= self.n_regions <= MAX_REGIONS or self.n_regions % 2:
            raise ParameterError(f"regions must be an even number from 2 to {MAX_REGIONS}, got {self.n_regions!r}")
        if int(self.grid_mm) != self.grid_mm or not 2 <= self.grid_mm <= 8:
            raise ParameterError(f"grid_mm must be an integer from 2 to 8 [mm], got {self.grid_mm!r}")
        if not self.grid_mm <= self.region_radius_mm <= 30:
            raise ParameterError(f"region_radius_mm must lie in [grid_mm, 30] mm, got {self.region_radius_mm!r}")
        if int(self.n_directions) != self.n_directions or not 12 <= self.n_directions <= 128:
            raise ParameterError(f"directions must be an integer from 12 to 128, got {self.n_directions!r}")
        if not 300 <= self.bvalue <= 5000:
            raise ParameterError(f"bvalue must lie in [300, 5000] s/mm^2, got {self.bvalue!r}")
        if not self.snr > 0:
            raise ParameterError(f"snr must be > 0, got {self.snr!r}")
        if not 0.1 <= self.tr_s <= 10 or abs(self.tr_s * 1000 - round(self.tr_s * 1000)) > 1e-6:
            raise ParameterError(f"tr must be a whole number of ms between 0.1 and 10 s, got {self.tr_s!r}")
        if int(self.n_volumes) != self.n_volumes or self.n_volumes < 1:
            raise ParameterError(f"volumes must be a positive integer, got {self.n_volumes!r}")
        if not 0 <= self.warmup_s <= 60 or abs(self.warmup_s * 1000 - round(self.warmup_s * 1000)) > 1e-6:
            raise ParameterError(f"warmup must be a whole number of ms in [0, 60] s, got {self.warmup_s!r}")
        if (
            isinstance(self.neurons_total, bool)
            or int(self.neurons_total) != self.neurons_total
            or self.neurons_total < 20 * self.n_regions
        ):
            raise ParameterError(
                f"neurons_total must be an integer >= 20 per region (>= {20 * self.n_regions} for {self.n_regions} "
                f"regions), got {self.neurons_total!r}"
            )
        if not isinstance(self.model, ModelSettings):
            raise ParameterError(f"model must be a ModelSettings (the twin config's model section), got {self.model!r}")
        dt = self.model.dt_ms
        if not 0 < dt <= 1 or abs(1.0 / dt - round(1.0 / dt)) > 1e-6:
            raise ParameterError(f"model.dt_ms must divide 1 ms (e.g. 0.1, 0.5 or 1), got {dt!r}")
        inputs = tuple(int(r) for r in self.input_regions)
        if not inputs or len(set(inputs)) != len(inputs) or any(not 0 <= r < self.n_regions for r in inputs):
            raise ParameterError(
                f"input_regions must be distinct region indices in [0, {self.n_regions}), got {self.input_regions!r}"
            )
        object.__setattr__(self, "input_regions", inputs)
        if not self.h_mean - abs(self.h_amplitude) >= 0:
            raise ParameterError("h_mean - |h_amplitude| must be >= 0 (the external current is non-negative)")
        if not self.h_period_s > 0:
            raise ParameterError(f"h_period_s must be > 0, got {self.h_period_s!r}")
        if not self.bold_noise >= 0:
            raise ParameterError(f"bold_noise must be >= 0, got {self.bold_noise!r}")
        check_backend(self.backend)
        check_device_name(self.device)
