"""Fixtures of the workflow tests: the local SLURM cluster (started once per session when absent)."""

from tests.slurm_cluster import local_slurm  # noqa: F401  (a session fixture, shared by the workflow tests)
