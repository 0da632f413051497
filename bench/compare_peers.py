"""Run dtb, NEST and Brian2 (standalone) on Brunel-COBA back to back, in rounds, and tabulate.

Each round runs every simulator once per K, so machine noise hits all of them alike;
the table reports the minimum and median t_sim over rounds and the ratio to Brian2 of
the same round.  Results (one JSON line per run) go to ``--jsonl``, the table to ``--md``.

    python bench/compare_peers.py --peer-python ../peers-venv/bin/python --rounds 2 \
        --jsonl bench/results/brunel_peers.jsonl --md bench/results/brunel_peers.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the folder of the peers' scripts (not in this repository): ``$DTB_PEERS``, else --peers DIR
DEFAULT_PEERS = Path(os.environ["DTB_PEERS"]) if os.environ.get("DTB_PEERS") else None


def run_one(cmd: list[str], cwd: Path) -> dict:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-python", required=True, help="python with nest-simulator 3.10 and brian2 2.11")
    p.add_argument(
        "--peers",
        type=Path,
        default=DEFAULT_PEERS,
        required=DEFAULT_PEERS is None,
        help="folder of the peers' brunel_common.py and scripts (default: $DTB_PEERS)",
    )
    p.add_argument("--K", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--N", type=int, default=10_000)
    p.add_argument("--T", type=float, default=1000.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--simulators", nargs="+", default=["dtb", "nest", "brian2-standalone"], help="which of the three to run"
    )
    p.add_argument("--dtb-args", default="", help="extra arguments for bench/brunel.py (e.g. '--backend cuda_ext')")
    p.add_argument("--jsonl", type=Path, required=True)
    p.add_argument("--md", type=Path, required=True)
    a = p.parse_args()
    # the peers run inside their folder: paths given relative to here must not change meaning
    a.peers = a.peers.resolve()
    if "/" in a.peer_python:
        a.peer_python = str(Path(a.peer_python).absolute())  # not resolve(): a venv python is a symlink
    common = ["--N", str(a.N), "--T", str(a.T), "--threads", str(a.threads)]
    commands = {
        "dtb": [sys.executable, str(HERE / "brunel.py"), "--peers", str(a.peers), *common, *a.dtb_args.split()],
        "nest": [a.peer_python, "nest_brunel.py", *common],
        "brian2-standalone": [a.peer_python, "brian2_brunel.py", "--mode", "standalone", *common],
    }
    commands = {name: cmd for name, cmd in commands.items() if name in a.simulators}
    a.jsonl.parent.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], list[dict]] = {}
    for round_index in range(a.rounds):
        for K in a.K:
            for name, cmd in commands.items():
                r = run_one([*cmd, "--K", str(K)], a.peers)
                r["bench_name"], r["round"], r["threads"] = name, round_index, a.threads
                results.setdefault((name, K), []).append(r)
                with a.jsonl.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(
                    f"round {round_index} K={K} {name}: t_sim {r['t_sim_s']:.3f} s, rate {r['rate_mean_Hz']:.2f} Hz, "
                    f"load {r['loadavg_end']:.2f}",
                    flush=True,
                )
    rows = [
        "| simulator | threads | K | t_sim min s | t_sim median s | min / Brian2 min | rate Hz (E / I) | build s | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for K in a.K:
        brian = min(r["t_sim_s"] for r in results[("brian2-standalone", K)])
        for name in commands:
            runs = results[(name, K)]
            t = [r["t_sim_s"] for r in runs]
            best = runs[t.index(min(t))]
            rows.append(
                f"| {name} | {a.threads} | {K} | {min(t):.3f} | {statistics.median(t):.3f} | {min(t) / brian:.2f} | "
                f"{best['rate_mean_Hz']:.2f} ({best['rate_E_Hz']:.2f} / {best['rate_I_Hz']:.2f}) | "
                f"{best.get('t_build_s', float('nan')):.2f} | {max(r['loadavg_end'] for r in runs):.2f} |"
            )
    a.md.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
