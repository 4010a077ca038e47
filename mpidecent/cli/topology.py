"""``mpidecent topology JOB``: a job's graph on n nodes — degrees, connectivity, spectral gap, the
spread of the weights' Perron vectors (no MPI)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mpidecent.cli.common import fail
from mpidecent.errors import EXIT_OK, JobError

if TYPE_CHECKING:
    import numpy as np

    from mpidecent.topology.schedule import Schedule


def add_parser(sub) -> None:
    topo = sub.add_parser(
        "topology", help="inspect a job's graph: degrees, connectivity, spectral gap"
    )
    topo.add_argument("job", help="job file (TOML)")
    topo.add_argument("-n", "--nodes", type=int, help="number of nodes (default: [topology] n)")
    topo.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )
    topo.add_argument("--plot", metavar="FILE", help="also draw the graph into this PNG file")


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from mpidecent.algorithms import ALGORITHMS
    from mpidecent.config import load_jobs
    from mpidecent.plan import build_topology
    from mpidecent.topology import connectivity_problem, is_strongly_connected
    from mpidecent.topology.schedule import schedule_spectral_gap

    try:
        job = load_jobs(args.job, args.overrides)[0]
        n = args.nodes or job.topology["n"]
        if not n or n < 1:
            raise JobError("give the number of nodes with -n N (or set [topology] n)")
        schedule, weights = build_topology(job, n)
    except JobError as err:
        return fail(str(err))
    algo = ALGORITHMS[job.algorithm["name"]]
    graph = schedule.union()
    strong = is_strongly_connected(graph)
    period = (
        f"; time-varying, period {schedule.period} (degrees below are of the union)"
        if schedule.time_varying
        else ""
    )
    print(
        f"topology: {job.topology['kind']} ({'directed' if graph.directed else 'undirected'}), {n} "
        f"nodes, {graph.num_edges} directed edges; weights: {job.topology['weights']}{period}"
    )
    print(f"{'node':>6} {'in':>4} {'out':>4}  out-neighbours")
    for i in range(n):
        nbrs = " ".join(str(j) for j in graph.out_neighbors(i))
        print(f"{i:>6} {graph.in_degree[i]:>4} {graph.out_degree[i]:>4}  {nbrs}")
    print(
        "in-degree min/mean/max: "
        f"{graph.in_degree.min()}/{graph.in_degree.mean():.2f}/{graph.in_degree.max()}; out-degree "
        "min/mean/max: "
        f"{graph.out_degree.min()}/{graph.out_degree.mean():.2f}/{graph.out_degree.max()}"
    )
    regular = all(bool(np.all(g.out_degree == g.out_degree[0])) for g in schedule.graphs)
    print(
        "strongly connected: "
        f"{'yes' if strong else 'no (' + str(connectivity_problem(graph)) + ')'}"
    )
    print(
        "regular out-degree: "
        f"{'yes' if regular else 'no (push-sum weights y_i will differ from 1)'}"
    )
    print(
        f"spectral gap of W: {schedule_spectral_gap(weights):.6f} (1 − "
        f"|λ₂|{' per step over a period' if schedule.time_varying else ''}; larger mixes faster)"
    )
    if strong:
        print(perron_spread(schedule, weights))
    problem = algo.pattern.topology_problem(graph, job.topology["kind"], algo.name)
    if problem:
        print(f"warning: this job would be refused: {problem}")
    if args.plot:
        from mpidecent.report.plots import plot_topology

        union = " (union over the period)" if schedule.time_varying else ""
        edges = (
            f"{graph.num_edges} directed edges"
            if graph.directed
            else f"{graph.num_edges // 2} undirected edges"
        )
        title = (
            f"{job.topology['kind']}{union}: {n} nodes, {edges}\n"
            f"weights {job.topology['weights']}, spectral gap {schedule_spectral_gap(weights):.4f}"
        )
        try:
            plot_topology(n, graph.edges, graph.directed, args.plot, title)
        except OSError as err:
            return fail(f"--plot {args.plot!r}: cannot write the figure ({err.strerror or err})")
        print(f"graph drawn: {args.plot}")
    return EXIT_OK


def _period_product(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """M_{p−1} ⋯ M_1 M_0: the map of one period of a schedule (the matrix itself on a static
    graph)."""
    product = matrices[0]
    for m in matrices[1:]:
        product = m @ product
    return product


def perron_spread(schedule: Schedule, weights: Sequence[np.ndarray]) -> str:
    """Two lines: the spread of n·u (C = W's right Perron vector) and of n·v (Push-Pull's R =
    row_uniform, left Perron vector), over one period of the schedule: 1 everywhere on a regular
    graph."""
    from mpidecent.topology import perron_vector, row_stochastic_uniform

    n = schedule.n
    over = " (of the product over one period)" if schedule.time_varying else ""
    u = n * perron_vector(_period_product(weights), "right")
    v = n * perron_vector(
        _period_product([row_stochastic_uniform(g) for g in schedule.graphs]), "left"
    )
    return (
        f"Perron vector of W{over}, W u = u: n·u_i min/max {u.min():.3f}/{u.max():.3f} (push-sum "
        "weights settle at n·u_i; Push-Pull's trackers at n·u_i·ḡ, so node i's effective step is "
        f"α·n·u_i)\nPerron vector of R = row_uniform{over}, vᵀR = vᵀ: n·v_i min/max "
        f"{v.min():.3f}/{v.max():.3f} (Push-Pull's models average with these weights)"
    )
