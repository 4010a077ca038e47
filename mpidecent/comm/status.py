"""The ranks' agreement on the run's status flags (a rank went non-finite, a rank got a stop signal,
rank 0 sees no room for the output), so that every rank acts on them at the same step boundary.

Two ways, chosen by the runner (``runner/loop.py``):

* **at a meeting point** (a log or checkpoint boundary, where the ranks meet in collectives anyway):
  ``agree`` — one blocking ``Allreduce(MAX)`` of the flags;
* **between meeting points, pipelined**: after a boundary b every rank ``start``\\ s a non-blocking
  ``Iallreduce(MAX)`` of its flags into a buffer slot of its own, and at boundary b + lag it
  ``due``\\ s (waits for) the reduction started at b. Every rank waits the same reduction at the
  same boundary, so every rank acts at the same boundary, without a blocking collective that would
  tie each step to the slowest rank of the world. A meeting point ``drain``\\ s every reduction
  still in flight (their flags are OR-ed into its own), so the pipe is empty at every log point and
  checkpoint.

The lag (``status_lag``, computed at set-up by ``agreed_lag``): a gossip step needs the messages of
the same step from its in-neighbours, so a rank can run ahead of rank k by at most the length of the
shortest path k → it. With lag ≥ the directed diameter D of the graph, the reduction started at
boundary b has been started by every rank when any rank reaches b + lag, and its ``Wait`` costs no
waiting beyond what gossip already imposes. The lag is clamp(D, 1, ``MAX_LAG``) (a disconnected
graph or D > ``MAX_LAG``: ``MAX_LAG``); it bounds how many steps after a stop signal or a divergence
the ranks act on it.

``MPIDECENT_STATUS=blocking`` (``STATUS_ENV``) brings back a blocking ``Allreduce`` after every
step, for benchmarks comparing the two (``mpidecent bench --sections status``); it is not meant for
runs.

``status_lag`` is pure (the graph searches are ``topology/validate.py``'s); ``agreed_lag`` and
``StatusPipe`` call MPI, imported when they run, so that importing this module never starts MPI (a
process that has started MPI cannot launch ``mpirun`` jobs).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from mpidecent.topology.validate import directed_diameter, eccentricity

if TYPE_CHECKING:
    from mpi4py import MPI

    from mpidecent.topology.graphs import Graph

MAX_LAG = 16  # the most steps between a rank's flag and the boundary where every rank acts on it
STATUS_ENV = "MPIDECENT_STATUS"  # benchmark switch: "pipelined" (default) or "blocking"
STATUS_MODES = ("pipelined", "blocking")


def lag_of(diameter: int | None) -> int:
    """The lag for a graph of this directed diameter (None: beyond MAX_LAG or disconnected)."""
    return MAX_LAG if diameter is None else min(MAX_LAG, max(1, diameter))


def status_lag(graph: Graph) -> int:
    """Steps between a reduction's start and its wait on a neighbour pattern over ``graph`` (the
    union of a schedule's graphs): clamp(directed diameter, 1, MAX_LAG) — see the module docstring.
    Pure, one search per node; the runner uses the collective ``agreed_lag``, which gives the same
    number."""
    return lag_of(directed_diameter(graph, MAX_LAG))


def agreed_lag(comm: MPI.Intracomm, graph: Graph) -> int:
    """Collective over ``comm`` (one rank per node of ``graph``): ``status_lag(graph)``, each rank
    searching from its own node only, then one ``Allreduce(MAX)`` of the eccentricities (O(edges)
    per rank)."""
    from mpi4py import MPI

    farthest = eccentricity(graph, comm.rank, MAX_LAG)
    worst = comm.allreduce(MAX_LAG + 1 if farthest is None else farthest, op=MPI.MAX)
    return lag_of(None if worst > MAX_LAG else worst)


class StatusPipe:
    """Agreement of every rank of ``comm`` on ``width`` int32 flags (element-wise max), blocking at
    a meeting point or pipelined ``lag`` boundaries deep between them (module docstring).

    Which ranks call: every rank of ``comm``, each method at the same step boundaries in the same
    order (the constructor and ``close`` are collective: a communicator of its own is duplicated and
    freed).
    """

    def __init__(self, comm: MPI.Intracomm, lag: int, width: int) -> None:
        from mpi4py import MPI

        if lag < 1:
            raise ValueError(f"lag must be ≥ 1, got {lag}")
        self._mpi = MPI
        self.comm = comm.Dup()  # its reductions never match, or wait behind, anything else's
        self.lag = lag
        # lag + 1 slots: the reductions of boundaries b - lag .. b are in flight at once at boundary
        # b
        self._slots = np.zeros((lag + 1, width), dtype=np.int32)
        self._flight: deque[tuple[int, np.ndarray, MPI.Request]] = deque()

    def agree(self, flags: np.ndarray) -> None:
        """A meeting point: ``flags`` ← the element-wise max over ranks (blocking ``Allreduce``, in
        place). ``drain`` first, so that the flags of every reduction in flight ride along."""
        self.comm.Allreduce(self._mpi.IN_PLACE, flags, op=self._mpi.MAX)

    def start(self, boundary: int, flags: np.ndarray) -> None:
        """After step boundary ``boundary``: start the non-blocking max over ranks of ``flags``
        (copied into this boundary's slot, which MPI writes until the reduction is waited for)."""
        slot = self._slots[boundary % len(self._slots)]
        slot[:] = flags
        self._flight.append(
            (boundary, slot, self.comm.Iallreduce(self._mpi.IN_PLACE, slot, op=self._mpi.MAX))
        )

    def due(self, boundary: int) -> np.ndarray | None:
        """At step boundary ``boundary``: wait for the reductions started ``lag`` or more boundaries
        ago and return their agreed flags (OR-ed); None when none is due. Every rank gets the same
        answer."""
        agreed = None
        while self._flight and self._flight[0][0] <= boundary - self.lag:
            _, slot, request = self._flight.popleft()
            request.Wait()
            agreed = slot.copy() if agreed is None else agreed | slot
        return agreed

    def drain(self) -> np.ndarray:
        """Wait for every reduction in flight; their agreed flags OR-ed (zeros when none was)."""
        agreed = np.zeros(self._slots.shape[1], dtype=np.int32)
        while self._flight:
            _, slot, request = self._flight.popleft()
            request.Wait()
            agreed |= slot
        return agreed

    def close(self) -> None:
        """Collective: wait for what is still in flight (nothing, after a meeting point) and free
        the communicator."""
        self.drain()
        self.comm.Free()
