"""``mpidecent run``: validate the job on every rank, agree, then run it (every rank, under
mpirun/srun).

Each rank validates the job on its own (pure, before any collective), then all ranks agree: if any
rank found a problem, rank 0 prints one line and every rank exits with status 2, so a bad job never
leaves ranks waiting in a collective. After that, an uncaught exception on any rank aborts the whole
job (``abort_on_error``).

Validation imports neither torch nor numba, matplotlib or (without --resume or an HDF5 data file)
h5py: a bad job fails in well under a second per rank. torch comes with the model check, the last
one (``plan_job``); ``tests/unit/test_lazy_imports.py`` keeps it so. After the runs each rank ends
its process at once (``_end_process``) instead of tearing down the interpreter.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from mpidecent.errors import EXIT_BAD_INPUT, JobError


def add_parser(sub) -> None:
    run = sub.add_parser(
        "run",
        help="train (start with mpirun -n N)",
        description="Run a job on every rank: mpirun -n N mpidecent run JOB.toml",
    )
    run.add_argument("job", help="job file (TOML)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a job key, e.g. --set algorithm.lr=0.05 (repeatable)",
    )
    run.add_argument(
        "--out",
        help="results file (default: [run] out, else runs/<name>.h5); for a job with "
        "[[sweep]] variants, the folder of their files",
    )
    run.add_argument("--force", action="store_true", help="overwrite an existing results file")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint and append to the results file (a completed run is "
        "skipped; with neither file present the job starts from step 0)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress lines or summary")
    run.add_argument(
        "--variant",
        metavar="NAME_OR_INDEX",
        help="run only this [[sweep]] variant: its name, or its index counting from 0 in file "
        "order (e.g. $SLURM_ARRAY_TASK_ID); it writes the file the whole sweep would",
    )


def select_variant(jobs, wanted: str, path: str):
    """The [[sweep]] variant ``wanted`` names: a variant's name, else an index counting from 0
    (JobError naming the valid names and range otherwise)."""
    names = [job.variant for job in jobs if job.variant]
    if not names:
        raise JobError(
            f"--variant {wanted}: {path} has no [[sweep]] variants (run it without --variant)"
        )
    if wanted in names:
        return jobs[names.index(wanted)]
    choices = f"names: {', '.join(names)}; indexes: 0-{len(names) - 1}"
    try:
        index = int(wanted)
    except ValueError:
        raise JobError(
            f"--variant {wanted}: no [[sweep]] variant of that name in {path} ({choices})"
        ) from None
    if not 0 <= index < len(names):
        raise JobError(
            f"--variant {wanted}: index out of range, {path} has {len(names)} [[sweep]] variant(s) "
            f"({choices})"
        )
    return jobs[index]


def damaged_checkpoint(job_path: str, overrides: list[str], out: str | None) -> str | None:
    """Before MPI starts (a forked child must not share a started MPI library): read every
    checkpoint this launch could resume once in a forked child (``io/hdf5guard.crash_probe``; each
    rank its own rows), so a checkpoint that crashes libhdf5 is refused in one line instead of
    killing the ranks. None when every one read through (or the job is bad: that is refused properly
    once the ranks can agree)."""
    import functools

    from mpidecent.comm.world import launcher_rank
    from mpidecent.config import load_jobs
    from mpidecent.io.checkpoint import checkpoint_path
    from mpidecent.io.hdf5guard import crash_probe, read_every_object
    from mpidecent.runner.launch import results_file

    try:
        jobs = load_jobs(job_path, overrides)
    except JobError:
        return None
    for job in jobs:
        path = checkpoint_path(results_file(job, out))
        # this rank's row of every dataset: what its real read touches (not the other ranks'
        # gigabytes)
        read = functools.partial(read_every_object, row=launcher_rank() or 0)
        crashed = crash_probe(path, read) if os.path.isfile(path) else None
        if crashed:
            return (
                f"checkpoint {path!r} is damaged ({crashed}); it and its results file were left "
                "untouched: restore a good copy, or start over with --force"
            )
    return None


def main(args: argparse.Namespace) -> int:
    from mpidecent.comm.world import abort_on_error, init_mpi
    from mpidecent.preemption import check_world_size, install_stop_handlers

    # (with --force too, the launch is refused below: nothing to read)
    damaged = (
        damaged_checkpoint(args.job, args.overrides, args.out)
        if args.resume and not args.force
        else None
    )
    init_mpi()  # the osc probe (a window allocated and freed on every rank) waits for a valid job
    from mpi4py import MPI

    from mpidecent.config import load_jobs
    from mpidecent.runner.launch import prepare_all, run_jobs

    comm = MPI.COMM_WORLD

    def load():
        check_world_size(comm.size)
        if args.resume and args.force:
            raise JobError("--resume continues a run and --force starts it over: give one of them")
        jobs = load_jobs(args.job, args.overrides)
        if damaged:
            raise JobError(damaged)
        return jobs if args.variant is None else [select_variant(jobs, args.variant, args.job)]

    work, problem = prepare_all(comm, load, args.out, args.force, args.resume)
    if problem:
        if comm.rank == 0:
            sys.stderr.write(f"mpidecent: error: {problem}\n")
            sys.stderr.flush()
        return EXIT_BAD_INPUT
    abort_on_error()
    env = init_mpi(probe_osc=True)
    install_stop_handlers()
    status, runs = run_jobs(work, env, args.force, args.quiet)
    if len(runs) > 1 and comm.rank == 0:
        from mpidecent.runner.summary import comparison_table

        print(comparison_table(runs), flush=True)
    _end_process(status)


def _end_process(status: int) -> NoReturn:
    """Every rank, once its runs are over and their files closed: flush the output, run the exit
    handlers, finalize MPI and end the process without the interpreter's tear-down. Why: freeing
    every module and object of a process that imported torch takes about 0.4 s of CPU (measured:
    1.28 s vs 0.86 s for ``import torch, h5py, mpi4py.MPI`` then exit), work nobody needs at exit;
    with 64 ranks on 2 cores that is over 10 s of the launch. The runner has closed the results file
    and checkpoints by now (and HDF5 closes whatever is left open when MPI is finalized)."""
    from mpidecent.comm.world import finalize_and_exit

    finalize_and_exit(status, exit_handlers=True)
