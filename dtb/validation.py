"""Checks of user-supplied settings, shared by every frozen settings class and config reader.

One helper per kind of check, each raising one of :mod:`dtb.errors` with one message shape:
``<name> must be <what is allowed>, got <value>[; <fix>]``, where ``name`` is the parameter as the
user spells it (``assimilation.members``, ``EnKF setting rho``, ``population 'E0': size``) and the
caller may add the file in front and a fix behind. Unknown keys are named with the allowed ones and
the nearest match (``did you mean 'rho'?``).

The model is nilearn's ``nilearn/_utils/param_validation.py``: small functions called at the top of
``__post_init__`` or of a reader, instead of a hand-written ``if ...: raise`` each time.

Also here: the backend names (:data:`BACKEND_NAMES`, :data:`BACKEND_CHOICES`), so the tuple is spelt
once, and :func:`resolve_device`, the one place a device name becomes a ``torch.device``.

This module imports only :mod:`dtb.errors` and the standard library (torch only inside
:func:`resolve_device`), so the CLI's parser can use it without loading torch or numpy
(``tests/cli/test_cli_startup.py``).
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Iterable

from dtb.errors import BackendUnavailableError, ConfigError, ParameterError

__all__ = [
    "BACKEND_NAMES",
    "BACKEND_CHOICES",
    "check_number",
    "check_in_range",
    "check_positive",
    "check_non_negative",
    "check_integer",
    "check_seed",
    "check_bool",
    "check_choice",
    "check_backend",
    "check_device_name",
    "unknown_keys",
    "unknown_keys_message",
    "check_unknown_keys",
    "resolve_device",
]

#: Every simulation backend the engine knows, available here or not (``dtb.sim.backends``).
BACKEND_NAMES = ("torch", "cuda_ext")
#: What a user may ask for: a backend, or ``auto`` (cuda_ext when it builds here, else torch).
BACKEND_CHOICES = ("auto", *BACKEND_NAMES)

_DEVICE_NAME = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")


def _bound(value) -> str:
    """A bound as the user reads it: 2**64 rather than 18446744073709551616."""
    if isinstance(value, int) and value >= 2**32:
        for exponent in (value.bit_length() - 1, value.bit_length()):
            if value == 2**exponent:
                return f"2**{exponent}"
            if value == 2**exponent - 1:
                return f"2**{exponent} - 1"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _span(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None and not low_open and isinstance(high, int) and high >= 2**32:
        return f">= {_bound(low)} (at most {_bound(high)})"  # a machine limit, not a setting's range
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_bound(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_bound(high)}"
    return ""


def _is_bool(value) -> bool:
    """Python's bool or numpy's (without importing numpy)."""
    kind = type(value)
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))


def _fail(error: type[Exception], name: str, requirement: str, value, fix: str | None):
    raise error(f"{name} must be {requirement}, got {value!r}{'; ' + fix if fix else ''}")


def _inside(number, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and not (number > low if low_open else number >= low):
        return False
    return high is None or (number < high if high_open else number <= high)


def check_in_range(
    value,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    unit: str | None = None,
    allow_none: bool = False,
    error: type[Exception] = ParameterError,
    fix: str | None = None,
    requirement: str | None = None,
) -> float | None:
    """``value`` as a float after checking it is a finite real number within the bounds.

    Parameters
    ----------
    value : the user's value (int, float or a numpy scalar; bool is refused).
    name : the parameter as the user spells it; it starts the message.
    low, high : bounds (None: unbounded); ``low_open``/``high_open`` exclude them.
    unit : appended to the range in the message (``"mm"``, ``"Hz"``).
    allow_none : None is accepted and returned (an optional setting left unset).
    error : the :mod:`dtb.errors` class to raise (ConfigError for config files).
    fix : what to do instead, appended to the message.
    requirement : what the value must be, in words, instead of the generated ``in [low, high]``.

    Raises
    ------
    error
        ``<name> must be in [low, high] <unit>, got <value>[; fix]``; ``must be finite and in ...`` for NaN
        or infinity, ``must be a number in ...`` for anything else.
    """
    if value is None and allow_none:
        return None
    number = None
    if isinstance(value, numbers.Real) and not _is_bool(value):
        try:
            number = float(value)
        except (OverflowError, TypeError, ValueError):  # an int beyond the float range
            number = math.inf
    finite = number is not None and math.isfinite(number)
    if not finite or not _inside(number, low, high, low_open, high_open):
        if requirement is None:
            span = _span(low, high, low_open, high_open)
            span += f" {unit}" if unit and span else ""
            if number is None:  # not a number at all
                requirement = "a number" + (f" {span}" if span else "")
            elif not finite:  # NaN or infinite
                requirement = "finite" + (f" and {span}" if span else "")
            else:
                requirement = span
            requirement += " or null" if allow_none else ""
        _fail(error, name, requirement, value, fix)
    return number


def check_number(value, name: str, **kwargs) -> float | None:
    """``value`` as a float after checking it is a finite real number (:func:`check_in_range`'s keywords)."""
    return check_in_range(value, name, **kwargs)


def check_positive(value, name: str, *, integer: bool = False, **kwargs):
    """A finite number > 0, or with ``integer`` an integer >= 1 (:func:`check_integer`)."""
    if integer:
        return check_integer(value, name, low=1, **kwargs)
    return check_in_range(value, name, low=0, low_open=True, **kwargs)


def check_non_negative(value, name: str, *, integer: bool = False, **kwargs):
    """A finite number >= 0, or with ``integer`` an integer >= 0 (:func:`check_integer`)."""
    if integer:
        return check_integer(value, name, low=0, **kwargs)
    return check_in_range(value, name, low=0, **kwargs)


def check_integer(
    value,
    name: str,
    low: int | None = None,
    high: int | None = None,
    *,
    whole_floats: bool = True,
    allow_none: bool = False,
    error: type[Exception] = ParameterError,
    fix: str | None = None,
    requirement: str | None = None,
) -> int | None:
    """``value`` as an int after checking it is an integer in ``[low, high]`` (both inclusive).

    ``whole_floats``: a float with a whole value (``100.0``) counts as an integer (the settings
    classes, which Python code builds); config readers pass False, because the commands they feed
    refuse ``--members 2.0``. bool is never an integer here. ``requirement`` replaces the generated
    ``an integer >= low`` in the message.

    Raises
    ------
    error
        ``<name> must be an integer >= low, got <value>[; fix]``.
    """
    if value is None and allow_none:
        return None
    ok = not _is_bool(value)
    if ok and isinstance(value, numbers.Integral):
        number = int(value)
    elif ok and whole_floats and isinstance(value, numbers.Real):
        ok = math.isfinite(float(value)) and float(value).is_integer()
        number = int(value) if ok else None
    else:
        ok = False
    if ok:
        ok = _inside(number, low, high, False, False)
    if not ok:
        if requirement is None:
            span = _span(low, high, False, False)
            requirement = "an integer" + (f" {span}" if span else "") + (" or null" if allow_none else "")
        _fail(error, name, requirement, value, fix)
    return number


def check_seed(value, name: str = "seed", *, high: int = 2**64, error: type[Exception] = ParameterError) -> int:
    """A random seed: an integer (not a float, not bool) in ``[0, high)``, default ``[0, 2**64)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < high:
        _fail(error, name, f"an integer in [0, {_bound(high)})", value, None)
    return int(value)


def check_bool(value, name: str, *, error: type[Exception] = ParameterError) -> bool:
    """``True`` or ``False`` (numpy's bool too; 0/1 and strings are refused)."""
    if not _is_bool(value):
        _fail(error, name, "true or false", value, None)
    return bool(value)


def check_choice(
    value, name: str, allowed: Iterable, *, error: type[Exception] = ParameterError, fix: str | None = None
):
    """``value`` after checking it is one of ``allowed`` (the message lists them, and the nearest match)."""
    allowed = tuple(allowed)
    bool_ok = any(_is_bool(a) for a in allowed)
    try:
        ok = (bool_ok or not _is_bool(value)) and value in allowed
    except (TypeError, ValueError):  # a value that cannot be compared (an array)
        ok = False
    if not ok:
        hint = _nearest(value, allowed)
        _fail(error, name, f"one of {list(allowed)}", value, " ".join(x for x in (hint, fix) if x) or None)
    return value


def check_backend(value, name: str = "backend", *, error: type[Exception] = ParameterError) -> str:
    """One of :data:`BACKEND_CHOICES` (``auto``, ``torch``, ``cuda_ext``)."""
    return check_choice(
        value, name, BACKEND_CHOICES, error=error, fix="auto means cuda_ext where it builds, else torch"
    )


def check_device_name(value, name: str = "device", *, error: type[Exception] = ParameterError) -> str:
    """A device spelt ``cpu``, ``cuda`` or ``cuda:N`` (checked as text; :func:`resolve_device` checks it exists)."""
    if not isinstance(value, str) or not _DEVICE_NAME.match(value):
        _fail(error, name, "cpu, cuda or cuda:N", value, None)
    return value


def _nearest(value, allowed) -> str | None:
    words = [str(a) for a in allowed]
    if not isinstance(value, str) or not words:
        return None
    close = difflib.get_close_matches(value, words, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def unknown_keys(keys: Iterable, allowed: Iterable[str]) -> list[str]:
    """The keys not in ``allowed``, as sorted text (YAML may give non-text keys: they are named too)."""
    allowed = set(allowed)
    return sorted(str(k) for k in keys if k not in allowed)


def unknown_keys_message(
    keys: Iterable, allowed: Iterable[str], *, what: str = "key", where: str | None = None
) -> str | None:
    """``unknown key(s) ['x'] in <where>; allowed: [...] (did you mean 'y'?)``, or None when all are known."""
    allowed = sorted(allowed)
    unknown = unknown_keys(keys, allowed)
    if not unknown:
        return None
    hints = [h for h in (_nearest(u, allowed) for u in unknown) if h]
    suffix = f" ({'; '.join(hints)})" if hints else ""
    return f"unknown {what}(s) {unknown}{' ' + where if where else ''}; allowed: {allowed}{suffix}"


def check_unknown_keys(
    keys: Iterable,
    allowed: Iterable[str],
    *,
    what: str = "key",
    where: str | None = None,
    file=None,
    error: type[Exception] = ConfigError,
) -> None:
    """Refuse keys that are not in ``allowed``, naming them, the file and the allowed ones.

    ``what`` names a key (``"EnKF setting"``), ``where`` the section (``"in config section 'model'"``),
    ``file`` the file read (it starts the message).
    """
    message = unknown_keys_message(keys, allowed, what=what, where=where)
    if message:
        raise error(f"{file}: {message}" if file is not None else message)


def resolve_device(
    device,
    name: str = "device",
    *,
    error: type[Exception] = ParameterError,
    unavailable: type[Exception] = BackendUnavailableError,
):
    """A ``torch.device``: ``"auto"``/None -> CUDA when torch sees a GPU, else CPU; explicit names checked.

    Raises
    ------
    error
        Not a torch device name.
    unavailable
        A CUDA device asked for where torch sees no GPU; the message says to use ``--device cpu``.
    """
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise error(f"{name} must be cpu, cuda, cuda:N or auto, got {device!r} ({exc})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise unavailable(
            f"{name} {str(device)!r} was requested but torch sees no CUDA GPU here "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}). "
            "Use --device cpu (or auto), or install a CUDA build of torch on a GPU machine."
        )
    return resolved
