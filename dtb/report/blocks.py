"""The building blocks of a report section (what the HTML template knows how to draw)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

__all__ = ["FigureBlock", "Note", "Table", "Selector", "Preformatted", "Paragraphs", "Section"]


@dataclass(frozen=True)
class FigureBlock:
    """A rendered figure: ``key`` names its file (``<key>.png``) in the figures directory."""

    key: str
    title: str
    caption: str
    png: bytes
    kind: str = "figure"

    @property
    def data_uri(self) -> str:
        """The PNG as a ``data:`` URI (embedded, so the page opens offline)."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Note:
    """A visible remark, e.g. ``"not available: <why>"``; ``level`` is "missing", "info" or "error"."""

    text: str
    level: str = "missing"
    kind: str = "note"


@dataclass(frozen=True)
class Table:
    """A small table of strings."""

    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    css_class: str = ""
    kind: str = "table"


@dataclass(frozen=True)
class Selector:
    """Several figures of which one is shown at a time, chosen by a drop-down (``options``)."""

    name: str
    label: str
    options: tuple[str, ...]
    figures: tuple[FigureBlock, ...]
    kind: str = "selector"


@dataclass(frozen=True)
class Preformatted:
    """Verbatim text (e.g. the run's configuration as JSON)."""

    caption: str
    text: str
    kind: str = "pre"


@dataclass(frozen=True)
class Paragraphs:
    """Plain paragraphs of text, optionally followed by a list of references."""

    paragraphs: tuple[str, ...]
    references: tuple[str, ...] = ()
    kind: str = "paragraphs"


@dataclass
class Section:
    """One section of the page: an anchor id, a title and its blocks in order."""

    id: str
    title: str
    blocks: list = field(default_factory=list)

    def figures(self) -> list[FigureBlock]:
        """Every figure of the section, those inside selectors included."""
        out = []
        for block in self.blocks:
            if isinstance(block, FigureBlock):
                out.append(block)
            elif isinstance(block, Selector):
                out.extend(block.figures)
        return out
