"""This rank's neighbourhood on a static directed graph, as an MPI distributed-graph communicator.

Every rank builds the same ``Graph`` from the job (topology is pure and deterministic), then passes its
own in- and out-neighbours to ``Create_dist_graph_adjacent(reorder=False)``, so communicator ranks equal
``COMM_WORLD`` ranks and the neighbour lists MPI reports are the topology's. Which ranks call: all,
collectively, in the same order.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpidecent.comm.exchange import NeighborExchange
from mpidecent.topology import Graph


class GraphNeighborhood:
    """In/out-neighbours of this rank and a factory for preallocated neighbour exchanges."""

    def __init__(self, comm: MPI.Intracomm, graph: Graph) -> None:
        if graph.n != comm.size:
            raise ValueError(f"graph has {graph.n} nodes but the communicator has {comm.size} ranks")
        rank = comm.rank
        sources = [int(j) for j in graph.in_neighbors(rank)]
        destinations = [int(j) for j in graph.out_neighbors(rank)]
        self.comm: MPI.Distgraphcomm = comm.Create_dist_graph_adjacent(sources, destinations, reorder=False)
        mpi_sources, mpi_destinations, _ = self.comm.Get_dist_neighbors()
        self.in_neighbors = np.asarray(mpi_sources, dtype=np.int64)
        self.out_neighbors = np.asarray(mpi_destinations, dtype=np.int64)

    def exchange(self, send_nbytes: int, recv_nbytes: int, tag: int = 0) -> NeighborExchange:
        return NeighborExchange(self.comm, self.in_neighbors, self.out_neighbors, send_nbytes, recv_nbytes, tag)

    def free(self) -> None:
        if self.comm != MPI.COMM_NULL:
            self.comm.Free()
