"""``mpidecent simulate-gossip``: the discrete-event simulator run on async_gossip job files (no
MPI).

    mpidecent simulate-gossip jobs/async_sim_const.toml          # a [[sweep]] over [topology] n
    mpidecent simulate-gossip jobs/async_gossip.toml -n 8,16,32,64 --policy constant,log_n

Each job (or sweep variant) × n × policy is one simulation of the job's system: its rounds (c +
Exp(μ) per round, ``[run] steps / local_steps`` rounds per user on average, i.e. horizon T = steps /
(K·λ_e)), its gossip rate and rate policy, its seed and graph, over n users. Every job is validated
before the first simulation; a bad one ends the command with one line and status 2. Each simulation
writes a results file (``io/simulation.py``) and the command prints mean staleness vs n.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mpidecent.errors import EXIT_BAD_INPUT, EXIT_OK, JobError
from mpidecent.gossip.simulator import DEFAULT_SOURCES, MODES, SimResult, SimSetup, simulate
from mpidecent.gossip.versions import MODE_FACTOR, RATE_POLICIES, gossip_rate, version_rate
from mpidecent.texttable import table

if TYPE_CHECKING:
    from mpidecent.config import Job


def add_parser(sub) -> None:
    """The ``simulate-gossip`` subcommand's flags (called by cli.py)."""
    sim = sub.add_parser(
        "simulate-gossip",
        help="single-process discrete-event simulation of async_gossip "
        "staleness for up to 10,000 users (no MPI)",
        description="Simulate an async_gossip job's version vectors and staleness for n users "
        "(no MPI): mpidecent simulate-gossip JOB.toml -n 8,16,32 --policy constant,log_n",
    )
    sim.add_argument(
        "job", help='job file (TOML) with [algorithm] name = "async_gossip" (may hold a [[sweep]])'
    )
    sim.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a job key (repeatable)",
    )
    sim.add_argument(
        "-n", "--nodes", help="users, comma-separated (default: [topology] n of each job)"
    )
    sim.add_argument(
        "--policy",
        help="rate policies to simulate, comma-separated: constant, log_n (default: the "
        "job's rate_policy)",
    )
    sim.add_argument(
        "--mode",
        default="pull",
        choices=MODES,
        help="pull: i reads j (the MPI engine); push: i writes to j (the reference formula's "
        "model); exchange: both merge (default pull)",
    )
    sim.add_argument(
        "--sources",
        type=int,
        default=None,
        metavar="M",
        help=f"track M evenly spaced sources (default: all up to {DEFAULT_SOURCES})",
    )
    sim.add_argument(
        "--warmup",
        type=float,
        default=0.2,
        metavar="FRACTION",
        help="fraction of the horizon left out of the time average (default 0.2)",
    )
    sim.add_argument(
        "--out", help="results file (one simulation) or folder (several); default: [run] out"
    )
    sim.add_argument("--force", action="store_true", help="overwrite existing results files")


@dataclass
class _Planned:
    job: Job
    n: int
    policy: str
    out: str
    setup: SimSetup
    steps: np.ndarray
    edges: np.ndarray | None
    label: str


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise JobError(
            f"{flag} {text!r}: expected comma-separated integers, e.g. 8,16,32"
        ) from None
    if not values:
        raise JobError(f"{flag} {text!r}: give at least one value")
    return values


def log_steps(steps: int, log_every: int) -> np.ndarray:
    """The runner's log points: 0, every log_every steps, and the last step."""
    return np.array(sorted(set(range(0, steps + 1, log_every)) | {steps}), dtype=np.int64)


def _without_swept_n(jobs: list[Job]) -> list[Job]:
    """-n replaces the job's own [topology] n: sweep variants that differ only in it are one job
    (the first of them, renamed to the sweep's base name), so -n 8,64 on a sweep over n gives 2
    simulations, not 2 × the variants."""
    import dataclasses

    def key(job: Job) -> str:
        same = dataclasses.replace(
            job, run={**job.run, "name": "", "out": ""}, topology={**job.topology, "n": 0}
        )
        return same.to_toml()

    kept: dict[str, Job] = {}
    for job in jobs:
        kept.setdefault(key(job), job)
    if len(kept) == len(jobs) or not jobs[0].variant:
        return jobs
    out = []
    for job in kept.values():
        if (
            len(kept) == 1 and job.variant
        ):  # the sweep was over n alone: name the runs after the job
            base = job.run["name"][: -len(job.variant) - 1]
            folder = os.path.dirname(job.run["out"])
            job = dataclasses.replace(
                job,
                variant="",
                label="",
                run={**job.run, "name": base, "out": os.path.join(folder or ".", base + ".h5")},
            )
        out.append(job)
    return out


