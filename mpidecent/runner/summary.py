"""What rank 0 prints after a run: the summary block, and the table of a sweep's runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mpidecent.algorithms.base import Algorithm
from mpidecent.plan import Plan
from mpidecent.runner.build import Node
from mpidecent.runner.metrics import LogRow
from mpidecent.texttable import pairs, table


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


def topology_text(plan: Plan) -> str:
    kind, graph = plan.job.topology["kind"], plan.graph
    shape = "directed" if graph.directed else "undirected"
    if plan.schedule.time_varying:
        shape += f", time-varying with period {plan.schedule.period}"
    return (f"{kind} ({shape}), {plan.n} nodes, {graph.num_edges} edges, spectral gap {plan.spectral_gap:.4f}"
            f"{' per step' if plan.schedule.time_varying else ''}")


def summary(plan: Plan, algorithm: Algorithm, node: Node, optimum: float, row: LogRow, status: str, out: str,
            model: str | None = None) -> str:
    """The block printed at the end of a run."""
    g, job, data = row.global_values, plan.job, node.data
    steps = max(row.step, 1)
    busy = g["compute_s_total"] + g["comm_s_total"]
    compute_share = g["compute_s_total"] / busy if busy > 0 else math.nan
    lines = [
        ("run", f"{job.run['name']} ({status}, {row.step}/{job.run['steps']} steps)"),
        ("algorithm", algorithm.describe()),
        ("topology", topology_text(plan)),
        ("model", f"{job.model['name']}, d = {node.objective.dim}, {job.run['dtype']}; data {job.data['name']} "
                  f"({data.task}, {data.num_train} train / {data.num_test} test samples)"),
        ("avg-model loss", f"{g['avg_model_loss']:.8f}"),
    ]
    if math.isfinite(optimum):
        lines += [("optimum f*", f"{optimum:.8f}"), ("suboptimality", f"{g['suboptimality']:.4e}")]
    if data.task != "regression":
        lines.append(("accuracy", f"{g['accuracy']:.4f} (training set)"))
    if "test_loss" in g:
        test_acc = f", accuracy {g['test_accuracy']:.4f}" if data.task != "regression" else ""
        lines.append(("test set", f"loss {g['test_loss']:.6f}{test_acc} (average model)"))
    lines += [
        ("consensus dist.", f"{g['consensus_distance']:.4e}"),
        ("bits sent", f"{g['cumulative_bits']:.6e} total, {g['cumulative_bits'] / (plan.n * steps):.1f} "
                      "per node per step"),
        ("bytes sent", f"{g['cumulative_bytes']:,} total"),
        ("wall time", f"{g['wall_s']:.2f} s (compute {100 * compute_share:.0f}%, "
                      f"communication {100 * (1 - compute_share):.0f}% of rank time)"),
        ("results", out),
    ]
    if model:
        lines.append(("model", f"{model} (torch state_dict of the average model)"))
    return pairs(lines, ruled=True)


def comparison_table(runs: list[RunResult]) -> str:
    """One line per run: the final numbers side by side (a sweep's summary)."""
    header = ["run", "status", "steps", "avg-loss", "subopt", "accuracy", "consensus", "bits", "bits/node/step",
              "paper units", "wall s"]
    rows = []
    for r in runs:
        if r.row is None:
            rows.append([r.name, r.status, *["-"] * (len(header) - 2)])
            continue
        g = r.row.global_values
        acc = g.get("test_accuracy", g["accuracy"])
        paper = r.row.rank_values.get("paper_bits")
        rows.append([r.name, r.status, str(r.row.step), f"{g['avg_model_loss']:.6f}",
                     f"{g['suboptimality']:.3e}" if r.has_optimum else "-",
                     "-" if not math.isfinite(acc) else f"{acc:.4f}{' (test)' if 'test_accuracy' in g else ''}",
                     f"{g['consensus_distance']:.2e}", f"{g['cumulative_bits']:.3e}",
                     f"{g['cumulative_bits'] / (r.n * max(r.row.step, 1)):.0f}",
                     "-" if paper is None else f"{paper:.4g}", f"{g['wall_s']:.1f}"])
    return table(header, rows, left=2)
