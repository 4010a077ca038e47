"""What the runner measures: per-rank counters between log points, and the network metrics of a log
row.

``Totals`` accumulates a rank's ``StepStats``; ``log_row`` (collective) turns them and the
algorithm's reported models into one row of the results file; ``network_optimum`` computes f* once
for convex generalised linear models.

A row is *evaluated* (the average model x̄, its training and test metrics, the consensus distance,
each node's own full-shard and test metrics) at every log point by default, or only every ``[run]
eval_every`` steps, at the last step and at a row that stops the run; the rows in between carry the
counters and NaN for the evaluated metrics (``evaluates``). ``[run] eval`` chooses how x̄ is formed
(``EVAL_FORMS``): "allreduce" sums a float64 copy of every model on every rank (8·d bytes per rank),
"reduce" sums the models in their own dtype onto rank 0 only (itemsize·d bytes per rank), which
evaluates x̄ on the whole test set; the consensus distance then comes from scalars, and the
training-set metrics of x̄ are NaN. docs/results-format.md states each value exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpidecent.algorithms.base import Algorithm, StepStats
from mpidecent.comm.protocols import Collectives
from mpidecent.io.layout import Series
from mpidecent.learning.problems import GLM_LOSS, LocalEval, TorchObjective, glm_optimum

EVAL_FORMS = ("allreduce", "reduce")
# /metrics/global/eval_bytes: written only by runs that set [run] eval_every or eval (a file of the
# default settings stays as it was, and a run made before the keys existed resumes unchanged).
EVAL_SERIES: Mapping[str, Series] = {
    "eval_bytes": Series(
        "i8",
        "bytes",
        "bytes of model vectors each rank handed to this row's evaluation "
        "(8·d allreduce, itemsize·d reduce, 0 for a row not evaluated)",
    ),
}
# The global metrics a row that is not evaluated leaves NaN (the test ones only in runs with a test
# set).
EVALUATED_GLOBAL = (
    "avg_model_loss",
    "suboptimality",
    "accuracy",
    "consensus_distance",
    "test_loss",
    "test_accuracy",
)
EVALUATED_RANK = ("local_objective", "test_loss", "test_accuracy")


@dataclass
class Totals:
    """Cumulative per-rank counters since step 0."""

    bits: int = 0
    bytes: int = 0
    messages: int = 0
    compute_s: float = 0.0
    comm_s: float = 0.0
    losses: list[float] = field(default_factory=list)  # minibatch losses since the last log point

    def add(self, s: StepStats) -> None:
        self.bits += s.bits_sent
        self.bytes += s.bytes_sent
        self.messages += s.messages_sent
        self.compute_s += s.compute_s
        self.comm_s += s.comm_s
        self.losses.append(s.loss)


@dataclass
class LogRow:
    step: int
    rank_values: dict[str, float]
    global_values: dict[str, float]
    max_abs: float  # largest |entry| of any rank's model (NaN if any is non-finite)
    evaluated: bool = (
        True  # False: the evaluated metrics are NaN (a row between [run] eval_every points)
    )
    # What the divergence rule (runner.summary.Health) judges: the global values of an "allreduce"
    # row; for "reduce" the test loss of x̄ stands in for its training loss (0.0, never tripping,
    # without a test set); None for a row that is not evaluated.
    health: Mapping[str, float] | None = None


def eval_series(run: Mapping) -> Mapping[str, Series]:
    """The global series beyond the base ones that a run of these ``[run]`` settings writes
    (``EVAL_SERIES`` unless eval_every and eval are left at their defaults)."""
    return (
        EVAL_SERIES
        if run.get("eval_every", 0) or run.get("eval", "allreduce") != "allreduce"
        else {}
    )


def evaluates(step: int, steps: int, eval_every: int) -> bool:
    """Is the log row of ``step`` evaluated (besides a row that stops the run, which always is)?
    Every log row with ``eval_every`` 0; else step 0, every ``eval_every`` steps and the last
    step."""
    return not eval_every or step % eval_every == 0 or step == steps


def health_series(form: str, has_test: bool) -> str:
    """The global series whose values ``LogRow.health`` calls the loss (a resumed run's
    references)."""
    return "test_loss" if form == "reduce" and has_test else "avg_model_loss"


def network_optimum(
    model: Mapping[str, Any], objective: TorchObjective, nodes: int, collectives: Collectives
) -> float:
    """f* of the network objective for convex generalised linear models with ℓ2 > 0, computed
    collectively by Newton's method on the shards (NaN when unknown: non-convex models, softmax)."""
    name, l2 = model["name"], model["l2"]
    if name not in GLM_LOSS or l2 <= 0 or model["loss"] != "auto":
        return math.nan
    loss, bias = GLM_LOSS[name]
    shard = objective.eval_shard
    rows = shard.features.shape[0]  # the flat models flatten each sample (a master holds no rows)
    features = shard.features.reshape(rows, int(np.prod(shard.features.shape[1:], dtype=np.int64)))
    return glm_optimum(features, shard.targets, nodes, l2, loss, bias, collectives).value


