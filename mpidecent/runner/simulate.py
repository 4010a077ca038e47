"""A neighbour algorithm on n simulated nodes in one process: the in-memory twin of an MPI run.

``Simulation.of_plan(plan)`` builds every rank's node (data, objective, compressor) and algorithm
exactly as ``mpirun -n N mpidecent run`` does, but over ``comm.memory.MemoryNetwork`` instead of
MPI; ``step(t)`` runs iteration t on every node (one thread each) and the states are bit-identical
to the MPI run's (``tests/mpi/test_memory_twin.py`` checks it). ``Simulation.gossip`` starts pure
gossip (zero gradients) from given vectors. For fast single-process tests of an algorithm's maths;
no MPI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from mpidecent.algorithms import ALGORITHMS, AlgorithmSpec
from mpidecent.algorithms.base import Algorithm, StepStats
from mpidecent.comm.memory import MemoryNetwork
from mpidecent.comm.neighbor import Neighbors, mixing_rows
from mpidecent.comm.patterns import Connection, NeighborGossip
from mpidecent.compression import build_compressor
from mpidecent.learning.problems import NullObjective
from mpidecent.plan import Plan
from mpidecent.runner.build import Node, build_node, context, implementation
from mpidecent.topology.schedule import Schedule


class _NoCollectives:
    """Neighbour algorithms reduce nothing in their steps; the runner's metrics are not
    simulated."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"collectives.{name}: the in-memory twin simulates the neighbour pattern only"
        )


class Simulation:
    """n nodes of one neighbour algorithm (``algorithms[rank]``) over a ``MemoryNetwork``."""

    def __init__(
        self, network: MemoryNetwork, algorithms: list[Algorithm], nodes: list[Node] | None = None
    ) -> None:
        self.network = network
        self.algorithms = algorithms
        self.nodes = nodes
        # Every node agrees on the message streams, from its own thread, as the MPI ranks do
        # (build.instantiate).
        network.run([a.ctx.need_neighbors().seal for a in algorithms])

    @property
    def n(self) -> int:
        return self.network.n

    @staticmethod
    def _neighbors(
        spec: AlgorithmSpec, network: MemoryNetwork, slot_weights: tuple[np.ndarray, ...], rank: int
    ) -> Connection:
        if not isinstance(spec.pattern, NeighborGossip):
            raise ValueError(
                f"{spec.name} uses the {spec.pattern.name} pattern; the in-memory twin runs "
                "neighbour gossip algorithms"
            )
        rows = mixing_rows(network.schedule.graphs, slot_weights, rank)
        return Connection(neighbors=Neighbors(network.transport(rank), rows))

    @classmethod
    def of_plan(cls, plan: Plan) -> Simulation:
        """Every rank of the planned job, built as the MPI runner builds it."""
        job, spec, n = plan.job, plan.algorithm, plan.n
        network = MemoryNetwork(plan.schedule)
        nodes = [build_node(plan, rank, n) for rank in range(n)]
        algorithms = []
        for rank, node in enumerate(nodes):
            ctx = context(
                spec,
                cls._neighbors(spec, network, plan.slot_weights, rank),
                rank,
                n,
                int(job.run["seed"]),
                job.algorithm,
                node.objective,
                node.compressor,
                _NoCollectives(n),
                steps=job.run["steps"],
                l2=job.model["l2"],
                stragglers=job.stragglers,
                error_feedback=job.compression["error_feedback"],
                outer=job.outer or None,
            )
            algorithms.append(implementation(spec, ctx.outer)(ctx))
        return cls(network, algorithms, nodes)

    @classmethod
    def gossip(
        cls,
        schedule: Schedule,
        slot_weights: tuple[np.ndarray, ...],
        name: str | AlgorithmSpec,
        compressor: str,
        comp_params: Mapping[str, Any],
        params: Mapping[str, Any],
        x0: np.ndarray,
        seed: int = 0,
        steps: int = 0,
    ) -> Simulation:
        """Algorithm ``name`` (or a declaration not in the catalog) with zero gradients (average
        consensus) from the rows of ``x0`` (n, d) (their dtype is the state dtype); ``params``
        override the algorithm's defaults; ``steps``: the run's length as the algorithm sees it
        (``Context.steps``)."""
        spec = ALGORITHMS[name] if isinstance(name, str) else name
        network = MemoryNetwork(schedule)
        algorithms = []
        for rank in range(schedule.n):
            objective = NullObjective(x0.shape[1], x0.dtype)
            objective.params[:] = x0[rank]
            codec = build_compressor(compressor, x0.shape[1], x0.dtype, comp_params)
            ctx = context(
                spec,
                cls._neighbors(spec, network, slot_weights, rank),
                rank,
                schedule.n,
                seed,
                {p.name: p.default for p in spec.params} | dict(params),
                objective,
                codec,
                _NoCollectives(schedule.n),
                steps=steps,
            )
            algorithms.append(spec.load()(ctx))
        return cls(network, algorithms)

    def step(self, t: int) -> list[StepStats]:
        """Iteration ``t`` on every node; each node's ``StepStats`` in rank order."""
        return self.network.run([partial(a.step, t) for a in self.algorithms])

    def run(self, steps: int | Sequence[int]) -> list[list[StepStats]]:
        """Iterations ``range(steps)`` (or the given ones) on every node, one thread per node for
        the whole run; returns each node's list of ``StepStats``."""
        order = range(steps) if isinstance(steps, int) else list(steps)
        return self.network.run([partial(_steps, a, order) for a in self.algorithms])

    def drain(self) -> None:
        """Every node completes its exchanges in flight (``Algorithm.drain``), as the runner does at
        a log point, a checkpoint and the end of a run."""
        self.network.run([a.drain for a in self.algorithms])

    def models(self) -> np.ndarray:
        """(n, d): every node's reported model (a copy)."""
        return np.stack([np.array(a.model_view(), copy=True) for a in self.algorithms])


def _steps(algorithm: Algorithm, order: Sequence[int]) -> list[StepStats]:
    """One node's iterations ``order``, in its own thread (``Simulation.run``)."""
    return [algorithm.step(t) for t in order]
