"""DMSGD and local momentum, property 4 (ordering by graph) of docs/algorithms/momentum.md; the
other properties run on simulated nodes: tests/unit/test_neighbor_algorithms.py."""

import pytest

from mpitools import run_job

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
