"""What a log point's evaluation costs and computes (runner/metrics.py, [run] eval_every and eval).

``log_row`` is collective; here n simulated ranks (``Simulation.of_plan``: every rank's real data, objective
and algorithm) call it from one thread each over ``ThreadCollectives``, an in-process stand-in for the MPI
reductions that sums in rank order. The MPI runs themselves (the loop's cadence, the results file, the
report) are in tests/mpi/test_eval_cost.py.

Tolerances of "reduce" against "allreduce" (docs/results-format.md states them):

- x̄: the float32 models are summed in float32 (rank order here, MPI's tree under mpirun); each entry
  of the sum is off by at most (n−1)·u·Σ_i |x_ij|, u = 2⁻²⁴ (float64 models: u = 2⁻⁵³), so the test
  metrics of x̄ agree to rounding: the same test accuracy up to one test sample whose prediction flips
  (none here), the test loss to 1e-5 relative (float32) or 1e-12 (float64);
- consensus distance: (1/n) Σ_i ‖x_i‖² − ‖x̄‖² differs from (1/n) Σ_i ‖x_i − x̄‖² by at most
  2(n−1)·u·Σ_j |x̄_j|·m_j + ((n−1)·u)²·Σ_j m_j² (m_j = (1/n) Σ_i |x_ij|) plus float64 rounding of the
  norms, 4·d·2⁻⁵³·(1/n) Σ_i ‖x_i‖² (``consensus_tolerance``).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from mpidecent.config import load_text
from mpidecent.errors import JobError
from mpidecent.learning.problems import LocalEval
from mpidecent.plan import plan_job
from mpidecent.runner.metrics import (EVAL_SERIES, Totals, eval_series, evaluates, health_series, log_row,
                                      network_optimum)
from mpidecent.runner.simulate import Simulation

pytestmark = pytest.mark.timeout(300)

N = 4

LOGISTIC = """
[run]
steps = 40
log_every = 10
seed = 3
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
lr = 0.5
[data]
name = "synthetic_logistic"
samples = 400
features = 12
partition = "sorted"
batch_size = 16
test_fraction = 0.25
[model]
name = "logistic"
l2 = 0.01
"""

MLP = """
[run]
steps = 40
log_every = 10
seed = 5
dtype = "float32"
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
lr = 0.1
[data]
name = "digits"
partition = "iid"
batch_size = 16
test_fraction = 0.2
[model]
name = "mlp"
hidden = [16]
l2 = 0.0001
"""


# ---- n ranks in one process ---------------------------------------------------------------------------


class _World:
    def __init__(self, n: int) -> None:
        self.n = n
        self.barrier = threading.Barrier(n, timeout=120)
        self.slots: list = [None] * n


class _FakeComm:
    """The MPI ``Reduce`` that ``Collectives.reduce_sum`` makes (``log_row``'s "reduce" form), counted."""

    def __init__(self, owner: "ThreadCollectives") -> None:
        self.owner = owner
        self.rank = owner.rank
        self.reduces = 0

    def Reduce(self, sendbuf, recvbuf, op=None, root=0):  # noqa: N802 (mpi4py's name)
        self.reduces += 1
        values = self.owner._exchange(sendbuf)
        if self.rank == root:
            total = values[0].copy()  # in the buffer's own dtype, as MPI sums it
            for v in values[1:]:
                total += v
            recvbuf[...] = total


class ThreadCollectives:
    """``comm.protocols.Collectives`` for ranks that are threads of this process: each call deposits this
    rank's buffer, every rank reads all of them and reduces them in rank order. Counts the bytes of
    d-sized buffers handed to it (``model_bytes``)."""

    def __init__(self, world: _World, rank: int, dim: int) -> None:
        self.world, self.rank, self.size, self.dim = world, rank, world.n, dim
        self.comm = _FakeComm(self)
        self.model_bytes = 0

    def _exchange(self, array: np.ndarray) -> list[np.ndarray]:
        array = np.asarray(array)
        if array.size == self.dim:
            self.model_bytes += array.nbytes
        self.world.slots[self.rank] = np.array(array, copy=True)
        self.world.barrier.wait()
        values = list(self.world.slots)
        self.world.barrier.wait()
        return values

    def reduce_sum(self, array: np.ndarray) -> np.ndarray | None:
        total = np.empty_like(array) if self.rank == 0 else None
        self.comm.Reduce(array, total, root=0)
        return total

    def allreduce_sum(self, array: np.ndarray) -> None:
        values = self._exchange(array)
        total = values[0].copy()
        for v in values[1:]:
            total += v
        array[...] = total

    def allreduce_max(self, array: np.ndarray) -> None:
        values = self._exchange(array)
        array[...] = np.max(np.stack(values), axis=0)

    def broadcast(self, array: np.ndarray) -> None:
        array[...] = self._exchange(array)[0]

    def sum_scalars(self, *values: float) -> np.ndarray:
        buf = np.array(values, dtype=np.float64)
        self.allreduce_sum(buf)
        return buf

    def barrier(self) -> None:
        self.world.barrier.wait()


def _on_every_rank(n: int, work) -> list:
    """``work(rank)`` on n threads at once; their results in rank order (an exception fails the test)."""
    results: list = [None] * n
    errors: list = []

    def body(rank: int) -> None:
        try:
            results[rank] = work(rank)
        except BaseException as err:  # noqa: BLE001 (re-raised below)
            errors.append(err)
            raise

    threads = [threading.Thread(target=body, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


class Network:
    """A job's n ranks after ``steps`` steps (their counters in ``Totals``), ready to log."""

    def __init__(self, text: str, steps: int, overrides=(), n: int = N) -> None:
        self.job = load_text(text, overrides=list(overrides))
        self.sim = Simulation.of_plan(plan_job(self.job, n))
        self.n = n
        self.totals = [Totals() for _ in range(n)]
        for r, stats in enumerate(self.sim.run(steps)):
            for s in stats:
                self.totals[r].add(s)
        self.sim.drain()
        self.step = steps
        nodes = self.sim.nodes
        self.task, self.has_test = nodes[0].data.task, bool(nodes[0].data.num_test)
        self.num_test = nodes[0].data.num_test
        dim = nodes[0].objective.dim
        world = _World(n)
        optimum = _on_every_rank(n, lambda r: network_optimum(
            self.job.model, nodes[r].objective, nodes[r].layout.nodes, ThreadCollectives(world, r, dim)))
        self.optimum = optimum[0]

    def log(self, function=log_row, **kwargs) -> list:
        """Every rank's row of ``function`` (log_row or the reference), on copies of the counters."""
        world = _World(self.n)
        dim = self.sim.nodes[0].objective.dim
        self.collectives = [ThreadCollectives(world, r, dim) for r in range(self.n)]

        def work(rank: int):
            totals = Totals(**{k: (list(v) if isinstance(v, list) else v) for k, v in vars(self.totals[rank]).items()})
            return function(self.step, self.sim.algorithms[rank], self.sim.nodes[rank].objective,
                            self.collectives[rank], totals, 1.5, self.optimum, self.task, self.has_test, **kwargs)

        return _on_every_rank(self.n, work)


def _reference_log_row(step, algorithm, objective, collectives, totals, wall_s, optimum, task, has_test):
    """``log_row`` as it was before [run] eval_every and eval (git history: runner/metrics.py), verbatim
    but for the return value: (rank_values, global_values, max_abs)."""
    size = collectives.size
    model = np.asarray(algorithm.model_view(), dtype=np.float64)
    mean = model.copy()
    collectives.allreduce_sum(mean)
    mean /= size
    local_at_mean = objective.evaluate(mean)
    local_own = objective.evaluate(model)
    test = objective.evaluate_test(mean) or LocalEval(0.0, 0, 0)
    spread = float(np.sum((model - mean) ** 2))
    sums = collectives.sum_scalars(spread, local_at_mean.objective, local_at_mean.correct, local_at_mean.count,
                                   totals.compute_s, totals.comm_s, test.objective * test.count, test.correct,
                                   test.count, float(local_at_mean.count > 0))
    counts = np.array([totals.bits, totals.bytes], dtype=np.int64)
    collectives.allreduce_sum(counts)
    max_abs = np.array([np.max(np.abs(model)) if np.all(np.isfinite(model)) else np.inf])
    collectives.allreduce_max(max_abs)
    avg_loss = sums[1] / sums[9]
    rank_values = {
        "loss": float(np.mean(totals.losses)) if totals.losses else math.nan,
        "local_objective": local_own.objective if local_own.count else math.nan,
        "bits_sent": totals.bits,
        "bytes_sent": totals.bytes,
        "messages_sent": totals.messages,
        "compute_s": totals.compute_s,
        "comm_s": totals.comm_s,
        **algorithm.extra_metrics(),
    }
    global_values = {
        "avg_model_loss": avg_loss,
        "suboptimality": avg_loss - optimum,
        "accuracy": sums[2] / sums[3] if sums[3] and task != "regression" else math.nan,
        "consensus_distance": sums[0] / size,
        "cumulative_bits": int(counts[0]),
        "cumulative_bytes": int(counts[1]),
        "wall_s": wall_s,
        "compute_s_total": sums[4],
        "comm_s_total": sums[5],
    }
    if has_test:
        global_values["test_loss"] = sums[6] / sums[8]
        global_values["test_accuracy"] = sums[7] / sums[8] if task != "regression" else math.nan
        own = objective.evaluate_test_all(model) or LocalEval(math.nan, 0, 0)
        rank_values["test_loss"] = own.objective
        rank_values["test_accuracy"] = own.correct / own.count if own.count and task != "regression" else math.nan
    totals.losses.clear()
    return rank_values, global_values, float(max_abs[0])


def _same(a, b) -> bool:
    """Bit-identical numbers (NaN equals NaN)."""
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def consensus_tolerance(models: np.ndarray) -> float:
    """The bound on |reduce − allreduce| of the consensus distance (module docstring)."""
    n, d = models.shape
    u = 2.0 ** -24 if models.dtype == np.float32 else 2.0 ** -53
    x = models.astype(np.float64)
    mean, m = x.mean(axis=0), np.abs(x).mean(axis=0)
    squares = float(np.mean(np.sum(x * x, axis=1)))
    return (2 * (n - 1) * u * float(np.abs(mean) @ m) + ((n - 1) * u) ** 2 * float(m @ m)
            + 4 * d * 2.0 ** -53 * squares)


# ---- the default stays what it was --------------------------------------------------------------------


@pytest.mark.parametrize("text", [LOGISTIC, MLP], ids=["logistic-float64", "mlp-float32"])
def test_the_default_row_is_bit_identical_to_the_previous_log_row(text):
    net = Network(text, 12)
    rows = net.log()
    reference = net.log(_reference_log_row)
    assert all(c.comm.reduces == 0 for c in net.collectives)
    for row, (rank_values, global_values, max_abs) in zip(rows, reference):
        assert row.evaluated and row.max_abs == max_abs
        assert set(row.rank_values) == set(rank_values)
        assert set(row.global_values) == set(global_values) | {"eval_bytes"}
        for key, value in rank_values.items():
            assert _same(row.rank_values[key], value), key
        for key, value in global_values.items():
            assert _same(row.global_values[key], value), key
        assert row.health is row.global_values  # the divergence rule judges what it judged before
        assert math.isfinite(row.global_values["suboptimality"]) or text is MLP
    # the cost: one float64 copy of the model per rank, counted alike by the row and by the collectives
    dim = net.sim.nodes[0].objective.dim
    assert all(r.global_values["eval_bytes"] == 8 * dim for r in rows)
    assert [c.model_bytes for c in net.collectives] == [8 * dim] * N


def test_a_default_job_writes_no_new_series_and_no_new_job_keys():
    job = load_text(LOGISTIC)
    assert job.run["eval_every"] == 0 and job.run["eval"] == "allreduce"
    assert eval_series(job.run) == {}
    assert "eval" not in job.to_toml()  # the stored job text (and --resume's comparison) is unchanged
    for overrides in (["run.eval_every=20"], ['run.eval="reduce"']):
        changed = load_text(LOGISTIC, overrides=overrides)
        assert eval_series(changed.run) == EVAL_SERIES
        assert load_text(changed.to_toml()).run == changed.run


# ---- rows between evaluations -------------------------------------------------------------------------


def test_which_rows_are_evaluated():
    assert [evaluates(s, 95, 0) for s in (0, 10, 95)] == [True, True, True]
    assert [s for s in (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95) if evaluates(s, 95, 30)] == [0, 30, 60, 90, 95]
    assert evaluates(90, 90, 60)  # the last step always
    assert health_series("allreduce", True) == "avg_model_loss"
    assert health_series("reduce", True) == "test_loss" and health_series("reduce", False) == "avg_model_loss"


@pytest.mark.parametrize("form", ["allreduce", "reduce"])
def test_a_row_not_evaluated_keeps_the_counters_and_is_nan_elsewhere(form):
    net = Network(MLP, 12)
    full = net.log(form=form)
    cheap = net.log(evaluate=False, form=form, threshold=1e8)
    assert all(c.model_bytes == 0 and c.comm.reduces == 0 for c in net.collectives)  # no model moved
    for f, c in zip(full, cheap):
        assert not c.evaluated and c.health is None and f.evaluated
        assert c.max_abs == f.max_abs
        assert set(c.rank_values) == set(f.rank_values) and set(c.global_values) == set(f.global_values)
        for key in ("loss", "bits_sent", "bytes_sent", "messages_sent", "compute_s", "comm_s"):
            assert _same(c.rank_values[key], f.rank_values[key]), key
        for key in ("local_objective", "test_loss", "test_accuracy"):
            assert math.isnan(c.rank_values[key]) and math.isfinite(f.rank_values[key]), key
        for key in ("cumulative_bits", "cumulative_bytes", "wall_s", "compute_s_total", "comm_s_total"):
            assert _same(c.global_values[key], f.global_values[key]), key
        for key in ("avg_model_loss", "suboptimality", "accuracy", "consensus_distance", "test_loss",
                    "test_accuracy"):
            assert math.isnan(c.global_values[key]), key
        assert c.global_values["eval_bytes"] == 0 and f.global_values["eval_bytes"] > 0


def test_a_row_beyond_the_divergence_threshold_is_evaluated_after_all():
    net = Network(MLP, 4)
    rows = net.log(evaluate=False, threshold=1e-6)  # every model has an entry above 1e-6
    assert all(r.evaluated and r.max_abs > 1e-6 and math.isfinite(r.global_values["test_accuracy"]) for r in rows)


# ---- the "reduce" form --------------------------------------------------------------------------------


@pytest.mark.parametrize("text,loss_rtol", [(LOGISTIC, 1e-12), (MLP, 1e-5)], ids=["logistic-float64", "mlp-float32"])
def test_reduce_gives_the_test_metrics_and_consensus_of_allreduce_to_rounding(text, loss_rtol):
    net = Network(text, 12)
    models = net.sim.models()
    dim, itemsize = models.shape[1], models.dtype.itemsize
    full = net.log(form="allreduce")
    rows = net.log(form="reduce")
    # one Reduce of the model in its own dtype per rank, nothing else of size d
    assert [c.comm.reduces for c in net.collectives] == [1] * N
    assert [c.model_bytes for c in net.collectives] == [dim * itemsize] * N
    for f, r in zip(full, rows):
        g, h = f.global_values, r.global_values
        assert r.evaluated and r.max_abs == f.max_abs
        assert abs(h["test_accuracy"] - g["test_accuracy"]) <= 1 / net.num_test
        assert h["test_accuracy"] == g["test_accuracy"]  # no test sample sits that close to a boundary here
        assert h["test_loss"] == pytest.approx(g["test_loss"], rel=loss_rtol)
        assert abs(h["consensus_distance"] - g["consensus_distance"]) <= consensus_tolerance(models)
        assert g["consensus_distance"] > 100 * consensus_tolerance(models)  # a meaningful comparison
        for key in ("avg_model_loss", "suboptimality", "accuracy"):  # x̄ is on rank 0 only
            assert math.isnan(h[key]), key
        assert math.isfinite(g["avg_model_loss"]) and math.isfinite(g["accuracy"])
        for key in ("cumulative_bits", "cumulative_bytes", "wall_s", "compute_s_total", "comm_s_total"):
            assert _same(h[key], g[key]), key
        for key, value in f.rank_values.items():  # each node's own metrics do not involve x̄
            assert _same(r.rank_values[key], value), key
        assert h["eval_bytes"] == dim * itemsize and g["eval_bytes"] == dim * 8
        assert r.health == {"avg_model_loss": h["test_loss"], "consensus_distance": h["consensus_distance"]}
    for key, value in rows[0].global_values.items():  # every rank has rank 0's numbers
        assert all(_same(r.global_values[key], value) for r in rows), key


def test_reduce_with_identical_models_logs_zero_consensus():
    """Step 0: every node starts from the same model; the scalar formula's rounding is clipped at 0."""
    net = Network(MLP, 0)
    rows = net.log(form="reduce")
    assert all(r.global_values["consensus_distance"] == 0.0 for r in rows)


def test_reduce_without_a_test_set_leaves_the_loss_rule_to_consensus():
    net = Network(LOGISTIC, 5, overrides=["data.test_fraction=0.0"])
    rows = net.log(form="reduce")
    assert "test_accuracy" not in rows[0].global_values
    assert rows[0].health == {"avg_model_loss": 0.0, "consensus_distance": rows[0].global_values["consensus_distance"]}


# ---- the job keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("every,log_every,near", [(25, 10, 20), (5, 10, 10), (35, 10, 40)])
def test_eval_every_must_be_a_multiple_of_log_every(every, log_every, near):
    with pytest.raises(JobError) as err:
        load_text(LOGISTIC, overrides=[f"run.eval_every={every}", f"run.log_every={log_every}"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"[run] eval_every = {every} is not a multiple of log_every = {log_every}")
    assert f"set eval_every = {near}" in message and "or 0" in message


def test_eval_keys_accept_and_refuse():
    job = load_text(LOGISTIC, overrides=["run.eval_every=20", 'run.eval="reduce"'])
    assert job.run["eval_every"] == 20 and job.run["eval"] == "reduce"
    with pytest.raises(JobError, match=r"\[run\] eval must be one of"):
        load_text(LOGISTIC, overrides=['run.eval="gather"'])
    with pytest.raises(JobError, match=r"\[run\] eval_every must be ≥ 0"):
        load_text(LOGISTIC, overrides=["run.eval_every=-10"])
