"""Communication patterns: what an algorithm needs from the network, as objects.

An algorithm declares one pattern (``algorithms/catalog.py``). The pattern owns everything that
algorithms of its kind share:

- **which graphs fit**, checked when the job is read (``topology``: the ``[topology]`` section,
  pure) and when it is planned for n ranks (``check``: connectivity, mixing weights, enough ranks);
- **its MPI objects** for one rank (``connect``: a distributed-graph communicator, a master/worker
  channel, an RMA window), freed together by ``Connection.close``;
- for neighbour gossip, the **message stream** itself (``comm/neighbor.py``: encode → exchange →
  decode → weighted mix, with the traffic counts), so that an algorithm file holds only its maths.

The four patterns::

    NeighborGossip   every step, one message to each out-neighbour and one from each in-neighbour
                     (static or time-varying graph; directed for push-sum, undirected otherwise)
    AllReduce        a sum over every rank (no graph; the complete graph is recorded)
    MasterWorker     rank 0 serves ranks 1..n (the star around rank 0 is recorded)
    OneSidedGossip   reads of peers' RMA windows (the in-neighbours of a strongly connected graph,
                     default: any rank)

This module is pure (numpy and the topology package): ``connect`` imports the MPI modules only when
it runs, so job validation never loads mpi4py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mpidecent.comm.messages import Traffic
from mpidecent.errors import JobError
from mpidecent.params import toml_value
from mpidecent.topology import (
    connectivity_problem,
    is_column_stochastic,
    is_doubly_stochastic,
    is_strongly_connected,
)
from mpidecent.topology.graphs import KINDS, Graph
from mpidecent.topology.section import is_schedule, resolve_common, resolve_specific

if TYPE_CHECKING:
    from mpidecent.comm.neighbor import Neighbors
    from mpidecent.comm.protocols import MasterWorkerLink, Window
    from mpidecent.topology.schedule import Schedule


@dataclass(frozen=True)
class Wiring:
    """What a pattern needs to build one rank's MPI objects: the planned graph schedule and mixing
    matrices ((n, n) float64 per slot, row = receiver), and the sizes of the model and of a
    message."""

    rank: int
    schedule: Schedule
    slot_weights: tuple[np.ndarray, ...]
    dim: int
    dtype: np.dtype
    message_nbytes: int


@dataclass
class Connection:
    """One rank's MPI objects of a pattern; ``close`` (collective) frees them."""

    neighbors: Neighbors | None = None
    master_worker: MasterWorkerLink | None = None
    window: Window | None = None
    peers: np.ndarray | None = None  # one-sided gossip: the ranks this rank reads (sorted)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()


class Pattern:
    """Base of the patterns: the ``[topology]`` rules every pattern applies in the same order."""

    name: ClassVar[str]
    time_varying: bool = False  # time-varying schedules (e.g. one_peer_exponential) are supported
    undirected: bool = False  # the graph must be undirected
    default_weights: str = "metropolis"
    fixed_kind: ClassVar[str | None] = None  # the one graph the pattern communicates over, if any

    def describe_needs(self) -> str:
        """What graph the pattern needs, for the job-file reference."""
        raise NotImplementedError

    # ---- the [topology] section (config: pure, before any rank count is known) -------------------

    def default_section(self, algorithm: str) -> dict[str, Any]:
        raise JobError(
            f"missing [topology] section: {algorithm} needs a graph "
            f"(kind = one of {', '.join(KINDS)})"
        )

    def topology(self, table: Mapping[str, Any] | None, algorithm: str) -> dict[str, Any]:
        """The resolved ``[topology]`` section for ``algorithm`` (JobError naming the key)."""
        table = dict(table) if table is not None else self.default_section(algorithm)
        if "kind" not in table:
            raise JobError(f"[topology] missing required key 'kind' (one of {', '.join(KINDS)})")
        common = resolve_common(table)
        kind = common["kind"]
        if is_schedule(kind):
            if not self.time_varying:
                raise JobError(
                    f"[topology] kind = {kind!r} is time-varying; {algorithm} needs a static "
                    "graph (time-varying graphs work with push_sum, quantized_push_sum, push_pull "
                    "and push_diging)"
                )
            if common["directed"] is False:
                raise JobError(f"[topology] kind = {kind!r} is directed; remove directed = false")
            common["directed"] = True
        specific = resolve_specific(kind, table)
        if common["directed"] is None:
            common["directed"] = KINDS[kind].default_directed
        if self.undirected and common["directed"] and kind != "disconnected":
            raise JobError(
                f"[topology] directed = true: {algorithm} needs an undirected graph; set directed "
                "= false or use push_sum, quantized_push_sum, push_pull or push_diging on "
                "directed graphs"
            )
        if common["weights"] == "auto":
            common["weights"] = self.default_weights
        elif common["weights"] == "metropolis" and common["directed"]:
            raise JobError(
                '[topology] weights = "metropolis" needs an undirected graph (directed = false); '
                'use weights = "column_uniform" on directed graphs'
            )
        return {**common, **specific}

    # ---- the plan for n ranks (pure) -------------------------------------------------------------

    def topology_problem(self, union: Graph, kind: str, algorithm: str) -> str | None:
        """Why the graph (the union over a period) cannot serve this pattern, or None."""
        return None

    def check(
        self,
        algorithm: str,
        topology: Mapping[str, Any],
        n: int,
        union: Graph,
        slot_weights: tuple[np.ndarray, ...],
    ) -> None:
        """Raise ``JobError`` if the planned graph, its weights or ``n`` do not fit the pattern."""
        problem = self.topology_problem(union, topology["kind"], algorithm)
        if problem:
            raise JobError(problem)

    def data_nodes(self, n: int) -> int:
        """How many partitions the training set is cut into on n ranks."""
        return n

    # ---- MPI objects (collective over comm) ------------------------------------------------------

    def connect(self, comm: Any, wiring: Wiring) -> Connection:
        """Collective over ``comm``: this rank's MPI objects (none by default)."""
        return Connection()


