"""``mpidecent run``: validate the job on every rank, agree, then run it (every rank, under mpirun/srun).

Each rank validates the job on its own (pure, before any collective), then all ranks agree: if any rank
found a problem, rank 0 prints one line and every rank exits with status 2, so a bad job never leaves
ranks waiting in a collective. After that, an uncaught exception on any rank aborts the whole job
(``abort_on_error``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from mpidecent.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_PREEMPTED, JobError


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


def main(args: argparse.Namespace) -> int:
    from mpidecent.comm.world import abort_on_error, init_mpi
    from mpidecent.preemption import check_world_size, install_stop_handlers

    env = init_mpi(probe_osc=True)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    problem: str | None = None
    work: list[tuple[object, str, object]] = []  # (plan, results file, snapshot to resume or None) per job
    try:
        check_world_size(comm.size)
        if args.resume and args.force:
            raise JobError("--resume continues a run and --force starts it over: give one of them")
        from mpidecent.config import load_jobs

        for job in load_jobs(args.job, args.overrides):
            out = job.run["out"]
            if args.out:  # one results file, or the folder of a sweep's files
                out = os.path.join(args.out, f"{job.variant}.h5") if job.variant else args.out
            prepared = _prepare(job, out, args, comm.rank, comm.size)
            if prepared is not None:
                work.append(prepared)
    except JobError as err:
        problem = str(err)
    # The first collective: every rank learns whether any rank found a problem.
    problems = comm.allgather(problem)
    found = [(r, p) for r, p in enumerate(problems) if p]
    if found:
        if comm.rank == 0:
            rank, text = found[0]
            where = "" if all(p == text for _, p in found) and len(found) == comm.size else f" (on rank {rank})"
            sys.stderr.write(f"mpidecent: error: {text}{where}\n")
            sys.stderr.flush()
        return EXIT_BAD_INPUT
    abort_on_error()
    install_stop_handlers()
    from mpidecent.runner import Runner, comparison_table

    status, runs = EXIT_OK, []
    for plan, out, snapshot in work:
        runner = Runner(plan, env, out, overwrite=args.force, quiet=args.quiet, resume=snapshot)
        code = runner.run()
        runs.append(runner.result)
        status = max(status, code)  # a diverged variant does not stop the rest of a sweep
        if code == EXIT_PREEMPTED:
            break  # a stop request ends the whole launch; --resume continues with this run
    if len(runs) > 1 and comm.rank == 0:
        print(comparison_table(runs), flush=True)
    return status


def _prepare(job, out: str, args: argparse.Namespace, rank: int, size: int):
    """Validate one job for this launch (pure, per rank): its plan, its results file and, with --resume,
    its checkpoint. Returns (plan, out, snapshot or None), or None for a run --resume finds completed."""
    from mpidecent.io.checkpoint import checkpoint_path, read_checkpoint
    from mpidecent.plan import plan_job

    if not args.resume:
        _check_output(out, args.force)
        return plan_job(job, size), out, None
    # Resume checks come first: a launch with the wrong number of ranks should hear about the
    # checkpoint's world size, not about a topology that does not fit that number.
    checkpoint = checkpoint_path(out)
    status, rows = _results_status(out, job) if os.path.exists(out) else ("", 0)
    if status == "completed":
        if rank == 0:
            print(f"mpidecent: {job.run['name']} already completed ({out}); nothing to resume", flush=True)
        return None
    if os.path.exists(checkpoint):
        snapshot = read_checkpoint(checkpoint, rank, size, job.to_toml())
        if not status:
            raise JobError(f"checkpoint {checkpoint!r} has no results file {out!r} to append to; restore it, or "
                           "start over with --force")
        if rows < snapshot.results_rows:
            raise JobError(f"results file {out!r} has {rows} rows but the checkpoint was taken after "
                           f"{snapshot.results_rows}: it is not this run's file")
        return plan_job(job, size), out, snapshot
    if status:
        raise JobError(f"--resume: {out!r} ({status}) has no checkpoint {checkpoint!r} to continue from; start "
                       "over with --force (this overwrites it)")
    _check_output(out, False)  # neither file exists yet: a requeued job that never checkpointed starts
    return plan_job(job, size), out, None


def _results_status(out: str, job) -> tuple[str, int]:
    """Status and row count of an existing results file of this job (JobError if it belongs to another)."""
    from mpidecent.io.reader import ReportError, read_header

    try:
        header = read_header(out)
    except ReportError as err:
        raise JobError(f"results file {out!r} cannot be resumed: {err}; it was left untouched") from None
    if header.job != job.to_toml():
        raise JobError(f"results file {out!r} belongs to a different job; resume with the same job and --set "
                       "options, or choose another --out")
    return header.status, header.rows


def _check_output(out: str, force: bool) -> None:
    """The results file can be created: not a directory, not existing (unless --force), and its folder
    can be made and written (tried for real with a probe file: permission bits say nothing to root or
    about read-only file systems). Checked before any collective, so a bad path ends every rank with
    one line instead of failing inside the collective file creation."""
    if os.path.isdir(out):
        raise JobError(f"--out {out!r} is a directory; give a file name such as {out.rstrip('/')}/run.h5")
    if os.path.exists(out) and not force:
        raise JobError(f"results file {out!r} already exists; pass --force to overwrite it or --out to "
                       "write elsewhere")
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise JobError(f"results file {out!r}: cannot write in {folder!r} ({err.strerror}); choose another "
                       "--out or [run] out") from None


