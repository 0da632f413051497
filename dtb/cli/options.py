"""The options every ``dtb`` stage spells and explains the same way.

``--config``, ``--out``, ``--seed``, ``--backend``, ``--ranks``, ``--resume``, ``--device`` and
``--threads`` are added to a subcommand only through the functions here, so each has one
spelling, one type and one help text across ``dtb simulate``, ``dtb assimilate``, ``dtb phantom``
and the rest (tests/cli/test_cli_options.py checks it). A stage adds its own detail in ``note``
(printed after the shared text), e.g. what the default is for that stage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dtb.validation import BACKEND_CHOICES

__all__ = [
    "locked_stage",
    "SHARED_HELP",
    "BACKENDS",
    "add_config",
    "add_out",
    "add_seed",
    "add_backend",
    "add_ranks",
    "add_resume",
    "add_device",
    "add_threads",
    "set_threads",
]

#: Simulation backends a stage accepts: "auto" = cuda_ext when it builds here, else torch (dtb.validation).
BACKENDS = BACKEND_CHOICES

#: The shared part of each option's help (tests compare every subcommand's help against it).
SHARED_HELP = {
    "--config": "settings file (YAML)",
    "--out": "output path",
    "--seed": "the run's seed (integer >= 0): every random stream derives from it (dtb.seeds)",
    "--backend": "simulation backend: auto (cuda_ext when it builds here, else torch), torch or cuda_ext",
    "--ranks": "MPI ranks (processes)",
    "--resume": "continue an interrupted run from its last checkpoint instead of starting over",
    "--device": "torch device: cpu, cuda or cuda:N",
    "--threads": "CPU threads per process (integer >= 1)",
}


def _help(option: str, note: str | None) -> str:
    return SHARED_HELP[option] if not note else f"{SHARED_HELP[option]}; {note}"


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def add_config(parser: argparse.ArgumentParser, note: str | None = None, **kwargs) -> argparse.Action:
    """``--config FILE``: the stage's settings file (default None: built-in defaults)."""
    kwargs.setdefault("default", None)
    return parser.add_argument("--config", type=Path, metavar="FILE", help=_help("--config", note), **kwargs)


def add_out(parser: argparse.ArgumentParser, note: str | None = None, **kwargs) -> argparse.Action:
    """``--out PATH``: where the stage writes (required unless ``required=False`` is given)."""
    kwargs.setdefault("required", True)
    return parser.add_argument("--out", type=Path, metavar="PATH", help=_help("--out", note), **kwargs)


def add_seed(parser: argparse.ArgumentParser, note: str | None = None, **kwargs) -> argparse.Action:
    """``--seed N`` (integer >= 0)."""
    kwargs.setdefault("default", None)
    return parser.add_argument("--seed", type=_non_negative_int, metavar="N", help=_help("--seed", note), **kwargs)


def add_backend(parser: argparse.ArgumentParser, note: str | None = None, **kwargs) -> argparse.Action:
    """``--backend {auto,torch,cuda_ext}``."""
    kwargs.setdefault("default", None)
    return parser.add_argument("--backend", choices=BACKENDS, help=_help("--backend", note), **kwargs)


def add_ranks(parser: argparse.ArgumentParser, note: str | None = None, **kwargs) -> argparse.Action:
    """``--ranks N`` (integer >= 1, default 1)."""
    kwargs.setdefault("default", 1)
    return parser.add_argument("--ranks", type=_positive_int, metavar="N", help=_help("--ranks", note), **kwargs)


def add_resume(parser: argparse.ArgumentParser, note: str | None = None) -> argparse.Action:
    """``--resume`` (a flag)."""
    return parser.add_argument("--resume", action="store_true", help=_help("--resume", note))


def add_device(parser: argparse.ArgumentParser, note: str | None = None, **kwargs) -> argparse.Action:
    """``--device DEVICE`` (cpu, cuda, cuda:N; a stage may also accept auto, see its note)."""
    kwargs.setdefault("default", None)
    return parser.add_argument("--device", metavar="DEVICE", help=_help("--device", note), **kwargs)


def add_threads(parser: argparse.ArgumentParser, note: str | None = None, **kwargs) -> argparse.Action:
    """``--threads N`` (integer >= 1; default None: torch's choice)."""
    kwargs.setdefault("default", None)
    return parser.add_argument("--threads", type=_positive_int, metavar="N", help=_help("--threads", note), **kwargs)


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` to torch (and so to the cuda_ext CPU kernels); None keeps torch's choice."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


def locked_stage(run, datatype: str):
    """``run(args)`` holding the lock of its output folder ``<out>/dtb/sub-<label>/<datatype>`` throughout
    (a second writer of the same folder is refused at once; dtb.io.derivatives.derivatives_lock)."""

    def locked(args: argparse.Namespace) -> int:
        from dtb.io.derivatives import DERIVATIVES_NAME, derivatives_lock

        label = str(args.participant_label).removeprefix("sub-")
        if not label.isalnum():  # refused by the BIDS validation, with its message
            return run(args)
        with derivatives_lock(Path(args.out) / DERIVATIVES_NAME / f"sub-{label}" / datatype):
            return run(args)

    return locked
