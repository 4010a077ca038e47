"""Stop requests (SIGUSR1 / SIGTERM) and what Slurm needs: the launch check and the requeue.

A signal only sets a flag; the runner reads it at the next step boundary and the ranks agree on it
in their status agreement (``comm/status.py``: pipelined, a few steps later, or at the next log or
checkpoint boundary), so they checkpoint at the same step and exit together with ``EXIT_PREEMPTED``.
Under Slurm, rank 0 then asks for a requeue when the job allows it (submitted with ``--requeue`` or
``MPIDECENT_REQUEUE=1``); the requeued job (``SLURM_RESTART_COUNT`` > 0) is started with
``--resume`` by ``slurm/train.sbatch`` and continues from the checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess

from mpidecent.errors import JobError

_requested: list[int] = []


def _on_signal(signum, frame) -> None:  # pragma: no cover - exercised through subprocess tests
    _requested.append(signum)


def install_stop_handlers() -> None:
    """SIGUSR1 and SIGTERM request a checkpoint-and-exit at a step boundary the ranks agree on (main
    thread)."""
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def stop_requested() -> bool:
    return bool(_requested)


def stop_signal_name() -> str:
    return signal.Signals(_requested[0]).name if _requested else ""


def check_world_size(size: int) -> None:
    """Under Slurm, a world size different from SLURM_NTASKS means the launcher and MPI disagree
    (for example a PMI mismatch that starts every rank as a singleton)."""
    tasks = os.environ.get("SLURM_NTASKS")
    if tasks and tasks.isdigit() and int(tasks) != size and "SLURM_JOB_ID" in os.environ:
        raise JobError(
            f"MPI started {size} rank(s) but Slurm allocated SLURM_NTASKS = {tasks}: the MPI "
            "library "
            "and the launcher disagree (use mpirun inside the allocation, or srun --mpi=pmix)"
        )


def requeue_allowed(job_id: str) -> bool:
    if os.environ.get("MPIDECENT_REQUEUE") == "1":
        return True
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Requeue=1" in shown


def requeue_under_slurm() -> str:
    """Rank 0, after the checkpoint is on disk: requeue this Slurm job when allowed. Returns what
    was done, for the log ("" outside Slurm)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return ""
    if not requeue_allowed(job_id):
        return (
            f"Slurm job {job_id} does not allow requeue (submit with --requeue); resume it with "
            "--resume"
        )
    # Under srun the requeue ends this job step at once, and Slurm signals every process of the
    # step, scontrol included, often before it reports: it ignores SIGTERM, and death by a signal
    # means the requeue was under way.
    result = subprocess.run(
        ["scontrol", "requeue", job_id],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    if result.returncode < 0:
        return (
            f"requeue of Slurm job {job_id} requested (Slurm ended this step while scontrol ran); "
            "it will resume from the checkpoint"
        )
    if result.returncode != 0:
        return f"scontrol requeue {job_id} failed: {result.stderr.strip()}; resume with --resume"
    return f"requeued Slurm job {job_id}; it will resume from the checkpoint"
