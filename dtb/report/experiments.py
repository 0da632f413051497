"""The report's *Experiments* section: results of `dtb experiment` beside the DTB's claims.

Each result is a study's output folder (holding ``NAME.json`` and ``NAME.png``) or its JSON file
(the figure beside it). The section shows, per study, its figure and a table of the JSON's summary
values with the DTB's claim the study is put beside (``dtb_claim`` in the JSON; docs/experiments.md).
The results are read and checked before anything is written: a path that is neither, or a JSON
that is not a `dtb experiment` result, is a :class:`~dtb.errors.ReportError` naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dtb.errors import ReportError
from dtb.report.blocks import FigureBlock, Note, Section, Table

__all__ = ["ExperimentResult", "load_experiment_results", "experiments_section"]

#: Summary keys not shown in the table (long lists, provenance and per-region mappings).
_SKIP = {"experiment", "store", "settings", "method", "dtb_claim", "points", "runs", "pairs", "rows"}
#: Most rows shown per study.
MAX_ROWS = 60


@dataclass(frozen=True)
class ExperimentResult:
    """One study's result: its name, JSON path, summary and figure (PNG bytes, or None when absent)."""

    name: str
    json_path: Path
    summary: dict
    png: bytes | None


def _read_one(path: Path) -> ExperimentResult:
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"--experiment {path}: not a readable JSON file ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("experiment"), str):
        raise ReportError(
            f"--experiment {path}: not a `dtb experiment` result (no 'experiment' name); give NAME.json or its folder"
        )
    figure = path.with_suffix(".png")
    return ExperimentResult(summary["experiment"], path, summary, figure.read_bytes() if figure.is_file() else None)


def load_experiment_results(paths: Sequence[str | Path]) -> list[ExperimentResult]:
    """Read every result (a folder: each ``*.json`` in it that is a study's result); errors before any writing."""
    results = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [p for p in sorted(path.glob("*.json")) if p.with_suffix(".png").is_file()]
            if not found:
                raise ReportError(
                    f"--experiment {path}: the folder holds no study result (NAME.json with NAME.png); "
                    "give the --out folder of `dtb experiment` or its JSON file"
                )
            results.extend(_read_one(p) for p in found)
        elif path.is_file() and path.suffix.lower() == ".json":
            results.append(_read_one(path))
        else:
            raise ReportError(
                f"--experiment {path} does not exist or is not a JSON file or folder; give the --out folder of "
                "`dtb experiment` or its NAME.json"
            )
    return results


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) if len(value) <= 8 else f"{len(value)} values"
    return str(value)


def _rows(summary: dict, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Scalars of the summary (nested mappings flattened as ``a / b``, three levels deep)."""
    rows = []
    for key, value in summary.items():
        if depth == 0 and key in _SKIP:
            continue
        label = f"{prefix}{key}"
        if isinstance(value, dict):
            if depth < 3 and len(value) <= 16:
                rows.extend(_rows(value, f"{label} / ", depth + 1))
            else:
                rows.append((label, f"{len(value)} entries (in the JSON)"))
        else:
            rows.append((label, _fmt(value)))
    return rows


def experiments_section(results: Sequence[ExperimentResult]) -> Section:
    """The *Experiments* section: per study its figure and its summary beside the DTB's claim."""
    section = Section("experiments", "Experiments")
    for i, result in enumerate(results):
        claim = result.summary.get("dtb_claim") or "not recorded in this result (an older dtb wrote it)"
        rows = [("DTB's claim", str(claim))] + _rows(result.summary)
        shown = rows[:MAX_ROWS]
        if len(rows) > MAX_ROWS:
            shown.append(("...", f"{len(rows) - MAX_ROWS} more values in {result.json_path.name}"))
        title = f"{result.name} ({result.json_path})"
        if result.png is None:
            section.blocks.append(
                Note(f"{title}: figure not available: no {result.json_path.with_suffix('.png').name}")
            )
        else:
            section.blocks.append(
                FigureBlock(
                    key=f"experiments_{i}_{result.name}",
                    title=title,
                    caption=f"`dtb experiment {result.name}`; the values beside the DTB's claim are in the table below.",
                    png=result.png,
                )
            )
        section.blocks.append(
            Table(caption=f"{result.name}: result beside the DTB's claim", header=("", "value"), rows=tuple(shown))
        )
    return section
