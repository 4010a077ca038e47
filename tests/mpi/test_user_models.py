"""A model class the job file has never heard of, with batch normalisation, on real ranks: through
``mpidecent.train`` (callables from this module) and through an import path, with bit-exact resume;
the saved models; each node's test metrics."""

import numpy as np
import pytest
import torch
from mpi4py import MPI

import mpidecent
from mpidecent.comm.world import init_mpi
from mpidecent.config import load_text
from mpidecent.errors import EXIT_OK, EXIT_PREEMPTED, JobError
from mpidecent.io.checkpoint import checkpoint_path, read_checkpoint
from mpidecent.runner import Runner
from mpitools import all_ranks, build_runner, plan_of, results, stop_at, untimed_series


class BatchNormNet(torch.nn.Module):
    """Not a built-in: a linear layer, batch normalisation (local running statistics), a read-out."""

    def __init__(self, input_shape, classes, width=8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), width),
                                       torch.nn.BatchNorm1d(width), torch.nn.ReLU(), torch.nn.Linear(width, classes))

    def forward(self, x):
        return self.net(x)


def clusters(samples=300, seed=3):
    """Three Gaussian clusters of 2×3 'images', 60 test samples of their own."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, samples + 60)
    x = rng.standard_normal((samples + 60, 2, 3)) + 1.5 * y[:, None, None]
    return x[:samples], y[:samples], x[samples:], y[samples:]


JOB = {
    "run": {"name": "own", "steps": 24, "log_every": 6, "seed": 2, "dtype": "float32"},
    "topology": {"kind": "ring"},
    "algorithm": {"name": "dpsgd", "lr": 0.1},
    "data": {"batch_size": 16, "partition": "sorted"},
    "model": {"width": 6, "l2": 0.0},
}


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
def test_train_runs_the_callers_model_and_data_and_saves_the_models(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    out = mpi_tmp_path / "own.h5"
    job = {**JOB, "run": {**JOB["run"], "save_model": "all"}}
    result = mpidecent.train(job, model=BatchNormNet, data=clusters, out=str(out), quiet=True)
    assert result.status == "completed" and result.steps == 24 and result.results == str(out)
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    seen = (result.status, result.model, result.metrics["test_accuracy"], result.metrics["avg_model_loss"])
    assert all_ranks(seen == comm.bcast(seen, root=0))
    stored = results(out)
    assert "name = \"test_user_models:BatchNormNet\"" in stored["attrs"]["job"]
    # each node's own model on the whole test set, beside the average model's
    assert stored["rank/test_accuracy"].shape == (5, comm.size) and np.all(np.isfinite(stored["rank/test_accuracy"]))
    assert stored["attrs"]["model_file"] == "own.model.pt"
    comm.Barrier()
    if comm.rank == 0:
        average = torch.load(result.model, weights_only=True)
        nodes = [torch.load(str(out)[:-3] + f".node{r}.model.pt", weights_only=True) for r in range(comm.size)]
        net = BatchNormNet((2, 3), 3, width=6)
        net.load_state_dict(average)  # the user's class takes it back
        for name, tensor in average.items():
            stack = torch.stack([n[name].double() for n in nodes])
            if tensor.is_floating_point():
                np.testing.assert_allclose(tensor.double(), stack.mean(0), rtol=1e-5, atol=1e-6, err_msg=name)
            else:
                assert torch.equal(tensor, nodes[0][name])
        # the nodes' running statistics differ (local, from label-sorted shards): the average is a real mean
        assert not torch.equal(nodes[0]["net.2.running_mean"], nodes[-1]["net.2.running_mean"])
    with pytest.raises(JobError, match=r"\[model\] name = 'test_user_models:BatchNormNet' outputs shape"):
        mpidecent.train({**job, "data": {**job["data"], "task": "binary"}}, model=BatchNormNet,
                        data=lambda: (np.zeros((40, 2)), np.arange(40) % 2), out=str(mpi_tmp_path / "b.h5"),
                        quiet=True)


IMPORT_PATH_JOB = """
[run]
name = "bn"
seed = 4
steps = 30
log_every = 6
[topology]
kind = "chord_ring"
chords = 2
[algorithm]
name = "quantized_push_sum"
lr = 0.05
[compression]
name = "qsgd"
levels = 8
[data]
name = "test_user_models:clusters"
batch_size = 8
[model]
name = "test_user_models:BatchNormNet"
width = 5
l2 = 0.0
"""


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
def test_an_import_path_model_with_batch_norm_resumes_bit_for_bit(mpi_tmp_path, monkeypatch, comm):
    """The checkpoint holds each node's batch-norm buffers next to the algorithm's state."""
    whole = build_runner(IMPORT_PATH_JOB, mpi_tmp_path / "whole.h5")
    assert whole.run() == EXIT_OK
    out = mpi_tmp_path / "cut.h5"
    stop_at(monkeypatch, 13)
    assert build_runner(IMPORT_PATH_JOB, out).run() == EXIT_PREEMPTED
    monkeypatch.undo()
    job = load_text(IMPORT_PATH_JOB)
    snapshot = read_checkpoint(checkpoint_path(str(out)), comm.rank, comm.size, job.to_toml())
    assert all_ranks("model_buffer:net.2.running_var" in snapshot.state)
    second = Runner(plan_of(job), init_mpi(), str(out), overwrite=False, quiet=True, resume=snapshot)
    assert second.run() == EXIT_OK
    final = {**whole.algorithm.state(), **whole.objective.flat.buffers}
    resumed = {**second.algorithm.state(), **second.objective.flat.buffers}
    assert all_ranks(all(np.array_equal(final[k], resumed[k]) for k in final))
    if comm.rank == 0:
        (a, _), (b, attrs) = untimed_series(whole.out), untimed_series(out)
        different = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]
        assert not different, different
        assert attrs["status"] == "completed"