def log_row(
    step: int,
    algorithm: Algorithm,
    objective: TorchObjective,
    collectives: Collectives,
    totals: Totals,
    wall_s: float,
    optimum: float,
    task: str,
    has_test: bool,
    evaluate: bool = True,
    form: str = "allreduce",
    threshold: float = math.inf,
) -> LogRow:
    """Collective: one log row; clears the losses of ``totals`` (they are averaged into this row).

    ``evaluate``: compute the network metrics at the reported models (``form`` "allreduce": 4 small
    reductions and one of a float64 d-vector; "reduce": one reduction of the d-vector in its dtype
    to rank 0, a broadcast of 4 scalars and 3 small reductions). Not evaluated: only the counters (3
    small reductions) and NaN for the evaluated metrics — unless a model entry is non-finite or
    beyond ``threshold`` (the run stops at this row), which is then evaluated after all."""
    if form not in EVAL_FORMS:
        raise ValueError(f"eval form {form!r}: one of {', '.join(EVAL_FORMS)}")
    if not evaluate:
        max_abs = _largest_entry(algorithm.model_view(), collectives)
        if math.isfinite(max_abs[0]) and max_abs[0] <= threshold:
            return _counters_row(
                step, algorithm, collectives, totals, wall_s, has_test, float(max_abs[0])
            )
    if form == "reduce":
        return _reduce_row(step, algorithm, objective, collectives, totals, wall_s, task, has_test)
    return _allreduce_row(
        step, algorithm, objective, collectives, totals, wall_s, optimum, task, has_test
    )


def _allreduce_row(
    step: int,
    algorithm: Algorithm,
    objective: TorchObjective,
    collectives: Collectives,
    totals: Totals,
    wall_s: float,
    optimum: float,
    task: str,
    has_test: bool,
) -> LogRow:
    """Every rank forms x̄ from an all-reduce of a float64 copy of every model (4 small reductions +
    one of size d): the network objective, training accuracy and test metrics of x̄ are sums of
    every rank's shard and test slice. The default form; its numbers are those of every run before
    ``[run] eval`` existed."""
    size = collectives.size
    model = np.asarray(algorithm.model_view(), dtype=np.float64)
    mean = model.copy()
    collectives.allreduce_sum(mean)
    mean /= size
    local_at_mean = objective.evaluate(mean)
    local_own = objective.evaluate(model)
    test = objective.evaluate_test(mean) or LocalEval(0.0, 0, 0)
    spread = float(np.sum((model - mean) ** 2))
    sums = collectives.sum_scalars(
        spread,
        local_at_mean.objective,
        local_at_mean.correct,
        local_at_mean.count,
        totals.compute_s,
        totals.comm_s,
        test.objective * test.count,
        test.correct,
        test.count,
        float(local_at_mean.count > 0),
    )
    counts = np.array([totals.bits, totals.bytes], dtype=np.int64)
    collectives.allreduce_sum(counts)
    max_abs = _largest_entry(model, collectives)
    avg_loss = sums[1] / sums[9]  # f = (1/n) Σ_i F_i over the ranks that evaluate a partition
    rank_values = _rank_values(
        algorithm, totals, local_own.objective if local_own.count else math.nan
    )
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
        rank_values |= _own_test_values(objective, model, task)
    global_values["eval_bytes"] = (
        model.size * 8
    )  # the float64 copy each rank hands to the all-reduce
    totals.losses.clear()
    return LogRow(
        step, rank_values, global_values, float(max_abs[0]), evaluated=True, health=global_values
    )


def _rank_values(algorithm: Algorithm, totals: Totals, local_objective: float) -> dict[str, float]:
    """This rank's counters of a row (every form), in the order the results file keeps them."""
    return {
        "loss": float(np.mean(totals.losses)) if totals.losses else math.nan,
        "local_objective": local_objective,
        "bits_sent": totals.bits,
        "bytes_sent": totals.bytes,
        "messages_sent": totals.messages,
        "compute_s": totals.compute_s,
        "comm_s": totals.comm_s,
        **algorithm.extra_metrics(),
    }


def _own_test_values(objective: TorchObjective, model: np.ndarray, task: str) -> dict[str, float]:
    """This node's own model (float64) on the whole test set."""
    own = objective.evaluate_test_all(model) or LocalEval(math.nan, 0, 0)
    return {
        "test_loss": own.objective,
        "test_accuracy": own.correct / own.count
        if own.count and task != "regression"
        else math.nan,
    }


def _largest_entry(model: np.ndarray, collectives: Collectives) -> np.ndarray:
    """Collective: (1,) float64, the largest |entry| of any rank's model (inf if any is
    non-finite)."""
    max_abs = np.array(
        [np.max(np.abs(model)) if np.all(np.isfinite(model)) else np.inf], dtype=np.float64
    )
    collectives.allreduce_max(max_abs)
    return max_abs