def _connectivity(union: Graph, kind: str, algorithm: str, need: str) -> str | None:
    if kind == "disconnected" or is_strongly_connected(
        union
    ):  # the explicit no-communication baseline
        return None
    where = f"[topology] kind = {kind!r}"
    if need == "strong":
        return (
            f"{where} (directed = {str(union.directed).lower()}) on {union.n} nodes is not "
            f"strongly connected ({connectivity_problem(union)}); {algorithm} needs every node to "
            "reach every "
            "other: use another kind or directed = false (`mpidecent topology JOB -n N` shows it)"
        )
    return (
        f"{where} on {union.n} nodes is not connected ({connectivity_problem(union)}); "
        f"{algorithm} needs a connected graph"
    )


@dataclass(frozen=True)
class NeighborGossip(Pattern):
    """Neighbour gossip: each step one message to the step's out-neighbours, one from each
    in-neighbour.

    ``directed``: a strongly connected digraph (push-sum) instead of a connected undirected graph;
    ``weights``: the property the mixing matrix must have ("column_stochastic" or
    "doubly_stochastic"); ``time_varying``: periodic schedules are allowed (step t uses slot t mod
    period)."""

    directed: bool
    weights: str
    time_varying: bool = False
    name: ClassVar[str] = "neighbor"

    @property
    def undirected(self) -> bool:  # type: ignore[override]  # read-only, from ``directed``
        return not self.directed

    @property
    def default_weights(self) -> str:  # type: ignore[override]  # read-only, from ``directed``
        return "column_uniform" if self.directed else "metropolis"

    def describe_needs(self) -> str:
        return (
            "a strongly connected directed graph"
            if self.directed
            else "a connected undirected graph"
        )

    def topology_problem(self, union: Graph, kind: str, algorithm: str) -> str | None:
        return _connectivity(union, kind, algorithm, "strong" if self.directed else "weak")

    def check(
        self,
        algorithm: str,
        topology: Mapping[str, Any],
        n: int,
        union: Graph,
        slot_weights: tuple[np.ndarray, ...],
    ) -> None:
        super().check(algorithm, topology, n, union, slot_weights)
        name = topology["weights"]
        if self.weights == "column_stochastic" and not all(map(is_column_stochastic, slot_weights)):
            raise JobError(
                f"[topology] weights = {name!r} are not column stochastic; {algorithm} needs "
                "column_uniform or metropolis weights"
            )
        if self.weights == "doubly_stochastic" and not all(map(is_doubly_stochastic, slot_weights)):
            raise JobError(
                f"[topology] weights = {name!r} are not doubly stochastic on this graph; "
                f'{algorithm} needs weights = "metropolis"'
            )

    def connect(self, comm: Any, wiring: Wiring) -> Connection:
        """Collective: the graph communicator (static graphs) or a duplicate communicator with step
        tags (time-varying), and this rank's mixing rows."""
        from mpidecent.comm.graph import Neighborhood
        from mpidecent.comm.neighbor import Neighbors, mixing_rows

        transport = Neighborhood(comm, wiring.schedule)
        neighbors = Neighbors(
            transport, mixing_rows(wiring.schedule.graphs, wiring.slot_weights, wiring.rank)
        )
        return Connection(neighbors=neighbors, closers=[transport.free])


