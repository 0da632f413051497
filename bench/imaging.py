"""Wall time and peak memory of the imaging stages (anat on the 1 mm MNI T1, func on a long BOLD), run
through their stage functions (dtb.preproc.anat_stage, dtb.preproc.func_stage).

Each case runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own.
Writes a JSON list of results.

    python bench/imaging.py --out bench/results/imaging.json [--cases anat_none anat_syn func_long]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "anat_none": "1 mm MNI T1 as T1w, already normalised (registration none), HMRF at 2 mm, 3 mm grid",
    "anat_syn": "1 mm MNI T1 as a native T1w: median_otsu + dipy affine + SyN at 2 mm, HMRF at 2 mm, 3 mm grid",
    "func_long": "synthetic space-MNI BOLD 61x73x61 (3 mm) x 1200 volumes (1.3 GB float32), 64-volume blocks",
    "func_native": "nibabel example4d (native, 2 volumes): motion correction + affine normalisation to MNI",
}


def _bids(root: Path) -> Path:
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.9.0"}))
    return root


def run_case(case: str, work: Path) -> dict:
    import nibabel as nib
    import numpy as np

    from dtb.preproc.anat import AnatSettings
    from dtb.preproc.anat_stage import run_anat_stage
    from dtb.preproc.func import FuncSettings
    from dtb.preproc.func_stage import run_func_stage

    bids = _bids(work / "bids")
    out = work / "out"
    if case.startswith("anat"):
        from nilearn.datasets import load_mni152_template

        t1 = load_mni152_template(resolution=1)
        (bids / "sub-01" / "anat").mkdir(parents=True)
        nib.save(nib.Nifti1Image(t1.get_fdata().astype(np.float32), t1.affine), bids / "sub-01/anat/sub-01_T1w.nii.gz")
        settings = AnatSettings(registration="none" if case == "anat_none" else "syn")

        def stage():
            return run_anat_stage(bids, "01", out, settings=settings, total_neurons=10_000_000)
    elif case == "func_long":
        from nilearn.datasets import load_mni152_template

        grid = load_mni152_template(resolution=3)
        shape = (61, 73, 61)
        n_volumes, tr = 1200, 0.72
        folder = bids / "sub-01" / "func"
        folder.mkdir(parents=True)
        path = folder / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii"
        header = nib.Nifti1Header()
        header.set_data_dtype(np.float32)
        header.set_data_shape((*shape, n_volumes))
        affine = grid.affine.copy()
        affine[:3, 3] += 6.0
        header.set_qform(affine, code=4)
        header.set_sform(affine, code=4)
        header.set_xyzt_units("mm", "sec")
        header.set_zooms((3.0, 3.0, 3.0, tr))
        rng = np.random.default_rng(0)
        with open(path, "wb") as handle:  # write volume by volume: the generator stays small too
            header.write_to(handle)
            handle.write(b"\0" * (int(header.get_data_offset()) - handle.tell()))
            t = np.arange(n_volumes) * tr
            for start in range(0, n_volumes, 100):
                block = 1000 + rng.standard_normal((100, *shape[::-1])).astype(np.float32)
                block += 5 * np.sin(2 * np.pi * 0.05 * t[start : start + 100])[:, None, None, None].astype(np.float32)
                handle.write(block.tobytes())  # F order on disk = C order of the reversed shape
        (folder / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.json").write_text(
            json.dumps({"RepetitionTime": tr})
        )

        def stage():
            return run_func_stage(bids, "01", out, settings=FuncSettings(volumes_per_chunk=64))
    elif case == "func_native":
        folder = bids / "sub-01" / "func"
        folder.mkdir(parents=True)
        src = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
        (folder / "sub-01_task-rest_bold.nii.gz").write_bytes(src.read_bytes())
        (folder / "sub-01_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))

        def stage():  # 2 volumes: no band-pass possible
            return run_func_stage(bids, "01", out, settings=FuncSettings(high_pass_hz=None, low_pass_hz=None))
    else:
        raise SystemExit(f"unknown case {case}")
    start = time.perf_counter()
    written = stage().written
    wall = time.perf_counter() - start
    return {"case": case, "what": CASES[case], "files": len(written), "wall_s": round(wall, 2)}


def _machine() -> str:
    """The CPU model (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as work:
            result = run_case(args.one, Path(work))
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        result["cpu_s"] = round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1)
        print(json.dumps(result))
        return 0
    results = []
    machine = {"machine": _machine(), "cores": os.cpu_count()}
    for case in args.cases:
        load = os.getloadavg()[0]
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        done = subprocess.run(
            [sys.executable, __file__, "--out", str(args.out), "--one", case], capture_output=True, text=True
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"case": case, "error": done.stderr[-2000:]}
        result.update(machine, date=date, load_at_start=round(load, 1))
        print(json.dumps(result), flush=True)
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
