"""One network: the store `dtb network build --inputs` writes is the network the twin runs.

The store and the twin's own build are the same graph (digest); `dtb assimilate --network` and
`dtb resimulate --network` give the stores they give without it, bit for bit; a store built for
another subject, atlas, neuron count, setting or seed is refused before anything is simulated or
written; `--seed N` equals the config's `seed: N`; `dtb plan` estimates the stored twin's ensemble.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dtb.cli import main
from dtb.errors import ConfigError
from dtb.io.region_inputs import write_region_subject
from dtb.io.store import open_tree
from dtb.network.store import load_network, store_info
from dtb.seeds import derive_seed
from dtb.selftest import synthetic_region_subject
from dtb.twin.config import load_twin_config
from dtb.twin.network import network_digest, twin_layout, twin_network_inputs

LABELS = ("Thalamus_L", "Thalamus_R", "Frontal_Sup_2_L", "Frontal_Sup_2_R")


def _subject(label="s01", counts=(100, 100, 150, 150)):
    return synthetic_region_subject(
        label, LABELS, list(counts), n_frames=20, tr_s=0.5, kernel=np.exp(-np.arange(8) / 3.0), pad=10
    )


def _mapping(seed: int = 5, **model) -> dict:
    return {
        "seed": seed,
        "neurons_total": 200,
        "threads": 1,
        "backend": "torch",
        "model": {"indegree": 10, "dt_ms": 1.0, "min_excitatory": 4, "min_inhibitory": 1, "wiring": "random", **model},
        "assimilation": {"members": 3, "warmup_windows": 3, "checkpoint_every": 100},
        "observation": {"low_hz": None, "high_hz": 0.2},
        "resimulation": {"record_seconds": 0.4},
    }


def _config_file(path: Path, **kwargs) -> Path:
    path.write_text(yaml.safe_dump(_mapping(**kwargs)))
    return path


def _arrays(store: Path, group: str) -> dict:
    ds = open_tree(store)[group].to_dataset()
    return {k: ds[k].values for k in ds.data_vars}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def _build(tmp: Path, inputs: Path, out: Path, config: Path, *extra: str, label: str = "s01") -> int:
    argv = ["network", "build", "--inputs", str(inputs), "--participant-label", label, "--config", str(config)]
    return main([*argv, *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Inputs of s01, a network store built for it (--seed 5 over a config seed 2), and the same network
    built with the config's seed."""
    tmp = tmp_path_factory.mktemp("one-network")
    inputs = tmp / "inputs"
    write_region_subject(inputs, _subject())
    config = _config_file(tmp / "twin.yaml", seed=5)
    cli_seed = _config_file(tmp / "twin2.yaml", seed=2)
    assert _build(tmp, inputs, tmp / "net.zarr", cli_seed, "--seed", "5") == 0
    assert _build(tmp, inputs, tmp / "net_config.zarr", config) == 0
    return {"tmp": tmp, "inputs": inputs, "config": config, "store": tmp / "net.zarr"}


def test_the_stored_network_is_the_one_the_twin_builds(built, capsys):
    from dtb.io.region_inputs import load_region_subject
    from dtb.network.build import build_network

    capsys.readouterr()
    config = load_twin_config(built["config"])
    inputs = twin_network_inputs(load_region_subject(built["inputs"], "s01"), config)
    own = build_network(twin_layout(inputs.counts, inputs.connectome, inputs.labels, config))
    stored, from_config = load_network(built["store"]), load_network(built["tmp"] / "net_config.zarr")
    assert network_digest(stored) == network_digest(own) == network_digest(from_config)  # --seed 5 == seed: 5
    meta = store_info(built["store"])["metadata"]
    assert meta["seed"] == derive_seed(5, "graph") and meta["twin"]["run_seed"] == 5
    assert meta["twin"]["subject"] == "s01" and meta["twin"]["region_labels"] == list(LABELS)
    assert sum(meta["twin"]["neuron_count"]) == stored.n_neurons and meta["ensemble_members"] == 3
    other = load_twin_config({**_mapping(seed=6)})
    inputs6 = twin_network_inputs(load_region_subject(built["inputs"], "s01"), other)
    assert network_digest(build_network(twin_layout(inputs6.counts, inputs6.connectome, inputs6.labels, other))) != (
        network_digest(own)
    )


