"""SPMD worker for tests/twin/test_twin_distributed.py: ``mpiexec -n N python -m tests.twin_distributed_worker OUT``.

Runs the small assimilation of :mod:`tests.twin_distributed_cases` on the ranks in both ensemble
layouts (``OUT/members.zarr``, ``OUT/neurons.zarr``) and once killed after a few windows and
resumed (``OUT/resumed.zarr``, members layout), and the h calibration of that network
(``OUT/calibration.json``), for the test to compare with one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dtb.sim.distributed import abort_on_error, mpi_world
from tests.twin_distributed_cases import assimilation, calibration


def main(out: Path) -> None:
    comm = mpi_world()
    with abort_on_error(comm):
        for layout in ("members", "neurons"):
            hmda, observed = assimilation(comm=comm, layout=layout)
            hmda.run(observed, out / f"{layout}.zarr", progress="none", comm=comm)
        hmda, observed = assimilation(comm=comm, layout="members")
        hmda.run(observed, out / "resumed.zarr", progress="none", comm=comm, stop_after=7)
        hmda, observed = assimilation(comm=comm, layout="members")
        hmda.run(observed, out / "resumed.zarr", progress="none", comm=comm, resume=True)
        measured = calibration(comm=comm)
        if comm.Get_rank() == 0:
            (out / "calibration.json").write_text(json.dumps(measured.describe()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
