"""How a run ended: the health rule that calls it diverged, the summary block rank 0 prints, and the
table of a sweep's runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mpidecent.algorithms.base import Algorithm
from mpidecent.plan import Plan
from mpidecent.runner.build import Node
from mpidecent.runner.metrics import LogRow
from mpidecent.texttable import pairs, table


class Health:
    """The divergence rule, applied at log points to a row's network values (the same on every rank,
    so every rank decides alike). A run has diverged when

    - the average model's loss is non-finite, or exceeds ``LOSS_FACTOR`` × max(its value at step 0,
      1);
    - the consensus distance is non-finite, or exceeds ``CONSENSUS_FACTOR`` × max(its first nonzero
      logged value, 1) (identical initial models log 0 at step 0, so the reference is the first
      spread);
    - a model entry exceeds ``[run] divergence_threshold`` (checked by the runner on ``max_abs``).

    The factors are far above anything a converging run shows (the shipped jobs stay within 10× of
    their start), so only a blow-up trips them."""

    LOSS_FACTOR = 1e3
    CONSENSUS_FACTOR = 1e6

    def __init__(self, loss0: float = math.nan, consensus0: float = math.nan) -> None:
        self.loss0, self.consensus0 = loss0, consensus0

    @classmethod
    def from_series(cls, losses, consensus) -> Health:
        """The references of a resumed run, from its results file's rows so far."""
        health = cls()
        for loss, spread in zip(losses, consensus, strict=True):
            health.observe(float(loss), float(spread))
        return health

    def observe(self, loss: float, consensus: float) -> None:
        if math.isnan(self.loss0) and math.isfinite(loss):
            self.loss0 = loss
        if math.isnan(self.consensus0) and math.isfinite(consensus) and consensus > 0:
            self.consensus0 = consensus

    def problem(self, values) -> str | None:
        """What blew up in a row's ``global_values`` (None: healthy); records the references."""
        loss, spread = float(values["avg_model_loss"]), float(values["consensus_distance"])
        self.observe(loss, spread)
        if not math.isfinite(loss):
            return f"the average model's loss is {loss}"
        if not math.isfinite(spread):
            return f"the consensus distance is {spread}"
        if not math.isnan(self.loss0) and loss > self.LOSS_FACTOR * max(self.loss0, 1.0):
            return (
                f"the average model's loss {loss:.3g} exceeded {self.LOSS_FACTOR:g} × max(initial "
                f"loss {self.loss0:.3g}, 1)"
            )
        if not math.isnan(self.consensus0) and spread > self.CONSENSUS_FACTOR * max(
            self.consensus0, 1.0
        ):
            return (
                f"the consensus distance {spread:.3g} exceeded {self.CONSENSUS_FACTOR:g} × max(its "
                f"first nonzero value {self.consensus0:.3g}, 1)"
            )
        return None


@dataclass
class RunResult:
    """What a finished run reports (rank 0 prints comparison tables from these)."""

    name: str
    status: str
    out: str
    row: LogRow | None  # None when a resumed run was stopped before logging a row
    steps: int
    n: int
    has_optimum: bool
    model: str | None = None  # the average model's state_dict file, when one was saved
    label: str = ""  # a sweep variant's value of every swept key ("levels=4 gamma=0.5")
    message: str = ""  # why it stopped, when it did not complete
    step: int = 0  # steps completed


def topology_text(plan: Plan) -> str:
    kind, graph = plan.job.topology["kind"], plan.graph
    shape = "directed" if graph.directed else "undirected"
    if plan.schedule.time_varying:
        shape += f", time-varying with period {plan.schedule.period}"
    return (
        f"{kind} ({shape}), {plan.n} nodes, {graph.num_edges} edges, spectral gap "
        f"{plan.spectral_gap:.4f}{' per step' if plan.schedule.time_varying else ''}"
    )