def test_the_loaded_region_model_is_the_built_one(built):
    """What assimilate runs with --network (the store, checked) equals what it builds without it."""
    from dtb.io.region_inputs import load_region_subject
    from dtb.twin.network import twin_region_model

    config = load_twin_config(built["config"])
    inputs = twin_network_inputs(load_region_subject(built["inputs"], "s01"), config)
    own, stored = (twin_region_model(inputs, config, network) for network in (None, built["store"]))
    assert network_digest(own.network) == network_digest(stored.network)
    assert own.network.metadata == stored.network.metadata  # the run store's /network attrs
    assert own.model == stored.model and own.region_labels == stored.region_labels
    assert np.array_equal(own.population_region, stored.population_region)
    assert np.array_equal(own.kept_regions, stored.kept_regions)


def _short_run(tmp: Path, name: str) -> Path:
    """A 5-frame twin (2 warm-up windows, 3 analyses): enough to run the filter on a stored network."""
    mapping = _mapping(seed=5)
    mapping["assimilation"].update({"n_frames": 5, "warmup_windows": 2})
    mapping["observation"] = {"low_hz": None, "high_hz": None}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_assimilate_and_resimulate_run_the_given_store(built):
    tmp = built["tmp"]
    common = ["--inputs", str(built["inputs"]), "--participant-label", "s01", "--progress", "none"]
    run = tmp / "run_short.zarr"
    config = _short_run(tmp, "short")
    assert (
        main(["assimilate", "--config", str(config), *common, "--network", str(built["store"]), "--out", str(run)]) == 0
    )
    attrs = open_tree(run).attrs
    assert attrs["network"] == {"digest": network_digest(load_network(built["store"])), "store": str(built["store"])}
    # re-simulating with another (valid, but not this run's) network store is refused, nothing written
    other = tmp / "net6.zarr"
    assert _build(tmp, built["inputs"], other, built["config"], "--seed", "6") == 0
    assert main(["resimulate", str(run), "--network", str(other), "--progress", "none"]) == 2
    assert "resimulation" not in open_tree(run).children  # (the slow test below re-simulates on the store)


@pytest.mark.slow
def test_assimilate_and_resimulate_on_the_store_equal_the_own_build_bitwise(built):
    tmp, common = built["tmp"], ["--inputs", str(built["inputs"]), "--participant-label", "s01", "--progress", "none"]
    stores = {name: tmp / f"run_{name}.zarr" for name in ("own", "stored")}
    assert main(["assimilate", "--config", str(built["config"]), *common, "--out", str(stores["own"])]) == 0
    argv = ["assimilate", "--config", str(built["config"]), *common, "--network", str(built["store"])]
    assert main([*argv, "--out", str(stores["stored"])]) == 0
    assert main(["resimulate", str(stores["own"]), "--progress", "none"]) == 0
    assert main(["resimulate", str(stores["stored"]), "--network", str(built["store"]), "--progress", "none"]) == 0
    for group in ("assimilation", "network", "observation", "resimulation", "resimulation_counts"):
        assert _same(_arrays(stores["own"], group), _arrays(stores["stored"], group)), group
    attrs = [open_tree(s).attrs for s in stores.values()]
    assert attrs[0]["network"]["digest"] == attrs[1]["network"]["digest"]
    assert attrs[0]["network"]["store"] is None


