"""``dtb selftest``: does this machine reproduce the reference results bitwise?"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
import warnings
from pathlib import Path

from dtb.cli import options


def register(sub) -> None:
    p = sub.add_parser(
        "selftest",
        help="check that this machine reproduces the reference results bitwise (about 30 s)",
        description=(
            "Recompute the pinned reference cases (built graphs, Gamma gains, Box-Muller normals, a short "
            "Brunel-COBA run on each backend, an OU-driven run, a small region-level twin's h track and BOLD) "
            "and compare their sha256 digests with the reference machine's. Exit 0 when every case matches, 1 "
            "when any differs (each is named). A backend that cannot be built here is skipped, saying why. "
            "See docs/reliability.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--case",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this case (repeatable; a prefix such as 'graph:' selects a family); default: all",
    )
    p.add_argument("--list", action="store_true", help="list the case names and exit")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    options.add_threads(p, "results must not depend on it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dtb.errors import ConfigError
    from dtb.selftest import CASES, run_cases

    if args.list:
        print("\n".join(CASES))
        return 0
    names = list(CASES)
    if args.case:
        names = [n for n in CASES if any(n == c or (c.endswith(":") and n.startswith(c)) for c in args.case)]
        if not names:
            raise ConfigError(f"--case {args.case} names no case; `dtb selftest --list` lists them")

    def show(r) -> None:
        verdict = {True: "ok", False: "DIFFERS", None: "no reference"}[r.ok] if r.skipped is None else "skipped"
        line = f"{r.name:42s} {verdict:12s} {r.seconds:6.1f} s"
        if r.skipped:
            line += f"  ({r.skipped})"
        elif r.ok is False:
            line += f"\n    here      {r.digest}\n    reference {r.reference}"
        print(line, flush=True)

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pinned layouts drop surplus synapses on purpose
        logging.getLogger("dtb").setLevel(logging.ERROR)
        results = run_cases(names, threads=args.threads, progress=show)
    differ = [r.name for r in results if r.ok is False]
    matched = sum(r.ok is True for r in results)
    skipped = [r.name for r in results if r.skipped is not None]
    print(
        f"{matched} of {len(results)} cases match the reference, {len(differ)} differ, {len(skipped)} skipped "
        f"({time.perf_counter() - started:.0f} s)"
    )
    if differ:
        print(
            "this machine does NOT reproduce the reference results: " + ", ".join(differ) + ". Please report it with "
            "the output of `dtb selftest --json selftest.json` (machine, library versions and digests).",
            file=sys.stderr,
        )
    if args.json is not None:
        import numpy
        import torch

        args.json.write_text(
            json.dumps(
                {
                    "machine": {
                        "processor": platform.processor() or platform.machine(),
                        "platform": platform.platform(),
                        "python": platform.python_version(),
                        "torch": torch.__version__,
                        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                        "numpy": numpy.__version__,
                        "threads": torch.get_num_threads(),
                    },
                    "cases": {
                        r.name: {"ok": r.ok, "digest": r.digest, "reference": r.reference, "skipped": r.skipped}
                        for r in results
                    },
                },
                indent=1,
            )
        )
    return 1 if differ else 0
