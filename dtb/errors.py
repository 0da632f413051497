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
    "InputDataError",
    "DataFetchError",
    "AssimilationError",
    "ReportError",
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


class InputDataError(DTBError, ValueError):
    """An input data file (BIDS image, sidecar, table, time series) is missing or invalid.

    The message names the file and says how to fix it."""


class DataFetchError(DTBError, RuntimeError):
    """A dataset could not be downloaded, verified or read from the cache."""


class AssimilationError(DTBError, ValueError):
    """Data assimilation inputs or settings are inconsistent (observations, ensemble, windows)."""


class ReportError(DTBError, RuntimeError):
    """A twin report could not be built from the given run outputs."""
