"""The ``dtb`` command line: one subcommand per pipeline stage.

Each subcommand lives in its own module with ``register(subparsers)`` (adds its parser
and sets ``func``); user mistakes (:class:`~dtb.errors.DTBError`) are printed as one
clear message with exit code 2, never as a traceback (an error that is not a user mistake, e.g.
:class:`~dtb.errors.ReportFigureError`, says so with its ``exit_code``, 1).
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys

from dtb import __version__
from dtb.errors import DTBError

__all__ = ["main", "build_parser"]

# modules providing ``register(subparsers)``, in the order --help lists them
_COMMANDS = (
    "dtb.cli.simulate",
    "dtb.cli.network",
    "dtb.cli.fetch",
    "dtb.cli.regions",
    "dtb.cli.preproc",
    "dtb.cli.dwi",
    "dtb.cli.phantom",
    "dtb.cli.assimilate",
    "dtb.cli.experiment",
    "dtb.cli.report",
    "dtb.cli.selftest",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="dtb",
        description="Digital twin brain: build, simulate and fit spiking-network twins of individual brains.",
    )
    parser.add_argument("--version", action="version", version=f"dtb {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to re-execute under an MPI launcher
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except DTBError as exc:
        print(f"dtb {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # outside an output's lock (which names the output): name the file if the OS did
        where = f" writing {exc.filename}" if exc.filename else ""
        print(
            f"dtb {args.command}: error: no space left on device{where} ({exc.strerror}); free space or "
            "write to a larger file system, then run again",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"dtb {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
