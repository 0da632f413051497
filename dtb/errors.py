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
    "ReportFigureError",
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


class ReportFigureError(ReportError):
    """The report was written, but some figures failed to draw (a bug, not a user mistake).

    ``path`` is the written page (it lists the failures under *Warnings and errors*) and
    ``failures`` one line per figure; the CLI exits with ``exit_code`` 1, not 2 (a user mistake).
    """

    exit_code = 1

    def __init__(self, path, failures) -> None:
        self.path = path
        self.failures = list(failures)
        super().__init__(
            f"wrote {path}, but {len(self.failures)} figure(s) could not be drawn: {'; '.join(self.failures)} "
            "(a bug in dtb: the traceback is in the log above; the page lists the failures under "
            "'Warnings and errors')"
        )
