"""The distributed-graph communicator and the neighbour exchange (comm/graph.py, comm/exchange.py)."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitools import all_ranks
from mpidecent.comm.graph import GraphNeighborhood
from mpidecent.topology import build_graph


def _graphs(n):
    yield build_graph("chord_ring", n, None, {"chords": 3, "seed": 1})
    yield build_graph("exponential", n, None, {})
    yield build_graph("torus", n, None, {})
    yield build_graph("star", n, True, {})  # zero in-degree leaves are allowed by the comm layer
    yield build_graph("complete", n, None, {})


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(60)
def test_neighbours_from_mpi_match_the_topology(comm):
    for graph in _graphs(comm.size):
        nbr = GraphNeighborhood(comm, graph)
        ok = (nbr.in_neighbors.tolist() == graph.in_neighbors(comm.rank).tolist()
              and nbr.out_neighbors.tolist() == graph.out_neighbors(comm.rank).tolist()
              and nbr.comm.Get_topology() == MPI.DIST_GRAPH)
        nbr.free()
        assert all_ranks(ok), graph.kind


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(60)
def test_exchange_delivers_each_in_neighbours_bytes(comm):
    graph = build_graph("chord_ring", comm.size, None, {"chords": 3, "seed": 2})
    nbr = GraphNeighborhood(comm, graph)
    nbytes = 1001  # not a multiple of 8 on purpose
    exchange = nbr.exchange(nbytes, nbytes)
    for step in range(3):
        payload = ((np.arange(nbytes) + 7 * comm.rank + step) % 251).astype(np.uint8)
        exchange.start(payload)
        recv = exchange.wait()
        expected = np.stack([((np.arange(nbytes) + 7 * j + step) % 251).astype(np.uint8)
                             for j in nbr.in_neighbors]) if len(nbr.in_neighbors) else recv
        assert all_ranks(np.array_equal(recv, expected))
    assert exchange.bytes_per_step == nbytes * len(graph.out_neighbors(comm.rank))
    with pytest.raises(ValueError, match="must be 1001 contiguous uint8 bytes"):
        exchange.start(np.zeros(10, dtype=np.uint8))
    nbr.free()
