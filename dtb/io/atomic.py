"""Outputs that appear whole or not at all: write beside the final name, then rename.

``with staged_output(final) as tmp:`` yields a path beside ``final`` (same folder, so the same file
system) for the body to write a file or a folder (a zarr store, a folder of derivatives) at; on a
clean exit it is renamed to ``final``, on an exception (or when the process dies) ``final`` is left
as it was. The rename of a file replaces the old one atomically; a folder that already exists is
renamed aside first and removed after the new one is in place, so a reader meets the old output,
nothing, or the new output, never a mixture. With ``keep_existing``, entries of the old folder
that the new one does not replace are carried over (hard links, no copy): a stage that adds files
to a folder keeps the files it did not write.

Leftovers of a killed run are hidden (``.<name>.tmp-*``, ``.<name>.old-*``) and never read as the
output; the next run of the same output removes them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dtb.io.faults import fault_point

__all__ = ["staged_output", "swap_in", "remove_leftovers"]


def remove_leftovers(final) -> None:
    """Remove the hidden temporaries (``.<name>.tmp-*``, ``.<name>.old-*``) that killed runs writing
    ``final`` left beside it. Call it holding the output's lock (no other writer is using them)."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    for path in final.parent.glob(f".{final.name}.*-*"):
        if path.name.split(".")[-1].startswith(("tmp-", "old-")):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _link_tree(source: Path, target: Path) -> None:
    """Carry the entries of folder ``source`` that ``target`` lacks into ``target`` (hard links)."""
    for entry in source.iterdir():
        into = target / entry.name
        if into.exists() or into.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, into, copy_function=os.link, symlinks=True)
        else:
            os.link(entry, into, follow_symlinks=False)


def swap_in(staged: Path, final: Path, *, keep_existing: bool = False) -> None:
    """Rename ``staged`` (a file or folder) to ``final``, replacing what is there (see the module)."""
    staged, final = Path(staged), Path(final)
    if not staged.is_dir() or not final.is_dir():
        if final.is_dir() and not final.is_symlink():  # a file replacing a folder
            shutil.rmtree(final)
        os.replace(staged, final)
        return
    if keep_existing:
        _link_tree(final, staged)
    old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
    os.replace(final, old / final.name)
    try:
        os.replace(staged, final)
    except BaseException:
        os.replace(old / final.name, final)  # put the old output back
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_output(
    final, *, folder: bool = False, keep_existing: bool = False, stage: str | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` to write at; rename it to ``final`` on a clean exit.

    Call it holding the output's lock (:func:`dtb.io.locks.output_lock`): it removes the leftovers of
    killed runs of the same output first.

    Parameters
    ----------
    final : the output's path (a file, or with ``folder`` a folder).
    folder : create the temporary path as an empty folder (else it does not exist yet: the body
        creates a file or folder there).
    keep_existing : carry over entries of an existing ``final`` folder that the new one lacks.
    stage : the stage's name for the test hook ``DTB_FAULT_AT=<stage>:staged:...`` (dtb.io.faults),
        passed after the body and before the rename.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    holder = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    staged = holder / final.name
    if folder:
        staged.mkdir()
    try:
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written at {staged} for {final}")
        if stage is not None:
            fault_point(stage, "staged")
        swap_in(staged, final, keep_existing=keep_existing)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
