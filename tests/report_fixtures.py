"""A small twin run store in the documented format (prompts: TWIN STORE), for the report tests.

This is a stand-in until the real assimilation driver (``dtb assimilate`` / ``dtb resimulate``)
lands: the groups are filled from a real, short run of the engine, but the "analysis" is a
simple nudge of the members' h toward the true h, not the Vw-dHMDA filter.

One :class:`dtb.sim.Simulation` of a 3-region voxel E/I network (``dtb.network``) runs
``n_members + 2`` ensemble members side by side: first ``settle_ms`` to let the network
settle (discarded; the Balloon states then start at the steady state of the settled rates),
then one TR window at a time:

- member 0 is the *truth*: its input region's E population gets the external current
  h_true(t); its Balloon BOLD (``dtb.sim.bold``) plus a little noise is the observation;
- members 1..n_members are the *forecast ensemble*: their h starts spread over [0.02, 0.14],
  takes a random-walk step per window and, after the warm-up windows, is pulled halfway to
  h_true (the stand-in analysis); their BOLD and rates are ``bold_forecast``/``rate_forecast``;
- the last member is the *re-simulation*, driven by the ensemble-mean analysed h; its BOLD,
  rates, spike events and population counts fill ``/resimulation``.

``/metrics`` is computed from these with numpy (Pearson r per region, FC, RMSE, spread,
CRPS, rank histogram).  The run is far shorter than the haemodynamic response, so its BOLD
correlations say nothing about the twin; the fixture exists to exercise the report.
"""

from __future__ import annotations

import numpy as np
import torch

from dtb import __version__
from dtb.assim.hmda import HMDASettings
from dtb.io import twin_store
from dtb.network import NetworkConfig, build_network, make_layout
from dtb.sim import Ensemble, ModelParams, NeuronParams, RecordSpec, Simulation
from dtb.sim.bold import BalloonState, integrate_bold, steady_state

REGIONS = ("Thalamus_L", "Precentral_L", "Insula_R")
INPUT_REGION = "Thalamus_L"
CONNECTOME = np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 4.0], [1.0, 5.0, 0.0]])
#: mm coordinates (MNI) of the three regions, for a test atlas
REGION_MNI = ((-10.0, -18.0, 8.0), (-38.0, -20.0, 55.0), (38.0, 5.0, 2.0))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _upper(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices_from(m, k=1)]


