"""Small networks for engine tests (one generator module, as nilearn does)."""

from __future__ import annotations

import numpy as np

from dtb.network import Network, Population
from dtb.network.fixed_indegree import Projection, connect_fixed_indegree
from dtb.sim import ModelParams, NeuronParams, RecordSpec, Simulation

QUIET = dict(ou_mu=0.0, ou_sigma=0.0)
#: every engine backend the physics tests run on (skipped where unavailable)
ENGINE_BACKENDS = ("torch", "cuda_ext")

#: Random123 known-answer test vectors of philox4x32-10: (counter, key, expected words).
PHILOX_KNOWN_ANSWERS = (
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
)


def unconnected(n: int = 1, kind: str = "E", name: str = "P") -> Network:
    """``n`` neurons with no synapses."""
    return Network.from_edges([Population(name, n, kind)], np.zeros(0, np.int64), np.zeros(0, np.int64), 255)


def single_population_model(neuron: NeuronParams, name: str = "P", **model_kw) -> ModelParams:
    return ModelParams({name: neuron}, **model_kw)


def run_unconnected(
    neuron: NeuronParams,
    n: int,
    duration_ms: float,
    record: RecordSpec | None = None,
    seed: int = 1,
    initial_V="rest",
    backend: str = "torch",
    **model_kw,
):
    net = unconnected(n)
    sim = Simulation(
        net,
        single_population_model(neuron, **model_kw),
        seed=seed,
        record=record or RecordSpec(),
        initial_V=initial_V,
        backend=backend,
    )
    return sim, sim.run(duration_ms, progress=False)


def spike_table(tree) -> np.ndarray:
    """Spikes as a sorted (step, member, neuron) int64 array, for exact comparisons."""
    ds = tree["spikes"].to_dataset()
    table = np.stack([ds["step"].values, ds["member"].values.astype(np.int64), ds["neuron"].values], axis=1)
    return table[np.lexsort(table.T[::-1])]


def require_backend(name: str) -> None:
    """Skip the calling test, with the reason, when backend ``name`` cannot run here."""
    import pytest

    from dtb.sim.backends import available_backends

    reason = available_backends()[name]
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")


# the small E/I network of the determinism and kernel tests (400 E + 100 I, fixed in-degree)
POPS = [Population("E", 400, "E"), Population("I", 100, "I")]
PROJECTIONS = [
    Projection("E", "E", 60, 160),
    Projection("I", "E", 15, 255),
    Projection("E", "I", 60, 160),
    Projection("I", "I", 15, 255),
]


def small_network(seed: int = 11):
    return connect_fixed_indegree(POPS, PROJECTIONS, seed)


def small_model(delay_ms: float = 1.0, poisson_hz: float = 0.0) -> ModelParams:
    neuron = NeuronParams(ou_mu=0.85, poisson_rate_hz=poisson_hz, poisson_weight=40)
    return ModelParams({"E": neuron, "I": neuron}, delay_ms=delay_ms)


RECORD = RecordSpec(count_bin_ms=0.5, sample_neurons=(0, 450), sample_every_ms=0.5)


def feed_forward(seed: int = 0) -> Network:
    """A (E, 40) -> B (E, 20) -> C (I, 10) -> B: random fan-in, weights 1..255, duplicates allowed."""
    rng = np.random.default_rng(seed)
    pops = [Population("A", 40, "E"), Population("B", 20, "E"), Population("C", 10, "I")]
    src = np.concatenate([rng.integers(0, 40, 400), rng.integers(40, 60, 100), rng.integers(60, 70, 60)])
    tgt = np.concatenate([rng.integers(40, 60, 400), rng.integers(60, 70, 100), rng.integers(40, 60, 60)])
    return Network.from_edges(pops, src, tgt, rng.integers(1, 256, src.size).astype(np.uint8))


#: the four AAL2 regions of the small twin subject
TWIN_LABELS = ("Thalamus_L", "Thalamus_R", "Frontal_Sup_2_L", "Frontal_Sup_2_R")


def small_twin_subject():
    """The small region-level subject of the twin and fault tests (4 regions, 40 frames, TR 0.5 s)."""
    from dtb.selftest import synthetic_region_subject

    return synthetic_region_subject(
        "synth01", TWIN_LABELS, [100, 100, 150, 150], n_frames=40, tr_s=0.5, kernel=np.exp(-np.arange(20) / 5.0), pad=50
    )


def chrome_driver(tmp_path):
    """Headless Chromium through selenium for the `browser` tests (the binary the conftest found)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.conftest import browser_binary

    options = webdriver.ChromeOptions()
    options.binary_location = browser_binary()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chrome-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
