"""The ranks' status agreement between log points (comm/status.py, runner/loop.py): a neighbour run makes no
blocking collective between two log points and starts one non-blocking reduction per step; a stop signal
or a non-finite state on one rank still ends every rank at the same boundary, L = the status lag steps
later at most (or at the next log or checkpoint boundary, whichever comes first)."""

import dataclasses
from collections import defaultdict

import numpy as np
import pytest
from mpi4py import MPI

from mpitools import all_ranks, plan_of, stop_at, untimed_series
from mpidecent.comm.status import status_lag
from mpidecent.comm.world import init_mpi
from mpidecent.config import load_text
from mpidecent.errors import EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED
from mpidecent.io.checkpoint import checkpoint_path, read_checkpoint
from mpidecent.io.reader import read_run
from mpidecent.runner import Runner

STEPS, LOG_EVERY = 30, 25  # a long interval: a chord ring of 4 to 8 ranks has a lag of 3 to 7
JOB = f"""
[run]
steps = {STEPS}
log_every = {LOG_EVERY}
seed = 5
[topology]
kind = "chord_ring"
[algorithm]
name = "quantized_push_sum"
lr = 0.3
[compression]
name = "qsgd"
levels = 8
[data]
samples = 400
features = 10
partition = "sorted"
batch_size = 8
[model]
l2 = 0.01
"""

# Collective calls of an mpi4py communicator: blocking (communicator management included) and not.
BLOCKING = {"Allgather", "Allgatherv", "Allreduce", "Alltoall", "Alltoallv", "Alltoallw", "Barrier", "Bcast",
            "Exscan", "Gather", "Gatherv", "Reduce", "Reduce_scatter", "Reduce_scatter_block", "Scan", "Scatter",
            "Scatterv", "allgather", "allreduce", "alltoall", "barrier", "bcast", "exscan", "gather", "reduce",
            "scan", "scatter", "Neighbor_allgather", "Neighbor_allgatherv", "Neighbor_alltoall",
            "Neighbor_alltoallv", "Neighbor_alltoallw", "neighbor_allgather", "neighbor_alltoall", "Dup",
            "Split", "Create", "Create_dist_graph", "Create_dist_graph_adjacent", "Free"}
NONBLOCKING = {"Iallgather", "Iallgatherv", "Iallreduce", "Ialltoall", "Ialltoallv", "Ialltoallw", "Ibarrier",
               "Ibcast", "Iexscan", "Igather", "Igatherv", "Ireduce", "Ireduce_scatter", "Ireduce_scatter_block",
               "Iscan", "Iscatter", "Iscatterv", "Ineighbor_allgather", "Ineighbor_allgatherv",
               "Ineighbor_alltoall", "Ineighbor_alltoallv", "Ineighbor_alltoallw", "Idup"}
NEW_COMMUNICATOR = {"Dup", "Split", "Create", "Create_dist_graph", "Create_dist_graph_adjacent"}


def _counting(base: type) -> type:
    """A subclass of the mpi4py communicator class ``base`` whose collectives append (the runner's step
    boundary, name) to ``self.calls`` before running; communicators it creates count into the same list."""

    def recorder(name: str):
        def call(self, *args, **kwargs):
            self.calls.append((self.clock(), name))
            result = getattr(base, name)(self, *args, **kwargs)
            if name in NEW_COMMUNICATOR and isinstance(result, MPI.Comm) and result != MPI.COMM_NULL:
                result = _count(result, self.clock, self.calls)
            return result

        return call

    names = (BLOCKING | NONBLOCKING) & set(dir(base))
    return type(f"Counting{base.__name__}", (base,), {name: recorder(name) for name in names})


_CLASSES: dict[type, type] = {}


def _count(comm: MPI.Comm, clock, calls: list) -> MPI.Comm:
    """The same MPI communicator (one handle) as a counting object (mpi4py makes a counting
    communicator's ``Dup`` of its own class already: it only needs the list)."""
    if type(comm) not in _CLASSES.values():
        comm = _CLASSES.setdefault(type(comm), _counting(type(comm)))(comm)
    comm.clock, comm.calls = clock, calls
    return comm


