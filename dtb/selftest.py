"""Reference results that every machine must reproduce bitwise, and the check that compares them.

The project promises identical results on any machine, rank count, thread count and dispatch
level (ATen's ``ATEN_CPU_CAPABILITY``, numpy's ``NPY_DISABLE_CPU_FEATURES``, the generic and
``x86-64-v3`` builds of the C++ kernels).  Each case below computes something that decides a
random draw or enters the simulation, and hashes it (sha256 of little-endian arrays):

- ``graph:<layout>``: built networks of :func:`dtb.network.build.build_block` (integers only);
- ``fixed_indegree:<seed>``: ``connect_fixed_indegree`` projections (network description files);
- ``gains:<seed>,<n>,<shape>,<rate>,<index>``: Gamma gains (float64 from the contract's log/cos);
- ``brunel:<backend>``: spikes of a short Brunel-COBA run (Poisson input, exp_contract);
- ``ou:<backend>``: spikes of a small net driven by OU noise (Box-Muller normals);
- ``twin``: a small region-level twin: the assimilated h track, the forecast BOLD and the
  re-simulated BOLD (gains, OU noise, Balloon-Windkessel, the ensemble Kalman filter).

:data:`REFERENCE` holds the digests made on the reference machine; ``dtb selftest`` (and the
tests) recompute them and name every case that differs.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["REFERENCE", "CASES", "CaseResult", "run_cases", "digest_arrays"]


def digest_arrays(*arrays, extra: str = "") -> str:
    """sha256 over the arrays' little-endian bytes (dtype and shape included) and an extra string."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        le = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{le.dtype.str}{le.shape}".encode())
        h.update(np.ascontiguousarray(le).tobytes())
    h.update(extra.encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- graphs
_TINY = dict(min_excitatory=1, min_inhibitory=1)


def _random_connectome(n: int, density: float = 1.0, seed: int = 0) -> np.ndarray:
    """Non-negative streamline counts (integers from PCG64: no libm involved), zero diagonal, rows connected."""
    rng = np.random.default_rng(seed)
    c = rng.integers(1, 200, size=(n, n)).astype(np.float64)
    if density < 1.0:
        c = c * (rng.integers(0, 1000, size=(n, n)) < int(1000 * density))
    c[np.arange(n), (np.arange(n) + 1) % n] += 1.0
    np.fill_diagonal(c, 0.0)
    return c


def graph_layout(case: str, connectome_maker: Callable[..., np.ndarray] | None = None):
    """The layouts whose graphs are pinned (small: each builds in well under a second).

    ``connectome_maker(n, density=1.0, seed=0)`` makes the random connectomes (default: from
    integers only, so the layout is the same on every machine; tests/pinned_graphs.py keeps
    its historical Gamma-distributed one).
    """
    from dtb.network.layout import NetworkConfig, make_layout

    rc = connectome_maker or _random_connectome
    if case == "ei_exact":
        return make_layout(np.full(4, 1000), rc(4), NetworkConfig(seed=7, **_TINY))
    if case == "ei_exact_seed_2_64":
        return make_layout(np.full(3, 800), rc(3, seed=1), NetworkConfig(seed=2**64 - 5, **_TINY))
    if case == "ei_multinomial_small":  # populations of 80/20: surplus drops and many redraws
        return make_layout(np.full(3, 100), rc(3), NetworkConfig(seed=3, split="multinomial", **_TINY))
    if case == "ei_single_voxel_subset":  # no connectome, dense local columns (random-subset draw)
        return make_layout([75], None, NetworkConfig(indegree=100, seed=5, **_TINY))
    if case == "ei_redraw_limit":  # one redraw round: duplicates left after it are dropped
        return make_layout(np.full(3, 60), rc(3, density=0.6, seed=4), NetworkConfig(seed=9, max_redraws=1, **_TINY))
    if case == "ei_outer_surplus":  # 24-neuron E source, 29 long-range draws: surplus dropped
        connectome = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1e-3], [1.0, 1.0, 0.0]])
        return make_layout(np.array([30, 1000, 1000]), connectome, NetworkConfig(seed=21, **_TINY))
    if case == "ei_weights_scale":
        return make_layout(
            np.array([700, 0, 900, 500]),
            rc(4, seed=2),
            NetworkConfig(seed=11, weight=133, weight_inhibitory=255, **_TINY),
            indegree_scale=[0.5, 1.0, 1.5, 1.2],
        )
    if case == "laminar_exact":
        return make_layout(
            np.full(3, 2000),
            rc(3, seed=6),
            NetworkConfig(model="laminar", seed=13, **_TINY),
            cortical=[True, False, True],
        )
    if case == "laminar_multinomial_l5e":
        return make_layout(
            np.full(3, 1500),
            rc(3, seed=8),
            NetworkConfig(model="laminar", seed=17, split="multinomial", long_range_sources="l5e", **_TINY),
        )
    if case == "laminar_single_voxel":
        return make_layout([3000], None, NetworkConfig(model="laminar", seed=19, indegree=60, **_TINY))
    raise KeyError(case)


