"""``dtb dwi``: a participant's DWI -> tensor maps, CSD tractography, voxel and region connectomes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dtb.cli import options
from dtb.preproc.dwi_settings import DwiSettings  # light: the stage loads in run()


def register(sub) -> None:
    p = sub.add_parser(
        "dwi",
        help="diffusion stage: tensor/CSD models, tractography and structural connectomes",
        description=(
            "Find the participant's DWI (+ .bval/.bvec) in a BIDS dataset, fit the tensor (FA, MD) and CSD models, "
            "track streamlines (dipy LocalTracking, seeds in high-FA voxels, FA-threshold stopping), and write a "
            "voxel x voxel sparse connectome (.npz) and, with --atlas, region x region streamline counts and mean "
            "lengths (*_relmat.tsv) under OUT/dtb/sub-<label>/dwi/ with JSON sidecars."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = DwiSettings()
    p.add_argument("--bids", type=Path, required=True, help="root of the BIDS dataset")
    p.add_argument("--participant-label", required=True, help="participant label (with or without 'sub-')")
    options.add_out(p, "derivatives root (files go to OUT/dtb/sub-<label>/dwi/)")
    p.add_argument("--atlas", type=Path, default=None, help="integer label image in the DWI's world space (NIfTI)")
    p.add_argument("--atlas-labels", type=Path, default=None, help="TSV with columns 'index' and 'name' for --atlas")
    p.add_argument(
        "--atlas-name",
        default=None,
        metavar="NAME",
        help="atlas-<NAME> entity of the region files (default: from the --atlas file name, "
        "AAL2zourioMazoyer2002 -> AAL2)",
    )
    p.add_argument(
        "--target-grid", type=Path, default=None, help="image whose grid the voxel connectome uses (default: DWI grid)"
    )
    p.add_argument("--seeds-per-axis", type=int, default=defaults.seeds_per_axis, help="seeds per voxel and axis")
    p.add_argument("--step-size", type=float, default=defaults.step_size_mm, help="tracking step [mm]")
    p.add_argument("--seed-fa", type=float, default=defaults.seed_fa, help="seed in brain voxels with FA above this")
    p.add_argument("--stop-fa", type=float, default=defaults.stop_fa, help="stop tracking where FA falls below this")
    p.set_defaults(func=options.locked_stage(run, "dwi"))


def run(args) -> int:
    from dtb.preproc.dwi_stage import run_dwi_stage

    settings = DwiSettings(
        seeds_per_axis=args.seeds_per_axis, step_size_mm=args.step_size, seed_fa=args.seed_fa, stop_fa=args.stop_fa
    )
    folder = run_dwi_stage(
        args.bids,
        args.participant_label,
        args.out,
        atlas=args.atlas,
        atlas_labels=args.atlas_labels,
        atlas_name=args.atlas_name,
        target_grid=args.target_grid,
        settings=settings,
    )
    print(json.dumps({"outputs": str(folder), "files": sorted(p.name for p in folder.iterdir())}))
    return 0
