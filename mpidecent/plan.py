"""Job + world size → the graph, mixing matrix and checks that can fail on bad input.

Pure and deterministic (no MPI): every rank computes the same ``Plan`` before the first collective, so
a job whose topology does not fit the ranks started, or whose graph the algorithm cannot use, fails on
every rank with the same one-line ``JobError``. ``mpidecent topology`` uses the same function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mpidecent.algorithms import ALGORITHMS
from mpidecent.config import Job
from mpidecent.errors import JobError
from mpidecent.learning.data import check_shards
from mpidecent.topology import (WEIGHTS, Graph, build_graph, connectivity_problem, is_column_stochastic, is_doubly_stochastic,
                                is_strongly_connected, spectral_gap)


@dataclass(frozen=True)
class Plan:
    job: Job
    n: int
    graph: Graph
    weights: np.ndarray  # (n, n) float64, row i = receiver i
    strongly_connected: bool
    spectral_gap: float


def build_topology(job: Job, n: int) -> tuple[Graph, np.ndarray]:
    """The job's graph on ``n`` nodes and its mixing matrix (no algorithm checks)."""
    topo = job.topology
    # A relative edge-list path is read from the job file's folder, wherever mpirun was started.
    base_dir = os.path.dirname(os.path.abspath(job.path)) if os.path.isfile(job.path) else None
    graph = build_graph(topo["kind"], n, topo["directed"], topo, base_dir=base_dir)
    try:
        weights = WEIGHTS[topo["weights"]](graph)
    except ValueError as err:
        raise JobError(f"[topology] weights = {topo['weights']!r}: {err}") from None
    return graph, weights


def plan_job(job: Job, world_size: int) -> Plan:
    """Check the job against the number of ranks started and the algorithm's graph needs."""
    requested = job.topology["n"]
    if requested and requested != world_size:
        raise JobError(f"[topology] n = {requested} but {world_size} MPI ranks were started: start "
                       f"{requested} ranks (mpirun -n {requested} ...) or remove n")
    n = world_size
    graph, weights = build_topology(job, n)
    algo = ALGORITHMS[job.algorithm["name"]]
    connected = is_strongly_connected(graph)
    where = f"[topology] kind = {job.topology['kind']!r}"
    if algo.graph == "directed" and not connected:
        raise JobError(f"{where} (directed = {str(graph.directed).lower()}) on {n} nodes is not strongly "
                       f"connected ({connectivity_problem(graph)}); {algo.name} needs every node to reach every "
                       "other: use another kind or directed = false (`mpidecent topology JOB -n N` shows it)")
    if algo.graph == "undirected" and not connected:
        raise JobError(f"{where} on {n} nodes is not connected ({connectivity_problem(graph)}); "
                       f"{algo.name} needs a connected graph")
    if algo.weights_property == "column_stochastic" and not is_column_stochastic(weights):
        raise JobError(f"[topology] weights = {job.topology['weights']!r} are not column stochastic; "
                       f"{algo.name} needs column_uniform or metropolis weights")
    if algo.weights_property == "doubly_stochastic" and not is_doubly_stochastic(weights):
        raise JobError(f"[topology] weights = {job.topology['weights']!r} are not doubly stochastic on this "
                       f"graph; {algo.name} needs weights = \"metropolis\"")
    check_shards(job.data, n)
    return Plan(job, n, graph, weights, connected, spectral_gap(weights))