GRAPH_CASES = (
    "ei_exact",
    "ei_exact_seed_2_64",
    "ei_multinomial_small",
    "ei_single_voxel_subset",
    "ei_outer_surplus",
    "ei_redraw_limit",
    "ei_weights_scale",
    "laminar_exact",
    "laminar_multinomial_l5e",
    "laminar_single_voxel",
)


def graph_digest(block) -> str:
    """sha256 over a built block's CSR-by-target arrays (little-endian) and its drop count."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(block.indptr, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(block.sources, dtype="<u4").tobytes())
    h.update(np.ascontiguousarray(block.weights, dtype="u1").tobytes())
    h.update(str(int(block.dropped_duplicates)).encode())
    return h.hexdigest()


def _graph(case: str) -> str:
    from dtb.network.build import build_block

    layout = graph_layout(case)
    return graph_digest(build_block(layout, 0, layout.n_neurons))


def network_digest(net) -> str:
    """sha256 over a Network's CSR-by-source arrays (little-endian)."""
    h = hashlib.sha256()
    for array, dtype in ((net.indptr, "<i8"), (net.targets, "<u4"), (net.weights, "u1")):
        h.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return h.hexdigest()


def fixed_indegree_case(seed: int):
    """E 4000 / I 1000, K_E 400, K_I 100, some projections capped, one with autapses."""
    from dtb.network.fixed_indegree import Projection
    from dtb.network.graph import Population

    pops = [Population("E", 4000, "E"), Population("I", 1000, "I")]
    projections = [
        Projection("E", "E", 400, 200),
        Projection("E", "I", 400),
        Projection("I", "E", 100, 30),
        Projection("I", "I", 100, autapses=True),
    ]
    return pops, projections, seed


def _fixed_indegree(seed: int) -> str:
    from dtb.network.fixed_indegree import connect_fixed_indegree

    return network_digest(connect_fixed_indegree(*fixed_indegree_case(seed)))


# --------------------------------------------------------------------------- gains
GAIN_CASES = ((0, 1000, 5.0, 5.0, 0), (123456789, 3000, 5.0, 5.0, 2), (2**64 - 1, 500, 2.0, 0.5, 1))


def gains_of_case(case) -> np.ndarray:
    from dtb.network.gains import gamma_gains

    seed, n, shape, rate, index = case
    return gamma_gains(seed, np.arange(n, dtype=np.int64) * 7919 + 3, shape, rate, parameter_index=index)


def _gains(case) -> str:
    return hashlib.sha256(np.ascontiguousarray(gains_of_case(case), dtype="<f8").tobytes()).hexdigest()