def count_collectives(runner: Runner) -> tuple[list, list]:
    """Replace every communicator reachable from the runner's objects (its own, the collectives', the
    algorithm's graph communicator and exchanges...) by a counting one. Returns (calls, communicators
    found where they could not be replaced: inside tuples)."""
    calls: list = []
    clock = lambda: runner.step_now  # noqa: E731 - the boundary the loop is at (the step it runs next)
    seen: set[int] = set()
    stuck: list = []

    def visit(obj, depth: int) -> None:
        if id(obj) in seen or depth > 10:
            return
        seen.add(id(obj))
        if isinstance(obj, dict):
            for key, value in list(obj.items()):
                if isinstance(value, MPI.Comm):
                    obj[key] = _count(value, clock, calls)
                else:
                    visit(value, depth + 1)
        elif isinstance(obj, list):
            for i, value in enumerate(obj):
                if isinstance(value, MPI.Comm):
                    obj[i] = _count(value, clock, calls)
                else:
                    visit(value, depth + 1)
        elif isinstance(obj, (tuple, set, frozenset)):
            stuck.extend(v for v in obj if isinstance(v, MPI.Comm))
            for value in obj:
                visit(value, depth + 1)
        elif hasattr(obj, "__self__") and callable(obj):  # a bound method (e.g. a connection's closers)
            visit(obj.__self__, depth + 1)
        elif type(obj).__module__.startswith("mpidecent") and hasattr(obj, "__dict__"):
            for key, value in list(vars(obj).items()):
                if isinstance(value, MPI.Comm):
                    object.__setattr__(obj, key, _count(value, clock, calls))
                else:
                    visit(value, depth + 1)

    visit(runner, 0)
    return calls, stuck


def _runner(out, overrides=(), status=None, resume=None) -> Runner:
    job = load_text(JOB, overrides=list(overrides))
    return Runner(plan_of(job), init_mpi(), str(out), overwrite=resume is None, quiet=True, resume=resume,
                  status=status)


def _agreed_boundary(seen: int, lag: int, checkpoint_every: int = 0) -> int:
    """Where a flag raised at boundary ``seen`` is acted on: ``lag`` boundaries later, or at the next log or
    checkpoint boundary if that comes first (the loop's rule)."""
    meetings = [b for b in range(seen, STEPS + 1) if b % LOG_EVERY == 0 or b == STEPS
                or (checkpoint_every and b % checkpoint_every == 0)]
    return min(seen + lag, meetings[0])


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
def test_no_blocking_collective_between_log_points_and_one_reduction_started_per_step(mpi_tmp_path):
    runner = _runner(mpi_tmp_path / "count.h5")
    assert runner.status_mode == "pipelined" and runner.status_lag == status_lag(runner.plan.graph) >= 1
    calls, stuck = count_collectives(runner)
    assert not stuck
    assert runner.run() == EXIT_OK
    by_boundary = defaultdict(list)
    for boundary, name in calls:
        by_boundary[boundary].append(name)
    logs = [b for b in range(1, STEPS + 1) if b % LOG_EVERY == 0 or b == STEPS]
    between = [b for b in range(1, STEPS) if b not in logs]
    blocking = {b: [n for n in by_boundary[b] if n in BLOCKING] for b in between}
    started = {b: [n for n in by_boundary[b] if n in NONBLOCKING] for b in between}
    assert all_ranks(not any(blocking.values())), blocking
    assert all_ranks(all(names == ["Iallreduce"] for names in started.values())), started
    for b in logs:  # the meeting points still agree (and compute the log row) with blocking reductions
        assert all_ranks("Allreduce" in by_boundary[b] and "Iallreduce" not in by_boundary[b]), by_boundary[b]


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
def test_the_blocking_benchmark_switch_reduces_after_every_step(mpi_tmp_path):
    """The reference the bench compares with; also shows that the counting sees the loop's reductions."""
    runner = _runner(mpi_tmp_path / "blocking.h5", status="blocking")
    assert runner.status_mode == "blocking" and runner.status_lag == 0
    calls, _ = count_collectives(runner)
    assert runner.run() == EXIT_OK
    per_step = defaultdict(list)
    for boundary, name in calls:
        per_step[boundary].append(name)
    assert all_ranks(all(per_step[b].count("Allreduce") == 1 and "Iallreduce" not in per_step[b]
                         for b in range(1, STEPS) if b % LOG_EVERY))


