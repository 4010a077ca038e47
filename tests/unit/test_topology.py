"""Unit tests for mpidecent.topology: graph families, job keys, connectivity, mixing weights."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mpidecent.errors import JobError
from mpidecent.topology import (
    KINDS,
    WEIGHTS,
    Graph,
    build_graph,
    build_weights,
    cannot_reach,
    chord_ring,
    column_stochastic_uniform,
    complete,
    connectivity_problem,
    erdos_renyi,
    exponential,
    is_column_stochastic,
    is_doubly_stochastic,
    is_row_stochastic,
    is_strongly_connected,
    is_symmetric,
    is_weakly_connected,
    metropolis_hastings,
    ring,
    spectral_gap,
    star,
    torus,
    unreachable_from,
)


def edge_set(graph: Graph) -> set[tuple[int, int]]:
    return {(int(s), int(d)) for s, d in graph.edges}


def assert_well_formed(graph: Graph) -> None:
    """The Graph invariants every builder must meet."""
    e = graph.edges
    assert e.dtype == np.int32 and e.ndim == 2 and e.shape[1] == 2
    assert not e.flags.writeable
    assert np.all(e[:, 0] != e[:, 1]), "self-loop"
    assert len(np.unique(e, axis=0)) == len(e), "duplicate edge"
    assert np.array_equal(np.unique(e, axis=0), e), "not lexicographically sorted"
    assert e.size == 0 or (e.min() >= 0 and e.max() < graph.n)
    if not graph.directed:
        assert edge_set(graph) == {(d, s) for s, d in edge_set(graph)}


# --- Graph object ----------------------------------------------------------------------------------

def test_from_pairs_merges_duplicates_sorts_and_symmetrises():
    g = Graph.from_pairs(4, [(2, 1), (0, 3), (2, 1)], directed=True)
    assert g.edges.tolist() == [[0, 3], [2, 1]]
    u = Graph.from_pairs(4, [(2, 1), (1, 2), (0, 3)], directed=False)
    assert u.edges.tolist() == [[0, 3], [1, 2], [2, 1], [3, 0]]


@pytest.mark.parametrize("pairs, phrase", [
    ([(0, 4)], "out of range"),
    ([(-1, 2)], "out of range"),
    ([(1, 1)], "self-loop"),
    ([(0.5, 1)], "integers"),
])
def test_from_pairs_rejects_bad_pairs(pairs, phrase):
    with pytest.raises(ValueError, match=phrase):
        Graph.from_pairs(4, pairs, directed=True)


def test_constructor_checks_invariants():
    with pytest.raises(ValueError, match="sorted"):
        Graph(3, np.array([[1, 0], [0, 1]]), directed=True)
    with pytest.raises(ValueError, match="both directions"):
        Graph(3, np.array([[0, 1]]), directed=False)


def test_neighbours_degrees_and_adjacency_convention():
    g = Graph.from_pairs(4, [(0, 1), (0, 2), (3, 1)], directed=True)
    assert g.out_neighbors(0).tolist() == [1, 2]
    assert g.in_neighbors(1).tolist() == [0, 3]
    assert g.in_neighbors(0).tolist() == []
    assert g.out_degree.tolist() == [2, 0, 0, 1]
    assert g.in_degree.tolist() == [0, 2, 1, 0]
    assert g.num_edges == 3
    a = g.adjacency()
    assert a.dtype == bool and a.shape == (4, 4)
    # A[i, j] iff j → i: row = receiver
    assert a[1, 0] and a[2, 0] and a[1, 3]
    assert not a[0, 1]
    assert a.sum() == 3
    with pytest.raises(IndexError):
        g.out_neighbors(4)


def test_graph_equality_and_edges_are_copied():
    pairs = np.array([[0, 1], [1, 2]])
    g = Graph.from_pairs(3, pairs, directed=True)
    pairs[0, 0] = 2
    assert g.edges.tolist() == [[0, 1], [1, 2]]
    assert g == Graph.from_pairs(3, [(1, 2), (0, 1)], directed=True)
    assert g != Graph.from_pairs(3, [(0, 1)], directed=True)
    assert len({g, Graph.from_pairs(3, [(1, 2), (0, 1)], directed=True)}) == 1


# --- families --------------------------------------------------------------------------------------

def test_ring_directed_and_undirected():
    assert ring(4, directed=True).edges.tolist() == [[0, 1], [1, 2], [2, 3], [3, 0]]
    u = ring(4)
    assert not u.directed
    assert u.edges.tolist() == [[0, 1], [0, 3], [1, 0], [1, 2], [2, 1], [2, 3], [3, 0], [3, 2]]
    assert ring(2).edges.tolist() == [[0, 1], [1, 0]]
    assert ring(1).num_edges == 0


def test_exponential():
    g = exponential(8)
    assert g.directed
    assert g.out_neighbors(0).tolist() == [1, 2, 4]
    assert g.in_neighbors(0).tolist() == [4, 6, 7]
    assert g.out_degree.tolist() == [3] * 8 and g.in_degree.tolist() == [3] * 8
    assert exponential(6).out_neighbors(5).tolist() == [0, 1, 3]  # 5 + {1, 2, 4} mod 6
    assert exponential(9, base=3).out_neighbors(0).tolist() == [1, 3]
    assert_well_formed(g)


def test_torus_3x3_degree_4():
    g = torus(9)
    assert g.out_degree.tolist() == [4] * 9 and g.num_edges == 36
    # centre node (1, 1) = 4 talks to its four grid neighbours
    assert g.out_neighbors(4).tolist() == [1, 3, 5, 7]
    # corner (0, 0) wraps around to (0, 2) = 2 and (2, 0) = 6
    assert g.out_neighbors(0).tolist() == [1, 2, 3, 6]
    assert_well_formed(g)


def test_torus_small_dimensions_have_no_duplicates_or_self_loops():
    g = torus(8, rows=2, cols=4)
    assert_well_formed(g)
    assert g.out_degree.tolist() == [3] * 8  # left, right, and one node above = below
    assert g.out_neighbors(0).tolist() == [1, 3, 4]
    line = torus(5, rows=1)  # a 1 × 5 torus is a ring, when asked for
    assert edge_set(line) == edge_set(ring(5))
    assert torus(4, rows=2, cols=2).out_degree.tolist() == [2] * 4
    d = torus(9, directed=True)
    assert d.out_degree.tolist() == [2] * 9 and is_strongly_connected(d)


def test_torus_default_factorisation_and_one_given_dimension():
    g = build_graph("torus", 12, None, {})
    assert g.out_neighbors(0).tolist() == [1, 3, 4, 8]  # 3 rows × 4 cols
    g = build_graph("torus", 12, None, {"rows": 2})
    assert g.out_neighbors(0).tolist() == [1, 5, 6]  # 2 × 6
    with pytest.raises(JobError, match=r"cols = 5 does not divide the number of nodes \(12\)"):
        build_graph("torus", 12, None, {"cols": 5})


def test_torus_on_a_prime_number_of_nodes_is_an_error_naming_the_fix():
    for n in (5, 7):
        with pytest.raises(JobError) as err:
            build_graph("torus", n, None, {})
        message = str(err.value)
        assert "\n" not in message and f"n = {n} nodes: {n} is prime" in message
        assert 'kind = "ring"' in message and "rows = 1" in message
    with pytest.raises(JobError, match="start 6 or 8 ranks"):
        torus(7)
    assert torus(7, rows=1).num_edges == 14 and torus(1).num_edges == 0


def test_torus_mismatch_message():
    with pytest.raises(JobError) as err:
        build_graph("torus", 8, None, {"rows": 3, "cols": 4})
    assert str(err.value) == "[topology] rows × cols = 3 × 4 = 12 must equal the number of nodes (8)"


def test_complete():
    g = complete(4)
    assert g.num_edges == 12
    assert edge_set(g) == {(i, j) for i in range(4) for j in range(4) if i != j}
    assert_well_formed(g)


def test_star():
    u = star(5)
    assert u.out_degree.tolist() == [4, 1, 1, 1, 1]
    assert edge_set(u) == {(0, j) for j in range(1, 5)} | {(j, 0) for j in range(1, 5)}
    d = star(5, directed=True)
    assert d.out_degree.tolist() == [4, 0, 0, 0, 0]
    assert d.in_degree.tolist() == [0, 1, 1, 1, 1]
    h = build_graph("star", 4, None, {"hub": 2})
    assert h.out_neighbors(2).tolist() == [0, 1, 3] and h.out_degree[0] == 1
    with pytest.raises(JobError, match=r"\[topology\] hub = 4 is out of range for 4 nodes"):
        build_graph("star", 4, None, {"hub": 4})


def test_undirected_graphs_are_symmetric():
    for g in (ring(6), torus(8), star(4), complete(3), exponential(7, directed=False),
              chord_ring(6, directed=False), erdos_renyi(6, 0.5, directed=False)):
        assert_well_formed(g)
        assert np.array_equal(g.adjacency(), g.adjacency().T)
        assert np.array_equal(g.in_degree, g.out_degree)


def test_chord_ring_default_is_irregular_and_seeded():
    g = chord_ring(8)
    assert g.directed and g.num_edges == 8 + 4  # ring + n // 2 chords
    assert edge_set(ring(8, directed=True)) <= edge_set(g)
    assert len(set(g.out_degree.tolist())) > 1, "out-degrees must differ"
    assert is_strongly_connected(g)
    assert chord_ring(8) == g
    assert chord_ring(8, seed=1) != g
    assert build_graph("chord_ring", 8, None, {}) == g
    assert chord_ring(8, chords=0).num_edges == 8
    assert_well_formed(g)


def test_chord_ring_explicit_chords():
    g = build_graph("chord_ring", 6, None, {"chords": [[0, 3], [4, 1], [0, 3]]})
    assert edge_set(g) == {(i, (i + 1) % 6) for i in range(6)} | {(0, 3), (4, 1)}
    assert g.out_degree.tolist() == [2, 1, 1, 1, 2, 1]


@pytest.mark.parametrize("chords, message", [
    ([[0, 9]], "[topology] chords[0] = [0, 9]: node 9 is out of range for 6 nodes (nodes are 0..5)"),
    ([[1, 2], [3, 3]], "[topology] chords[1] = [3, 3] is a self-loop; a chord must join two different nodes"),
    (25, "[topology] chords = 25 is more than the 24 possible chords for n = 6 nodes (pairs i → j with "
         "j ≠ i, i+1); use at most 24"),
])
def test_chord_ring_bad_chords(chords, message):
    with pytest.raises(JobError) as err:
        build_graph("chord_ring", 6, None, {"chords": chords})
    assert str(err.value) == message


@pytest.mark.parametrize("chords", [-2, "3", True, 1.5])
def test_chord_ring_malformed_chords_name_the_key(chords):
    with pytest.raises(JobError, match=r"^\[topology\] chords must be"):
        build_graph("chord_ring", 6, None, {"chords": chords})


@pytest.mark.parametrize("chords, shown", [([[0, 1, 2]], "[0, 1, 2]"), ([[1, 2], ["a", 1]], "['a', 1]"),
                                           ([[True, 1]], "[True, 1]"), ([3], "3")])
def test_chord_ring_malformed_pairs_name_the_entry(chords, shown):
    k = len(chords) - 1
    with pytest.raises(JobError) as err:
        build_graph("chord_ring", 6, None, {"chords": chords})
    assert str(err.value) == f"[topology] chords[{k}] = {shown} must be a pair of node ids [src, dst]"


def test_chord_ring_needs_three_nodes():
    with pytest.raises(JobError, match="kind = 'chord_ring' needs at least 3 nodes, got n = 2"):
        build_graph("chord_ring", 2, None, {})


def test_erdos_renyi_connected_and_deterministic():
    g = erdos_renyi(8, 0.3, seed=5)
    assert g.directed and is_strongly_connected(g)
    assert erdos_renyi(8, 0.3, seed=5) == g
    assert erdos_renyi(8, 0.3, seed=6) != g
    assert build_graph("erdos_renyi", 8, None, {"p": 0.3, "seed": 5}) == g
    u = erdos_renyi(10, 0.3, directed=False)
    assert not u.directed and is_weakly_connected(u) and is_strongly_connected(u)
    assert complete(5).edges.tolist() == erdos_renyi(5, 1.0).edges.tolist()


def test_erdos_renyi_too_small_p():
    with pytest.raises(JobError) as err:
        build_graph("erdos_renyi", 8, None, {"p": 0.05})
    assert str(err.value) == ("[topology] p = 0.05 is too small: no strongly connected graph in 1000 tries "
                              "for n = 8 nodes; raise p")
    with pytest.raises(JobError, match="no connected graph in 3 tries"):
        build_graph("erdos_renyi", 8, False, {"p": 0.01, "max_tries": 3})


def test_erdos_renyi_requires_p_in_range():
    with pytest.raises(JobError, match="missing required key 'p'"):
        build_graph("erdos_renyi", 8, None, {})
    with pytest.raises(JobError, match=r"\[topology\] p must be > 0, got 0"):
        build_graph("erdos_renyi", 8, None, {"p": 0.0})


# --- file kind -------------------------------------------------------------------------------------

def test_file_graph_parses_comments_and_symmetrises(tmp_path):
    f = tmp_path / "graph.txt"
    f.write_text("# a small graph\n0 1\n\n1 2   # trailing comment\n  2 0\n")  # each edge once: a duplicate is an error (test_bad_inputs)
    u = build_graph("file", 4, None, {"path": str(f)})
    assert not u.directed
    assert edge_set(u) == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (0, 2)}
    d = build_graph("file", 4, True, {"path": str(f)})
    assert d.edges.tolist() == [[0, 1], [1, 2], [2, 0]]
    assert d.out_degree.tolist() == [1, 1, 1, 0]
    # relative paths resolve against base_dir (the job file's folder)
    assert build_graph("file", 4, True, {"path": "graph.txt"}, base_dir=tmp_path) == d


def test_file_graph_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobError) as err:
        build_graph("file", 8, None, {"path": "x.txt"})
    assert str(err.value) == "[topology] path: no such file 'x.txt'"

    (tmp_path / "graph.txt").write_text("0 1\n1 2\n# comment\n3 9\n")
    with pytest.raises(JobError) as err:
        build_graph("file", 8, None, {"path": "graph.txt"})
    assert str(err.value) == ("[topology] file graph.txt line 4: node 9 is out of range for 8 ranks "
                              "(nodes are 0..7); start more ranks or fix the file")

    (tmp_path / "bad.txt").write_text("0 1\n1 two\n")
    with pytest.raises(JobError, match=r"^\[topology\] file bad.txt line 2: expected two node ids"):
        build_graph("file", 8, None, {"path": "bad.txt"})

    (tmp_path / "three.txt").write_text("0 1 2\n")
    with pytest.raises(JobError, match=r"file three.txt line 1: expected two node ids"):
        build_graph("file", 8, None, {"path": "three.txt"})

    (tmp_path / "loop.txt").write_text("0 1\n\n5 5\n")
    with pytest.raises(JobError, match=r"^\[topology\] file loop.txt line 3: self-loop 5 → 5"):
        build_graph("file", 8, None, {"path": "loop.txt"})

    with pytest.raises(JobError, match="missing required key 'path'"):
        build_graph("file", 8, None, {})


# --- registry and job keys -------------------------------------------------------------------------

def test_registry_declares_kinds_and_defaults():
    assert set(KINDS) == {"ring", "exponential", "torus", "complete", "star", "erdos_renyi", "chord_ring",
                          "file", "disconnected"}
    assert {k for k, spec in KINDS.items() if spec.default_directed} == {"exponential", "erdos_renyi",
                                                                        "chord_ring"}
    for spec in KINDS.values():
        assert not {p.name for p in spec.params} & {"kind", "n", "directed", "weights"}
        assert spec.describe().startswith(spec.name)


def test_build_graph_uses_kind_default_and_takes_the_kinds_own_keys():
    """The keys every kind has are resolved by topology/section.py, which hands build_graph the rest."""
    from mpidecent.topology.section import kind_keys, resolve_common, resolve_specific

    table = {"kind": "ring", "directed": True, "weights": "metropolis", "n": 5}
    assert resolve_common(table) == table and resolve_specific("ring", table) == {}
    assert build_graph("ring", 5, None, kind_keys(table)) == ring(5)
    assert build_graph("ring", 5, True, kind_keys(table)) == ring(5, directed=True)
    with pytest.raises(JobError, match=r"unknown key 'kind' for ring \(ring has no keys of its own\)"):
        build_graph("ring", 5, None, table)


def test_unknown_kind_suggests():
    with pytest.raises(JobError) as err:
        build_graph("torsu", 8, None, {})
    assert str(err.value) == ("[topology] kind must be one of 'chord_ring', 'complete', 'disconnected', "
                              "'erdos_renyi', 'exponential', 'file', 'ring', 'star', 'torus'; got 'torsu' "
                              "(did you mean 'torus'?)")


def test_unknown_key_for_kind():
    with pytest.raises(JobError) as err:
        build_graph("ring", 8, None, {"chords": 3})
    assert str(err.value).startswith("[topology] unknown key 'chords' for ring")
    with pytest.raises(JobError, match="did you mean 'rows'"):
        build_graph("torus", 9, None, {"row": 3})


def test_node_count_must_be_positive():
    with pytest.raises(JobError, match=r"the number of nodes must be ≥ 1, got 0"):
        build_graph("ring", 0, None, {})


# --- connectivity ----------------------------------------------------------------------------------

def test_strong_connectivity():
    assert is_strongly_connected(ring(7, directed=True))
    assert is_strongly_connected(ring(1))
    assert is_strongly_connected(exponential(16))
    d = star(5, directed=True)
    assert not is_strongly_connected(d) and is_weakly_connected(d)
    assert is_strongly_connected(star(5))
    assert cannot_reach(d, 0) == [1, 2, 3, 4]
    assert unreachable_from(d, 0) == []
    assert connectivity_problem(d) == "nodes 1, 2, 3, 4 cannot reach node 0"
    assert connectivity_problem(ring(5, directed=True)) is None


def test_disconnected_graph():
    g = Graph.from_pairs(7, [(0, 1), (1, 0), (5, 6)], directed=True)
    assert not is_weakly_connected(g)
    assert connectivity_problem(g, strong=False) == "nodes 2, 3, 4, 5, 6 are not connected to node 0"
    path = Graph.from_pairs(3, [(0, 1), (1, 2)], directed=True)
    assert connectivity_problem(path) == "nodes 1, 2 cannot reach node 0"
    back = Graph.from_pairs(3, [(0, 1), (1, 0), (2, 0)], directed=True)
    assert connectivity_problem(back) == "node 0 cannot reach node 2"


# --- weights ---------------------------------------------------------------------------------------

def test_column_uniform_weights():
    g = chord_ring(8)
    w = column_stochastic_uniform(g)
    assert w.shape == (8, 8) and w.dtype == np.float64
    assert np.allclose(w.sum(axis=0), 1.0, rtol=0, atol=1e-15)
    assert is_column_stochastic(w) and not is_row_stochastic(w)
    share = 1.0 / (g.out_degree + 1)
    for j in range(8):
        expected = np.zeros(8)
        expected[g.out_neighbors(j)] = share[j]
        expected[j] = share[j]
        assert np.array_equal(w[:, j], expected)
    # regular digraph: also row stochastic
    assert is_doubly_stochastic(column_stochastic_uniform(exponential(8)))


def test_metropolis_weights_on_a_star():
    w = metropolis_hastings(star(5))
    # hub degree 4, leaves degree 1: every edge weight is 1 / (1 + 4)
    expected = np.zeros((5, 5))
    expected[0, 1:] = expected[1:, 0] = 0.2
    expected[0, 0] = 1 - 4 * 0.2
    expected[np.arange(1, 5), np.arange(1, 5)] = 0.8
    assert np.allclose(w, expected, rtol=0, atol=1e-15)
    assert is_symmetric(w) and is_doubly_stochastic(w)


def test_metropolis_on_irregular_undirected_graph_is_doubly_stochastic():
    w = metropolis_hastings(erdos_renyi(12, 0.3, seed=3, directed=False))
    assert is_symmetric(w) and is_doubly_stochastic(w) and np.all(np.diag(w) > 0)


def test_metropolis_rejects_directed():
    with pytest.raises(ValueError, match="metropolis_hastings needs an undirected graph"):
        metropolis_hastings(ring(4, directed=True))
    with pytest.raises(JobError, match=r"\[topology\] weights = 'metropolis' needs an undirected graph"):
        build_weights("metropolis", ring(4, directed=True))
    # a directed-flagged graph whose edge set is symmetric is accepted
    assert is_doubly_stochastic(metropolis_hastings(complete(4, directed=True)))


def test_build_weights_unknown_name():
    assert set(WEIGHTS) == {"column_uniform", "metropolis"}
    with pytest.raises(JobError, match="did you mean 'metropolis'"):
        build_weights("metropolis_hastings", ring(4))


def test_spectral_gap_complete_graph_is_one():
    w = metropolis_hastings(complete(6))
    assert np.allclose(w, 1 / 6)
    assert spectral_gap(w) == pytest.approx(1.0, abs=1e-12)


def test_spectral_gap_undirected_ring_closed_form():
    n = 8
    expected = 1 - (1 / 3 + 2 / 3 * np.cos(2 * np.pi / n))
    assert spectral_gap(metropolis_hastings(ring(n))) == pytest.approx(expected, abs=1e-12)


def test_spectral_gap_directed_ring_closed_form():
    for n in (5, 8):
        w = column_stochastic_uniform(ring(n, directed=True))
        expected = 1 - abs(0.5 + 0.5 * np.exp(2j * np.pi / n))
        assert spectral_gap(w) == pytest.approx(expected, abs=1e-12)


def test_spectral_gap_edge_cases():
    assert spectral_gap(np.ones((1, 1))) == 1.0
    disconnected = metropolis_hastings(Graph.from_pairs(4, [(0, 1), (2, 3)], directed=False))
    assert spectral_gap(disconnected) == pytest.approx(0.0, abs=1e-12)
    assert spectral_gap(metropolis_hastings(torus(9))) > spectral_gap(metropolis_hastings(ring(9)))


def test_stochastic_checks_reject_negative_or_non_square():
    assert not is_row_stochastic(np.array([[1.5, -0.5], [0.0, 1.0]]))
    assert not is_column_stochastic(np.ones((2, 3)) / 2)
    assert not is_symmetric(np.array([[0.5, 0.5], [0.0, 1.0]]))


def test_topology_package_imports_no_mpi_or_torch():
    code = ("import sys, mpidecent.topology; "
            "bad = [m for m in ('mpi4py', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_disconnected_graph_has_no_edges_and_identity_weights():
    from mpidecent.topology import WEIGHTS

    graph = build_graph("disconnected", 5, None, {})
    assert graph.num_edges == 0 and not is_strongly_connected(graph)
    np.testing.assert_array_equal(WEIGHTS["metropolis"](graph), np.eye(5))
    np.testing.assert_array_equal(WEIGHTS["column_uniform"](graph), np.eye(5))


def test_one_peer_exponential_schedule():
    from mpidecent.topology.schedule import one_peer_exponential, schedule_spectral_gap
    from mpidecent.topology import column_stochastic_uniform

    schedule = one_peer_exponential(8)
    assert schedule.period == 3 and schedule.time_varying
    for k, graph in enumerate(schedule.graphs):
        assert graph.out_degree.tolist() == [1] * 8 and graph.in_degree.tolist() == [1] * 8
        assert graph.out_neighbors(5).tolist() == [(5 + 2 ** k) % 8]
    assert schedule.at(4) is schedule.graphs[1]
    np.testing.assert_array_equal(schedule.union().edges, exponential(8).edges)
    weights = tuple(column_stochastic_uniform(g) for g in schedule.graphs)
    # With n a power of two, one period of one-peer averaging is exact averaging: W2 W1 W0 = J / n.
    product = weights[2] @ weights[1] @ weights[0]
    np.testing.assert_allclose(product, np.full((8, 8), 1 / 8), atol=1e-15)
    assert schedule_spectral_gap(weights) > 1 - 1e-4  # |λ₂| is rounding noise (~1e-17), cube-rooted
    assert one_peer_exponential(6).period == 3 and one_peer_exponential(1).graphs[0].num_edges == 0
