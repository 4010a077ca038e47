"""The ``overlap`` section of ``mpidecent bench``: does a neighbour exchange really move while the
gradient is computed, over a real rate-limited link (``netlink.py``: every byte crosses a token
bucket on the loopback of a private network namespace, Open MPI on TCP)?

A nonblocking exchange of a large message moves only while its rank is inside MPI: over TCP, Open
MPI sends the first 64 KiB and waits for the receiver's rendezvous answer, and a slow link fills the
socket buffer, whose rest is written only when MPI runs again. So "start, compute, wait" can still
cost compute + communication. Per algorithm — D-PSGD (ring, x_t sent before its gradient) and exact
push-sum (chord ring, ``overlap = true``: x_t sent at the end of step t − 1) — one ``mpirun`` runs,
as [[sweep]] variants of one job on one workload (digits, an MLP, float32, Nesterov momentum, a
batch chosen so that computation and communication per step are of the same order, step size 0.05):

* compute alone: the same job on the ``disconnected`` graph (no message at all);
* communication alone: the same job with ``batch_size = 1`` and ``lr = 0`` (a gradient of one
  sample, a few ms, that moves nothing: the same messages, without a step that one sample would make
  unstable);
* the algorithm with ``[run] progress = "none"`` (MPI moves the exchange only when the rank waits)
  and with ``progress = "hooks"`` (the default: a non-blocking test of every exchange in flight
  after each layer's forward pass and each parameter's gradient);
* for push-sum also ``overlap = false`` (the message needs the gradient: compute, then communicate);

and a second ``mpirun`` runs the ``none`` variants with Open MPI's own progress thread for TCP
(``OMPI_MCA_btl_tcp_progress_thread=1``). Step times are the steady per-step training time of the
slowest rank (between the last two log points); the goal is ≤ 1.15 × max(compute, communication).
Test accuracy after the same number of steps shows what the overlap does to learning: exact push-sum
with overlap against without (goal: within 1 point), as the mean over the last
``ACCURACY_POINTS_LOGGED`` log points (a single log point of a run with momentum moves by a few
points from one to the next); D-PSGD's variants are bit-identical by construction.

On a link shared by all ranks, "compute alone + communication alone" is not a floor for a run
without overlap: while one rank computes, the others' messages use the link, so ranks overlap each
other even when no rank overlaps itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mpidecent.bench.netlink import Link
from mpidecent.bench.network import Contender, job_text, measure, unavailable

GOAL = 1.15  # step time ÷ max(compute, communication)
ACCURACY_POINTS = 1.0  # overlap vs not: test accuracy within this many percentage points
ACCURACY_POINTS_LOGGED = 3  # the test accuracy compared: the mean over this many last log points
TCP_THREAD = {"OMPI_MCA_btl_tcp_progress_thread": "1"}

# lr 0.05 with Nesterov 0.9: at lr 0.1 the overlapped (combine-then-adapt) push-sum is less stable
# on this workload (jobs/digits_overlap.toml measures both; docs/performance.md).
FAMILIES: dict[str, dict] = {
    "dpsgd": {
        "label": "D-PSGD (ring)",
        "settings": {"algorithm.name": "dpsgd", "topology.kind": "ring", "algorithm.lr": 0.05},
        "mechanisms": {"progress none": {"run.progress": "none"}, "progress hooks": {}},
    },
    "push_sum": {
        "label": "exact push-sum (chord ring)",
        "settings": {"algorithm.name": "push_sum", "algorithm.lr": 0.05},
        "mechanisms": {
            "no overlap": {"algorithm.overlap": False},
            "overlap, progress none": {"algorithm.overlap": True, "run.progress": "none"},
            "overlap, progress hooks": {"algorithm.overlap": True},
        },
    },
}
# What the MPI library's own progress thread is compared on: the variants that leave progress to
# MPI.
THREADED = {"dpsgd": "progress none", "push_sum": "overlap, progress none"}

SIZES: dict[str, dict] = {
    "tiny": {
        "workloads": [
            {"link": "1gbit", "ranks": 4, "hidden": [32], "batch": 16, "steps": 4, "log_every": 2}
        ],
        "families": ["dpsgd"],
        "tcp_thread": False,
    },
    # MLP 64 → 1024 → 1024 → 10 (d = 1,126,410, 4.5 MB per float32 message): D-PSGD's 8 ranks send
    # 16 messages per step, about 0.6 s on the shared 1 Gbit/s link (push-sum's chord ring 12: 0.45
    # s); batch 2048 takes about as long to compute on 8 ranks sharing 2 cores.
    "small": {
        "workloads": [
            {
                "link": "1gbit",
                "ranks": 8,
                "hidden": [1024, 1024],
                "batch": 2048,
                "steps": 100,
                "log_every": 10,
            }
        ],
        "families": ["dpsgd", "push_sum"],
        "tcp_thread": True,
    },
}
SIZES["large"] = {
    **SIZES["small"],
    "workloads": [
        *SIZES["small"]["workloads"],
        # MLP 64 → 256 → 256 → 10 (d = 85,002, 340 kB per message) on the 100 Mbit/s link
        {
            "link": "100mbit",
            "ranks": 8,
            "hidden": [256, 256],
            "batch": 4096,
            "steps": 100,
            "log_every": 10,
        },
    ],
}


def _contenders(family: str, batch: int, ranks: int, mechanisms: Sequence[str]) -> list[Contender]:
    spec = FAMILIES[family]
    base = {**spec["settings"], "data.batch_size": batch}
    rows = [
        Contender(
            f"{family}: compute alone",
            f"{family}-compute",
            ranks,
            {**base, "topology.kind": "disconnected"},
        ),
        Contender(
            f"{family}: communication alone",
            f"{family}-comm",
            ranks,
            {**base, "data.batch_size": 1, "algorithm.lr": 0.0},
        ),
    ]
    rows += [
        Contender(
            f"{family}: {m}",
            f"{family}-{m.replace(', ', '-').replace(' ', '-')}",
            ranks,
            {**base, **spec["mechanisms"][m]},
        )
        for m in mechanisms
    ]
    return rows


def run(size: str, launcher_argv: Sequence[str], out: Path) -> dict:
    """The whole section: {"skipped": reason} where no emulated link can be made, else its rows."""
    reason = unavailable(launcher_argv)
    if reason:
        return {"skipped": reason}
    config = SIZES[size]
    rows: list[dict] = []
    for w in config["workloads"]:
        link, tag = Link(w["link"]), f"{w['link']}-d{w['hidden'][0]}"
        for family in config["families"]:
            mechanisms = list(FAMILIES[family]["mechanisms"])
            launches: list[tuple[str, dict[str, str], list[Contender]]] = [
                ("", {}, _contenders(family, w["batch"], w["ranks"], mechanisms))
            ]
            if config["tcp_thread"]:
                thread = [
                    Contender(
                        f"{family}: {THREADED[family]} + Open MPI TCP progress thread",
                        f"{family}-tcp-thread",
                        w["ranks"],
                        {
                            **FAMILIES[family]["settings"],
                            "data.batch_size": w["batch"],
                            **FAMILIES[family]["mechanisms"][THREADED[family]],
                        },
                    )
                ]
                launches.append(("-tcp-thread", TCP_THREAD, thread))
            for suffix, env, contenders in launches:
                job = job_text(
                    f"overlap-{tag}-{family}{suffix}",
                    contenders,
                    w["hidden"],
                    w["steps"],
                    w["log_every"],
                    w["ranks"],
                )
                measured, _ = measure(
                    launcher_argv,
                    link,
                    w["ranks"],
                    job,
                    out / f"overlap-{tag}-{family}{suffix}",
                    contenders,
                    None,
                    3600,
                    env=env,
                )
                for c, r in zip(contenders, measured, strict=True):
                    rows.append(
                        {
                            "link": w["link"],
                            "hidden": w["hidden"],
                            "batch": w["batch"],
                            "family": family,
                            "variant": c.label.split(": ", 1)[1],
                            **r,
                        }
                    )
                    print(f"   {w['link']} {c.label}: {r['step_s'] * 1e3:.0f} ms/step", flush=True)
    return {"rows": rows}


def summary(rows: Sequence[dict]) -> list[dict]:
    """Per (link, family): compute, communication, their sum and max, and each mechanism's step ÷
    max."""
    out = []
    for key in dict.fromkeys((r["link"], r["family"]) for r in rows):
        group = {r["variant"]: r for r in rows if (r["link"], r["family"]) == key}
        compute, comm = group["compute alone"]["step_s"], group["communication alone"]["step_s"]
        slowest = max(compute, comm)
        baseline = group.get("no overlap")  # the learning reference of push-sum's overlap
        baseline_accuracy = _late_accuracy(baseline) if baseline is not None else None
        for variant, r in group.items():
            if variant in ("compute alone", "communication alone"):
                continue
            accuracy, accuracy_gap = _late_accuracy(r), None
            if accuracy is not None and baseline_accuracy is not None:
                accuracy_gap = 100 * (accuracy - baseline_accuracy)
            out.append(
                {
                    "link": key[0],
                    "family": key[1],
                    "d": r["d"],
                    "batch": r["batch"],
                    "variant": variant,
                    "compute_s": compute,
                    "comm_s": comm,
                    "sum_s": compute + comm,
                    "max_s": slowest,
                    "step_s": r["step_s"],
                    "ratio": r["step_s"] / slowest,
                    "hidden": (compute + comm - r["step_s"]) / min(compute, comm),
                    "test_accuracy": accuracy,
                    "accuracy_gap": accuracy_gap,
                }
            )
    return out


def _late_accuracy(row: dict) -> float | None:
    """The mean test accuracy of the run's last ``ACCURACY_POINTS_LOGGED`` log points."""
    series = row.get("test_accuracy_series")
    return (
        None
        if not series
        else sum(series[-ACCURACY_POINTS_LOGGED:]) / len(series[-ACCURACY_POINTS_LOGGED:])
    )