def build_twin_store(
    path,
    *,
    n_members: int = 5,
    duration_s: float = 2.0,
    tr_s: float = 0.1,
    warmup_windows: int = 4,
    neurons_per_region: int = 150,
    seed: int = 11,
    settle_ms: float = 300.0,
    warnings: tuple[str, ...] = (),
):
    """Write a complete twin run store at ``path`` (see the module docstring) and return the path."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    layout = make_layout(
        np.full(len(REGIONS), neurons_per_region),
        CONNECTOME,
        NetworkConfig(model="ei", seed=seed, min_excitatory=1, min_inhibitory=1, weight=32),
        voxel_labels=REGIONS,
    )
    network = build_network(layout)
    params = layout.population_parameters()
    dt_ms = 1.0
    model = ModelParams({p: NeuronParams().with_values(**params[p]) for p in network.population_names}, dt_ms=dt_ms)
    n_sim = n_members + 2
    resim = n_sim - 1
    sim = Simulation(
        network,
        model,
        ensemble=Ensemble(tuple(seed + m for m in range(n_sim))),
        record=RecordSpec(spikes=True, sample_every_ms=dt_ms),
    )
    pops = network.population_names
    input_pop = pops.index(f"{INPUT_REGION}:E")
    n_windows = int(round(duration_s / tr_s))
    tr_ms = tr_s * 1000.0
    times = np.arange(n_windows) * tr_s
    h_true = 0.1 + 0.08 * np.sin(2 * np.pi * times / 1.0)
    h_members = rng.permutation(np.linspace(0.02, 0.14, n_members))
    forecast_mean, forecast_std, analysis_mean, analysis_std, h_analysis = [], [], [], [], []
    counts, spike_rows = [], []
    # settle the network before the "scan" starts, so BOLD starts at its steady state, not at rest
    table = np.zeros((n_sim, len(pops)))
    table[:, input_pop] = h_true[0]
    sim.set_hyperparameters(i_ext=table)
    settle = sim.run(settle_ms, progress=False)["population_counts"]["spike_count"].values[-100:]
    settle_rates = settle.sum(axis=0)  # (n_sim, population) spikes in the last 100 ms
    for w in range(n_windows):
        h_members = np.clip(h_members + rng.normal(0.0, 0.01, n_members), 0.0, 0.3)
        forecast_mean.append(h_members.mean())
        forecast_std.append(h_members.std(ddof=1))
        h_resim = analysis_mean[-1] if analysis_mean else h_members.mean()
        table = np.zeros((n_sim, len(pops)))
        table[0, input_pop] = h_true[w]
        table[1 : n_members + 1, input_pop] = h_members
        table[resim, input_pop] = h_resim
        sim.set_hyperparameters(i_ext=table)
        tree = sim.run(tr_ms, progress=False)
        counts.append(tree["population_counts"]["spike_count"].values)
        spikes = tree["spikes"].to_dataset()
        mine = spikes["member"].values == resim
        spike_rows.append(
            np.stack([spikes["time"].values[mine] - settle_ms / 1000.0, spikes["neuron"].values[mine]], axis=1)
        )
        if w >= warmup_windows:  # stand-in analysis: halfway to the truth, plus noise
            h_members = h_members + 0.5 * (h_true[w] - h_members) + rng.normal(0.0, 0.005, n_members)
        analysis_mean.append(h_members.mean())
        analysis_std.append(h_members.std(ddof=1))
        h_analysis.append(h_members.copy())
    counts = np.concatenate(counts)  # (ms, n_sim, population)
    sizes = np.diff(network.offsets)
    region_of_pop = np.array([p.split(":")[0] for p in pops])
    per_region = np.stack([counts[:, :, region_of_pop == r].sum(axis=2) for r in REGIONS], axis=2)
    region_neurons = np.array([sizes[region_of_pop == r].sum() for r in REGIONS])
    u = torch.as_tensor(per_region / region_neurons, dtype=torch.float64)
    start_rate = np.stack([settle_rates[:, region_of_pop == r].sum(axis=1) for r in REGIONS], axis=1)
    start_rate = start_rate / region_neurons / 0.1  # [Hz]
    fixed = [[steady_state(float(rate)) for rate in row] for row in start_rate]
    start = BalloonState(
        *(torch.tensor([[point[k] for point in row] for row in fixed], dtype=torch.float64) for k in "sfvq")
    )
    _, y = integrate_bold(start, u)
    per_tr = int(round(tr_ms))
    bold = y.numpy()[per_tr - 1 :: per_tr]  # (window, n_sim, region), sampled at the end of each TR
    rates = per_region.reshape(n_windows, per_tr, n_sim, len(REGIONS)).sum(axis=1) / region_neurons / tr_s

    observed = bold[:, 0] + rng.normal(0.0, 2e-4, bold[:, 0].shape)
    forecast = bold[:, 1 : n_members + 1]
    resim_bold = bold[:, resim]
    parameter = [f"{INPUT_REGION}:i_ext"]
    region_coord = {"region": ("region", list(REGIONS))}

    twin_store.write_group_data(
        path,
        "observation",
        {"bold": observed, "bold_clean": 1e4 * (observed - 0.01)},
        {"time": ("time", times, {"units": "s"}), **region_coord},
        {"scaling": {"method": "identity", "note": "twin experiment: observation is model BOLD"}, "tr_s": tr_s},
    )
    connectome = CONNECTOME / CONNECTOME.sum(axis=1, keepdims=True)
    twin_store.write_group_data(
        path,
        "network",
        {
            "neuron_count": region_neurons,
            "connectome": connectome,
            "population_size": sizes,
            "population_region": region_of_pop.astype(str),
            "population_kind": np.array([p.kind for p in network.populations], dtype=str),
        },
        {**region_coord, "region_source": ("region_source", list(REGIONS)), "population": list(pops)},
        {"indegree": layout.config.indegree, "model": layout.config.model, "seed": seed},
    )
    members = np.arange(n_members)
    h_analysis = np.array(h_analysis)[:, :, None]
    col = lambda v: np.asarray(v)[:, None]  # noqa: E731
    inp = REGIONS.index(INPUT_REGION)
    analysed = np.arange(n_windows) >= warmup_windows
    innovation = np.full(observed.shape, np.nan)  # observed minus forecast mean, input region, after warm-up
    innovation[analysed, inp] = observed[analysed, inp] - forecast[analysed, :, inp].mean(axis=1)
    innovation_spread = np.full(observed.shape, np.nan)
    innovation_spread[analysed, inp] = forecast[analysed, :, inp].std(axis=1, ddof=1)
    twin_store.write_group_data(
        path,
        "assimilation",
        {
            "h_forecast_mean": col(forecast_mean),
            "h_forecast_std": col(forecast_std),
            "h_analysis_mean": col(analysis_mean),
            "h_analysis_std": col(analysis_std),
            "h_members": h_analysis,
            "bold_forecast": forecast,
            "rate_forecast": rates[:, 1 : n_members + 1],
            "innovation": innovation,
            "innovation_spread": innovation_spread,
            "warmup": ~analysed,
            "heldout": np.zeros(n_windows, bool),
        },
        {"time": ("time", times, {"units": "s"}), "member": members, "parameter": parameter, **region_coord},
        fill={"h": "i_ext", "h_units": "1"},
    )
    twin_store.write_group_data(
        path,
        "resimulation",
        {"bold": resim_bold, "rate": rates[:, resim]},
        {"time": ("time", times, {"units": "s"}), **region_coord},
    )
    spikes = np.concatenate(spike_rows)
    twin_store.write_group_data(
        path,
        "resimulation_spikes",
        {"time": spikes[:, 0], "neuron": spikes[:, 1].astype(np.int64)},
        None,
        {"duration_s": duration_s, "n_neurons": network.n_neurons},
    )
    twin_store.write_group_data(
        path,
        "resimulation_counts",
        {"spike_count": counts[:, resim].astype(np.int32)},
        {"time": ("time", np.arange(counts.shape[0]) / 1000.0, {"units": "s"}), "population": list(pops)},
        {"bin_s": 1e-3},
    )

    keep = np.arange(n_windows) >= warmup_windows
    obs, res, fmean = observed[keep], resim_bold[keep], forecast[keep].mean(axis=1)
    region_r = np.array([_pearson(obs[:, i], res[:, i]) for i in range(len(REGIONS))])
    region_r_lag1 = np.array([_pearson(obs[1:, i], res[:-1, i]) for i in range(len(REGIONS))])
    fc_emp, fc_sim = np.corrcoef(obs.T), np.corrcoef(res.T)
    inp = REGIONS.index(INPUT_REGION)
    fk = forecast[keep][:, :, inp]
    ok = obs[:, inp]
    ranks = (fk < ok[:, None]).sum(axis=1)
    rmse = float(np.sqrt(np.mean((fk.mean(axis=1) - ok) ** 2)))
    spread = float(np.sqrt(np.mean(fk.var(axis=1, ddof=1))))
    crps = float(
        np.mean(np.abs(fk - ok[:, None]).mean(axis=1) - 0.5 * np.abs(fk[:, :, None] - fk[:, None, :]).mean(axis=(1, 2)))
    )
    twin_store.write_group_data(
        path,
        "metrics",
        {"region_r": region_r, "region_r_lag1": region_r_lag1, "fc_empirical": fc_emp, "fc_simulated": fc_sim},
        {**region_coord, "region_source": ("region_source", list(REGIONS))},
        {
            "fc_similarity": _pearson(_upper(fc_emp), _upper(fc_sim)),
            "fnorm": float(np.linalg.norm(fc_emp - fc_sim) / np.linalg.norm(fc_emp)),
            "forecast_r": _pearson(ok, fmean[:, inp]),
            "resim_region_r": float(np.nanmean(region_r)),
            "resim_input_r": float(region_r[inp]),
            "resim_noninput_r": float(np.nanmean(np.delete(region_r, inp))),
            "heldout_r": float("nan"),
            "persistence_r": _pearson(ok[1:], ok[:-1]),
            "climatology_r": float("nan"),
            "rmse": rmse,
            "spread": spread,
            "crps": crps,
            "rank_histogram": np.bincount(ranks, minlength=n_members + 1).tolist(),
        },
    )
    config = {
        "subject": "twin01",
        "inputs": {"regions": "fixture"},
        "assimilation": {"members": n_members, "hyperparameter": "i_ext", "input_regions": [INPUT_REGION]},
        "network": {"model": "ei", "neurons_per_region": neurons_per_region, "indegree": 100, "seed": seed},
        "simulation": {"dt_ms": dt_ms, "backend": "torch"},
    }
    twin_store.update_root_attrs(
        path,
        {
            "dtb_version": __version__,
            "seed": seed,
            "config": config,
            "tr_s": tr_s,
            "n_members": n_members,
            "input_regions": [INPUT_REGION],
            "assimilated_regions": [INPUT_REGION],
            "hyperparameter": "i_ext",
            "assimilation_settings": HMDASettings().describe(),
            "backend": sim.backend.name,
            "device": str(sim.device),
            "n_neurons": network.n_neurons,
            "n_synapses": network.n_synapses,
            "subject": "twin01",
            "warnings": list(warnings),
            "started": "2026-11-25T09:00:00Z",
            "finished": "2026-11-25T09:00:20Z",
            "wall_time_s": 20.0,
        },
    )
    return path
