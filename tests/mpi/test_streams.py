"""Named message streams under mpirun (comm/neighbor.py over comm/graph.py): a rank-dependent stream order
is refused on every rank, and an algorithm with two compressed streams in flight at once is
bit-identical to its in-memory twin."""

import sys
from pathlib import Path

import numpy as np
import pytest

from mpitools import all_ranks
from mpidecent.comm.neighbor import StreamError
from mpidecent.rng import generator
from mpidecent.runner import gossip_only
from mpidecent.runner.simulate import Simulation
from mpidecent.topology import build_graph, metropolis_hastings
from mpidecent.topology.schedule import Schedule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from toy_algorithms import MISORDERED, TWO_STREAMS  # noqa: E402

QSGD = {"levels": 16, "bucket": 64}


def _x0(rank: int, d: int = 96) -> np.ndarray:
    return generator(3, rank, 0, "test").standard_normal(d)


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
def test_streams_opened_in_another_order_on_some_ranks_are_refused_on_every_rank(comm):
    graph = build_graph("ring", comm.size, False, {})
    message = ""
    try:
        gossip_only(comm, Schedule.static(graph), (metropolis_hastings(graph),), MISORDERED, "qsgd", QSGD, {},
                    _x0(comm.rank))
    except StreamError as err:
        message = str(err)
    assert all_ranks("rank 0 opened 'model'" in message and "rank 1 opened 'direction'" in message), message


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
def test_two_compressed_streams_in_flight_at_once_match_the_twin_bit_for_bit(comm):
    steps = 9
    graph = build_graph("torus", comm.size, False, {}) if comm.size in (4, 9) else build_graph("ring", comm.size,
                                                                                                False, {})
    schedule, weights = Schedule.static(graph), (metropolis_hastings(graph),)
    centers = np.stack([_x0(r + 100) for r in range(comm.size)])
    params = {"lr": 0.05, "gamma": 0.5}

    def quadratic(algo, center):
        obj = algo.objective
        obj.loss_grad = lambda t: float(np.subtract(obj.params, center, out=obj.grads) @ obj.grads)

    algo, connection = gossip_only(comm, schedule, weights, TWO_STREAMS, "qsgd", QSGD, params, _x0(comm.rank),
                                   steps=steps)
    quadratic(algo, centers[comm.rank])
    traffic = [(s.bits_sent, s.messages_sent) for s in (algo.step(t) for t in range(steps))]
    mine = {k: v.copy() for k, v in algo.state().items()}
    gathered = comm.gather((mine, traffic), root=0)
    connection.close()
    problems = []
    if comm.rank == 0:
        twin = Simulation.gossip(schedule, weights, TWO_STREAMS, "qsgd", QSGD, params,
                                 np.stack([_x0(r) for r in range(comm.size)]), steps=steps)
        for r, a in enumerate(twin.algorithms):
            quadratic(a, centers[r])
        twin_stats = twin.run(steps)
        for rank, ((state, sent), node, stats) in enumerate(zip(gathered, twin.algorithms, twin_stats)):
            problems += [f"rank {rank}: {k} differs" for k, v in node.state().items()
                         if not np.array_equal(v, state[k])]
            if sent != [(s.bits_sent, s.messages_sent) for s in stats]:
                problems.append(f"rank {rank}: traffic differs")
            if sent[0][1] != 2 * len(graph.out_neighbors(rank)):
                problems.append(f"rank {rank}: {sent[0][1]} messages in a step, not two per out-neighbour")
        if np.allclose(twin.models(), twin.models()[0]):
            problems.append("every node holds the same model: the comparison would prove little")
    problems = comm.bcast(problems, root=0)
    assert all_ranks(not problems), problems
