"""What the runner measures: per-rank counters between log points, and the network metrics of a log row.

``Totals`` accumulates a rank's ``StepStats``; ``log_row`` (collective: a few small reductions and one
of size d) turns them and the algorithm's reported models into one row of the results file;
``network_optimum`` computes f* once for convex generalised linear models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mpidecent.algorithms.base import Algorithm, StepStats
from mpidecent.comm.protocols import Collectives
from mpidecent.learning.problems import GLM_LOSS, LocalEval, TorchObjective, glm_optimum


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


def network_optimum(model: dict, objective: TorchObjective, nodes: int, collectives: Collectives) -> float:
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


def log_row(step: int, algorithm: Algorithm, objective: TorchObjective, collectives: Collectives, totals: Totals,
            wall_s: float, optimum: float, task: str, has_test: bool) -> LogRow:
    """Collective: network metrics at the reported models (4 small reductions + one of size d); clears
    the losses of ``totals`` (they are averaged into this row)."""
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
    avg_loss = sums[1] / sums[9]  # f = (1/n) Σ_i F_i over the ranks that evaluate a partition
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
        own = objective.evaluate_test_all(model) or LocalEval(math.nan, 0, 0)  # this node's model, whole test set
        rank_values["test_loss"] = own.objective
        rank_values["test_accuracy"] = own.correct / own.count if own.count and task != "regression" else math.nan
    totals.losses.clear()
    return LogRow(step, rank_values, global_values, float(max_abs[0]))
