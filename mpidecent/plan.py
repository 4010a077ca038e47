"""Job + world size → the graph schedule, mixing matrices and checks that can fail on bad input.

Pure and deterministic (no MPI): every rank computes the same ``Plan`` before the first collective,
so a job whose topology does not fit the ranks started, whose graph the algorithm cannot use, or
whose data file is missing fails on every rank with the same one-line ``JobError``. ``mpidecent
topology`` uses the same functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mpidecent.algorithms import ALGORITHMS, AlgorithmSpec
from mpidecent.config import Job
from mpidecent.errors import JobError
from mpidecent.io.datasets import check_data
from mpidecent.learning.sources import is_shard_loader
from mpidecent.plugins import is_import_path
from mpidecent.topology import WEIGHTS, Graph, build_graph, is_strongly_connected
from mpidecent.topology.schedule import Schedule, build_schedule, schedule_spectral_gap
from mpidecent.topology.section import is_schedule, kind_keys


@dataclass(frozen=True)
class Plan:
    job: Job
    n: int
    schedule: Schedule  # period 1 for a static graph
    slot_weights: tuple[np.ndarray, ...]  # (n, n) float64 per slot, row i = receiver i
    strongly_connected: bool  # of the union over a period
    spectral_gap: float  # per step (over a period for schedules)

    @property
    def algorithm(self) -> AlgorithmSpec:
        return ALGORITHMS[self.job.algorithm["name"]]

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
    """The job's graph schedule on ``n`` nodes and each slot's mixing matrix (no algorithm
    checks)."""
    topo = job.topology
    if is_schedule(topo["kind"]):
        schedule = build_schedule(topo["kind"], n, kind_keys(topo))
    else:
        schedule = Schedule.static(
            build_graph(
                topo["kind"], n, topo["directed"], kind_keys(topo), base_dir=job_folder(job)
            )
        )
    try:
        weights = tuple(WEIGHTS[topo["weights"]](g) for g in schedule.graphs)
    except ValueError as err:
        raise JobError(f"[topology] weights = {topo['weights']!r}: {err}") from None
    return schedule, weights


def plan_job(job: Job, world_size: int, rank: int = 0) -> Plan:
    """Check the job against the number of ranks started, its algorithm's pattern, the data and the
    model (a forward pass in eval mode, then one training step on a batch of the job's batch size:
    the user's model and loss run here, before any collective). ``rank``: whose shard a loader that
    returns one shard per rank checks."""
    requested = job.topology["n"]
    if requested and requested != world_size:
        raise JobError(
            f"[topology] n = {requested} but {world_size} MPI ranks were started: start "
            f"{requested} ranks (mpirun -n {requested} ...) or remove n"
        )
    n = world_size
    schedule, weights = build_topology(job, n)
    spec = ALGORITHMS[job.algorithm["name"]]
    union = schedule.union()
    if (
        job.outer.get("pairing") != "random"
    ):  # random pairs: a matching per round, valid by construction
        spec.pattern.check(spec.name, job.topology, n, union, weights)
    if spec.check_world is not None:
        spec.check_world(job, n, weights)
    folder = job_folder(job)
    nodes = spec.pattern.data_nodes(n)
    if nodes != n and is_import_path(job.data["name"]) and is_shard_loader(job.data, folder):
        raise JobError(
            f"[data] name = {job.data['name']!r} returns one shard per rank, but {spec.name} "
            "trains every rank on partitions of the whole set: let the loader return the whole "
            "set (drop its rank and world_size parameters)"
        )
    from mpidecent.footprint import check_memory, memory_guard

    check_memory(
        job, weights, rank, folder
    )  # before the data are generated or read: sizes out of reach
    with memory_guard(
        f"[data] name = {job.data['name']!r}", n
    ):  # a user's loader: only known once loaded
        info = check_data(job.data, nodes, folder, min(rank, nodes - 1))
    from mpidecent.learning.problems import (
        check_model,
    )  # torch: only once the job has passed the other checks

    with memory_guard(
        f"[model] name = {job.model['name']!r}", n
    ):  # a user's model: only known once built
        check_model(
            job.model,
            info.input_shape,
            info.task,
            info.num_classes,
            folder,
            batch_size=job.data["batch_size"],
        )
        _check_initial_model(job, info.input_shape, info.num_classes, rank, folder)
    return Plan(
        job, n, schedule, weights, is_strongly_connected(union), schedule_spectral_gap(weights)
    )


def _check_initial_model(
    job: Job, input_shape: tuple[int, ...], classes: int, rank: int, folder: str | None
) -> None:
    """This rank's initial model (drawn as the runner draws it) must be finite: a huge [model]
    init_scale (or a user model whose layers start with NaN/inf) is a JobError here, before any
    collective."""
    import numpy as np

    from mpidecent.learning.flat import build_flat_model

    dtype = np.dtype(job.run["dtype"])
    with np.errstate(over="ignore", invalid="ignore"):
        flat = build_flat_model(
            job.model, input_shape, classes, dtype, int(job.run["seed"]), node=rank, base_dir=folder
        )
        bad = np.flatnonzero(~np.isfinite(flat.values))
    if bad.size:
        init = job.model["init"]
        cause = (
            f"[model] init_scale = {job.model['init_scale']:g} is too large for {dtype.name}; "
            "choose a smaller init_scale"
            if init == "normal"
            else f"[model] name = {job.model['name']!r} starts with non-finite parameters (init = "
            f"{init!r}); fix "
            'its initialisation or set init = "zeros" or "normal"'
        )
        raise JobError(
            f"the initial model is not finite ({bad.size} of {flat.dim} entries are NaN or inf, "
            f"the first at index {int(bad[0])}): {cause}"
        )
