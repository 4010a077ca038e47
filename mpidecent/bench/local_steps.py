"""The ``local_steps`` section of ``mpidecent bench``: time to a target test accuracy over an
emulated slow link (``netlink.py``, all ranks behind one rate-limited link, as in the ``network``
section) for per-step methods against local steps with an outer optimizer (``[outer]``,
``algorithms/local_steps.py``):

* all-reduce SGD, every step (the data-parallel reference);
* quantized push-sum, QSGD 8-bit, every step, on the directed chord ring;
* DiLoCo: all-reduce of the pseudo-gradient every H steps, outer Nesterov;
* decentralized DiLoCo over quantized push-sum (QSGD 8-bit, chord ring), every H steps;
* NoLoCo: random pairs every H steps.

Each contender is a [[sweep]] variant of one job (the network section's base job: digits, an MLP of
d ≈ 1e6, float32, inner Nesterov), run in one ``mpirun`` behind the link; per-step contenders run
fewer steps than the local ones (their steps cost the link's time). "Train s" is the slowest rank's
compute + communication seconds (the steps only); "wall s" adds the evaluation at log points
(``[run] eval = "reduce"``: every model moved once to rank 0 in float32 per log point; its bytes are
the difference between what crossed the link and what the runs counted). The first log point whose
average model reaches the target accuracy gives the time to target.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mpidecent.bench.netlink import Link
from mpidecent.bench.network import QSGD8, Contender, job_text, measure, unavailable

H = 50
OUTER = {"outer.every": H, "outer.optimizer": "nesterov", "outer.lr": 0.7, "outer.momentum": 0.9}
CHORD_QPS = {"algorithm.name": "quantized_push_sum", "topology.kind": "chord_ring", **QSGD8}


def contenders(per_step: dict, local: dict) -> list[Contender]:
    """The five contenders; ``per_step`` / ``local``: their run.steps and run.log_every (local: and
    H)."""
    every = local.get("outer.every", H)
    # the evaluation at log points moves each model once to rank 0 in float32 ([run] eval =
    # "reduce")
    per_step, local = {**per_step, "run.eval": "reduce"}, {**local, "run.eval": "reduce"}
    return [
        Contender(
            "allreduce_sgd every step",
            "allreduce",
            8,
            {"topology.kind": "complete", "algorithm.name": "allreduce_sgd", **per_step},
        ),
        Contender("quantized_push_sum qsgd 8-bit every step", "qps", 8, {**CHORD_QPS, **per_step}),
        Contender(
            f"DiLoCo (all-reduce, H = {every})",
            "diloco",
            8,
            {"topology.kind": "complete", "algorithm.name": "allreduce_sgd", **OUTER, **local},
        ),
        Contender(
            f"decentralized DiLoCo (qps qsgd 8-bit, H = {every})",
            "qps-diloco",
            8,
            {**CHORD_QPS, **OUTER, **local},
        ),
        Contender(
            f"NoLoCo pairs (H = {every})",
            "noloco",
            8,
            {
                "topology.kind": "random_pairs",
                "algorithm.name": "dpsgd",
                "outer.every": H,
                "outer.pairing": "random",
                "outer.optimizer": "heavy_ball",
                "outer.lr": 0.7,
                "outer.momentum": 0.5,
                **local,
            },
        ),
    ]


SIZES: dict[str, dict] = {
    # tiny: the CI smoke test (4 ranks, rounds of 5 steps)
    "tiny": {
        "link": "1gbit",
        "hidden": [32],
        "ranks": 4,
        "per_step": {"run.steps": 6, "run.log_every": 3},
        "local": {"run.steps": 20, "run.log_every": 5, "outer.every": 5},
        "test_accuracy": 0.5,
    },
    "small": {
        "link": "100mbit",
        "hidden": [1024, 1024],
        "ranks": 8,
        "per_step": {"run.steps": 40, "run.log_every": 5},
        "local": {"run.steps": 400, "run.log_every": 50},
        "test_accuracy": 0.85,
    },
}
SIZES["large"] = {
    **SIZES["small"],
    "per_step": {"run.steps": 60, "run.log_every": 5},
    "local": {"run.steps": 600, "run.log_every": 50},
}


def run(size: str, launcher_argv: Sequence[str], out: Path) -> dict:
    """{"skipped": reason} where no emulated link can be made, else one row per contender."""
    reason = unavailable(launcher_argv)
    if reason:
        return {"skipped": reason}
    config = SIZES[size]
    chosen = contenders(config["per_step"], config["local"])
    link = Link(config["link"])
    # the pairing refuses a [topology]: the base job's graph is replaced in its variant by
    # random_pairs, which [outer] pairing = "random" also builds (the same schedule, the same seed)
    ranks = config["ranks"]
    job = job_text(
        "local-steps",
        chosen,
        config["hidden"],
        steps=config["local"]["run.steps"],
        log_every=config["local"]["run.log_every"],
        ranks=ranks,
    )
    rows, launch = measure(
        launcher_argv, link, ranks, job, out / "local-steps", chosen, config["test_accuracy"], 5400
    )
    for r in rows:
        reached = r["reached"]
        print(
            f"   {config['link']} {r['algorithm']}: test accuracy {config['test_accuracy']} at "
            f"{'-' if not reached else round(reached['train_s'], 2)} s",
            flush=True,
        )
    return {
        "link": config["link"],
        "ranks": ranks,
        "target_accuracy": config["test_accuracy"],
        "rows": rows,
        "launch": launch,
        "every": config["local"].get("outer.every", H),
    }


def table(result: dict) -> tuple[str, list[str], list[list[str]]]:
    """(title, head, body) of the time-to-target table with the speed-ups against the per-step
    methods."""
    rows = {r["algorithm"]: r for r in result["rows"]}
    reference, per_step_qps = (result["rows"][0], result["rows"][1])

    def to_target(r: dict, key: str) -> float | None:
        return r["reached"][key] if r["reached"] else None

    head = [
        "algorithm",
        "steps run",
        "reached at step",
        "train s to target",
        "wall s to target",
        "MB to target",
        "÷ all-reduce (train)",
        "÷ qps per step (train)",
        "final test acc",
    ]
    body = []
    for name, r in rows.items():
        ratios = []
        for base in (reference, per_step_qps):
            ours, theirs = to_target(r, "train_s"), to_target(base, "train_s")
            ratios.append(f"{theirs / ours:.1f}×" if ours and theirs else "-")
        body.append(
            [
                name,
                str(r["steps"]),
                str(r["reached"]["step"]) if r["reached"] else "not reached",
                f"{to_target(r, 'train_s'):.1f}" if r["reached"] else "-",
                f"{to_target(r, 'wall_s'):.1f}" if r["reached"] else "-",
                f"{r['reached']['bytes'] / 1e6:.1f}" if r["reached"] else "-",
                *ratios,
                f"{r['test_accuracy']:.3f}" if r["test_accuracy"] is not None else "-",
            ]
        )
    launch = result["launch"]
    title = (
        f"time to test accuracy {result['target_accuracy']} behind one emulated {result['link']} "
        f"link, {result['ranks']} ranks, H = {result['every']} (goals: ≥ 10× faster than "
        "all-reduce and ≥ 3× faster than per-step quantized push-sum). The launch counted "
        f"{launch['bytes_counted'] / 1e6:,.1f} MB of training messages; "
        f"{(launch['link_bytes'] or 0) / 1e6:,.1f} MB crossed the link (with evaluation at log "
        "points, TCP/IP headers and start-up)"
    )
    return title, head, body