@pytest.mark.parametrize(
    "case",
    ["subject", "atlas", "counts", "indegree", "dt", "seed", "wiring", "not-a-twin"],
)
def test_a_store_for_another_run_is_refused_before_anything_is_written(built, case, tmp_path, capsys):
    inputs, config = built["inputs"], built["config"]
    store = built["store"]
    label = "s01"
    if case in ("subject", "atlas", "counts"):  # the store is right for another subject's inputs
        subject = _subject(label="s02" if case == "subject" else "s01", counts=(100, 100, 150, 300))
        if case != "counts":
            subject = _subject(label="s02" if case == "subject" else "s01")
        if case == "atlas":
            subject = dataclasses.replace(subject, atlas="Schaefer100")
        other_inputs = tmp_path / "inputs"
        write_region_subject(other_inputs, subject)
        if case == "subject":
            inputs, label = other_inputs, "s02"
        else:
            store = tmp_path / "other.zarr"
            assert _build(tmp_path, other_inputs, store, config) == 0
    elif case == "not-a-twin":
        np.save(tmp_path / "counts.npy", np.array([300, 300]))
        np.save(tmp_path / "sc.npy", np.array([[0, 1.0], [1.0, 0]]))
        store = tmp_path / "plain.zarr"
        argv = ["network", "build", "--counts", str(tmp_path / "counts.npy"), "--connectome", str(tmp_path / "sc.npy")]
        assert main([*argv, "--indegree", "10", "--out", str(store)]) == 0
    else:
        change = {"indegree": {"indegree": 12}, "dt": {"dt_ms": 0.5}, "wiring": {"wiring": "dti"}}.get(case, {})
        config = _config_file(tmp_path / "c.yaml", seed=6 if case == "seed" else 5, **change)
    out = tmp_path / "run.zarr"
    capsys.readouterr()
    argv = ["assimilate", "--config", str(config), "--inputs", str(inputs), "--participant-label", label]
    assert main([*argv, "--network", str(store), "--out", str(out), "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dtb network build --inputs" in err and str(store) in err, err
    expected = {
        "subject": "subject",
        "atlas": "atlas",
        "counts": "neurons per region",
        "indegree": "model.indegree",
        "dt": "model.dt_ms",
        "seed": "run seed 5",
        "wiring": "model.wiring",
        "not-a-twin": "not built for a twin",
    }[case]
    assert expected in err, err
    assert not out.exists()  # nothing written, no lock left behind
    assert not list(tmp_path.glob("run.zarr*"))


def test_network_build_with_inputs_takes_its_settings_from_the_config_only(built, tmp_path, capsys):
    argv = ["network", "build", "--inputs", str(built["inputs"]), "--participant-label", "s01"]
    assert main([*argv, "--indegree", "50", "--out", str(tmp_path / "x.zarr")]) == 2
    assert "model.indegree" in capsys.readouterr().err
    assert main(["network", "build", "--inputs", str(built["inputs"]), "--out", str(tmp_path / "y.zarr")]) == 2
    assert "--participant-label" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "y.zarr").exists()
    # a memory budget the twin's ensemble does not fit: refused before the store is made
    assert (
        main([*argv, "--config", str(built["config"]), "--memory-gib", "1e-5", "--out", str(tmp_path / "z.zarr")]) == 2
    )
    assert "GiB" in capsys.readouterr().err and not (tmp_path / "z.zarr").exists()


def test_plan_estimates_the_stored_twin_with_its_ensemble(built, capsys):
    capsys.readouterr()
    assert main(["plan", "--network", str(built["store"])]) == 0
    plan = json.loads(capsys.readouterr().out)
    info = store_info(built["store"])
    assert plan["neurons"] == info["n_neurons"] and plan["members"] == 3  # the config's assimilation.members
    assert plan["delay_steps"] == 1  # delay 1 ms at dt 1 ms
    assert main(["plan", "--network", str(built["store"]), "--members", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["members"] == 5


def test_twin_config_default_step_is_the_reference_and_the_schema_agrees_with_dtb():
    from dtb.cli.workflow_config import TWIN_KEYS

    assert load_twin_config({}).model.dt_ms == 0.1
    schema = yaml.safe_load((Path(__file__).resolve().parents[2] / "pipeline/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["neurons_total"]["default"] == load_twin_config({}).neurons_total
    assert all(schema["properties"][key]["default"] == {} for key in TWIN_KEYS if key != "neurons_total")
    with pytest.raises(ConfigError, match="model.delay_ms"):
        load_twin_config({"model": {"dt_ms": 0.3}})
