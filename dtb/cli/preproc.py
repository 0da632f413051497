"""``dtb anat`` (T1w -> GM volume and neuron counts per MNI voxel) and ``dtb func`` (BOLD -> cleaned
voxel and region time series), both writing BIDS derivatives under ``<out>/dtb/sub-<label>/``.

Only parsing: the stages are :mod:`dtb.preproc.anat_stage` and :mod:`dtb.preproc.func_stage`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dtb.cli import options

__all__ = ["register", "run_anat", "run_func"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bids", type=Path, required=True, metavar="DIR", help="BIDS dataset root (holds sub-<label>/)"
    )
    parser.add_argument("--participant-label", required=True, metavar="L", help="subject label, with or without 'sub-'")
    options.add_out(parser, "derivatives folder; files go to PATH/dtb/sub-<label>/")
    parser.add_argument(
        "--grid-mm", type=float, default=3.0, metavar="MM", help="voxel size of the target MNI grid in mm (default 3)"
    )


def register(sub) -> None:
    anat = sub.add_parser(
        "anat",
        help="T1w -> grey matter and neuron counts per voxel of an MNI grid",
        description=(
            "Find and validate the subject's T1w (or GM probability map), register it to the MNI152 2009a "
            "template (dipy affine + SyN; resampling only for space-MNI* inputs), segment grey matter (dipy "
            "HMRF), and write the GM volume and the neuron count of every voxel of the target grid "
            "(N_v proportional to the subject's native GM volume, largest remainder; docs/imaging.md) as BIDS "
            "derivatives."
        ),
    )
    _common(anat)
    anat.add_argument(
        "--total-neurons", type=int, default=1_000_000, metavar="N", help="neurons to distribute (default 1e6)"
    )
    anat.add_argument(
        "--work-mm",
        type=float,
        default=2.0,
        metavar="MM",
        help="grid of registration and segmentation in mm (default 2)",
    )
    anat.add_argument(
        "--registration",
        choices=("auto", "syn", "affine", "none"),
        default="auto",
        help="auto: SyN for native images, resampling for space-MNI* ones; none: the T1w is already in MNI space",
    )
    anat.add_argument(
        "--atlas",
        type=Path,
        metavar="NIFTI",
        help="integer label image (MNI world space); also writes neurons per region (atlas-<A>_desc-neuroncount_stats)",
    )
    anat.add_argument(
        "--atlas-labels", type=Path, metavar="TSV", help="TSV with columns index and name naming the atlas labels"
    )
    anat.add_argument(
        "--atlas-name",
        metavar="NAME",
        help="atlas-<NAME> entity of the region files (default: from the --atlas file name, "
        "AAL2zourioMazoyer2002 -> AAL2)",
    )
    anat.set_defaults(func=options.locked_stage(run_anat, "anat"))

    func = sub.add_parser(
        "func",
        help="BOLD -> cleaned voxel and region time series",
        description=(
            "Find and validate the subject's rest BOLD (raw or fMRIPrep-preprocessed), correct motion (raw only, "
            "dipy), normalise a native BOLD to MNI (dipy affine), extract voxel time series on the target grid "
            "inside the voxels holding neurons (from dtb anat in --out) and region time series (--atlas), then "
            "detrend, regress confounds and band-pass (nilearn). Reads the series in blocks (bounded memory)."
        ),
    )
    _common(func)
    func.add_argument("--task", default="rest", help="task label of the BOLD run (default rest)")
    func.add_argument("--atlas", type=Path, metavar="NIFTI", help="integer label image for region time series")
    func.add_argument(
        "--atlas-labels", type=Path, metavar="TSV", help="TSV with columns index and name naming the atlas labels"
    )
    func.add_argument(
        "--atlas-name",
        metavar="NAME",
        help="atlas-<NAME> entity of the region files (default: from the --atlas file name, "
        "AAL2zourioMazoyer2002 -> AAL2)",
    )
    func.add_argument(
        "--high-pass",
        type=float,
        default=0.01,
        metavar="HZ",
        help="band-pass lower edge in Hz (default 0.01; 0 = no high-pass)",
    )
    func.add_argument(
        "--low-pass",
        type=float,
        default=0.1,
        metavar="HZ",
        help="band-pass upper edge in Hz (default 0.1; 0 = no low-pass)",
    )
    func.add_argument(
        "--motion-correction",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: only for a raw (not preproc) BOLD",
    )
    func.add_argument(
        "--normalisation",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: affine to MNI unless the BOLD is space-MNI*; off: the BOLD is already in MNI space",
    )
    func.add_argument(
        "--chunk-volumes", type=int, default=64, metavar="N", help="BOLD volumes held in memory at once (default 64)"
    )
    func.set_defaults(func=options.locked_stage(run_func, "func"))


def run_anat(args: argparse.Namespace) -> int:
    from dtb.preproc.anat import AnatSettings
    from dtb.preproc.anat_stage import run_anat_stage

    settings = AnatSettings(grid_mm=args.grid_mm, work_mm=args.work_mm, registration=args.registration)
    stage = run_anat_stage(
        args.bids,
        args.participant_label,
        args.out,
        settings=settings,
        total_neurons=args.total_neurons,
        atlas=args.atlas,
        atlas_labels=args.atlas_labels,
        atlas_name=args.atlas_name,
    )
    anatomy = stage.anatomy
    print(
        f"dtb anat: {len(stage.voxels)} voxels, {int(stage.counts.sum())} neurons, grey matter "
        f"{anatomy.grey_matter_mm3 / 1000:.1f} cm^3 ({anatomy.volume_space} space) -> {Path(args.out) / 'dtb'}"
    )
    return 0


def run_func(args: argparse.Namespace) -> int:
    from dtb.preproc.func import FuncSettings
    from dtb.preproc.func_stage import run_func_stage

    settings = FuncSettings(
        high_pass_hz=args.high_pass or None,
        low_pass_hz=args.low_pass or None,
        motion_correction=args.motion_correction,
        normalisation=args.normalisation,
        volumes_per_chunk=args.chunk_volumes,
    )
    stage = run_func_stage(
        args.bids,
        args.participant_label,
        args.out,
        settings=settings,
        task=args.task,
        grid_mm=args.grid_mm,
        atlas=args.atlas,
        atlas_labels=args.atlas_labels,
        atlas_name=args.atlas_name,
    )
    result = stage.functional
    print(
        f"dtb func: {result.voxel_timeseries.shape[0]} volumes (TR {result.repetition_time:g} s), "
        f"{result.voxel_timeseries.shape[1]} voxels"
    )
    return 0
