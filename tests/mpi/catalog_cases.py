"""The MPI tests' cases, read from the catalog: every ``AlgorithmSpec.cases()`` entry becomes one
parameter, so a new algorithm is tested without editing a test.

A test owns its base job (run, data, model, step size); this module adds ``algorithm.name`` and the
graph of the algorithm's pattern, then the case's own overrides, which may change the graph again.
Pure (no mpi4py): ``tests/unit/test_catalog_declarations.py`` reads it too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mpidecent.algorithms import ALGORITHMS, AlgorithmSpec
from mpidecent.comm.patterns import NeighborGossip, Pattern

DIRECTED_GRAPH = "chord_ring"  # an irregular strongly connected digraph (push-sum)
UNDIRECTED_GRAPH = "ring"


def pattern_graph(pattern: Pattern) -> list[str]:
    """The overrides that give a test job a graph ``pattern`` accepts: a neighbour pattern's base graph,
    a fixed-graph pattern's one graph, none where the pattern has a default (one-sided gossip)."""
    if isinstance(pattern, NeighborGossip):
        return [f"topology.kind={DIRECTED_GRAPH if pattern.directed else UNDIRECTED_GRAPH}"]
    if pattern.fixed_kind is not None:
        return [f"topology.kind={pattern.fixed_kind}"]
    return []


def case_overrides(spec: AlgorithmSpec, case: str) -> list[str]:
    """The overrides of ``case`` of ``spec`` on a test's base job."""
    overrides = spec.cases()[case]
    # [outer] pairing = "random" draws its own pairs every round and refuses a [topology]
    graph = [] if "outer.pairing=random" in overrides else pattern_graph(spec.pattern)
    return [f"algorithm.name={spec.name}", *graph, *overrides]


def catalog_cases(runs_here: Callable[[AlgorithmSpec], bool]) -> list:
    """One pytest parameter (case name, its overrides; id: the case name) per case of every spec that
    ``runs_here`` accepts, for ``parametrize("case, overrides", ...)``."""
    return [pytest.param(case, case_overrides(spec, case), id=case)
            for spec in ALGORITHMS.values() if runs_here(spec) for case in spec.cases()]


def resume_tested_here(spec: AlgorithmSpec) -> bool:
    """Whether the bit-identical resume test (test_checkpoint.py) runs ``spec``: unless its declaration
    names the test that checks its resume instead (``resume_tested_by``)."""
    return spec.resume_tested_by is None


def has_a_twin(spec: AlgorithmSpec) -> bool:
    """Whether the in-memory twin (test_memory_twin.py) runs ``spec``: the twin is the neighbour
    pattern's (comm/memory.py), so every ``NeighborGossip`` algorithm and no other."""
    return isinstance(spec.pattern, NeighborGossip)