def summary(
    plan: Plan,
    algorithm: Algorithm,
    node: Node,
    optimum: float,
    row: LogRow,
    status: str,
    out: str,
    model: str | None = None,
) -> str:
    """The block printed at the end of a run."""
    g, job, data = row.global_values, plan.job, node.data
    steps = max(row.step, 1)
    busy = g["compute_s_total"] + g["comm_s_total"]
    compute_share = g["compute_s_total"] / busy if busy > 0 else math.nan
    lines = [
        ("run", f"{job.run['name']} ({status}, {row.step}/{job.run['steps']} steps)"),
        *([("variant", f"{job.variant}: {job.label}")] if job.variant and job.label else []),
        ("algorithm", algorithm.describe()),
        ("topology", topology_text(plan)),
        (
            "model",
            f"{job.model['name']}, d = {node.objective.dim}, {job.run['dtype']}; data "
            f"{job.data['name']} ({data.task}, {data.num_train} train / {data.num_test} test "
            "samples)",
        ),
    ]
    # [run] eval = "reduce": x̄ exists on rank 0 only and is evaluated on the test set alone, so its
    # training-set loss, suboptimality and accuracy were never computed (NaN in the file)
    training_metrics = job.run.get("eval") != "reduce"
    if training_metrics:
        lines.append(("avg-model loss", f"{g['avg_model_loss']:.8f}"))
    else:
        lines.append(("avg-model loss", 'on the test set only ([run] eval = "reduce")'))
    if math.isfinite(optimum) and training_metrics:
        lines += [("optimum f*", f"{optimum:.8f}"), ("suboptimality", f"{g['suboptimality']:.4e}")]
    if data.task != "regression" and training_metrics:
        lines.append(("accuracy", f"{g['accuracy']:.4f} (training set)"))
    if "test_loss" in g:
        test_acc = f", accuracy {g['test_accuracy']:.4f}" if data.task != "regression" else ""
        lines.append(("test set", f"loss {g['test_loss']:.6f}{test_acc} (average model)"))
    lines += [
        ("consensus dist.", f"{g['consensus_distance']:.4e}"),
        (
            "bits sent",
            f"{g['cumulative_bits']:.6e} total, {g['cumulative_bits'] / (plan.n * steps):.1f} "
            "per node per step",
        ),
        ("bytes sent", f"{g['cumulative_bytes']:,} total"),
        (
            "wall time",
            f"{g['wall_s']:.2f} s (compute {100 * compute_share:.0f}%, "
            f"communication {100 * (1 - compute_share):.0f}% of rank time)",
        ),
        ("results", out),
    ]
    if model:
        lines.append(("model", f"{model} (torch state_dict of the average model)"))
    return pairs(lines, ruled=True)


def comparison_table(runs: list[RunResult]) -> str:
    """One line per run: the final numbers side by side (a sweep's summary), its swept settings
    last, then one line per run that did not complete and the launch's exit status rule."""
    labelled = any(r.label for r in runs)
    header = [
        "run",
        "status",
        "steps",
        "avg-loss",
        "subopt",
        "accuracy",
        "consensus",
        "bits",
        "bits/node/step",
        "paper units",
        "wall s",
        *(["settings"] if labelled else []),
    ]
    rows = []
    for r in runs:
        label = [r.label or "-"] if labelled else []
        if r.row is None:
            rows.append([r.name, r.status, *["-"] * (len(header) - 2 - len(label)), *label])
            continue
        g = r.row.global_values
        acc = g.get("test_accuracy", g["accuracy"])
        loss = g["avg_model_loss"]
        paper = r.row.rank_values.get("paper_bits")
        rows.append(
            [
                r.name,
                r.status,
                str(r.row.step),
                # NaN without divergence: not computed ([run] eval = "reduce")
                f"{loss:.6f}" if math.isfinite(loss) or r.status == "diverged" else "-",
                f"{g['suboptimality']:.3e}" if r.has_optimum and math.isfinite(loss) else "-",
                "-"
                if not math.isfinite(acc)
                else f"{acc:.4f}{' (test)' if 'test_accuracy' in g else ''}",
                f"{g['consensus_distance']:.2e}",
                f"{g['cumulative_bits']:.3e}",
                f"{g['cumulative_bits'] / (r.n * max(r.row.step, 1)):.0f}",
                "-" if paper is None else f"{paper:.4g}",
                f"{g['wall_s']:.1f}",
                *label,
            ]
        )
    lines = [table(header, rows, left=2), sweep_status(runs)]
    return "\n".join(line for line in lines if line)


def sweep_status(runs: list[RunResult]) -> str:
    """How a launch of several runs ended: the count per status, each run that did not complete with
    its message, and the exit status (0 only when every run completed; else the worst: 3 diverged, 4
    stopped by a signal, 5 an output file could not be written)."""
    counts: dict[str, int] = {"completed": 0, "diverged": 0, "preempted": 0}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"{len(runs)} runs: " + ", ".join(f"{c} {s}" for s, c in counts.items() if c)]
    for r in runs:
        if r.status != "completed":
            lines.append(
                f"  {r.name}: {r.status} at step {r.step}" + (f": {r.message}" if r.message else "")
            )
    from mpidecent.errors import EXIT_DIVERGED, EXIT_IO, EXIT_OK, EXIT_PREEMPTED

    codes = {"diverged": EXIT_DIVERGED, "preempted": EXIT_PREEMPTED, "failed": EXIT_IO}
    code = max((EXIT_OK, *(codes.get(r.status, EXIT_OK) for r in runs)))
    lines.append(
        f"exit status {code}"
        + (
            " (every run completed)"
            if code == EXIT_OK
            else " (a diverged run does not stop the others; the status is the worst: "
            f"{EXIT_DIVERGED} diverged, {EXIT_PREEMPTED} stopped by a signal, "
            f"{EXIT_IO} an output file could not be written)"
        )
    )
    return "\n".join(lines)
