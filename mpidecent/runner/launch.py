"""Starting runs on every rank: each rank validates the jobs on its own, the ranks agree, then the
runs.

``prepare`` checks one job for this launch (pure, per rank, before any collective: its plan, its
results file and, with resume, its checkpoint). ``agree`` is the first collective: every rank learns
whether any rank found a problem, so a bad job never leaves ranks waiting in a collective.
``run_jobs`` runs what was prepared, one job after another. ``mpidecent run`` (``cli/run.py``) and
``mpidecent.train`` (``api.py``) are both built from these.

Between loading the jobs and ``prepare``, rank 0 takes the owner lock of every results file of the
launch (``lock_results``, ``io/run_lock.py``): a file another live run is writing is refused before
anything reads or replaces it. Rank 0 removes each lock when its run ends, and every lock on any
way out of ``prepare_all`` or ``run_jobs`` (an exception included).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mpidecent.config import Job
from mpidecent.errors import EXIT_BAD_INPUT, EXIT_IO, EXIT_OK, EXIT_PREEMPTED, JobError
from mpidecent.io import run_lock
from mpidecent.io.faults import START_ROOM_BYTES, free_bytes
from mpidecent.machine import size_text
from mpidecent.params import toml_value
from mpidecent.plan import Plan, plan_job

if TYPE_CHECKING:
    from mpidecent.io.checkpoint import Snapshot
    from mpidecent.runner.summary import RunResult

Work = tuple[Plan, str, "Snapshot | None"]  # (plan, results file, snapshot to resume or None)


def results_file(job: Job, out: str | None) -> str:
    """Where a job writes: ``out`` (one results file, or the folder of a sweep's files), else [run]
    out."""
    # Resolved once, here: the same string is checked (``check_output``) and opened by the writer,
    # so a path such as nosuch/../x.h5 means x.h5 to both (the OS would refuse to open it through
    # nosuch/).
    if not out:
        return os.path.normpath(job.run["out"])
    return os.path.normpath(os.path.join(out, f"{job.variant}.h5") if job.variant else out)


def agree(comm: Any, problem: str | None) -> str | None:
    """Collective (the first of a launch): the first problem any rank found — the same line on every
    rank, naming that rank unless every rank found the same — else None."""
    problems = comm.allgather(problem)
    found = [(r, p) for r, p in enumerate(problems) if p]
    if not found:
        return None
    rank, text = found[0]
    return (
        text
        if all(p == text for _, p in found) and len(found) == comm.size
        else f"{text} (on rank {rank})"
    )


def prepare_all(
    comm: Any, load: Callable[[], Sequence[Job]], out: str | None, force: bool, resume: bool
) -> tuple[list[Work], str | None]:
    """Collective: every rank loads the jobs (``load`` raises ``JobError`` for a bad job or
    request), the ranks ``agree``, rank 0 locks their results files (``lock_results``), then every
    rank prepares each job for this launch on its own and the ranks ``agree`` again. Returns (the
    prepared work, the problem every rank reports or None); with work, rank 0 holds its locks until
    ``run_jobs`` ends."""
    problem: str | None = None
    jobs: list[Job] = []
    try:
        jobs = list(load())
    except JobError as err:
        problem = str(err)
    problem = agree(comm, problem)
    if problem:
        return [], problem
    # Before anything looks at or touches a results file: no other run may be writing it.
    problem = lock_results(comm, [(results_file(job, out), job) for job in jobs])
    if problem:
        return [], problem
    work: list[Work] = []
    try:
        try:
            for job in jobs:
                out_path = results_file(job, out)
                prepared = prepare(job, out_path, force, resume, comm.rank, comm.size)
                if prepared is not None:
                    work.append(prepared)
        except JobError as err:
            problem = str(err)
        problem = agree(comm, problem) or same_data(comm, jobs, work)
    except BaseException:  # an unexpected error: the locks go with it
        run_lock.release_all()
        raise
    if problem:
        run_lock.release_all()
        return [], problem
    for job in jobs:  # a completed run that --resume skips: its file is not written
        path = results_file(job, out)
        if all(path != prepared_out for _, prepared_out, _ in work):
            run_lock.release(path)
    return work, None


def same_data(comm: Any, jobs: Sequence[Job], work: Sequence[Work]) -> str | None:
    """Collective when a job trains on the whole set a user's loader returns (decided from ``jobs``,
    the same on every rank): one small allgather of the loaded sets' fingerprints
    (``learning/fingerprint.py``; the sets are those ``prepare`` loaded, cached). Returns the line
    every rank reports when two ranks loaded different sets, else None. Built-in data sets and
    loaders that take rank or world_size: no collective, nothing computed."""
    from mpidecent.learning.fingerprint import dataset_fingerprint, is_checked_loader, mismatch
    from mpidecent.learning.sources import loaded_dataset
    from mpidecent.plan import job_folder

    checked = [job for job in jobs if is_checked_loader(job.data, job_folder(job))]
    if not checked:
        return None
    prepared = {id(plan.job) for plan, _, _ in work}
    mine = [  # None for a run --resume skips as completed: its data were not loaded
        dataset_fingerprint(loaded_dataset(job.data, job_folder(job)))
        if id(job) in prepared
        else None
        for job in checked
    ]
    gathered = comm.allgather(mine)
    for i, job in enumerate(checked):
        problem = mismatch(job.data["name"], [g[i] for g in gathered])
        if problem:
            return problem
    return None


def lock_results(comm: Any, outputs: Sequence[tuple[str, Job]]) -> str | None:
    """Collective: rank 0 takes the owner lock of every results file of this launch
    (``io/run_lock.py``; a stale one with a notice on stderr) and broadcasts the outcome. Returns
    the line every rank reports when another live run holds one (rank 0 then holds none), else
    None."""
    problem = None
    if comm.rank == 0:
        try:
            for path, job in outputs:
                notice = run_lock.acquire(path, job.run["name"], comm.size)
                if notice:
                    print(f"mpidecent: note: {notice}", file=sys.stderr, flush=True)
        except JobError as err:
            run_lock.release_all()
            problem = str(err)
    return comm.bcast(problem, root=0)


def run_jobs(work: Sequence[Work], env: Any, force: bool, quiet: bool) -> tuple[int, list]:
    """Run every prepared job on every rank; returns (exit status, the runs' ``RunResult``). A
    diverged variant does not stop the rest of a sweep; a stop request or an output fault ends the
    launch."""
    try:
        return _run_all(work, env, force, quiet)
    finally:
        # every way out, an exception on its way to the excepthook too (rank 0 holds the locks)
        run_lock.release_all()


def _run_all(work: Sequence[Work], env: Any, force: bool, quiet: bool) -> tuple[int, list]:
    from mpidecent.runner.loop import Runner

    status = EXIT_OK
    runs: list[RunResult] = []
    for plan, out, snapshot in work:
        runner = Runner(plan, env, out, overwrite=force, quiet=quiet, resume=snapshot)
        problem = runner.resume_problem()
        if problem:
            runner.abandon()
            if runner.rank == 0:
                print(f"mpidecent: error: {problem}", file=sys.stderr, flush=True)
            return max(status, EXIT_BAD_INPUT), runs
        code = runner.run()
        run_lock.release(out)  # this file is done; a sweep's later files stay locked until theirs
        runs.append(runner.result)
        status = max(status, code)
        if code in (EXIT_PREEMPTED, EXIT_IO):
            break  # --resume continues with this run; the next one would meet the same full disk
    return status, runs


def prepare(job: Job, out: str, force: bool, resume: bool, rank: int, size: int) -> Work | None:
    """Validate one job for this launch (pure, per rank): its plan, its results file and, with
    --resume, its checkpoint. Returns (plan, out, snapshot or None), or None for a run --resume
    finds completed."""
    if not resume:
        check_output(out, force)
        return _plan(job, size, rank), out, None
    # Resume checks come first: a launch with the wrong number of ranks should hear about the
    # checkpoint's world size, not about a topology that does not fit that number.
    from mpidecent.io.checkpoint import (
        checkpoint_path,
        read_checkpoint,
    )  # h5py: only a resume reads files here

    checkpoint = checkpoint_path(out)
    status, rows = results_status(out, job) if os.path.exists(out) else ("", 0)
    if status == "completed":
        if rank == 0:
            print(
                f"mpidecent: {job.run['name']} already completed ({out}); nothing to resume",
                flush=True,
            )
        return None
    if os.path.exists(checkpoint):
        check_room(os.path.dirname(os.path.abspath(out)))
        snapshot = read_checkpoint(checkpoint, rank, size, job.to_toml())
        if not status:
            raise JobError(
                f"checkpoint {checkpoint!r} has no results file {out!r} to append to; restore it, "
                "or start over with --force"
            )
        check_pair(out, rows, checkpoint, snapshot, job)
        return _plan(job, size, rank), out, snapshot
    if status:
        raise JobError(
            f"--resume: {out!r} ({status}) has no checkpoint {checkpoint!r} to continue from; "
            "start over with --force (this overwrites it)"
        )
    check_output(
        out, False
    )  # neither file exists yet: a requeued job that never checkpointed starts
    return _plan(job, size, rank), out, None


def check_pair(out: str, rows: int, checkpoint: str, snapshot: Snapshot, job: Job) -> None:
    """``JobError`` unless the results file (``rows`` log rows) holds the rows the checkpoint was
    taken after: at least ``results_rows`` of them, whose steps are the job's log points up to the
    checkpoint's step. Checked before a resume truncates the file: a results file of another run, or
    a checkpoint altered consistently, is refused with both files as they were."""
    from mpidecent.io.layout import logged_steps
    from mpidecent.io.reader import ReportError, read_logged_steps

    fix = (
        "restore the results file and checkpoint that belong together, or start over with --force; "
        "both were left untouched"
    )
    if rows < snapshot.results_rows:
        raise JobError(
            f"results file {out!r} has {rows} log rows but checkpoint {checkpoint!r} was taken "
            f"after {snapshot.results_rows}: they are not one run's pair; {fix}"
        )
    expected = logged_steps(snapshot.step, job.run["steps"], job.run["log_every"])
    try:
        found = read_logged_steps(out, len(expected))
    except ReportError as err:
        raise JobError(
            f"results file {out!r} cannot be checked against checkpoint {checkpoint!r} ({err}); "
            f"{fix}"
        ) from None
    for row, (there, logged) in enumerate(zip(found.tolist(), expected, strict=True)):
        if there != logged:
            raise JobError(
                f"results file {out!r} does not match checkpoint {checkpoint!r}: its row {row} is "
                f"step {there} where the checkpoint of step {snapshot.step} logged step {logged}; "
                f"{fix}"
            )


def _plan(job: Job, size: int, rank: int) -> Plan:
    """``plan_job``; a launch of one rank (``mpidecent run`` without mpirun) whose job needs more
    ranks hears how to start them."""
    try:
        return plan_job(job, size, rank)
    except JobError as err:
        fewest = fewest_ranks(job) if size == 1 else None
        if fewest is None or fewest <= 1:
            raise
        raise JobError(
            f"{err}; this launch has 1 rank: start it with mpirun -n N mpidecent run {job.path} "
            f"(N ≥ {fewest})"
        ) from None


def fewest_ranks(job: Job, most: int = 16) -> int | None:
    """The smallest number of ranks (≤ ``most``) whose graph the job's algorithm accepts (None:
    none)."""
    from mpidecent.algorithms import ALGORITHMS
    from mpidecent.plan import build_topology

    spec = ALGORITHMS[job.algorithm["name"]]
    if job.topology["n"]:
        return None  # plan_job's message already names the ranks to start
    for n in range(1, most + 1):
        try:
            schedule, weights = build_topology(job, n)
            spec.pattern.check(spec.name, job.topology, n, schedule.union(), weights)
            if spec.check_world is not None:
                spec.check_world(job, n, weights)
        except (JobError, ValueError):
            continue
        return n
    return None


def results_status(out: str, job) -> tuple[str, int]:
    """Status and row count of an existing results file of this job (JobError if it belongs to
    another)."""
    from mpidecent.io.reader import ReportError, read_header

    try:
        header = read_header(out)
    except ReportError as err:
        raise JobError(
            f"results file {out!r} cannot be resumed: {err}; it was left untouched"
        ) from None
    if header.job != job.to_toml():
        raise JobError(
            f"results file {out!r} belongs to a different job "
            f"({job_difference(job.to_toml(), header.job)}); "
            "resume with the same job and --set options, or choose another --out"
        )
    return header.status, header.rows


def job_difference(ours: str, stored: str, where: str = "the file") -> str:
    """The first key where two resolved jobs (``Job.to_toml`` texts) differ, compared as parsed
    tables section by section: ``[algorithm] lr = 0.3 here, 0.1 in the file``."""
    import tomllib

    try:
        a, b = tomllib.loads(ours), tomllib.loads(stored)
    except tomllib.TOMLDecodeError:
        return f"the job stored in {where} cannot be read"
    for section in dict.fromkeys([*a, *b]):
        mine, theirs = a.get(section, {}), b.get(section, {})
        for key in dict.fromkeys([*mine, *theirs]):
            if (
                key in mine
                and key in theirs
                and mine[key] == theirs[key]
                and type(mine[key]) is type(theirs[key])
            ):
                continue
            here = toml_value(mine[key]) if key in mine else "not set"
            there = toml_value(theirs[key]) if key in theirs else "not set"
            return f"[{section}] {key} = {here} here, {there} in {where}"
    return "the same keys in another order"


def check_output(out: str, force: bool) -> None:
    """The results file can be created: not a directory, not existing (unless --force), and its
    folder can be made and written (tried for real with a probe file: permission bits say nothing to
    root or about read-only file systems). Checked before any collective, so a bad path ends every
    rank with one line instead of failing inside the collective file creation."""
    if os.path.isdir(out):
        raise JobError(
            f"--out {out!r} is a directory; give a file name such as {out.rstrip('/')}/run.h5"
        )
    if os.path.exists(out) and not force:
        raise JobError(
            f"results file {out!r} already exists; pass --force to overwrite it or --out to "
            "write elsewhere"
        )
    if os.path.exists(out):
        not_results = _not_a_results_file(out)
        if not_results:
            raise JobError(
                f"--force overwrites only mpidecent results files, and {out!r} is {not_results}; "
                "it was left untouched: choose another --out or [run] out, or remove it yourself"
            )
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise JobError(
            f"results file {out!r}: cannot write in {folder!r} ({err.strerror}); choose another "
            "--out or [run] out"
        ) from None
    check_room(folder)


def check_room(folder: str) -> None:
    """``JobError`` when ``folder``'s file system has less than ``START_ROOM_BYTES`` free: a run
    that could not write its first rows is refused before it starts (the runner looks again before
    each write)."""
    free = free_bytes(folder)
    if free is not None and free < START_ROOM_BYTES:
        raise JobError(
            f"no room to write results: {size_text(free)} free in {folder!r}, a run needs at least "
            f"{size_text(START_ROOM_BYTES)}; free some space or choose another --out or [run] out"
        )


def _not_a_results_file(path: str) -> str | None:
    """None for an mpidecent results file (HDF5 with a results ``format_version`` and /metrics/step,
    not a checkpoint), else what it is instead, for --force's refusal."""
    import h5py

    from mpidecent.io.checkpoint import KIND

    try:
        if not os.path.isfile(path):
            return "not a regular file"
        if not h5py.is_hdf5(path):
            return "not an HDF5 file"
        try:
            f = h5py.File(path, "r", locking=False)
        except TypeError:  # an HDF5 without the locking switch
            f = h5py.File(path, "r")
        with f:
            attrs = f.attrs
            kind = attrs.get("kind", "")
            if (kind.decode("utf-8", "replace") if isinstance(kind, bytes) else str(kind)) == KIND:
                return "a checkpoint, not a results file"
            if "format_version" not in attrs or "metrics" not in f or "step" not in f["metrics"]:
                return (
                    "an HDF5 file without the results format (no format_version attribute or "
                    "/metrics/step)"
                )
    except (OSError, TypeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"a file that cannot be read as HDF5 ({first})"
    return None
