"""A user's loader that returns the whole set must return the same set on every rank: ranks whose
arrays differ (an unseeded shuffle, a rank-dependent file) are refused at set-up in one line on
every rank; loaders that take rank and world_size shard the data themselves and are exempt."""

import numpy as np
import pytest
from mpi4py import MPI

import mpidecent
from mpidecent.errors import JobError
from mpitools import all_ranks

JOB = {
    "run": {"name": "loader", "steps": 2, "log_every": 2},
    "topology": {"kind": "ring"},
    "algorithm": {"name": "dpsgd", "lr": 0.1},
    "data": {"batch_size": 4, "task": "binary"},
    "model": {"name": "logistic"},
}


def _blobs(seed=0, samples=48):
    rng = np.random.default_rng(seed)
    y = np.arange(samples) % 2
    return rng.standard_normal((samples, 3)) + y[:, None], y


def shuffled_per_rank():
    """The same samples in another order on every rank, as an unseeded shuffle gives."""
    x, y = _blobs()
    order = np.random.default_rng(100 + MPI.COMM_WORLD.rank).permutation(len(y))
    return x[order], y[order]


def own_rows(rank, world_size):
    """A shard loader: each rank's own (different) rows, as it should be."""
    x, y = _blobs(seed=rank)
    return x[:12], y[:12]


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(120)
def test_ranks_that_load_different_sets_are_refused_in_one_line(mpi_tmp_path):
    with pytest.raises(JobError) as err:
        mpidecent.train(JOB, data=shuffled_per_rank, out=str(mpi_tmp_path / "a.h5"), quiet=True)
    message = str(err.value)
    assert all_ranks(message == MPI.COMM_WORLD.bcast(message, root=0))
    assert all_ranks(message.startswith(
        "[data] name = 'test_loader_agreement:shuffled_per_rank': ranks 0 and 1 loaded different "
        "train features (checksum "))
    assert all_ranks("seed the shuffle" in message and "rank and world_size" in message)
    assert all_ranks(not (mpi_tmp_path / "a.h5").exists())


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(120)
def test_a_loader_that_takes_rank_and_world_size_is_exempt(mpi_tmp_path):
    result = mpidecent.train(JOB, data=own_rows, out=str(mpi_tmp_path / "b.h5"), quiet=True)
    assert all_ranks(result.status == "completed")
