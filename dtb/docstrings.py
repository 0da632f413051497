"""Docstring fragments shared by the settings classes and functions that take the same parameter.

A parameter that many classes take (``backend``, ``device``, ``seed``, ``threads``) is described once
here, and :func:`fill_doc` puts the text where a docstring says ``%(backend)s``, indented like the
line it replaces. So the description cannot drift between classes. nilearn's ``_utils/docs.py``
(``docdict`` and ``fill_doc``, from MNE-Python) is the model; the values a parameter may take are
checked by :mod:`dtb.validation`.

A docstring that uses :func:`fill_doc` must write a literal percent sign as ``%%``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["DOCS", "fill_doc"]

T = TypeVar("T", bound=Callable)

#: Parameter name -> its description, in the project's ``name : text`` style; continuation lines
#: are indented by 4 spaces relative to the first.
DOCS: dict[str, str] = {
    "backend": (
        "backend : simulation backend: ``auto`` (cuda_ext when it builds here, else torch), ``torch`` (the\n"
        "    reference) or ``cuda_ext`` (the C++/OpenMP and CUDA kernels); both give the same spikes\n"
        '    (docs/architecture.md, "The engine").'
    ),
    "device": "device : torch device of the simulation: ``cpu``, ``cuda`` or ``cuda:N``.",
    "seed": (
        "seed : the run's one seed, an integer in [0, 2**64); every random stream's key derives from it\n"
        '    (:func:`dtb.seeds.derive_seed`; docs/twin.md, "One seed").'
    ),
    "threads": "threads : CPU threads of the simulation (torch and OpenMP); results do not depend on it.",
}


def _indent(text: str, indent: str) -> str:
    first, *rest = text.split("\n")
    return "\n".join([first, *(indent + line if line else line for line in rest)])


def fill_doc(obj: T) -> T:
    """Replace every ``%(name)s`` in ``obj.__doc__`` by ``DOCS[name]``, indented like its line.

    Works on functions and classes; returns ``obj`` (a decorator).

    Raises
    ------
    KeyError
        A ``%(name)s`` with no entry in :data:`DOCS` (a bug in dtb, found on import).
    """
    doc = obj.__doc__
    if not doc:
        return obj
    lines = []
    for line in doc.split("\n"):
        if "%(" in line:
            indent = line[: len(line) - len(line.lstrip())]
            line = line % _Indented(indent)
        elif "%%" in line:
            line = line.replace("%%", "%")
        lines.append(line)
    obj.__doc__ = "\n".join(lines)
    return obj


class _Indented(dict):
    """``DOCS`` with continuation lines indented by ``indent`` (a mapping for ``str % mapping``)."""

    def __init__(self, indent: str) -> None:
        super().__init__()
        self.indent = indent

    def __missing__(self, key: str) -> str:
        if key not in DOCS:
            raise KeyError(f"docstring fragment %({key})s is not in dtb.docstrings.DOCS; add it there")
        return _indent(DOCS[key], self.indent)
