"""DMSGD and local momentum, spec properties of specs/momentum-consensus.md."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitools import all_ranks, build_runner, run_job

JOB = """
[run]
steps = 30
seed = 2
[topology]
kind = "ring"
[algorithm]
name = "dmsgd"
lr = 0.2
beta = 0.0
[data]
name = "synthetic_logistic"
samples = 800
features = 20
partition = "sorted"
batch_size = 16
[model]
name = "logistic"
l2 = 0.01
"""


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
def test_dmsgd_with_zero_beta_is_bit_identical_to_dpsgd(mpi_tmp_path):
    """Property 1 (and the same for local momentum)."""
    runners = {name: build_runner(JOB, mpi_tmp_path / f"{name}.h5", [f"algorithm.name={name}"])
               for name in ("dmsgd", "local_momentum", "dpsgd")}
    identical = True
    for t in range(30):
        for runner in runners.values():
            runner.algorithm.step(t)
        reference = runners["dpsgd"].algorithm.x
        identical &= np.array_equal(runners["dmsgd"].algorithm.x, reference)
        identical &= np.array_equal(runners["local_momentum"].algorithm.x, reference)
    assert all_ranks(identical)
    assert all_ranks(np.any(runners["dpsgd"].algorithm.x != 0))


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
def test_mean_dynamics_show_momentum_is_shared_and_mixed(mpi_tmp_path):
    """Property 2: with doubly stochastic Π, m̄_{k+1} = β m̄_k + ḡ_k and x̄_{k+1} = x̄_k − α m̄_{k+1}
    to 1e-12 relative at every step."""
    comm = MPI.COMM_WORLD
    runner = build_runner(JOB, mpi_tmp_path / "dyn.h5", ["algorithm.beta=0.9"])
    algo = runner.algorithm

    def mean(v):
        return comm.allreduce(v.astype(np.float64), op=MPI.SUM) / comm.size

    worst = 0.0
    for t in range(30):
        m_bar, x_bar = mean(algo.m), mean(algo.x)
        algo.step(t)
        g_bar = mean(algo.objective.grads)
        m_next, x_next = mean(algo.m), mean(algo.x)
        expected_m = 0.9 * m_bar + g_bar
        worst = max(worst, np.linalg.norm(m_next - expected_m) / np.linalg.norm(expected_m),
                    np.linalg.norm(x_next - (x_bar - 0.2 * m_next)) / np.linalg.norm(x_next))
    assert worst <= 1e-12, worst


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
def test_dmsgd_sends_exactly_twice_dpsgds_bytes(mpi_tmp_path):
    """Property 4 (traffic): x and m, both full precision, to every neighbour."""
    dmsgd = run_job(JOB, mpi_tmp_path / "d.h5", ["run.steps=5", "algorithm.beta=0.9"])
    dpsgd = run_job(JOB, mpi_tmp_path / "p.h5", ["run.steps=5", "algorithm.name=dpsgd"])
    np.testing.assert_array_equal(dmsgd["rank/bytes_sent"][-1], 2 * dpsgd["rank/bytes_sent"][-1])
    np.testing.assert_array_equal(dmsgd["rank/bits_sent"][-1], 2 * dpsgd["rank/bits_sent"][-1])
    np.testing.assert_array_equal(dmsgd["rank/messages_sent"][-1], dpsgd["rank/messages_sent"][-1])
    np.testing.assert_array_equal(dpsgd["rank/bits_sent"][-1], 5 * 2 * 21 * 64)  # ring: 2 neighbours, d = 21


@pytest.mark.mpi(min_size=8)
@pytest.mark.timeout(240)
def test_better_connected_graphs_agree_more_and_train_further(mpi_tmp_path):
    """Property 4 (ordering) at fixed hyperparameters, n = 8: consensus distance and final loss order
    complete ≤ torus ≤ ring."""
    results = {kind: run_job(JOB, mpi_tmp_path / f"{kind}.h5", ["run.steps=150", "algorithm.beta=0.9",
                                                                f"topology.kind={kind}", "algorithm.lr=0.05"])
               for kind in ("complete", "torus", "ring")}
    consensus = {k: r["global/consensus_distance"][-5:].mean() for k, r in results.items()}
    loss = {k: r["global/avg_model_loss"][-1] for k, r in results.items()}
    assert consensus["complete"] <= consensus["torus"] <= consensus["ring"], consensus
    assert loss["complete"] <= loss["torus"] <= loss["ring"], loss
