"""Does a thalamic input reach the rest of the twin? Drive the thalamus, watch every other region.

Protocol A assimilates the thalamus only, so the rest of the re-simulated brain can follow the data
only through what the network carries out of the thalamus. This builds a subject's twin exactly as
``bench/fidelity/run.py`` does (same neurons, in-degree, wiring), drives h (``i_ext`` of the
thalamic excitatory populations) with a square wave between the assimilation bounds (period
``--period`` s), and records each region's rate and BOLD per TR in one brain. Reported per setting:

- ``thalamus_rate_step_hz``: the thalamic rate change between the high and low half-periods;
- ``noninput_rate_r``: mean over non-input regions of corr(region rate, h wave), and the share of
  regions with r > 0.3; ``noninput_rate_step_sd``: their rate change in units of their own SD;
- ``noninput_bold_r``: mean corr(region BOLD, thalamic BOLD);
- ``thalamic_synapses_per_neuron``: expected long-range synapses per E neuron of a non-input region
  whose source is the thalamus (the long-range in-degree, 2/7 K of the E/I model, times the
  thalamus's share of the region's row-normalised connectome), beside the local in-degree.

Run: ``.venv/bin/python bench/fidelity/propagation.py --inputs DIR --subjects 101309 NAP001 --indegree 20 100``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dtb.assembly.forward import make_simulation
from dtb.assembly.region import build_region_model
from dtb.assim.metrics import pearson_columns
from dtb.io.region_inputs import load_region_subject
from dtb.seeds import derive_seed
from dtb.sim.backends import resolve_backend_name
from dtb.twin.config import INPUT_SETS, load_twin_config
from dtb.twin.run import scaled_counts, wired_connectome

HERE = Path(__file__).resolve().parent


def drive(subject, *, neurons: int, indegree: int, wiring: str, period_s: float, cycles: int, seed: int) -> dict:
    config = load_twin_config(
        {"seed": seed, "neurons_total": neurons, "model": {"indegree": indegree, "wiring": wiring, "dt_ms": 1.0}}
    )
    torch.set_num_threads(1)
    wired = wired_connectome(subject.sc, config)
    counts = scaled_counts(subject.neuron_counts, config.neurons_total)
    region_model = build_region_model(
        counts, wired.T, list(subject.labels), config.model, graph_seed=derive_seed(config.seed, "graph")
    )
    labels = list(region_model.region_labels)
    thal = [labels.index(x) for x in INPUT_SETS["thalamus"]]
    others = [j for j in range(len(labels)) if j not in thal]
    regional = make_simulation(
        region_model,
        n_members=1,
        seed=seed,
        member_purpose="resimulation",  # the streams of `dtb resimulate`
        gain_seed=derive_seed(seed, "resimulation_gains"),
        backend=resolve_backend_name("auto"),
    )
    tr_ms = round(subject.tr_s * 1000)
    n = int(round(cycles * period_s * 1000 / tr_ms))
    t_s = np.arange(n) * tr_ms / 1000
    hi, lo = 0.9 * config.hmda.upper + 0.1 * config.hmda.lower, 0.9 * config.hmda.lower + 0.1 * config.hmda.upper
    wave = np.where((t_s % period_s) < period_s / 2, hi, lo)
    rate, bold = np.empty((n, len(labels))), np.empty((n, len(labels)))
    started = time.perf_counter()
    for w in range(n):
        regional.set_region_hyperparameter(config.hmda.hyperparameter, thal, np.full(len(thal), wave[w]))
        out = regional.advance(tr_ms)
        rate[w], bold[w] = out.rate_hz[0].numpy(), out.bold[0].numpy()
    wall = time.perf_counter() - started
    skip = int(np.ceil(2000 / tr_ms))  # first 2 s: start-up transient
    rate, bold, wave = rate[skip:], bold[skip:], wave[skip:]
    high = wave == hi
    r_rate = pearson_columns(rate[:, others], np.repeat(wave[:, None], len(others), axis=1))
    step = rate[high].mean(axis=0) - rate[~high].mean(axis=0)
    sd = rate.std(axis=0, ddof=1)
    thal_bold = bold[:, thal].mean(axis=1)
    r_bold = pearson_columns(bold[:, others], np.repeat(thal_bold[:, None], len(others), axis=1))
    share = wired[np.ix_(thal, others)].sum(axis=0) / wired[:, others].sum(axis=0)  # row = source
    k_long = 2 / 7 * indegree
    return {
        "subject": subject.label,
        "neurons_total": int(region_model.network.n_neurons),
        "indegree": indegree,
        "wiring": wiring,
        "frames": int(n),
        "thalamus_rate_step_hz": float(step[thal].mean()),
        "thalamus_rate_r": float(np.nanmean(pearson_columns(rate[:, thal], np.repeat(wave[:, None], len(thal), 1)))),
        "noninput_rate_r": float(np.nanmean(r_rate)),
        "noninput_share_r_above_0.3": float(np.mean(np.nan_to_num(r_rate) > 0.3)),
        "noninput_rate_step_sd": float(np.nanmean(step[others] / sd[others])),
        "noninput_bold_r": float(np.nanmean(r_bold)),
        "noninput_mean_rate_hz": float(rate[:, others].mean()),
        "thalamic_synapses_per_neuron": float(k_long * share.mean()),
        "long_range_indegree": k_long,
        "local_indegree": 5 / 7 * indegree,
        "wall_s": wall,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=Path, required=True)
    p.add_argument("--subjects", nargs="+", default=["101309", "NAP001"])
    p.add_argument("--indegree", type=int, nargs="+", default=[20, 100])
    p.add_argument("--neurons", type=int, default=1000)
    p.add_argument("--wiring", default="dti")
    p.add_argument("--period", type=float, default=20.0, help="square-wave period [s]")
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "propagation.json")
    args = p.parse_args(argv)
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    for label in args.subjects:
        subject = load_region_subject(args.inputs, label)
        for k in args.indegree:
            key = (label, k, args.neurons, args.wiring)
            if any((r["subject"], r["indegree"], r.get("neurons_requested"), r["wiring"]) == key for r in rows):
                continue
            row = drive(
                subject,
                neurons=args.neurons,
                indegree=k,
                wiring=args.wiring,
                period_s=args.period,
                cycles=args.cycles,
                seed=args.seed,
            )
            row["neurons_requested"] = args.neurons
            rows.append(row)
            args.out.write_text(json.dumps(rows, indent=1) + "\n")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
