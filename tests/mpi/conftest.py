"""Fixtures of the MPI tests (run under mpirun with --with-mpi; see scripts/run_tests.sh)."""

import pytest
from mpi4py import MPI


@pytest.fixture
def comm():
    return MPI.COMM_WORLD
