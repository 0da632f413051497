"""SPMD worker for tests/sim/test_distributed.py: run under ``mpiexec -n N python -m tests.distributed_worker OUT``.

Builds the small test network of :mod:`tests.distributed_cases`, simulates it in both
layouts (and with every backend available) and, on rank 0, saves the gathered records to
``OUT/<case>.npz`` for the test to compare with a single-process run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dtb.sim.backends import available_backends
from dtb.sim.distributed import DistributedConfig, DistributedSimulation, abort_on_error, mpi_world
from tests.distributed_cases import CASES, new_hyperparameters, records, simulation_kwargs


def main(out: Path) -> None:
    comm = mpi_world()
    with abort_on_error(comm):
        for name, case in CASES.items():
            if available_backends()[case["backend"]] is not None:
                continue
            if case["layout"] == "members" and comm.Get_size() > case["members"]:
                continue

            def make(case=case):
                return DistributedSimulation(
                    comm=comm, config=DistributedConfig(layout=case["layout"]), device="cpu", **simulation_kwargs(case)
                )

            sim = make()
            first = sim.run(case["first_ms"], progress=False, chunk_ms=case["chunk_ms"])
            if case.get("resume"):
                state = sim.state_dict()
                sim = make()
                sim.load_state_dict(state)
                sim.set_hyperparameters(**new_hyperparameters(case["members"]))
            second = sim.run(case["total_ms"] - case["first_ms"], progress=False, chunk_ms=case["chunk_ms"])
            if comm.Get_rank() == 0:
                np.savez(out / f"{name}.npz", **records([first, second]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
