"""Connectivity checks on a ``Graph``, with helpers that phrase what is wrong for error messages.

Push-sum methods need a strongly connected digraph (every node's mass must reach every other node);
methods on undirected graphs need a connected one. For a graph that lists both directions of every
edge, weak and strong connectivity coincide.

Reachability is a breadth-first search whose frontier is expanded with one vectorised gather per
level over the graph's CSR arrays, so it costs O(n + E) numpy work plus one call per BFS level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # graphs.py imports this module; avoid the cycle at run time
    from mpidecent.topology.graphs import Graph


def _reachable(indptr: np.ndarray, indices: np.ndarray, n: int, source: int) -> np.ndarray:
    """``(n,)`` bool: nodes reachable from ``source`` following CSR adjacency ``(indptr,
    indices)``."""
    seen = np.zeros(n, dtype=bool)
    seen[source] = True
    frontier = np.array([source], dtype=np.int64)
    while frontier.size:
        starts = indptr[frontier]
        counts = indptr[frontier + 1] - starts
        total = int(counts.sum())
        if total == 0:
            break
        # Position p of the concatenated neighbour lists maps to indices[starts[k] + (p -
        # offset_k)].
        offsets = np.cumsum(counts) - counts
        gather = np.arange(total) + np.repeat(starts - offsets, counts)
        nbrs = np.unique(indices[gather])
        frontier = nbrs[~seen[nbrs]]
        seen[frontier] = True
    return seen


def reachable_from(graph: Graph, source: int) -> np.ndarray:
    """``(n,)`` bool: nodes reachable from ``source`` along edges (``source`` itself included)."""
    return _reachable(*graph.out_csr, graph.n, graph.check_node(source))


def reaching(graph: Graph, target: int) -> np.ndarray:
    """``(n,)`` bool: nodes that can reach ``target`` along edges (``target`` itself included)."""
    return _reachable(*graph.in_csr, graph.n, graph.check_node(target))


def unreachable_from(graph: Graph, source: int = 0) -> list[int]:
    """Sorted nodes that ``source`` cannot reach (its messages never arrive there)."""
    return np.flatnonzero(~reachable_from(graph, source)).tolist()


def cannot_reach(graph: Graph, target: int = 0) -> list[int]:
    """Sorted nodes that cannot reach ``target`` (their messages never arrive at it)."""
    return np.flatnonzero(~reaching(graph, target)).tolist()


def is_strongly_connected(graph: Graph) -> bool:
    """True iff every node can reach every other: BFS forward and backward from node 0.
    A single node is strongly connected."""
    return bool(reachable_from(graph, 0).all() and reaching(graph, 0).all())


def _reachable_ignoring_direction(graph: Graph, source: int) -> np.ndarray:
    """``(n,)`` bool: nodes joined to ``source`` by a path when edge directions are ignored."""
    both = np.concatenate([graph.edges, graph.edges[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]  # CSR needs rows grouped by source node
    indptr = np.searchsorted(both[:, 0], np.arange(graph.n + 1))
    return _reachable(indptr, both[:, 1], graph.n, graph.check_node(source))


def is_weakly_connected(graph: Graph) -> bool:
    """True iff the graph is connected when edge directions are ignored."""
    return bool(_reachable_ignoring_direction(graph, 0).all())


def _nodes_phrase(nodes: list[int], limit: int = 10) -> str:
    """``"node 5"``, ``"nodes 5, 6"``, or the first ``limit`` then ``"(and 7 more)"``."""
    if len(nodes) == 1:
        return f"node {nodes[0]}"
    shown = ", ".join(str(v) for v in nodes[:limit])
    more = f" (and {len(nodes) - limit} more)" if len(nodes) > limit else ""
    return f"nodes {shown}{more}"


def connectivity_problem(graph: Graph, strong: bool = True) -> str | None:
    """``None`` if the graph is strongly (``strong=True``) or weakly connected, else a phrase for an
    error message such as ``"nodes 5, 6 cannot reach node 0"`` or ``"node 0 cannot reach node
    3"``."""
    if not strong:
        apart = np.flatnonzero(~_reachable_ignoring_direction(graph, 0)).tolist()
        if not apart:
            return None
        return (
            f"{_nodes_phrase(apart)} {'is' if len(apart) == 1 else 'are'} not connected to node 0"
        )
    stuck = cannot_reach(graph, 0)
    if stuck:
        return f"{_nodes_phrase(stuck)} cannot reach node 0"
    missed = unreachable_from(graph, 0)
    if missed:
        return f"node 0 cannot reach {_nodes_phrase(missed)}"
    return None


def eccentricity(graph: Graph, source: int, limit: int) -> int | None:
    """The longest shortest directed path out of ``source`` (0 for one node) when it is at most
    ``limit``; None when ``source`` cannot reach some node within ``limit`` steps (or at all). A
    breadth-first search of at most ``limit`` levels, each one vectorised gather over the graph's
    CSR arrays."""
    indptr, targets = graph.out_csr
    seen = np.zeros(graph.n, dtype=bool)
    seen[source] = True
    frontier = np.array([source], dtype=np.int64)
    reached, level = 1, 0
    while reached < graph.n:
        if level == limit:
            return None
        starts = indptr[frontier]
        counts = indptr[frontier + 1] - starts
        # position p of the concatenated out-lists is targets[starts[k] + (p - offset of list k)]
        gather = np.arange(int(counts.sum())) + np.repeat(
            starts - (np.cumsum(counts) - counts), counts
        )
        ahead = np.unique(targets[gather])
        frontier = ahead[~seen[ahead]]
        if frontier.size == 0:
            return None
        seen[frontier] = True
        reached += frontier.size
        level += 1
    return level


def directed_diameter(graph: Graph, limit: int) -> int | None:
    """The longest shortest directed path of ``graph`` when it is at most ``limit``, else None (some
    node cannot reach another, or only in more steps): the largest ``eccentricity``, one search per
    node (the runner shares this work out, one search per rank: ``comm.status.agreed_lag``)."""
    diameter = 0
    for source in range(graph.n):
        farthest = eccentricity(graph, source, limit)
        if farthest is None:
            return None
        diameter = max(diameter, farthest)
    return diameter