class _FixedGraph(Pattern):
    """A pattern whose wiring the algorithm fixes: only that graph is accepted, so the results file
    records what really communicated."""

    what: ClassVar[str]

    def topology(self, table: Mapping[str, Any] | None, algorithm: str) -> dict[str, Any]:
        fixed = self.fixed_kind
        table = dict(table or {"kind": fixed})
        table.setdefault("kind", fixed)
        if table["kind"] != fixed or table.get("hub", 0) != 0 or table.get("directed", False):
            raise JobError(
                f'[topology] {algorithm} {self.what}: remove [topology] or set kind = "{fixed}" '
                f"(undirected{', hub = 0' if fixed == 'star' else ''}), not "
                + ", ".join(
                    f"{k} = {toml_value(v)}"
                    for k, v in table.items()
                    if k in ("kind", "hub", "directed")
                )
            )
        return super().topology(table, algorithm)


class AllReduce(_FixedGraph):
    """A sum over every rank (``Collectives.allreduce_sum``); the complete graph is recorded."""

    name: ClassVar[str] = "allreduce"
    fixed_kind: ClassVar[str] = "complete"
    what: ClassVar[str] = "all-reduces over every rank"

    def describe_needs(self) -> str:
        return "no graph (all ranks)"

    @staticmethod
    def ring_traffic(n: int, dim: int, dtype: np.dtype) -> Traffic:
        """What one rank sends in an all-reduce of ``dim`` entries, modelled as a ring
        (reduce-scatter + all-gather over chunks of ⌈d/n⌉ entries): 2(n − 1) messages of ⌈d/n⌉
        entries, i.e. bits = 2(n − 1)·⌈d/n⌉·b with b = 32 or 64 bits per entry. A model of the wire,
        not a measurement: the MPI library chooses its own all-reduce algorithm."""
        messages = 2 * (n - 1)
        bits = messages * math.ceil(dim / n) * 8 * np.dtype(dtype).itemsize
        return Traffic(bits, bits // 8, messages)


class MasterWorker(_FixedGraph):
    """Rank 0 serves ranks 1..n over tagged point-to-point messages (``comm/master.py``); the star
    around rank 0 is recorded. The training set is cut into one partition per worker."""

    name: ClassVar[str] = "master_worker"
    fixed_kind: ClassVar[str] = "star"
    what: ClassVar[str] = "uses rank 0 as the master of ranks 1..n"

    def describe_needs(self) -> str:
        return "no graph (rank 0 serves ranks 1..n)"

    def check(
        self,
        algorithm: str,
        topology: Mapping[str, Any],
        n: int,
        union: Graph,
        slot_weights: tuple[np.ndarray, ...],
    ) -> None:
        if n - 1 < 1:
            raise JobError(
                f"{algorithm} needs a master and at least one worker: start 2 or more ranks"
            )

    def data_nodes(self, n: int) -> int:
        return n - 1

    def connect(self, comm: Any, wiring: Wiring) -> Connection:
        """Collective: the master/worker channel (a duplicate communicator with step tags).
        Downlink: the full-precision model; uplink: one compressed message."""
        from mpidecent.comm.master import MasterWorker as Channel

        channel = Channel(comm, wiring.dim * np.dtype(wiring.dtype).itemsize, wiring.message_nbytes)
        return Connection(master_worker=channel, closers=[channel.close])


class OneSidedGossip(Pattern):
    """Asynchronous reads of peers' one-sided windows (``comm/window.py``): a rank reads the
    in-neighbours of a strongly connected graph (default complete: any rank); no graph
    communicator."""

    name: ClassVar[str] = "one_sided"
    default_weights: str = "column_uniform"

    def describe_needs(self) -> str:
        return (
            "a strongly connected graph whose in-neighbours a rank reads (default complete: any "
            "rank; no graph communicator)"
        )

    def default_section(self, algorithm: str) -> dict[str, Any]:
        return {"kind": "complete"}

    def topology_problem(self, union: Graph, kind: str, algorithm: str) -> str | None:
        return _connectivity(union, kind, algorithm, "strong")

    def connect(self, comm: Any, wiring: Wiring) -> Connection:
        """Collective: one ``Win.Allocate`` window per rank for the model and its version vector."""
        from mpidecent.comm.window import GossipWindow

        window = GossipWindow(comm, wiring.dim, wiring.dtype)
        peers = np.sort(
            np.asarray(wiring.schedule.graphs[0].in_neighbors(wiring.rank), dtype=np.int64)
        )
        return Connection(window=window, peers=peers, closers=[window.free])
