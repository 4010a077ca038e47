"""Time-varying graphs: a periodic sequence of graphs, the one used at step t being graphs[t %
period].

A static graph is a schedule of period 1, so algorithms and the runner treat both alike. Each slot
has its own mixing matrix (``weights.py`` rules applied to that slot's graph). Pure: no MPI.

``one_peer_exponential``: at step t every node i sends to the single peer i + base^(t mod K) (mod
n), K = number of offsets base^k < n. Every node has one out- and one in-neighbour per step, so a
step costs one message per node; over a period the union is the directed exponential graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpidecent.params import Param, resolve
from mpidecent.topology.graphs import Graph


@dataclass(frozen=True)
class Schedule:
    """``graphs[t % period]`` is the communication graph of step t (all on the same n nodes)."""

    graphs: tuple[Graph, ...]
    kind: str

    @property
    def period(self) -> int:
        return len(self.graphs)

    @property
    def n(self) -> int:
        return self.graphs[0].n

    @property
    def time_varying(self) -> bool:
        return self.period > 1

    def at(self, step: int) -> Graph:
        return self.graphs[step % self.period]

    def union(self) -> Graph:
        """Every edge used in some slot (the graph a period of steps spans)."""
        if self.period == 1:
            return self.graphs[0]
        edges = np.concatenate([g.edges for g in self.graphs])
        return Graph.from_pairs(
            self.n, edges, directed=any(g.directed for g in self.graphs), kind=self.kind
        )

    @staticmethod
    def static(graph: Graph) -> Schedule:
        return Schedule((graph,), graph.kind)


def one_peer_exponential(n: int, base: int = 2) -> Schedule:
    """Slot k: i → i + base^k mod n for every node i (one peer per node per step)."""
    offsets = []
    offset = 1
    while offset < n:
        offsets.append(offset)
        offset *= base
    nodes = np.arange(n)
    graphs = tuple(
        Graph.from_pairs(
            n,
            np.stack([nodes, (nodes + k) % n], axis=1),
            directed=True,
            kind="one_peer_exponential",
        )
        for k in offsets
    )
    return Schedule(
        graphs or (Graph(n, np.zeros((0, 2), dtype=np.int64), True, "one_peer_exponential"),),
        "one_peer_exponential",
    )


def random_pairs(n: int, period: int, seed: int = 0) -> Schedule:
    """Slot r: the ranks of ``rng(seed, r).permutation(n)`` paired in order, (p_0, p_1), (p_2, p_3),
    ..., each pair joined both ways; with n odd the permutation's last rank sits out (no edge that
    slot). Every rank computes the same pairs from (seed, r) alone: no communication to agree.
    NoLoCo's pairing (``[outer] pairing = "random"``); with metropolis or column_uniform weights a
    pair averages, w_ij = w_ii = 1/2, and the rank that sits out keeps its model (w_ii = 1)."""
    graphs = []
    for r in range(period):
        order = np.random.default_rng([seed, r, 0x9A1B]).permutation(n)
        pairs = order[: n - n % 2].reshape(-1, 2)
        edges = (
            np.concatenate([pairs, pairs[:, ::-1]])
            if len(pairs)
            else np.zeros((0, 2), dtype=np.int64)
        )
        graphs.append(Graph.from_pairs(n, edges, directed=False, kind="random_pairs"))
    return Schedule(tuple(graphs), "random_pairs")


def schedule_spectral_gap(weights: tuple[np.ndarray, ...]) -> float:
    """Per-step spectral gap of a period: 1 − |λ₂(W_{K−1} ⋯ W_0)|^(1/K) (the static gap when K =
    1)."""
    product = np.eye(weights[0].shape[0])
    for w in weights:
        product = w @ product
    if product.shape[0] == 1:
        return 1.0
    moduli = np.sort(np.abs(np.linalg.eigvals(product)))[::-1]
    return float(1.0 - moduli[1] ** (1.0 / len(weights)))


@dataclass(frozen=True)
class ScheduleKind:
    """A time-varying value of ``[topology] kind``: its own keys and a builder."""

    name: str
    params: tuple[Param, ...]
    doc: str
    build: Callable[[int, dict[str, Any]], Schedule]


SCHEDULES: dict[str, ScheduleKind] = {
    "one_peer_exponential": ScheduleKind(
        "one_peer_exponential",
        (
            Param(
                "base", int, 2, "at step t node i sends only to i + base^(t mod K) mod n", minimum=2
            ),
        ),
        "time-varying directed exponential graph: one peer per node and step, offsets cycling "
        "(push-sum only)",
        lambda n, p: one_peer_exponential(n, p["base"]),
    ),
    "random_pairs": ScheduleKind(
        "random_pairs",
        (
            Param(
                "period", int, 64, "number of distinct pairings; slot r = t mod period", minimum=1
            ),
            Param("seed", int, 0, "seed of the permutations", minimum=0),
        ),
        "a new random pairing of the nodes every slot, n odd: one sits out ([outer] pairing = "
        '"random" '
        "sets it up with one slot per round)",
        lambda n, p: random_pairs(n, p["period"], p["seed"]),
    ),
}


def build_schedule(kind: str, n: int, table: Mapping[str, Any]) -> Schedule:
    """The schedule ``kind`` on ``n`` nodes from its own keys (``table``: no keys every kind
    has)."""
    spec = SCHEDULES[kind]
    return spec.build(n, resolve("topology", spec.params, table, owner=kind))
