"""This rank's neighbourhood on a static or time-varying directed graph: the MPI ``Transport`` of
the neighbour pattern (``comm/neighbor.py``).

Static graphs: every rank passes its own in- and out-neighbours to
``Create_dist_graph_adjacent(reorder=False)`` (communicator ranks = ``COMM_WORLD`` ranks), and the
neighbour lists MPI reports are used. Time-varying schedules: a duplicate of the given communicator
(a distributed-graph communicator describes one fixed graph). Either way every exchange carries its
stream's tag (``comm/neighbor.py``). Which ranks call: all, collectively, in the same order.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpidecent.comm.exchange import NeighborExchange, tag_limit
from mpidecent.topology.schedule import Schedule


class Neighborhood:
    """In/out-neighbours of this rank at every step, and a factory for preallocated exchanges
    (implements ``comm.protocols.Transport``)."""

    def __init__(self, comm: MPI.Intracomm, schedule: Schedule) -> None:
        if schedule.n != comm.size:
            raise ValueError(
                f"graph has {schedule.n} nodes but the communicator has {comm.size} ranks"
            )
        rank = comm.rank
        if schedule.time_varying:
            self.comm: MPI.Intracomm = comm.Dup()
            self.slots = [
                (g.in_neighbors(rank).tolist(), g.out_neighbors(rank).tolist())
                for g in schedule.graphs
            ]
        else:
            graph = schedule.graphs[0]
            self.comm = comm.Create_dist_graph_adjacent(
                graph.in_neighbors(rank).tolist(), graph.out_neighbors(rank).tolist(), reorder=False
            )
            sources, destinations, _ = self.comm.Get_dist_neighbors()
            self.slots = [(list(sources), list(destinations))]
        self.time_varying = schedule.time_varying
        self.tag_limit = tag_limit()

    def in_neighbors(self, step: int = 0) -> np.ndarray:
        return np.asarray(self.slots[step % len(self.slots)][0], dtype=np.int64)

    def out_neighbors(self, step: int = 0) -> np.ndarray:
        return np.asarray(self.slots[step % len(self.slots)][1], dtype=np.int64)

    def exchange(self, send_nbytes: int, recv_nbytes: int) -> NeighborExchange:
        return NeighborExchange(self.comm, self.slots, send_nbytes, recv_nbytes)

    def agree(self, value: object) -> list:
        """Collective over every rank of the communicator (set-up only, pickled): every rank's
        ``value``, in rank order."""
        return self.comm.allgather(value)

    def free(self) -> None:
        if self.comm != MPI.COMM_NULL:
            self.comm.Free()
