"""The status pipeline's lag (comm/status.py): the directed diameter of the planned (union) graph, clamped to
1..MAX_LAG; disconnected graphs and diameters beyond MAX_LAG get MAX_LAG."""

import itertools

import numpy as np
import pytest

from mpidecent.comm.status import MAX_LAG, status_lag
from mpidecent.topology.validate import directed_diameter, eccentricity
from mpidecent.config import load_text
from mpidecent.plan import plan_job
from mpidecent.topology import Graph, complete, erdos_renyi, exponential, ring, star, torus
from mpidecent.topology.schedule import one_peer_exponential


def _floyd_warshall(graph: Graph) -> float:
    """The diameter by all-pairs shortest paths (inf when some pair is unreachable)."""
    n = graph.n
    dist = np.full((n, n), np.inf)
    np.fill_diagonal(dist, 0)
    dist[graph.edges[:, 0], graph.edges[:, 1]] = 1
    for k in range(n):
        dist = np.minimum(dist, dist[:, [k]] + dist[[k], :])
    return float(dist.max())


@pytest.mark.parametrize("graph, diameter", [
    (ring(8, directed=True), 7),
    (ring(9), 4),
    (complete(6), 1),
    (exponential(8), 3),  # offsets 1, 2, 4: any distance in at most 3 hops
    (torus(9), 2),
    (star(5), 2),
    (Graph(1, np.zeros((0, 2), dtype=np.int64), directed=True), 0),
    (one_peer_exponential(16).union(), 4),  # a schedule's union graph
])
def test_diameter_of_known_graphs(graph, diameter):
    assert directed_diameter(graph, 64) == diameter


def test_diameter_matches_all_pairs_shortest_paths_on_random_digraphs():
    """Random digraphs, strongly connected or not (about half of these are not)."""
    rng = np.random.default_rng(7)
    unreachable = 0
    for n, p in itertools.product((5, 12, 30), (0.08, 0.15, 0.3, 0.6)):
        for _ in range(4):
            present = (rng.random((n, n)) < p) & ~np.eye(n, dtype=bool)
            graph = Graph.from_pairs(n, np.argwhere(present), directed=True)
            expected = _floyd_warshall(graph)
            found = directed_diameter(graph, 64)
            unreachable += found is None
            assert (found is None) == np.isinf(expected) and (found is None or found == expected), (n, p)
    assert 0 < unreachable < 48


def test_erdos_renyi_graphs_as_the_planner_builds_them():
    for n, p, seed in itertools.product((6, 20), (0.3, 0.6), range(3)):
        graph = erdos_renyi(n, p, seed=seed, directed=True)
        assert directed_diameter(graph, 64) == _floyd_warshall(graph)


def test_eccentricity_of_one_node_and_its_limit():
    graph = ring(10, directed=True)  # node 0 reaches node 9 in 9 steps
    assert eccentricity(graph, 0, 64) == 9 and eccentricity(graph, 0, 9) == 9 and eccentricity(graph, 0, 8) is None
    hub = star(5)  # the hub reaches every leaf in one step, a leaf the others in two
    assert eccentricity(hub, 0, 64) == 1 and eccentricity(hub, 3, 64) == 2
    star_out = Graph.from_pairs(4, [(0, i) for i in range(1, 4)], directed=True)
    assert eccentricity(star_out, 0, 64) == 1 and eccentricity(star_out, 1, 64) is None


def test_lag_is_the_diameter_clamped_to_one_and_max_lag():
    assert status_lag(complete(8)) == 1
    assert status_lag(Graph(1, np.zeros((0, 2), dtype=np.int64), directed=True)) == 1  # one rank: D = 0
    assert status_lag(ring(8, directed=True)) == 7
    assert directed_diameter(ring(40, directed=True), MAX_LAG) is None  # D = 39: the search stops at 16
    assert status_lag(ring(40, directed=True)) == MAX_LAG == 16
    assert directed_diameter(ring(17, directed=True), MAX_LAG) == 16 == status_lag(ring(17, directed=True))


def test_disconnected_graphs_get_the_largest_lag():
    star_in = Graph.from_pairs(5, [(i, 0) for i in range(1, 5)], directed=True)  # nobody reaches 1..4
    two_rings = Graph.from_pairs(6, [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)], directed=True)
    for graph in (star_in, two_rings):
        assert directed_diameter(graph, 64) is None and status_lag(graph) == MAX_LAG


def test_planned_graphs_of_shipped_patterns():
    """allreduce_sgd communicates over the complete graph (lag 1); a neighbour job's lag is its graph's."""
    allreduce = load_text('[algorithm]\nname = "allreduce_sgd"\n')
    assert status_lag(plan_job(allreduce, 6).graph) == 1
    qps = load_text('[topology]\nkind = "ring"\ndirected = true\n[algorithm]\nname = "quantized_push_sum"\n')
    assert status_lag(plan_job(qps, 5).graph) == 4


def test_importing_the_status_module_does_not_start_mpi():
    """A process that imported mpi4py.MPI is an MPI singleton and cannot launch mpirun jobs (the CLI tests
    and the bench do): the lag is computed without MPI, which only agreed_lag and StatusPipe import."""
    import subprocess
    import sys

    code = "import sys, mpidecent.comm.status; print('mpi4py.MPI' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
