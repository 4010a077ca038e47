"""``mpidecent run``: validate the job on every rank, agree, then run it (every rank, under mpirun/srun).

Each rank validates the job on its own (pure, before any collective), then all ranks agree: if any rank
found a problem, rank 0 prints one line and every rank exits with status 2, so a bad job never leaves
ranks waiting in a collective. After that, an uncaught exception on any rank aborts the whole job
(``abort_on_error``).
"""

from __future__ import annotations

import argparse
import sys

from mpidecent.errors import EXIT_BAD_INPUT, JobError


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="train (start with mpirun -n N)",
                         description="Run a job on every rank: mpirun -n N mpidecent run JOB.toml")
    run.add_argument("job", help="job file (TOML)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a job key, e.g. --set algorithm.lr=0.05 (repeatable)")
    run.add_argument("--out", help="results file (default: [run] out, else runs/<name>.h5); for a job with "
                                   "[[sweep]] variants, the folder of their files")
    run.add_argument("--force", action="store_true", help="overwrite an existing results file")
    run.add_argument("--resume", action="store_true",
                     help="continue from the checkpoint and append to the results file (a completed run is "
                          "skipped; with neither file present the job starts from step 0)")
    run.add_argument("--quiet", action="store_true", help="no progress lines or summary")
    run.add_argument("--variant", metavar="NAME_OR_INDEX",
                     help="run only this [[sweep]] variant: its name, or its index counting from 0 in file order "
                          "(e.g. $SLURM_ARRAY_TASK_ID); it writes the file the whole sweep would")


def select_variant(jobs, wanted: str, path: str):
    """The [[sweep]] variant ``wanted`` names: a variant's name, else an index counting from 0 (JobError
    naming the valid names and range otherwise)."""
    names = [job.variant for job in jobs if job.variant]
    if not names:
        raise JobError(f"--variant {wanted}: {path} has no [[sweep]] variants (run it without --variant)")
    if wanted in names:
        return jobs[names.index(wanted)]
    choices = f"names: {', '.join(names)}; indexes: 0-{len(names) - 1}"
    try:
        index = int(wanted)
    except ValueError:
        raise JobError(f"--variant {wanted}: no [[sweep]] variant of that name in {path} ({choices})") from None
    if not 0 <= index < len(names):
        raise JobError(f"--variant {wanted}: index out of range, {path} has {len(names)} [[sweep]] variant(s) "
                       f"({choices})")
    return jobs[index]


def main(args: argparse.Namespace) -> int:
    from mpidecent.comm.world import abort_on_error, init_mpi
    from mpidecent.preemption import check_world_size, install_stop_handlers

    env = init_mpi(probe_osc=True)
    from mpi4py import MPI

    from mpidecent.config import load_jobs
    from mpidecent.runner.launch import prepare_all, run_jobs

    comm = MPI.COMM_WORLD

    def load():
        check_world_size(comm.size)
        if args.resume and args.force:
            raise JobError("--resume continues a run and --force starts it over: give one of them")
        jobs = load_jobs(args.job, args.overrides)
        return jobs if args.variant is None else [select_variant(jobs, args.variant, args.job)]

    work, problem = prepare_all(comm, load, args.out, args.force, args.resume)
    if problem:
        if comm.rank == 0:
            sys.stderr.write(f"mpidecent: error: {problem}\n")
            sys.stderr.flush()
        return EXIT_BAD_INPUT
    abort_on_error()
    install_stop_handlers()
    status, runs = run_jobs(work, env, args.force, args.quiet)
    if len(runs) > 1 and comm.rank == 0:
        from mpidecent.runner.summary import comparison_table

        print(comparison_table(runs), flush=True)
    return status
