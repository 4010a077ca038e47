"""The in-memory twin of the neighbour pattern (comm/memory.py, runner/simulate.py) against real MPI:
every case the catalog declares for a neighbour algorithm (``AlgorithmSpec.test_cases``), run by mpirun
and simulated on rank 0 with as many nodes as ranks, ends in bit-identical states and counts the same
traffic. Other patterns have no twin."""

import numpy as np
import pytest
from mpi4py import MPI

from catalog_cases import catalog_cases, has_a_twin
from mpitools import all_ranks, build_runner, plan_of
from mpidecent.runner.simulate import Simulation

STEPS = 12
# The base job; each case adds its algorithm, its pattern's graph and its overrides (catalog_cases.py).
JOB = """
[run]
steps = 12
seed = 5
[algorithm]
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


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(240)
@pytest.mark.parametrize("case, overrides", catalog_cases(has_a_twin))
def test_the_twin_is_bit_identical_to_mpi(case, overrides, mpi_tmp_path):
    comm = MPI.COMM_WORLD
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
