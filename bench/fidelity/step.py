"""The model's step: spontaneous rates of one subject's twin network at dt 1.0 vs 0.1 ms (docs/twin.md).

The same graph and gains (the fast CPU setting, seed 1), one brain, h set to the same value on every
region; 1 s discarded, 4 s averaged. Usage::

    python bench/fidelity/step.py --inputs DIR --participant-label 101309 [--config config/twin/fast-cpu.yaml]

Prints one JSON object: mean, SD over regions, min and max of the regions' rates [Hz] per (dt, h).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from dtb.assembly.forward import make_simulation
from dtb.assembly.region import region_model
from dtb.io.region_inputs import load_region_subject
from dtb.network.build import build_network
from dtb.seeds import derive_seed
from dtb.twin.config import load_twin_config
from dtb.twin.network import twin_layout, twin_network_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--participant-label", required=True)
    parser.add_argument("--config", default="config/twin/fast-cpu.yaml")
    parser.add_argument("--h", type=float, nargs="+", default=[0.05, 0.15])
    args = parser.parse_args()
    torch.set_num_threads(1)
    subject = load_region_subject(args.inputs, args.participant_label)
    base = load_twin_config(args.config)
    out = {}
    for dt in (1.0, 0.1):
        config = dataclasses.replace(base, model=dataclasses.replace(base.model, dt_ms=dt))
        inputs = twin_network_inputs(subject, config)
        layout = twin_layout(inputs.counts, inputs.connectome, inputs.labels, config)
        model = region_model(layout, build_network(layout), config.model)
        for h in args.h:
            regional = make_simulation(
                model, n_members=1, seed=config.seed, gain_seed=derive_seed(config.seed, "gains"), backend="cuda_ext"
            )
            regional.set_region_hyperparameter("i_ext", list(range(model.n_regions)), np.full(model.n_regions, h))
            regional.advance(1000)
            started = time.perf_counter()
            rates = np.mean([regional.advance(1000).rate_hz[0].numpy() for _ in range(4)], axis=0)
            out[f"dt{dt}_h{h}"] = {
                "mean_hz": float(rates.mean()),
                "sd_regions_hz": float(rates.std()),
                "min_hz": float(rates.min()),
                "max_hz": float(rates.max()),
                "wall_s": time.perf_counter() - started,
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