def plan_simulations(args: argparse.Namespace) -> list[_Planned]:
    """Validate everything up front (JobError with one line on the first problem)."""
    from mpidecent.config import load_jobs
    from mpidecent.plan import build_topology

    if not 0.0 <= args.warmup < 1.0:
        raise JobError(f"--warmup must be in [0, 1), got {args.warmup:g}")
    if args.sources is not None and args.sources < 1:
        raise JobError(f"--sources must be ≥ 1, got {args.sources}")
    nodes = _int_list(args.nodes, "--nodes") if args.nodes else None
    policies = [p.strip() for p in args.policy.split(",")] if args.policy else None
    for p in policies or ():
        if p not in RATE_POLICIES:
            raise JobError(f"--policy {p!r}: must be one of {', '.join(RATE_POLICIES)}")
    planned: list[_Planned] = []
    jobs = load_jobs(args.job, args.overrides)
    if nodes:
        jobs = _without_swept_n(jobs)
    for job in jobs:
        a = job.algorithm
        if a["name"] != "async_gossip":
            raise JobError(
                f"[algorithm] name = {a['name']!r}: simulate-gossip simulates async_gossip jobs"
            )
        sizes = nodes or ([job.topology["n"]] if job.topology["n"] else [])
        if not sizes:
            raise JobError(
                f"{job.run['name']}: give the number of users with -n N (or set [topology] n)"
            )
        for n in sizes:
            if n < 2:
                raise JobError(f"--nodes: gossip needs at least 2 users, got {n}")
        for n in sizes:
            for policy in policies or [a["rate_policy"]]:
                lam_e = version_rate(a["round_shift"], a["round_rate"])
                horizon = job.run["steps"] / (a["local_steps"] * lam_e)
                steps = log_steps(job.run["steps"], job.run["log_every"])
                candidates, edges = None, None
                if job.topology["kind"] != "complete":
                    schedule, _ = build_topology(job, n)
                    graph = schedule.graphs[0]
                    edges = graph.edges
                    pick = graph.out_neighbors if args.mode == "push" else graph.in_neighbors
                    candidates = tuple(
                        np.sort(np.asarray(pick(i), dtype=np.int64)) for i in range(n)
                    )
                    if any(c.size == 0 for c in candidates):
                        raise JobError(
                            f"[topology] kind = {job.topology['kind']!r} on {n} nodes leaves a "
                            "node without peers"
                        )
                setup = SimSetup(
                    n=n,
                    rate=gossip_rate(a["gossip_rate"], policy, n),
                    round_shift=a["round_shift"],
                    round_rate=a["round_rate"],
                    horizon=horizon,
                    warmup=args.warmup * horizon,
                    sample_times=steps / (a["local_steps"] * lam_e),
                    seed=job.run["seed"],
                    mode=args.mode,
                    sources=args.sources,
                    candidates=candidates,
                )
                suffix = (f"-n{n}" if len(sizes) > 1 or nodes else "") + (
                    f"-{policy}" if policies and len(policies) > 1 else ""
                )
                label = job.run["name"] + suffix
                planned.append(_Planned(job, n, policy, "", setup, steps, edges, label))
    for item in planned:
        if args.out and len(planned) == 1:
            item.out = args.out
        elif args.out:
            item.out = os.path.join(args.out, f"{item.label}.h5")
        else:
            stem = (
                item.job.run["out"][:-3]
                if item.job.run["out"].endswith(".h5")
                else item.job.run["out"]
            )
            item.out = stem + item.label[len(item.job.run["name"]) :] + ".h5"
        if os.path.isdir(item.out):
            raise JobError(f"--out {item.out!r} is a directory; give a file name")
        if os.path.exists(item.out) and not args.force:
            raise JobError(
                f"results file {item.out!r} already exists; pass --force to overwrite it or --out "
                "to write elsewhere"
            )
    return planned


def staleness_table(rows: list[tuple[_Planned, SimResult]]) -> str:
    """Mean staleness vs n, one line per simulation."""
    header = [
        "run",
        "n",
        "policy",
        "λ",
        "mean S",
        "max S",
        "formula",
        "sim/formula",
        "events",
        "seconds",
    ]
    lines = []
    for item, r in rows:
        lines.append(
            [
                item.label,
                str(item.n),
                item.policy,
                f"{item.setup.rate:.3f}",
                f"{r.mean_staleness:.4f}",
                f"{r.max_staleness:.0f}",
                f"{r.formula:.4f}",
                f"{r.ratio:.4f}",
                f"{r.events:,}",
                f"{r.wall_s:.2f}",
            ]
        )
    return table(header, lines, left=3)


def main(args: argparse.Namespace) -> int:
    from mpidecent.io.simulation import write_simulation

    try:
        planned = plan_simulations(args)
    except JobError as err:
        sys.stderr.write(f"mpidecent: error: {err}\n")
        return EXIT_BAD_INPUT
    rows = []
    for item in planned:
        result = simulate(item.setup)
        a, job = item.job.algorithm, item.job
        write_simulation(
            item.out,
            result,
            item.steps,
            {
                "job": job.to_toml(),
                "job_source": job.source,
                "job_path": job.path,
                "run_name": item.label,
                "algorithm_description": f"async_gossip simulation ({item.setup.mode}, "
                f"{item.policy})",
                "rate_policy": item.policy,
                "gossip_rate": a["gossip_rate"],
                "local_steps": a["local_steps"],
                "topology_kind": job.topology["kind"],
                "clock": a["clock"],
            },
            item.edges,
            overwrite=args.force,
        )
        print(
            f"[{item.label}] n = {item.n}: mean staleness {result.mean_staleness:.4f} (formula "
            f"{result.formula:.4f}), {result.events:,} events in {result.wall_s:.2f} s -> "
            f"{item.out}",
            flush=True,
        )
        rows.append((item, result))
    mode = planned[0].setup.mode
    lam_e = rows[0][1].version_rate
    print(
        f"mean staleness vs n ({mode} gossip, version rate λ_e = {lam_e:.4g} rounds per time unit; "
        f"formula f·(λ_e/λ)·H_(n−1) with f = {MODE_FACTOR[mode]:g} for {mode})"
    )
    print(staleness_table(rows))
    if any(item.job.algorithm["clock"] == "wall" for item, _ in rows):
        print(
            "note: wall-clock jobs are simulated on the logical clock (rounds of c + Exp(μ) time "
            "units)"
        )
    if any(r.inconsistencies for _, r in rows):
        print(
            "warning: version vectors became inconsistent (a bug): see the files' inconsistencies "
            "attribute"
        )
    return EXIT_OK