def _normals() -> str:
    """float32 Box-Muller normals of the engine and float64 ones of the filter (fpmath log and cos)."""
    import torch

    from dtb.philox import Stream, normal_from_uint32, philox4x32, standard_normals

    ids = torch.arange(1 << 16, dtype=torch.int64)
    w = philox4x32((ids, 0, 17, int(Stream.STEP)), (12345, 678))
    z32 = normal_from_uint32(w[0], w[1]).numpy()
    z64 = standard_normals(99, Stream.ASSIMILATION, 1, 3, (64, 512)).numpy()
    return digest_arrays(z32, z64)


# --------------------------------------------------------------------------- engine
def _spike_digest(tree, dt_ms: float) -> str:
    spikes = tree["spikes"].to_dataset()
    steps = np.rint(spikes["time"].values * 1000.0 / dt_ms).astype(np.int64)
    return digest_arrays(spikes["member"].values.astype(np.int64), steps, spikes["neuron"].values.astype(np.int64))


def _brunel(backend: str) -> str:
    """Brunel-COBA, N 1000, K 50, dt 0.1 ms, 60 ms, two members: Poisson input and exp_contract."""
    from dtb.sim.engine import Ensemble, Simulation
    from dtb.sim.recording import RecordSpec
    from dtb.sim.reference_models import brunel_coba

    ref = brunel_coba(N=1000, K=50, seed=1234)
    sim = Simulation(
        ref.network,
        ref.model,
        ensemble=Ensemble((11, 12)),
        backend=backend,
        device="cpu",
        initial_V=ref.V0,
        record=RecordSpec(population_counts=False, spikes=True),
        current_unit="pA",
    )
    return _spike_digest(sim.run(60.0, progress=False), ref.model.dt_ms)


def _ou(backend: str) -> str:
    """Brunel-COBA topology, N 1000, K 40, driven by OU current only (no Poisson), 60 ms, two members."""
    from dataclasses import replace

    from dtb.sim.engine import Ensemble, Simulation
    from dtb.sim.params import ModelParams
    from dtb.sim.recording import RecordSpec
    from dtb.sim.reference_models import brunel_coba

    ref = brunel_coba(N=1000, K=40, seed=99)
    neuron = replace(ref.model.populations["E"], ou_mu=250.0, ou_sigma=120.0, ou_tau_ms=5.0, poisson_rate_hz=0.0)
    model = ModelParams({"E": neuron, "I": neuron}, ref.model.receptors, dt_ms=0.1, delay_ms=1.5)
    sim = Simulation(
        ref.network,
        model,
        ensemble=Ensemble((5, 2**64 - 3)),
        backend=backend,
        device="cpu",
        initial_V="uniform",
        record=RecordSpec(population_counts=False, spikes=True),
        current_unit="pA",
    )
    return _spike_digest(sim.run(60.0, progress=False), model.dt_ms)


# --------------------------------------------------------------------------- twin
TWIN_LABELS = ("Thalamus_L", "Thalamus_R", "Frontal_Sup_2_L", "Frontal_Sup_2_R", "Insula_L")


def synthetic_region_subject(
    label: str,
    labels,
    neuron_counts,
    *,
    n_frames: int,
    tr_s: float,
    kernel,
    pad: int,
    seed: int = 7,
    bold_scale: float = 1.0,
):
    """A region-level subject made from PCG64 draws only (for the selftest and the tests).

    BOLD = 1000 + ``bold_scale`` x (white noise of ``n_frames + pad`` frames convolved with ``kernel``,
    first ``n_frames`` kept); connectome = symmetric integer counts in [2, 98], zero diagonal.
    """
    from dtb.io.region_inputs import RegionSubject

    rng = np.random.default_rng(seed)
    n = len(labels)
    noise = rng.normal(size=(n_frames + pad, n))
    kernel = np.asarray(kernel, dtype=np.float64)
    bold = np.stack([np.convolve(noise[:, i], kernel, mode="valid")[:n_frames] for i in range(n)], axis=1)
    sc = rng.integers(1, 50, size=(n, n)).astype(float)
    sc = sc + sc.T
    np.fill_diagonal(sc, 0.0)
    return RegionSubject(
        label=label,
        atlas="AAL2",
        labels=tuple(labels),
        bold=1000.0 + bold_scale * bold,
        tr_s=tr_s,
        sc=sc,
        neuron_counts=np.asarray(neuron_counts),
    )


