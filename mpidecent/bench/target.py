"""Time to target under a link model: pairs of runs of the shipped jobs, compared by the report's
modelled time (measured compute + 8·bytes / bandwidth + messages · latency, slowest rank per log
interval) at which each first reaches the same suboptimality.

The target of a pair is 1.1 × the larger of the two final suboptimalities (loss gaps), so that both
runs reach it; each run's time to it is read at the first log point at or below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mpidecent.comm.linkmodel import LinkModel

# (comparison, job file, ranks, [(label, results file in the output folder, --set options)])
PAIRS: tuple[tuple[str, str, int, tuple[tuple[str, str, tuple[str, ...]], ...]], ...] = (
    (
        "quantized push-sum vs exact SGP",
        "jobs/quickstart.toml",
        8,
        (
            ("quantized_push_sum qsgd s=16", "quickstart.h5", ()),
            (
                "push_sum (SGP) float64",
                "sgp.h5",
                ("algorithm.name=push_sum", "compression.name=identity"),
            ),
        ),
    ),
    (
        "multi-gossip Q=5 vs CHOCO-SGD (Q=1)",
        "jobs/syn1_q_sweep.toml",
        9,
        (("multi_gossip Q=5", "Q5.h5", ()), ("choco_sgd (Q=1)", "Q1.h5", ())),
    ),
    (
        "1-bit GC vs 32-bit GC",
        "jobs/gradient_coding.toml",
        7,
        (
            ("gradient_coding onebit", "gc-1bit.h5", ()),
            ("gradient_coding float32", "gc-32bit.h5", ()),
        ),
    ),
)
LINKS = (LinkModel(1e9, 5e-6), LinkModel(10e9, 5e-6))


def _time_to(run, link: LinkModel, gap: float) -> float | None:
    sub = run.glob("suboptimality")
    modelled = run.modelled_time(link)
    if sub is None or modelled is None:
        return None
    hits = np.flatnonzero(np.isfinite(sub) & (sub <= gap))
    return float(modelled[hits[0]]) if hits.size else None


def run(
    launch: Callable[[Sequence[str], int], None],
    root: Path,
    out: Path,
    pairs: Sequence[int],
    steps: dict[str, int] | None = None,
    ranks_of: dict[int, int] | None = None,
) -> list[dict]:
    """Run the chosen pairs (indices into PAIRS) with ``launch(mpidecent argv, ranks)`` and compare
    them; ``steps`` overrides run.steps per job file, ``ranks_of`` the rank count per pair."""
    from mpidecent.config import load_jobs
    from mpidecent.io.reader import read_runs

    rows = []
    for index in pairs:
        title, job, ranks, members = PAIRS[index]
        ranks = (ranks_of or {}).get(index, ranks)
        folder = out / f"target-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        extra = ["--set", f"run.steps={steps[job]}"] if steps and job in steps else []
        paths = []
        if (
            len(load_jobs(root / job)) > 1
        ):  # [[sweep]] variants: one launch writes every variant into the folder
            launch(
                ["run", str(root / job), "--out", str(folder), "--force", "--quiet", *extra], ranks
            )
            paths = [folder / m[1] for m in members]
        else:
            for _label, name, sets in members:
                args = [a for s in sets for a in ("--set", s)]
                launch(
                    [
                        "run",
                        str(root / job),
                        "--out",
                        str(folder / name),
                        "--force",
                        "--quiet",
                        *extra,
                        *args,
                    ],
                    ranks,
                )
                paths.append(folder / name)
        runs = read_runs([str(p) for p in paths])
        finals = [float(r.need_glob("suboptimality")[-1]) for r in runs]
        gap = 1.1 * max(finals)
        for link in LINKS:
            times = [_time_to(r, link, gap) for r in runs]
            rows.append(
                {
                    "comparison": title,
                    "link": link.describe(),
                    "bandwidth_bps": link.bandwidth_bps,
                    "target_suboptimality": gap,
                    "a": members[0][0],
                    "b": members[1][0],
                    "a_s": times[0],
                    "b_s": times[1],
                    "a_bits": int(runs[0].need_glob("cumulative_bits")[-1]),
                    "b_bits": int(runs[1].need_glob("cumulative_bits")[-1]),
                    "speedup_b_over_a": (times[1] / times[0]) if times[0] and times[1] else None,
                }
            )
    return rows


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = [
        "comparison",
        "link",
        "target subopt",
        "A",
        "A modelled s",
        "B",
        "B modelled s",
        "B / A",
    ]
    body = [
        [
            r["comparison"],
            r["link"],
            f"{r['target_suboptimality']:.2e}",
            r["a"],
            "-" if r["a_s"] is None else f"{r['a_s']:.4f}",
            r["b"],
            "-" if r["b_s"] is None else f"{r['b_s']:.4f}",
            "-" if r["speedup_b_over_a"] is None else f"{r['speedup_b_over_a']:.2f}×",
        ]
        for r in rows
    ]
    return head, body
