"""Checkpoints and resume (io/checkpoint.py, runner): bit-exact resume for every case the catalog
declares (``AlgorithmSpec.test_cases``; an algorithm whose declaration names another resume test,
``resume_tested_by``, is checked there), periodic checkpoints, and refusals of unusable checkpoints."""

import shutil

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from catalog_cases import catalog_cases, resume_tested_here
from mpitools import all_ranks, build_runner, plan_of, stop_at, untimed_series
from mpidecent.comm.world import init_mpi
from mpidecent.config import load_text
from mpidecent.errors import EXIT_OK, EXIT_PREEMPTED, JobError
from mpidecent.io.checkpoint import checkpoint_path, read_checkpoint
from mpidecent.runner import Runner

# The base job; each case adds its algorithm, its pattern's graph and its overrides (catalog_cases.py).
JOB = """
[run]
steps = 23
log_every = 5
seed = 5
[algorithm]
lr = 0.3
[data]
samples = 400
features = 10
partition = "sorted"
batch_size = 8
[model]
l2 = 0.01
"""
# The periodic-checkpoint test's job: quantized push-sum, 8-level qsgd, on a chord ring.
PERIODIC = ["algorithm.name=quantized_push_sum", "topology.kind=chord_ring", "compression.name=qsgd",
            "compression.levels=8", "run.checkpoint_every=5"]


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, overrides", catalog_cases(resume_tested_here))
def test_resume_is_bit_identical_to_an_uninterrupted_run(name, overrides, mpi_tmp_path, monkeypatch):
    comm = MPI.COMM_WORLD
    whole = build_runner(JOB, mpi_tmp_path / f"{name}-whole.h5", overrides)
    assert whole.run() == EXIT_OK
    out = mpi_tmp_path / f"{name}-cut.h5"
    stop_at(monkeypatch, 10)  # seen at boundary 11, mid-interval: the checkpoint carries partial-interval losses
    first = build_runner(JOB, out, overrides)
    # Where the ranks agree on it (runner/loop.py): status_lag boundaries later, or at the log point 15 if
    # that comes first; at once with the blocking benchmark switch; at 15 for master/worker and async gossip.
    stopped = {"pipelined": min(11 + first.status_lag, 15), "blocking": 11, "boundaries": 15}[first.status_mode]
    assert first.run() == EXIT_PREEMPTED
    monkeypatch.undo()
    job = load_text(JOB, overrides=overrides)
    snapshot = read_checkpoint(checkpoint_path(str(out)), comm.rank, comm.size, job.to_toml())
    assert snapshot.step == stopped and snapshot.results_rows == 3 + (stopped == 15)
    assert len(snapshot.counters["losses"]) == stopped % 5
    stateful = job.algorithm.get("optimizer", "sgd") != "sgd"
    assert any(k.startswith("optimizer_") for k in snapshot.state) == stateful
    assert not stateful or (list(snapshot.state["optimizer_steps"]) == [stopped]
                            and np.any(snapshot.state["optimizer_m"]))
    second = Runner(plan_of(job), init_mpi(), str(out), overwrite=False, quiet=True, resume=snapshot)
    assert second.run() == EXIT_OK
    final, resumed = whole.algorithm.state(), second.algorithm.state()
    assert all_ranks(all(np.array_equal(final[k], resumed[k]) for k in final))
    assert all_ranks(np.array_equal(whole.algorithm.model_view(), second.algorithm.model_view()))
    if comm.rank == 0:
        (a, attrs_a), (b, attrs_b) = untimed_series(whole.out), untimed_series(out)
        assert a.keys() == b.keys()
        different = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]
        assert not different, different
        assert attrs_b["status"] == "completed" and list(attrs_b["resumed_at"]) == [stopped]


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
def test_periodic_checkpoints_and_refusals(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    out = mpi_tmp_path / "periodic.h5"
    runner = build_runner(JOB, out, PERIODIC)
    assert runner.run() == EXIT_OK
    path = checkpoint_path(str(out))
    job = load_text(JOB, overrides=PERIODIC)
    snapshot = read_checkpoint(path, comm.rank, comm.size, job.to_toml())
    assert snapshot.step == 20 and snapshot.results_rows == 5  # the newest before the end (23)
    assert all_ranks(not (mpi_tmp_path / "periodic.ckpt.h5.tmp").exists())

    def refusal(path_, world=comm.size, toml=job.to_toml()) -> str:
        try:
            read_checkpoint(str(path_), comm.rank, world, toml)
        except JobError as err:
            return str(err)
        return ""

    assert f"written by {comm.size} ranks but {comm.size + 1} were started" in refusal(path, world=comm.size + 1)
    other = load_text(JOB, overrides=[*PERIODIC, "algorithm.lr=0.2"]).to_toml()
    assert "the job differs from the one checkpointed" in refusal(path, toml=other) and "lr = 0.2" in refusal(
        path, toml=other)
    assert "no checkpoint" in refusal(mpi_tmp_path / "nope.ckpt.h5")
    if comm.rank == 0:  # damaged copies: a flipped byte in rank 2's model row, and a truncated file
        shutil.copy(path, mpi_tmp_path / "flipped.h5")
        with h5py.File(mpi_tmp_path / "flipped.h5", "r+") as f:
            f["state/x"][2, 0] += 1e-9
        data = open(path, "rb").read()
        open(mpi_tmp_path / "truncated.h5", "wb").write(data[: len(data) // 2])
    comm.Barrier()
    flipped = refusal(mpi_tmp_path / "flipped.h5")
    assert ("state/x of rank 2 fails its checksum (corrupt); nothing was changed" in flipped) == (comm.rank == 2)
    assert "is corrupt or truncated" in refusal(mpi_tmp_path / "truncated.h5")