def table(result: dict) -> tuple[str, list[str], list[list[str]]]:
    """(title, head, body) of the section's table."""
    title = (
        "step time vs compute alone and communication alone (ms, slowest rank, steady state); "
        "hidden = (compute + comm − step) ÷ min(compute, comm): 1 = the shorter one fully hidden, "
        "0 = none"
    )
    head = [
        "link",
        "algorithm",
        "d / batch",
        "mechanism",
        "compute",
        "comm",
        "sum",
        "max",
        "step",
        "step ÷ max",
        "hidden",
        f"goal ≤ {GOAL}",
        f"test acc (last {ACCURACY_POINTS_LOGGED} logs)",
        "Δ acc vs no overlap",
    ]
    body = []
    for s in summary(result["rows"]):
        overlapping = s["variant"] != "no overlap"
        goal = (
            "-"
            if not overlapping
            else ("met" if s["ratio"] <= GOAL else f"NOT met ({s['ratio']:.2f})")
        )
        gap = (
            "-"
            if s["accuracy_gap"] is None or s["variant"] == "no overlap"
            else (
                f"{s['accuracy_gap']:+.1f} pt"
                + ("" if abs(s["accuracy_gap"]) <= ACCURACY_POINTS else " (> 1 pt)")
            )
        )
        body.append(
            [
                s["link"],
                FAMILIES[s["family"]]["label"],
                f"{s['d']:,} / {s['batch']}",
                s["variant"],
                f"{s['compute_s'] * 1e3:.0f}",
                f"{s['comm_s'] * 1e3:.0f}",
                f"{s['sum_s'] * 1e3:.0f}",
                f"{s['max_s'] * 1e3:.0f}",
                f"{s['step_s'] * 1e3:.0f}",
                f"{s['ratio']:.2f}",
                f"{s['hidden']:.2f}",
                goal,
                "-" if s["test_accuracy"] is None else f"{s['test_accuracy']:.3f}",
                gap,
            ]
        )
    return title, head, body
