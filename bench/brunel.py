"""Brunel-COBA on the dtb engine, the identical network the NEST and Brian2 peers run.

Imports ``brunel_common`` from the peers' folder (``--peers DIR``, default ``$DTB_PEERS``;
the NEST/Brian2 peer scripts are not part of this repository) for the parameters, the exact graph, the initial V and
the JSON output, so the three simulators are compared number for number.  The last
output line is the result JSON (same fields as the peers, plus backend/members).

Example::

    python bench/brunel.py --N 10000 --K 100 --T 1000 --threads 2 --json bench/results/brunel.jsonl
    python bench/brunel.py --members 32 --T 200          # ensemble: rates per member
    python bench/brunel.py --members 1 --first-member 7   # member 7 of that ensemble, alone
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

#: the folder of the peers' brunel_common.py (not in this repository): ``$DTB_PEERS``, else --peers DIR
DEFAULT_PEERS = Path(os.environ["DTB_PEERS"]) if os.environ.get("DTB_PEERS") else None


def load_brunel_common(folder: Path | None):
    if folder is None:
        sys.exit("brunel.py: pass --peers DIR or set DTB_PEERS (the folder of the peers' brunel_common.py)")
    path = folder / "brunel_common.py"
    if not path.exists():
        sys.exit(f"brunel.py: {path} not found; pass --peers DIR (the folder of the peers' brunel_common.py)")
    spec = importlib.util.spec_from_file_location("brunel_common", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["brunel_common"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--peers", type=Path, default=DEFAULT_PEERS)
    known, _ = pre.parse_known_args(argv)
    bc = load_brunel_common(known.peers)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bc.add_common_args(p)
    p.add_argument(
        "--peers",
        type=Path,
        default=DEFAULT_PEERS,
        help="folder holding the peers' brunel_common.py (default: $DTB_PEERS)",
    )
    p.add_argument("--backend", default="torch", help="dtb backend (torch, cuda_ext)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, auto)")
    p.add_argument("--members", type=int, default=1, help="ensemble size sharing the graph (rates then per member)")
    p.add_argument(
        "--first-member",
        type=int,
        default=0,
        help="index of the first member: member m has noise seed seed + 3 + m, so --first-member 5 --members 1 "
        "runs alone exactly what member 5 of an ensemble runs",
    )
    p.add_argument("--integrator", default="exponential_euler", choices=["exponential_euler", "forward_euler"])
    a = p.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    timer = bc.Timer()
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from dtb.network import Network, Population
    from dtb.sim import Ensemble, RecordSpec, Simulation
    from dtb.sim.reference_models import brunel_coba

    t_import = timer.lap()
    P = bc.resolve_params(a)
    src_E, tgt_E, src_I, tgt_I, V0 = bc.make_graph(P)
    t_graph = timer.lap()
    # the model parameters (neuron, receptors, Poisson drive) come from dtb's copy of the
    # benchmark; the graph and V0 from brunel_common itself
    ref = brunel_coba(
        N=P["N"],
        K=P["K"],
        seed=P["seed"],
        dt_ms=P["dt"],
        delay_ms=P["delay"],
        w_E=P["w_E"],
        g=P["g"],
        nu_ext_hz=P["nu_ext"],
        integrator=a.integrator,
    )
    network = Network.from_edges(
        [Population("E", P["N_E"], "E"), Population("I", P["N_I"], "I")],
        np.concatenate([src_E, src_I]),
        np.concatenate([tgt_E, tgt_I]),
        255,
        {"builder": "brunel_common"},
    )
    if a.first_member < 0:
        p.error(f"--first-member must be >= 0, got {a.first_member}")
    seeds = tuple(P["seed"] + 3 + a.first_member + m for m in range(a.members))
    sim = Simulation(
        network,
        ref.model,
        ensemble=Ensemble(seeds),
        backend=a.backend,
        device=a.device,
        initial_V=V0,
        record=RecordSpec(population_counts=False, spikes=True, sample_every_ms=P["dt"]),
        current_unit="pA",
    )
    sim.run(0.0, progress=False)  # allocate and warm up outside the timed loop
    t_build = timer.lap()
    tree = sim.run(P["T"], progress=False)
    if sim.device.type == "cuda":
        torch.cuda.synchronize()
    t_sim = timer.lap()

    spikes = tree["spikes"].to_dataset()
    member = spikes["member"].values
    per_member = [
        bc.spike_stats(
            P, spikes["neuron"].values[member == m], spikes["time"].values[member == m] * 1000.0, a.transient
        )
        for m in range(a.members)
    ]
    stats = dict(per_member[0])
    if a.members > 1:  # totals over members, rates as the member mean
        stats = {
            k: (sum(s[k] for s in per_member) if k == "n_spikes" else float(np.mean([s[k] for s in per_member])))
            for k in per_member[0]
        }
    timings = dict(t_graph_s=t_graph, t_import_s=t_import, t_build_s=t_build, t_sim_s=t_sim, cpu_sim_s=timer.cpu[-1])
    extra = dict(
        backend=sim.backend.name,
        device=str(sim.device),
        members=a.members,
        first_member=a.first_member,
        integrator=a.integrator,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        rate_mean_Hz_per_member=[s["rate_mean_Hz"] for s in per_member],
        member_neuron_steps_per_s_wall=a.members * P["N"] * (P["T"] / P["dt"]) / t_sim,
    )
    return bc.finish(P, "dtb", timings, stats, extra, a)


if __name__ == "__main__":
    main()