# (the step during which rank 1 gets the signal, the status mode): mid-interval, and close enough to the
# log point at 25 that the log point comes before boundary + lag; the blocking switch acts at once.
STOPS = [(12, "pipelined"), (22, "pipelined"), (12, "blocking")]


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("during, mode", STOPS)
def test_a_stop_on_one_rank_ends_every_rank_at_the_agreed_boundary_and_resumes_bit_identical(
        during, mode, mpi_tmp_path, monkeypatch):
    comm = MPI.COMM_WORLD
    whole = _runner(mpi_tmp_path / "whole.h5", status=mode)
    assert whole.run() == EXIT_OK
    out = mpi_tmp_path / "cut.h5"
    stop_at(monkeypatch, during)
    first = _runner(out, status=mode)
    seen = during + 1
    expected = _agreed_boundary(seen, first.status_lag) if mode == "pipelined" else seen
    if (during, mode) == (12, "pipelined"):
        assert seen < expected < LOG_EVERY  # the case this test is about: acted on mid-interval
    assert all_ranks(first.run() == EXIT_PREEMPTED)
    assert all_ranks(first.result.step == expected and first.result.status == "preempted")
    assert all_ranks(f"at step {expected}: checkpoint" in first.result.message)
    monkeypatch.undo()
    job = load_text(JOB)
    snapshot = read_checkpoint(checkpoint_path(str(out)), comm.rank, comm.size, job.to_toml())
    rows = 1 + expected // LOG_EVERY  # step 0 and every log point up to the stop
    assert snapshot.step == expected and snapshot.results_rows == rows
    assert len(snapshot.counters["losses"]) == expected % LOG_EVERY
    second = _runner(out, status=mode, resume=snapshot)
    assert second.run() == EXIT_OK
    final, resumed = whole.algorithm.state(), second.algorithm.state()
    assert all_ranks(all(np.array_equal(final[k], resumed[k]) for k in final))
    if comm.rank == 0:
        (a, _), (b, attrs) = untimed_series(whole.out), untimed_series(out)
        assert a.keys() == b.keys()
        different = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]
        assert not different, different
        assert attrs["status"] == "completed" and list(attrs["resumed_at"]) == [expected]


def _poison_at(runner: Runner, step: int, rank: int = 2) -> None:
    """Make ``rank``'s model non-finite during ``step`` (it is seen at boundary step + 1)."""
    if MPI.COMM_WORLD.rank != rank:
        return
    real = runner.algorithm.step

    def step_fn(t: int):
        stats = real(t)
        if t == step:
            runner.algorithm.state()["x"][:] = np.nan
            stats = dataclasses.replace(stats, nonfinite=True)
        return stats

    runner.algorithm.step = step_fn


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["pipelined", "blocking"])
def test_a_rank_going_non_finite_mid_interval_stops_every_rank_at_the_agreed_boundary(mode, mpi_tmp_path):
    out = mpi_tmp_path / f"nan-{mode}.h5"
    runner = _runner(out, ["run.checkpoint_every=20"], status=mode)
    _poison_at(runner, 12)
    seen = 13
    expected = _agreed_boundary(seen, runner.status_lag, 20) if mode == "pipelined" else seen
    assert all_ranks(runner.run() == EXIT_DIVERGED)
    message = runner.result.message
    assert all_ranks(runner.result.step == expected and runner.result.status == "diverged")
    assert all_ranks(message.startswith(f"run diverged at step {expected}: non-finite values on rank"))
    ranks = message.split("non-finite values on rank", 1)[1].lstrip("s ").split(" (")[0].split(";")[0]
    assert all_ranks("2" in [r.strip() for r in ranks.split(",")]), message
    assert all_ranks(("(first on rank 2 at step 13)" in message) == (expected > seen)), message
    if MPI.COMM_WORLD.rank == 0:
        run = read_run(str(out))
        assert run.attrs["status"] == "diverged" and int(run.attrs["steps_completed"]) == expected
        assert list(run.steps) == [0, expected]  # the row of the agreed boundary is written
    assert all_ranks(not (mpi_tmp_path / f"nan-{mode}.ckpt.h5").exists())  # no checkpoint after the poison
