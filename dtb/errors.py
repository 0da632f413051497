"""Exception classes: every user mistake raises one of these with a message that names the
offending file or parameter and says how to fix it (the CLI prints the message, not a
traceback)."""

from __future__ import annotations

__all__ = [
    "DTBError",
    "ConfigError",
    "NetworkError",
    "ParameterError",
    "BackendUnavailableError",
    "MemoryBudgetError",
]


class DTBError(Exception):
    """Base class of all errors `dtb` raises for bad input or an unusable environment."""


class ConfigError(DTBError, ValueError):
    """A configuration or description file is invalid (unknown key, wrong type, ...)."""


class NetworkError(DTBError, ValueError):
    """A network (populations, synapses) is inconsistent."""


class ParameterError(DTBError, ValueError):
    """A model or simulation parameter is out of range or has the wrong shape."""


class BackendUnavailableError(DTBError, RuntimeError):
    """The requested simulation backend or device cannot be used here."""


class MemoryBudgetError(DTBError, RuntimeError):
    """A run would not fit the memory available; the message gives the estimate and the fix."""
