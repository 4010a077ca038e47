"""Job + world size → the graph schedule, mixing matrices and checks that can fail on bad input.

Pure and deterministic (no MPI): every rank computes the same ``Plan`` before the first collective, so
a job whose topology does not fit the ranks started, whose graph the algorithm cannot use, or whose
data file is missing fails on every rank with the same one-line ``JobError``. ``mpidecent topology``
uses the same functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mpidecent.algorithms import ALGORITHMS
from mpidecent.config import Job
from mpidecent.errors import JobError
from mpidecent.learning.data import check_data
from mpidecent.topology import (WEIGHTS, Graph, build_graph, connectivity_problem, is_column_stochastic,
                                is_doubly_stochastic, is_strongly_connected)
from mpidecent.topology.schedule import SCHEDULES, Schedule, build_schedule, schedule_spectral_gap


@dataclass(frozen=True)
class Plan:
    job: Job
    n: int
    schedule: Schedule  # period 1 for a static graph
    slot_weights: tuple[np.ndarray, ...]  # (n, n) float64 per slot, row i = receiver i
    strongly_connected: bool  # of the union over a period
    spectral_gap: float  # per step (over a period for schedules)

    @property
    def graph(self) -> Graph:
        """The static graph, or the union of a schedule's graphs over a period."""
        return self.schedule.union()

    @property
    def weights(self) -> np.ndarray:
        return self.slot_weights[0]


def job_folder(job: Job) -> str | None:
    """Relative paths in a job file (edge lists, data files) are read from the job file's folder."""
    return os.path.dirname(os.path.abspath(job.path)) if os.path.isfile(job.path) else None


def build_topology(job: Job, n: int) -> tuple[Schedule, tuple[np.ndarray, ...]]:
    """The job's graph schedule on ``n`` nodes and each slot's mixing matrix (no algorithm checks)."""
    topo = job.topology
    if topo["kind"] in SCHEDULES:
        schedule = build_schedule(topo["kind"], n, topo, ignore=("kind", "n", "directed", "weights"))
    else:
        schedule = Schedule.static(build_graph(topo["kind"], n, topo["directed"], topo, base_dir=job_folder(job)))
    try:
        weights = tuple(WEIGHTS[topo["weights"]](g) for g in schedule.graphs)
    except ValueError as err:
        raise JobError(f"[topology] weights = {topo['weights']!r}: {err}") from None
    return schedule, weights


def plan_job(job: Job, world_size: int) -> Plan:
    """Check the job against the number of ranks started, the algorithm's graph needs and the data."""
    requested = job.topology["n"]
    if requested and requested != world_size:
        raise JobError(f"[topology] n = {requested} but {world_size} MPI ranks were started: start "
                       f"{requested} ranks (mpirun -n {requested} ...) or remove n")
    n = world_size
    schedule, weights = build_topology(job, n)
    algo = ALGORITHMS[job.algorithm["name"]]
    union = schedule.union()
    connected = is_strongly_connected(union)
    where = f"[topology] kind = {job.topology['kind']!r}"
    baseline = job.topology["kind"] == "disconnected"  # the explicit no-communication baseline
    if algo.graph in ("directed", "gossip") and not connected and not baseline:
        raise JobError(f"{where} (directed = {str(union.directed).lower()}) on {n} nodes is not strongly "
                       f"connected ({connectivity_problem(union)}); {algo.name} needs every node to reach every "
                       "other: use another kind or directed = false (`mpidecent topology JOB -n N` shows it)")
    if algo.graph == "undirected" and not connected and not baseline:
        raise JobError(f"{where} on {n} nodes is not connected ({connectivity_problem(union)}); "
                       f"{algo.name} needs a connected graph")
    if algo.weights_property == "column_stochastic" and not all(map(is_column_stochastic, weights)):
        raise JobError(f"[topology] weights = {job.topology['weights']!r} are not column stochastic; "
                       f"{algo.name} needs column_uniform or metropolis weights")
    if algo.weights_property == "doubly_stochastic" and not all(map(is_doubly_stochastic, weights)):
        raise JobError(f"[topology] weights = {job.topology['weights']!r} are not doubly stochastic on this "
                       f"graph; {algo.name} needs weights = \"metropolis\"")
    if algo.graph == "master":
        _check_master_worker(job, algo, n)
    algo.check_world(job, n)
    check_data(job.data, n - 1 if algo.graph == "master" else n, job_folder(job))
    return Plan(job, n, schedule, weights, connected, schedule_spectral_gap(weights))


def _check_master_worker(job: Job, algo, n: int) -> None:
    """A master/worker job on n ranks: enough workers, a code that fits them, stragglers it survives."""
    name, params, stragglers = job.algorithm["name"], job.algorithm, job.stragglers
    workers = n - 1
    if workers < 1:
        raise JobError(f"{name} needs a master and at least one worker: start 2 or more ranks")
    try:
        code = algo.code(params, stragglers, workers, job.run["seed"])
    except ValueError as err:
        raise JobError(f"[algorithm] {err} ({workers} workers = ranks − 1); change stragglers or the number "
                       "of ranks") from None
    exact = code.exact and not params.get("approximate", False)
    if stragglers["model"] == "fixed" and stragglers["count"] > workers - 1:
        raise JobError(f"[stragglers] count = {stragglers['count']} leaves no worker among {workers}")
    if exact and stragglers["model"] == "fixed" and stragglers["count"] > code.tolerance:
        raise JobError(f"[stragglers] count = {stragglers['count']} is more than the {params['code']} code "
                       f"tolerates (stragglers = {code.tolerance}); raise [algorithm] stragglers or set "
                       "approximate = true")
    if exact and stragglers["model"] == "bernoulli":
        raise JobError(f"[stragglers] model = \"bernoulli\" can exceed what the exact {params['code']} code "
                       "tolerates; use code = \"sgc\" or set [algorithm] approximate = true")