def twin_subject():
    """The selftest's subject: 5 regions, 30 frames, TR 0.5 s (a kernel of exact binary fractions: no libm)."""
    return synthetic_region_subject(
        "selftest",
        TWIN_LABELS,
        [60, 60, 100, 100, 80],
        n_frames=30,
        tr_s=0.5,
        kernel=[1.0, 0.75, 0.5, 0.25, 0.125],
        pad=20,
        bold_scale=10.0,
    )


def twin_config(backend: str = "auto", threads: int = 1) -> dict:
    return {
        "seed": 3,
        "neurons_total": 400,
        "threads": threads,
        "backend": backend,
        "model": {"indegree": 10, "dt_ms": 1.0, "min_excitatory": 4, "min_inhibitory": 1},
        "assimilation": {"members": 4, "warmup_windows": 3, "checkpoint_every": 100, "heldout_fraction": 0.2},
        "observation": {"low_hz": None, "high_hz": 0.2},
        "resimulation": {"record_seconds": 0.5},
    }


def _twin(backend: str = "auto") -> str:
    import torch

    from dtb.io import twin_store
    from dtb.twin.run import assimilate_subject, resimulate_store

    with tempfile.TemporaryDirectory(prefix="dtb-selftest-") as tmp:
        store = Path(tmp) / "twin.zarr"
        assimilate_subject(twin_subject(), twin_config(backend, torch.get_num_threads()), store, progress="none")
        resimulate_store(store, progress="none")
        assim = twin_store.read_group(store, "assimilation")
        resim = twin_store.read_group(store, "resimulation")
        arrays = [assim[name].values for name in sorted(assim.data_vars) if assim[name].dtype.kind in "fiub"]
        return digest_arrays(
            *arrays, resim["bold"].values, resim["rate"].values, extra=",".join(sorted(assim.data_vars))
        )


# --------------------------------------------------------------------------- registry
def _cases() -> dict[str, Callable[[], str]]:
    cases: dict[str, Callable[[], str]] = {}
    for name in GRAPH_CASES:
        cases[f"graph:{name}"] = lambda name=name: _graph(name)
    for seed in (0, 12345, 2**64 - 2):
        cases[f"fixed_indegree:{seed}"] = lambda seed=seed: _fixed_indegree(seed)
    for case in GAIN_CASES:
        cases["gains:" + ",".join(map(str, case))] = lambda case=case: _gains(case)
    cases["normals"] = _normals
    for backend in ("torch", "cuda_ext"):
        cases[f"brunel:{backend}"] = lambda backend=backend: _brunel(backend)
        cases[f"ou:{backend}"] = lambda backend=backend: _ou(backend)
    cases["twin"] = lambda: _twin("auto")
    return cases


CASES: dict[str, Callable[[], str]] = _cases()

