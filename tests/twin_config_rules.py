"""The documented rule per key of the twin config (docs/twin.md, config/config.yaml), as independent
predicates, and the hypothesis strategies of the values tried: shared by the twin config fuzz suite
(tests/io/test_fuzz_region.py) and the workflow config fuzz suite (tests/workflow/test_fuzz_workflow_config.py).
A support module, not a test module: test modules never import each other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from hypothesis import strategies as st

REGIONS = ["Thalamus_L", "Thalamus_R", "Insula_L", "Insula_R", "Frontal_L", "Frontal_R"]


def _int(value, low, high=2**63 - 1) -> bool:
    """An integer (not a bool, not 2.0) in [low, high]; at most 64 bits unless said otherwise."""
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def _num(value, low=None, high=None, open_low=False, open_high=False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        x = float(value)
    except OverflowError:
        return False
    if not math.isfinite(x):
        return False
    if low is not None and not (x > low if open_low else x >= low):
        return False
    return high is None or (x < high if open_high else x <= high)


def _whole_steps(delay, dt) -> bool:
    steps = delay / dt
    return math.isfinite(steps) and abs(steps - round(steps)) <= 1e-6 * max(1.0, steps) and round(steps) >= 1


def _labels(value) -> bool:
    if isinstance(value, str):
        return value in ("thalamus", "interoceptive", "all")
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, str) and x for x in value)
        and len(set(value)) == len(value)
    )


def _minmax_params(value) -> bool:
    if not isinstance(value, dict) or not set(value) <= {"low", "high", "per_region"}:
        return False
    low, high = value.get("low", 0.02), value.get("high", 0.05)
    per_region = value.get("per_region", True)
    return _num(low) and _num(high) and float(low) < float(high) and isinstance(per_region, bool)


HYPERPARAMETERS = ("g_AMPA", "g_NMDA", "g_GABAa", "g_GABAb", "ou_mu", "ou_sigma", "i_ext", "poisson_rate_hz")
# the base config (config/config.yaml) has model.dt_ms = 1.0, delay 1.0 by default, lower/upper 0.01/0.3,
# low_hz/high_hz 0.01/0.1 by default and the minmax scaling: one key is changed at a time
RULES: dict[tuple[str, ...], Callable[[object], bool]] = {
    ("seed",): lambda v: _int(v, 0, 2**63 - 1),
    ("backend",): lambda v: v in ("auto", "torch", "cuda_ext"),
    ("device",): lambda v: isinstance(v, str) and re.fullmatch(r"cpu|cuda(:[0-9]+)?", v) is not None,
    ("threads",): lambda v: _int(v, 1),
    ("neurons_total",): lambda v: _int(v, 1),
    ("model", "indegree"): lambda v: _int(v, 1),
    ("model", "weight_excitatory"): lambda v: _int(v, 1, 255),
    ("model", "weight_inhibitory"): lambda v: _int(v, 1, 255),
    ("model", "dt_ms"): lambda v: _num(v, 0, open_low=True) and _whole_steps(1.0, float(v)),
    ("model", "delay_ms"): lambda v: _num(v, 0, open_low=True) and _whole_steps(float(v), 1.0),
    ("model", "min_excitatory"): lambda v: _int(v, 1),
    ("model", "min_inhibitory"): lambda v: _int(v, 1),
    ("model", "graph_seed"): lambda v: False,  # retired: the graph's seed derives from `seed` (dtb.seeds)
    ("model", "wiring"): lambda v: v in ("dti", "random", "knn"),
    ("model", "knn_k"): lambda v: _int(v, 1),
    ("assimilation", "members"): lambda v: _int(v, 2),
    ("assimilation", "input_regions"): _labels,
    ("assimilation", "hyperparameter"): lambda v: v in HYPERPARAMETERS,
    ("assimilation", "lower"): lambda v: _num(v) and float(v) < 0.3,
    ("assimilation", "upper"): lambda v: _num(v) and float(v) > 0.01,
    ("assimilation", "warmup_windows"): lambda v: _int(v, 0),
    ("assimilation", "checkpoint_every"): lambda v: _int(v, 1),
    ("assimilation", "n_frames"): lambda v: v is None or _int(v, 1),
    ("assimilation", "heldout_fraction"): lambda v: _num(v, 0, 1, open_high=True),
    ("assimilation", "filter", "obs_variance"): lambda v: _num(v, 0, open_low=True),
    ("assimilation", "filter", "rho"): lambda v: _num(v, 0, 1),
    ("assimilation", "filter", "inflation"): lambda v: _num(v, 1),
    ("assimilation", "filter", "random_walk_std"): lambda v: _num(v, 0),
    ("assimilation", "filter", "variant"): lambda v: v in ("perturbed", "sqrt"),
    ("assimilation", "filter", "seed"): lambda v: False,  # retired: derives from `seed` (dtb.seeds)
    ("observation", "low_hz"): lambda v: v is None or (_num(v, 0, open_low=True) and float(v) < 0.1),
    ("observation", "high_hz"): lambda v: v is None or (_num(v, 0, open_low=True) and float(v) > 0.01),
    ("observation", "detrend"): lambda v: isinstance(v, bool),
    ("observation", "scaling"): lambda v: v in ("minmax", "zscore", "identity"),
    ("observation", "scaling_params"): _minmax_params,
    ("resimulation", "record_seconds"): lambda v: _num(v, 0),  # 0: keep no spikes (the report says so)
}
SECTIONS = {
    (): {"seed", "backend", "device", "threads", "neurons_total", "model", "assimilation", "observation"}
    | {"resimulation"},
    ("model",): {k[1] for k in RULES if k[0] == "model"},
    ("assimilation",): {k[1] for k in RULES if k[0] == "assimilation" and len(k) == 2} | {"filter"},
    ("assimilation", "filter"): {k[2] for k in RULES if k[:2] == ("assimilation", "filter")},
    ("observation",): {k[1] for k in RULES if k[0] == "observation"},
    ("resimulation",): {"record_seconds"},
}

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.integers(-(2**65), 2**65),
    st.integers(10**300, 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 255, 256, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
    st.sampled_from(["auto", "torch", "cuda_ext", "cpu", "cuda", "cuda:1", "gpu", "dti", "knn", "random"]),
    st.sampled_from(["thalamus", "all", "i_ext", "g_AMPA", "sqrt", "perturbed", "minmax", "zscore", "identity"]),
    st.text(max_size=6),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.lists(st.sampled_from(REGIONS + [""]), max_size=3),
    st.dictionaries(st.sampled_from(["low", "high", "per_region", "x"]), SCALARS, max_size=3),
)


#: values that are valid for some keys: drawn half of the time, so valid changes are tried as often as
#: invalid ones
PLAUSIBLE = st.sampled_from(
    [1, 2, 4, 8, 10, 20, 100, 133, 255, 0, 0.5, 0.1, 0.2, 0.01, 0.05, 0.8, 1.0, 2.0, 10.0, True, False, None]
    + ["auto", "torch", "cuda_ext", "cpu", "cuda:0", "dti", "knn", "random", "thalamus", "interoceptive", "all"]
    + ["i_ext", "g_NMDA", "ou_mu", "sqrt", "perturbed", "minmax", "zscore", "identity"]
    + [["Thalamus_L"], ["Insula_L", "Insula_R"], {"low": 0.01, "high": 0.1}, {"per_region": False}, {}]
)
