"""Shared helpers for tests that run under ``mpirun -n N python -m pytest --with-mpi tests/mpi``.

Assertions that depend on one rank's view go through ``all_ranks`` first, so a failure fails every
rank together instead of leaving the others blocked in the next collective.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpidecent.algorithms import ALGORITHMS
from mpidecent.comm.collectives import Collectives
from mpidecent.comm.graph import GraphNeighborhood
from mpidecent.compression import build_compressor
from mpidecent.learning.problems import NullObjective


def all_ranks(condition: bool) -> bool:
    """True on every rank iff ``condition`` holds on every rank."""
    return bool(MPI.COMM_WORLD.allreduce(bool(condition), op=MPI.LAND))


def gossip_algorithm(name: str, graph, weights, compressor: str, comp_params: dict, params: dict,
                     x0: np.ndarray, seed: int = 0):
    """An algorithm with zero gradients (pure gossip) on COMM_WORLD, starting from this rank's ``x0``."""
    from mpidecent.algorithms.base import Context

    comm = MPI.COMM_WORLD
    objective = NullObjective(x0.size, x0.dtype)
    objective.params[:] = x0
    neighborhood = GraphNeighborhood(comm, graph)
    cls = ALGORITHMS[name]
    full = {p.name: p.default for p in cls.params} | params
    ctx = Context(rank=comm.rank, size=comm.size, seed=seed, dtype=x0.dtype, params=full, objective=objective,
                  compressor=build_compressor(compressor, x0.size, x0.dtype, comp_params),
                  collectives=Collectives(comm), neighborhood=neighborhood,
                  self_weight=float(weights[comm.rank, comm.rank]),
                  in_weights=weights[comm.rank, neighborhood.in_neighbors])
    return cls(ctx)


def run_job(text: str, out, overrides=()) -> dict:
    """Run a job in this pytest process on every rank and return its results file's metrics
    (read on rank 0, broadcast) as {"global/<name>": array, "rank/<name>": array, "step": array,
    "attrs": dict}."""
    import h5py

    from mpidecent.comm.world import init_mpi
    from mpidecent.config import load_text
    from mpidecent.plan import plan_job
    from mpidecent.runner import Runner

    comm = MPI.COMM_WORLD
    plan = plan_job(load_text(text, overrides=list(overrides)), comm.size)
    status = Runner(plan, init_mpi(), str(out), overwrite=True, quiet=True).run()
    data = None
    if comm.rank == 0:
        with h5py.File(out, "r") as f:
            data = {"step": f["metrics/step"][()], "attrs": dict(f.attrs), "status": status}
            for group in ("global", "rank"):
                for name, dset in f["metrics"][group].items():
                    data[f"{group}/{name}"] = dset[()]
    return comm.bcast(data, root=0)