#: digests made on the reference machine (an AMD EPYC, Zen 4, torch 2.13.0+cpu, numpy 2; every dispatch
#: level of tests/sim/test_reproducibility.py gave the same); see docs/reliability.md
REFERENCE: dict[str, str] = {
    "graph:ei_exact": "8e9a74f4a5e0b2b181eafba1d98324d146b68b53b2a093c5545aa36a716ccc5a",
    "graph:ei_exact_seed_2_64": "d0e00a0812304fee958c6574cca2955fb6909e70996bad72b29bbf05c5b58e18",
    "graph:ei_multinomial_small": "c919407fca557dbe5a33abd8b5be0058b82483a081d6703fc80a7acfaeadea22",
    "graph:ei_single_voxel_subset": "9bacfd43051568fa21fcbbab4ca517d892027d337234c6a216b982a0307a59ed",
    "graph:ei_outer_surplus": "8fd61c25aedaa710871d5e9d0a283978d97bc598ddb561c31fa2ca94641de9b1",
    "graph:ei_redraw_limit": "5d773c8d17d36b5e585f7637e9dbe4c9e0dfe0ac4143f4c85c3e1e7476ec3674",
    "graph:ei_weights_scale": "e861051846f9833c2d90545cc9937d9d546d26f681630393cc6deb8084c68c24",
    "graph:laminar_exact": "5be7e4fca82ca535f021a401ece758893f117fe8193123905819fb033324c3db",
    "graph:laminar_multinomial_l5e": "651e9d15eb6210cf39afef931bff1f892bf3c3298108325e5fe18fb012439d52",
    "graph:laminar_single_voxel": "26aa12fae1a1f8888050ad909e430c2af35b89e8d205b130bcb505b9c84695be",
    "fixed_indegree:0": "b0c216c33d786f427a99339ca8a305ca3abf67e8ef887a8c783ab2f2e0b528fe",
    "fixed_indegree:12345": "2fc3869de2ebc140fbf1c02e5b279c3071e12a4ac342010c991ac44c96173846",
    "fixed_indegree:18446744073709551614": "eb562681821fbbb3bbdf9c8005dcc135006f6a37948601465c78def18e9fafa7",
    "gains:0,1000,5.0,5.0,0": "0581e9b7e6e9e3ef2d5f20a04e88bfe85bf0c2fe6dd009fe95b72e7de6a745e6",
    "gains:123456789,3000,5.0,5.0,2": "b46f0fd2bf83cdcb6aa40d639c8e8d0b5185b516c99490a19569ce0753a19331",
    "gains:18446744073709551615,500,2.0,0.5,1": "f6c3602cbf824e3019b7f1f5d94d27158fb66d22fd620e90a49bf8be459e698d",
    "normals": "42dcd934a2066547d6d9323d3fc668af830b6f915f75606a1545f3f0fbf1847e",
    "brunel:torch": "819703173640fe1d82e8e63fdcc15e2ab8ba67899fae8bafe425628dcfb1a8e4",
    "ou:torch": "257e779b7542d2ff81975aa045f9055da6053db63c89d53638fa31904591bbf3",
    "brunel:cuda_ext": "819703173640fe1d82e8e63fdcc15e2ab8ba67899fae8bafe425628dcfb1a8e4",
    "ou:cuda_ext": "257e779b7542d2ff81975aa045f9055da6053db63c89d53638fa31904591bbf3",
    "twin": "f203a021239d6c2c5c23b59991a970f41c5e0f954d10876492a83de6820a2215",
}


@dataclass(frozen=True)
class CaseResult:
    """One case: its digest here, the reference, and whether they agree (None: no reference or skipped)."""

    name: str
    digest: str | None
    reference: str | None
    seconds: float
    skipped: str | None = None

    @property
    def ok(self) -> bool | None:
        if self.skipped is not None or self.reference is None:
            return None
        return self.digest == self.reference


def run_cases(
    names=None, threads: int | None = None, progress: Callable[[CaseResult], None] | None = None
) -> list[CaseResult]:
    """Compute the named cases (all by default) on ``threads`` threads (default: torch's current number).

    A backend that cannot be built here is skipped, saying why.
    """
    import torch

    from dtb.errors import BackendUnavailableError

    if threads is not None:
        torch.set_num_threads(int(threads))
    results = []
    for name in names or CASES:
        if name not in CASES:
            raise KeyError(name)
        started = time.perf_counter()
        try:
            digest, skipped = CASES[name](), None
        except BackendUnavailableError as exc:
            digest, skipped = None, str(exc).splitlines()[0]
        result = CaseResult(name, digest, REFERENCE.get(name), time.perf_counter() - started, skipped)
        results.append(result)
        if progress is not None:
            progress(result)
    return results
