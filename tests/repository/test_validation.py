"""The shared checks of dtb.validation and the docstring fragments of dtb.docstrings.

Each helper must refuse what it should with the project's error, naming the parameter, the value,
what is allowed and (where given) the fix; accept the edge values; and return the value it checked.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from dtb import validation
from dtb.docstrings import DOCS, fill_doc
from dtb.errors import BackendUnavailableError, ConfigError, NetworkError, ParameterError
from dtb.validation import (
    BACKEND_CHOICES,
    BACKEND_NAMES,
    check_backend,
    check_bool,
    check_choice,
    check_device_name,
    check_in_range,
    check_integer,
    check_non_negative,
    check_number,
    check_positive,
    check_seed,
    check_unknown_keys,
    resolve_device,
    unknown_keys,
    unknown_keys_message,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "value, low, high, kwargs, message",
    [
        (1.5, 0.0, 1.0, {}, r"^rho must be in \[0, 1\], got 1\.5$"),
        (1.0, 0.0, 1.0, {"high_open": True}, r"^rho must be in \[0, 1\), got 1\.0$"),
        (0.0, 0.0, None, {"low_open": True}, r"^rho must be > 0, got 0\.0$"),
        (-1, 0, None, {}, r"^rho must be >= 0, got -1$"),
        (2.0, None, 1.0, {"high_open": True}, r"^rho must be < 1, got 2\.0$"),
        (float("nan"), 0.0, 1.0, {}, r"^rho must be finite and in \[0, 1\], got nan$"),
        (float("inf"), None, None, {}, r"^rho must be finite, got inf$"),
        (10**400, None, None, {}, r"^rho must be finite, got 1000"),  # beyond the float range
        ("0.5", 0.0, 1.0, {}, r"^rho must be a number in \[0, 1\], got '0\.5'$"),
        (True, 0.0, 1.0, {}, r"^rho must be a number in \[0, 1\], got True$"),
        (None, 0.0, 1.0, {}, r"^rho must be a number in \[0, 1\], got None$"),
        (25.0, 0.5, 20.0, {"unit": "mm"}, r"^rho must be in \[0\.5, 20\] mm, got 25\.0$"),
        (-1.0, 0.0, None, {"allow_none": True}, r"^rho must be >= 0 or null, got -1\.0$"),
        (2.0, 0.0, 1.0, {"fix": "1 = local"}, r"^rho must be in \[0, 1\], got 2\.0; 1 = local$"),
        (2.0, 0.0, 1.0, {"requirement": "a blend in [0, 1]"}, r"^rho must be a blend in \[0, 1\], got 2\.0$"),
    ],
)
def test_check_in_range_names_the_parameter_the_value_and_the_range(value, low, high, kwargs, message):
    with pytest.raises(ParameterError, match=message):
        check_in_range(value, "rho", low, high, **kwargs)


def test_check_in_range_accepts_the_bounds_numpy_scalars_and_none_when_allowed():
    assert check_in_range(0, "x", 0.0, 1.0) == 0.0 and isinstance(check_in_range(0, "x", 0.0, 1.0), float)
    assert check_in_range(1.0, "x", 0.0, 1.0) == 1.0
    assert check_in_range(np.float32(0.25), "x", 0.0, 1.0) == 0.25
    assert check_in_range(np.int64(3), "x", low=0) == 3.0
    assert check_in_range(None, "x", 0.0, 1.0, allow_none=True) is None
    assert check_number(-1e300, "x") == -1e300
    with pytest.raises(ParameterError):
        check_in_range(np.bool_(True), "x")
    with pytest.raises(ConfigError, match="x must be > 0"):  # the caller's error class
        check_positive(0.0, "x", error=ConfigError)
    assert check_non_negative(0.0, "x") == 0.0


def test_check_integer_refuses_fractions_bools_and_values_out_of_range():
    assert check_integer(3, "k", 0, 255) == 3
    assert check_integer(np.uint8(255), "k", 0, 255) == 255
    assert check_integer(100.0, "k", 1) == 100 and isinstance(check_integer(100.0, "k", 1), int)
    assert check_integer(None, "k", 1, allow_none=True) is None
    for bad, message in [
        (2.5, r"^k must be an integer in \[0, 255\], got 2\.5$"),
        (256, r"^k must be an integer in \[0, 255\], got 256$"),
        (True, r"^k must be an integer in \[0, 255\], got True$"),
        ("3", r"^k must be an integer in \[0, 255\], got '3'$"),
        (float("nan"), r"^k must be an integer in \[0, 255\], got nan$"),
    ]:
        with pytest.raises(ParameterError, match=message):
            check_integer(bad, "k", 0, 255)
    # a config reader feeds a command that refuses --members 2.0
    with pytest.raises(ConfigError, match=r"^members must be an integer >= 2, got 2\.0; the filter needs an ensemble$"):
        check_integer(2.0, "members", 2, whole_floats=False, error=ConfigError, fix="the filter needs an ensemble")
    # a machine limit reads as one, not as the setting's range
    with pytest.raises(
        ParameterError, match=r"^m must be an integer >= 2 \(at most 2\*\*63 - 1\), got 9223372036854775808$"
    ):
        check_integer(2**63, "m", 2, 2**63 - 1)
    assert check_positive(1, "n", integer=True) == 1
    with pytest.raises(NetworkError, match=r"^n must be an integer >= 1, got 0$"):
        check_positive(0, "n", integer=True, error=NetworkError)
    with pytest.raises(ParameterError, match=r"^n must be an integer >= 0, got -1$"):
        check_non_negative(-1, "n", integer=True)


def test_check_seed_takes_only_integers_in_the_seed_range():
    assert check_seed(0) == 0 and check_seed(2**64 - 1) == 2**64 - 1
    assert check_seed(np.uint64(2**63)) == 2**63
    for bad in (-1, 2**64, 1.0, 1.5, True, "1", None):
        with pytest.raises(ParameterError, match=r"^seed must be an integer in \[0, 2\*\*64\), got "):
            check_seed(bad)
    with pytest.raises(ConfigError, match=r"^seed must be an integer in \[0, 2\*\*63\), got 9223372036854775808$"):
        check_seed(2**63, high=2**63, error=ConfigError)


def test_check_bool_and_check_choice():
    assert check_bool(np.bool_(False), "per_region") is False
    for bad in (0, 1, "true", None):
        with pytest.raises(ParameterError, match=r"^per_region must be true or false, got "):
            check_bool(bad, "per_region")
    assert check_choice("sqrt", "variant", ("perturbed", "sqrt")) == "sqrt"
    with pytest.raises(
        ParameterError, match=r"^variant must be one of \['perturbed', 'sqrt'\], got 'sqr'; did you mean 'sqrt'\?$"
    ):
        check_choice("sqr", "variant", ("perturbed", "sqrt"))
    with pytest.raises(ParameterError, match=r"got 'xyz'$"):  # nothing close: no guess
        check_choice("xyz", "variant", ("perturbed", "sqrt"))
    with pytest.raises(ParameterError, match=r"one of \[2, 4, 6\], got True"):  # True == 1 is not a choice
        check_choice(True, "order", (1, 2, 4, 6)[1:])
    with pytest.raises(ParameterError, match=r"got \['sqrt'\]"):  # unhashable
        check_choice(["sqrt"], "variant", ("perturbed", "sqrt"))
    with pytest.raises(ParameterError, match=r"got array"):  # an array is compared, not broadcast
        check_choice(np.array([1, 2]), "order", (2, 4))


def test_backend_names_are_spelt_once():
    assert BACKEND_CHOICES == ("auto", *BACKEND_NAMES) and BACKEND_NAMES == ("torch", "cuda_ext")
    from dtb.cli import options
    from dtb.sim import backends

    assert options.BACKENDS is BACKEND_CHOICES and backends.BACKEND_NAMES is BACKEND_NAMES
    for name in BACKEND_CHOICES:
        assert check_backend(name) == name
    with pytest.raises(ConfigError, match=r"^backend must be one of \['auto', 'torch', 'cuda_ext'\], got 'cuda'"):
        check_backend("cuda", error=ConfigError)
    # no module spells the tuple by hand again
    spelt = re.compile(r"""\(\s*["']auto["'],\s*["']torch["'],\s*["']cuda_ext["']\s*\)""")
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "dtb").rglob("*.py")
        if p.name != "validation.py" and spelt.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"use dtb.validation.BACKEND_CHOICES in {offenders}"


def test_device_names_and_resolution():
    for name in ("cpu", "cuda", "cuda:1"):
        assert check_device_name(name) == name
    for bad in ("gpu", "cuda:", "CPU", "cuda:x", None, 0):
        with pytest.raises(ParameterError, match=r"^device must be cpu, cuda or cuda:N, got "):
            check_device_name(bad)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == resolve_device("auto").type
    with pytest.raises(NetworkError, match=r"^device must be cpu, cuda, cuda:N or auto, got 'gpu'"):
        resolve_device("gpu", error=NetworkError)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match=r"no CUDA GPU here.*--device cpu"):
            resolve_device("cuda:0")


def test_unknown_keys_are_named_with_the_allowed_ones_and_the_nearest():
    allowed = ("rho", "inflation", "variant")
    assert unknown_keys({"rho": 1, 3: 2, "b": 0}, allowed) == ["3", "b"]
    assert unknown_keys_message({"rho": 1}, allowed) is None
    check_unknown_keys({"rho": 1, "variant": 2}, allowed)  # all known: no error
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "twin.yaml: unknown EnKF setting(s) ['rh0'] in section 'filter'; allowed: ['inflation', 'rho', "
            "'variant'] (did you mean 'rho'?)"
        ),
    ):
        check_unknown_keys({"rh0": 1}, allowed, what="EnKF setting", where="in section 'filter'", file="twin.yaml")
    with pytest.raises(
        ParameterError, match=r"^unknown key\(s\) \['zzz'\]; allowed: \['inflation', 'rho', 'variant'\]$"
    ):
        check_unknown_keys(["zzz"], allowed, error=ParameterError)


def test_settings_classes_use_the_shared_messages():
    from dtb.assim.enkf import EnKFSettings
    from dtb.network.layout import NetworkConfig

    with pytest.raises(ParameterError, match=r"^EnKF setting rho must be in \[0, 1\], got 1\.5$"):
        EnKFSettings(rho=1.5)
    with pytest.raises(ConfigError, match=r"unknown EnKF setting\(s\) \['rh0'\].*did you mean 'rho'"):
        EnKFSettings.from_mapping({"rh0": 0.5})
    with pytest.raises(
        NetworkError, match=r"^weight must be an integer in \[1, 255\], got 0; the weight is w = k/255$"
    ):
        NetworkConfig(weight=0)


def test_bounds_read_as_powers_of_two():
    assert validation._bound(2**64) == "2**64" and validation._bound(2**63 - 1) == "2**63 - 1"
    assert validation._bound(255) == "255" and validation._bound(0.5) == "0.5" and validation._bound(1e-8) == "1e-08"


def test_fill_doc_puts_each_fragment_in_with_the_indent_of_its_line():
    @fill_doc
    def run(backend, seed):
        """Run.

        Parameters
        ----------
        %(backend)s
        %(seed)s
        rate : 10%% of the maximum.
        """

    lines = run.__doc__.split("\n")
    start = lines.index("        " + DOCS["backend"].split("\n")[0])
    for offset, expected in enumerate(DOCS["backend"].split("\n")[1:], start=1):
        assert lines[start + offset] == "        " + expected
    assert "        " + DOCS["seed"].split("\n")[0] in lines
    assert "        rate : 10% of the maximum." in lines
    assert "%(" not in run.__doc__

    with pytest.raises(KeyError, match="not in dtb.docstrings.DOCS"):

        @fill_doc
        def bad():
            """%(nonsense)s"""


def test_every_fragment_is_in_the_project_style_and_used():
    for name, text in DOCS.items():
        first, *rest = text.split("\n")
        assert first.startswith(f"{name} : "), name
        assert all(line.startswith("    ") and not line.startswith("     ") for line in rest), name
    used = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "dtb").rglob("*.py"))
    unused = [name for name in DOCS if f"%({name})s" not in used]
    assert not unused, f"fragments no docstring uses: {unused}"


def test_filled_docstrings_of_the_package_hold_the_fragments():
    from dtb.phantom.settings import PhantomSettings
    from dtb.twin.config import TwinConfig

    for obj in (TwinConfig, PhantomSettings):
        assert "%(" not in obj.__doc__ and DOCS["backend"].split("\n")[0] in obj.__doc__
    assert math.isfinite(check_number(0.0, "x"))
