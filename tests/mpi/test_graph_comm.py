"""The neighbourhood (distributed-graph communicator or tagged schedule) and the exchange
(comm/graph.py, comm/exchange.py)."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitools import all_ranks
from mpidecent.comm.graph import Neighborhood
from mpidecent.topology import build_graph
from mpidecent.topology.schedule import Schedule, one_peer_exponential


def _graphs(n):
    yield build_graph("chord_ring", n, None, {"chords": 3, "seed": 1})
    yield build_graph("exponential", n, None, {})
    yield build_graph("torus", n, None, {})
    yield build_graph("star", n, True, {})  # zero in-degree leaves are allowed by the comm layer
    yield build_graph("complete", n, None, {})


def _payload(nbytes: int, sender: int, step: int) -> np.ndarray:
    return ((np.arange(nbytes) + 7 * sender + 13 * step) % 251).astype(np.uint8)


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(60)
def test_neighbours_from_mpi_match_the_topology(comm):
    for graph in _graphs(comm.size):
        nbr = Neighborhood(comm, Schedule.static(graph))
        ok = (nbr.in_neighbors().tolist() == graph.in_neighbors(comm.rank).tolist()
              and nbr.out_neighbors().tolist() == graph.out_neighbors(comm.rank).tolist()
              and nbr.comm.Get_topology() == MPI.DIST_GRAPH)
        nbr.free()
        assert all_ranks(ok), graph.kind


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(60)
def test_exchange_delivers_each_in_neighbours_bytes(comm):
    graph = build_graph("chord_ring", comm.size, None, {"chords": 3, "seed": 2})
    nbr = Neighborhood(comm, Schedule.static(graph))
    nbytes = 1001  # not a multiple of 8 on purpose
    exchange = nbr.exchange(nbytes, nbytes)
    for step in range(3):
        exchange.start(_payload(nbytes, comm.rank, step), step)
        recv = exchange.wait()
        expected = [_payload(nbytes, j, step) for j in graph.in_neighbors(comm.rank)]
        assert all_ranks(len(recv) == len(expected) and all(np.array_equal(r, e) for r, e in zip(recv, expected)))
    with pytest.raises(ValueError, match="must be 1001 contiguous uint8 bytes"):
        exchange.start(np.zeros(10, dtype=np.uint8))
    nbr.free()


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(60)
def test_time_varying_exchange_reaches_the_step_peer_with_step_tags(comm):
    schedule = one_peer_exponential(comm.size)
    nbr = Neighborhood(comm, schedule)
    assert nbr.comm.Get_topology() == MPI.UNDEFINED  # a duplicate of COMM_WORLD, not a graph communicator
    exchange = nbr.exchange(64, 64)
    ok = True
    for step in range(2 * schedule.period + 1):
        exchange.start(_payload(64, comm.rank, step), step)
        recv = exchange.wait()
        (sender,) = schedule.at(step).in_neighbors(comm.rank)
        ok &= len(recv) == 1 and np.array_equal(recv[0], _payload(64, int(sender), step))
    assert all_ranks(ok)
    nbr.free()