def _rank(collectives: Collectives) -> int:
    return int(getattr(collectives, "rank", 0))


def _reduce_row(
    step: int,
    algorithm: Algorithm,
    objective: TorchObjective,
    collectives: Collectives,
    totals: Totals,
    wall_s: float,
    task: str,
    has_test: bool,
) -> LogRow:
    """The models move once, in their own dtype, to rank 0 (one Reduce of size d), which forms x̄
    and evaluates it on the whole test set; rank 0 broadcasts ‖x̄‖² and the test sums (4 scalars),
    and the consensus distance is max(0, (1/n) Σ_i ‖x_i‖² − ‖x̄‖²) in float64. x̄ is on rank 0 only,
    so its training-set metrics (avg_model_loss, suboptimality, accuracy) are NaN."""
    size = collectives.size
    root = _rank(collectives) == 0
    model = np.ascontiguousarray(algorithm.model_view())  # the state dtype: no copy
    total = collectives.reduce_sum(model)  # the models, once, in their own dtype
    scalars = np.zeros(
        4, dtype=np.float64
    )  # ‖x̄‖², test loss × count, test correct, test count (rank 0's)
    if root:
        assert total is not None  # reduce_sum's result is on rank 0
        mean = total.astype(np.float64)
        del total
        mean /= size
        scalars[0] = float(mean @ mean)
        test = objective.evaluate_test_all(mean) if has_test else None
        if test is not None:
            scalars[1:] = test.objective * test.count, test.correct, test.count
        del mean
    collectives.broadcast(scalars)
    model64 = model.astype(
        np.float64
    )  # this rank's own metrics and ‖x_i‖², as the allreduce form has them
    local_own = objective.evaluate(model64)
    sums = collectives.sum_scalars(float(model64 @ model64), totals.compute_s, totals.comm_s)
    counts = np.array([totals.bits, totals.bytes], dtype=np.int64)
    collectives.allreduce_sum(counts)
    max_abs = _largest_entry(model, collectives)
    rank_values = _rank_values(
        algorithm, totals, local_own.objective if local_own.count else math.nan
    )
    consensus = sums[0] / size - scalars[0]
    # A non-finite difference stays so (the divergence rule must see it); a negative one is
    # rounding.
    consensus = max(consensus, 0.0) if math.isfinite(consensus) else consensus
    global_values = {
        "avg_model_loss": math.nan,
        "suboptimality": math.nan,
        "accuracy": math.nan,
        "consensus_distance": consensus,
        "cumulative_bits": int(counts[0]),
        "cumulative_bytes": int(counts[1]),
        "wall_s": wall_s,
        "compute_s_total": sums[1],
        "comm_s_total": sums[2],
    }
    health = {"avg_model_loss": 0.0, "consensus_distance": consensus}
    if has_test:
        test_loss = scalars[1] / scalars[3] if scalars[3] else math.nan
        global_values["test_loss"] = test_loss
        global_values["test_accuracy"] = (
            scalars[2] / scalars[3] if scalars[3] and task != "regression" else math.nan
        )
        rank_values |= _own_test_values(objective, model64, task)
        health["avg_model_loss"] = test_loss if scalars[3] else 0.0  # NaN only when x̄'s loss is
    global_values["eval_bytes"] = model.size * model.dtype.itemsize
    totals.losses.clear()
    return LogRow(
        step, rank_values, global_values, float(max_abs[0]), evaluated=True, health=health
    )


def _counters_row(
    step: int,
    algorithm: Algorithm,
    collectives: Collectives,
    totals: Totals,
    wall_s: float,
    has_test: bool,
    max_abs: float,
) -> LogRow:
    """A row between evaluations: the counters (2 small reductions, after the caller's max), NaN for
    the evaluated metrics."""
    sums = collectives.sum_scalars(totals.compute_s, totals.comm_s)
    counts = np.array([totals.bits, totals.bytes], dtype=np.int64)
    collectives.allreduce_sum(counts)
    rank_values = _rank_values(algorithm, totals, math.nan)
    global_values = {
        "avg_model_loss": math.nan,
        "suboptimality": math.nan,
        "accuracy": math.nan,
        "consensus_distance": math.nan,
        "cumulative_bits": int(counts[0]),
        "cumulative_bytes": int(counts[1]),
        "wall_s": wall_s,
        "compute_s_total": sums[0],
        "comm_s_total": sums[1],
    }
    if has_test:
        global_values["test_loss"] = global_values["test_accuracy"] = math.nan
        rank_values["test_loss"] = rank_values["test_accuracy"] = math.nan
    global_values["eval_bytes"] = 0
    totals.losses.clear()
    return LogRow(step, rank_values, global_values, max_abs, evaluated=False, health=None)
