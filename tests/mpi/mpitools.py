"""Shared helpers for tests that run under ``mpirun -n N python -m pytest --with-mpi tests/mpi``.

Assertions that depend on one rank's view go through ``all_ranks`` first, so a failure fails every
rank together instead of leaving the others blocked in the next collective.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpidecent.topology.schedule import Schedule


def all_ranks(condition: bool) -> bool:
    """True on every rank iff ``condition`` holds on every rank."""
    return bool(MPI.COMM_WORLD.allreduce(bool(condition), op=MPI.LAND))


def gossip_algorithm(name: str, graph, weights, compressor: str, comp_params: dict, params: dict,
                     x0: np.ndarray, seed: int = 0):
    """An algorithm with zero gradients (pure gossip) on COMM_WORLD, starting from this rank's ``x0``.
    ``graph`` is a Graph (with its (n, n) ``weights``) or a Schedule (with a tuple of per-slot weights).
    Its graph communicator is freed at MPI_Finalize."""
    from mpidecent.runner import gossip_only

    schedule = graph if isinstance(graph, Schedule) else Schedule.static(graph)
    slot_weights = weights if isinstance(weights, tuple) else (weights,)
    algorithm, _ = gossip_only(MPI.COMM_WORLD, schedule, slot_weights, name, compressor, comp_params, params, x0,
                               seed)
    return algorithm


def stop_at(monkeypatch, step: int, rank: int = 1) -> None:
    """Simulate SIGUSR1 arriving on one rank only, during step ``step`` (it is seen at boundary step + 1):
    the runner's ``stop_requested`` answers True once, on that rank."""
    import mpidecent.runner.loop as runner_module

    calls = {"n": 0}

    def fake() -> bool:
        calls["n"] += 1
        return MPI.COMM_WORLD.rank == rank and calls["n"] == step + 1

    monkeypatch.setattr(runner_module, "stop_requested", fake)


def plan_of(job_or_text, overrides=()):
    from mpidecent.config import Job, load_text
    from mpidecent.plan import plan_job

    job = job_or_text if isinstance(job_or_text, Job) else load_text(job_or_text, overrides=list(overrides))
    return plan_job(job, MPI.COMM_WORLD.size)


def build_runner(job_or_text, out, overrides=()):
    """A Runner with its algorithm built (real data, objective and exchange); step it by hand with
    ``runner.algorithm.step(t)`` to compare trajectories."""
    from mpidecent.comm.world import init_mpi
    from mpidecent.runner import Runner

    return Runner(plan_of(job_or_text, overrides), init_mpi(), str(out), overwrite=True, quiet=True)


def results(path) -> dict:
    """A results file's contents through mpidecent's reader (``io/reader.py``), read on rank 0 and
    broadcast: {"step": array, "attrs": dict, "global/<name>": (L,), "rank/<name>": (L, n),
    "events/<name>": array}."""
    from mpidecent.io.reader import read_run

    data = None
    if MPI.COMM_WORLD.rank == 0:
        run = read_run(str(path))
        data = {"step": run.steps, "attrs": run.attrs,
                **{f"global/{k}": v for k, v in run.global_series.items()},
                **{f"rank/{k}": v for k, v in run.rank_series.items()},
                **{f"events/{k}": v for k, v in run.events.items()}}
    return MPI.COMM_WORLD.bcast(data, root=0)


TIMING = {"wall_s", "compute_s", "comm_s"}


def untimed_series(path) -> tuple[dict, dict]:
    """(every series but the timing ones, root attributes) of a results file, through the reader: what
    a resumed run must reproduce bit for bit."""
    from mpidecent.io.reader import read_run

    run = read_run(str(path))
    data = {"step": run.steps, **{f"global/{k}": v for k, v in run.global_series.items() if k not in TIMING},
            **{f"rank/{k}": v for k, v in run.rank_series.items() if k not in TIMING}}
    return data, run.attrs


def run_job(job_or_text, out, overrides=()) -> dict:
    """Run a job (a Job, or job text plus --set overrides) in this pytest process on every rank and
    return its results file's contents (``results``) plus "status": the exit status."""
    status = build_runner(job_or_text, out, overrides).run()
    return {**results(out), "status": status}


def sweep(path, out_dir, overrides=()) -> dict[str, dict]:
    """Run every variant of a shipped sweep job; returns {variant: run_job result}."""
    from mpidecent.config import load_jobs

    return {job.variant: run_job(job, out_dir / f"{job.variant}.h5") for job in load_jobs(path, list(overrides))}
