"""The in-memory twin of the neighbour pattern (comm/memory.py, runner/simulate.py) against real MPI:
every neighbour algorithm, run by mpirun and simulated on rank 0 with as many nodes as ranks, ends in
bit-identical states and counts the same traffic."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitools import all_ranks, build_runner, plan_of
from mpidecent.runner.simulate import Simulation

STEPS = 12
JOB = """
[run]
steps = 12
seed = 5
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
lr = 0.1
[data]
name = "synthetic_logistic"
samples = 400
features = 12
partition = "sorted"
batch_size = 8
[model]
name = "logistic"
l2 = 0.01
init = "normal"
init_identical = false
"""

CASES = {
    "dpsgd": [],
    "dmsgd": ["algorithm.name=dmsgd", "algorithm.beta=0.9"],
    "local_momentum": ["algorithm.name=local_momentum", "algorithm.beta=0.9"],
    "multi_gossip": ["algorithm.name=multi_gossip", "algorithm.gossip_rounds=3", "algorithm.gamma=0.4",
                     "compression.name=qsgd_contractive", "compression.bits=2", "topology.kind=torus"],
    "choco_sgd": ["algorithm.name=choco_sgd", "compression.name=randk", "compression.fraction=0.3",
                  "topology.kind=complete"],
    "push_sum": ["algorithm.name=push_sum", "topology.kind=chord_ring", "topology.chords=2"],
    "quantized_push_sum": ["algorithm.name=quantized_push_sum", "algorithm.gamma=0.8", "compression.name=qsgd",
                           "compression.levels=8", "topology.kind=chord_ring", "topology.chords=2",
                           "run.dtype=float32"],
    "qps_time_varying": ["algorithm.name=quantized_push_sum", "compression.name=qsgd",
                         "topology.kind=one_peer_exponential"],
}


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", list(CASES))
def test_the_twin_is_bit_identical_to_mpi(case, mpi_tmp_path):
    comm = MPI.COMM_WORLD
    overrides = CASES[case]
    runner = build_runner(JOB, mpi_tmp_path / f"{case}.h5", overrides)
    stats = [runner.algorithm.step(t) for t in range(STEPS)]
    mine = {name: array.copy() for name, array in runner.algorithm.state().items()}
    traffic = [(s.bits_sent, s.bytes_sent, s.messages_sent) for s in stats]
    gathered = comm.gather((mine, runner.algorithm.model_view().copy(), traffic), root=0)
    problems = []
    if comm.rank == 0:
        twin = Simulation.of_plan(plan_of(JOB, overrides))
        twin_stats = twin.run(STEPS)
        for rank, ((state, model, sent), algorithm, node_stats) in enumerate(zip(gathered, twin.algorithms,
                                                                               twin_stats)):
            simulated = algorithm.state()
            if set(simulated) != set(state):
                problems.append(f"rank {rank}: state names {sorted(simulated)} vs {sorted(state)}")
            problems += [f"rank {rank}: {name} differs" for name in state
                         if not np.array_equal(state[name], simulated.get(name))]
            if not np.array_equal(model, algorithm.model_view()):
                problems.append(f"rank {rank}: model differs")
            if sent != [(s.bits_sent, s.bytes_sent, s.messages_sent) for s in node_stats]:
                problems.append(f"rank {rank}: traffic differs")
        if not np.any(twin.models() != twin.models()[0]):
            problems.append("every node ends with the same model: the comparison would prove little")
    problems = comm.bcast(problems, root=0)
    runner.connection.close()
    assert all_ranks(not problems), problems
