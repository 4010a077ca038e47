"""Local steps over the all-reduce ([outer] with allreduce_sgd): the spec's property 1 and the all-reduce's
bits per round, under mpirun (the in-memory twin has no all-reduce). Gossip forms: tests/unit/test_local_steps.py
and the catalog cases of tests/mpi/test_memory_twin.py and test_checkpoint.py."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitools import all_ranks, build_runner

JOB = """
[run]
steps = 15
seed = 2
[algorithm]
name = "allreduce_sgd"
lr = 0.3
[data]
name = "synthetic_logistic"
samples = 400
features = 10
partition = "sorted"
batch_size = 8
[model]
name = "logistic"
l2 = 0.01
"""


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(120)
def test_one_inner_step_per_round_with_outer_sgd_of_step_one_is_allreduce_sgd(mpi_tmp_path):
    plain = build_runner(JOB, mpi_tmp_path / "plain.h5")
    rounds = build_runner(JOB, mpi_tmp_path / "rounds.h5", ["outer.every=1", "outer.optimizer=sgd", "outer.lr=1",
                                                            "outer.momentum=0"])
    worst = 0.0
    for t in range(15):
        plain.algorithm.step(t)
        rounds.algorithm.step(t)
        worst = max(worst, float(np.max(np.abs(plain.algorithm.model_view() - rounds.algorithm.model_view()))))
    moved = float(np.max(np.abs(plain.algorithm.model_view())))
    plain.connection.close()
    rounds.connection.close()
    assert all_ranks(worst <= 1e-12 and moved > 0.05), (worst, moved)


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay", [0, 2])
def test_diloco_sends_one_all_reduce_of_the_pseudo_gradient_per_round(delay, mpi_tmp_path):
    comm = MPI.COMM_WORLD
    runner = build_runner(JOB, mpi_tmp_path / f"diloco{delay}.h5",
                          ["outer.every=4", f"outer.delay={delay}", "algorithm.optimizer=adam", "algorithm.lr=0.05"])
    stats = [runner.algorithm.step(t) for t in range(15)]
    runner.algorithm.drain()
    dim = runner.algorithm.objective.dim
    ring = 2 * (comm.size - 1) * -(-dim // comm.size) * 64  # bits of a ring all-reduce of d float64 entries
    applied = [t for t in range(15) if (t + 1 - delay) % 4 == 0 and t + 1 - delay >= 4]
    booked = [t for t, s in enumerate(stats) if s.bits_sent]
    runner.connection.close()
    assert all_ranks(booked == applied and all(stats[t].bits_sent == ring for t in applied))
    assert all_ranks(int(runner.algorithm.rounds[0]) == len(applied))
    # the all-reduce keeps every replica of the outer model identical (θ differ: local steps since)
    phis = comm.allgather(runner.algorithm.phi_model.copy())
    assert all(np.array_equal(phis[0], p) for p in phis[1:])
