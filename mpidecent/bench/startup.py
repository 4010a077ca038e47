"""The ``startup`` section of ``mpidecent bench``: the quickstart (``jobs/quickstart.toml``)
launched with n ranks on this machine, however few its cores (oversubscribed where no batch system
gave the slots), each a real ``mpirun -n n python -m mpidecent run`` timed from outside (this
process runs no MPI).

Per n it records:

* **launch → exit**: wall time of the whole command (MPI start, every rank's imports, validation,
  the run, the results file, the exit);
* **launch → step 0**: when rank 0's first progress line (step 0, printed once every rank is set up
  and the initial model evaluated) reached this process;
* **training**: the results file's ``wall_s`` (the training loop, from step 0 to the last step);
* the exit status, and the 1-minute load average before the launch (a busy machine shows here).

Start-up on a few cores is dominated by what every rank imports before step 0 (torch above all):
each of the n ranks pays it, the cores serve them in turn. A launch that does not end within the
timeout is killed and recorded, and larger n are not tried; an n whose ranks would not fit in the
available memory (``RANK_MIB`` each) is skipped with a note instead of pushing the machine into
swap.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mpidecent.machine import available_memory

JOB = "jobs/quickstart.toml"
# Proportional set size of one quickstart rank, measured at 8 ranks (about 170 MiB: python, numpy,
# torch, mpi4py, h5py), rounded up: what each rank needs from the machine's available memory.
RANK_MIB = 200
_STEP0 = re.compile(r"\bstep +0/")


def _launch(argv: Sequence[str], env: Mapping[str, str], timeout_s: float) -> dict:
    """Run one launch; returns exit code (None: killed at the timeout), wall seconds, seconds to the
    step-0 line (None: never printed) and the output's last lines."""
    start = time.perf_counter()
    # A session of its own, so that a launch past its timeout is ended with every rank it started.
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    seen: dict[str, float] = {}
    tail: list[str] = []

    def read() -> None:  # a thread: the pipe is drained while the main thread waits with a timeout
        assert proc.stdout is not None
        for line in proc.stdout:
            if "step0" not in seen and _STEP0.search(line):
                seen["step0"] = time.perf_counter() - start
            tail.append(line.rstrip())
            del tail[:-12]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wall = time.perf_counter() - start
    reader.join(timeout=10)
    return {"exit_code": code, "wall_s": wall, "step0_s": seen.get("step0"), "tail": tail}


def _training(path: Path) -> tuple[float | None, int | None]:
    """(training wall seconds, steps completed) from a results file; (None, None) if it cannot be
    read."""
    from mpidecent.io.reader import ReportError, read_runs

    try:
        attrs = read_runs([str(path)])[0].attrs
    except (ReportError, OSError):
        return None, None
    wall, steps = attrs.get("wall_s"), attrs.get("steps_completed")
    return (float(wall) if wall is not None else None), (int(steps) if steps is not None else None)


def run(
    launcher: Sequence[str],
    env: Mapping[str, str],
    root: Path,
    out: Path,
    ranks: Sequence[int],
    steps: int | None,
    timeout_s: float,
) -> dict:
    """Launch the quickstart with each n of ``ranks`` (``launcher`` is the command before ``-n``;
    ``steps`` overrides run.steps, None: the job's own). Returns {"job", "steps", "cores",
    "rows"}."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    stopped = ""
    for n in ranks:
        row: dict = {
            "n": int(n),
            "status": "",
            "exit_code": None,
            "wall_s": None,
            "step0_s": None,
            "training_s": None,
            "steps": None,
            "load_1min": os.getloadavg()[0],
        }
        rows.append(row)
        free = available_memory()
        available = free / 2**20 if free is not None else None
        if stopped:
            row["status"] = f"not tried: {stopped}"
            continue
        if available is not None and n * RANK_MIB > available:
            row["status"] = (
                f"skipped: {n} ranks need about {n * RANK_MIB / 1024:.1f} GiB, "
                f"{available / 1024:.1f} GiB available"
            )
            continue
        results = out / f"quickstart-{n}.h5"
        extra = ["--set", f"run.steps={steps}", "--set", f"run.log_every={steps}"] if steps else []
        argv = [
            *launcher,
            "-n",
            str(n),
            sys.executable,
            "-m",
            "mpidecent",
            "run",
            str(root / JOB),
            "--out",
            str(results),
            "--force",
            *extra,
        ]
        launch = _launch(argv, env, timeout_s)
        row.update({k: launch[k] for k in ("exit_code", "wall_s", "step0_s")})
        if launch["exit_code"] is None:
            row["status"] = f"killed: no exit within {timeout_s:.0f} s"
            stopped = f"{n} ranks did not finish within {timeout_s:.0f} s"
        elif launch["exit_code"] != 0:
            row["status"] = f"exit {launch['exit_code']}"
            row["output_tail"] = launch["tail"]
        else:
            row["status"] = "ok"
            row["training_s"], row["steps"] = _training(results)
    return {"job": JOB, "steps": steps, "cores": os.cpu_count(), "rows": rows}


def table(result: dict) -> tuple[str, list[str], list[list[str]]]:
    """(title, head, body) of the section's table."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    steps = result["steps"] or "its 500"
    title = (
        f"{result['job']} ({steps} steps) launched with n ranks on {result['cores']} cores: wall "
        "time from launch to exit, to the step-0 line, and of the training loop"
    )
    head = [
        "n",
        "launch → exit s",
        "launch → step 0 s",
        "training s",
        "steps",
        "load before",
        "status",
    ]
    body = [
        [
            str(r["n"]),
            seconds(r["wall_s"]),
            seconds(r["step0_s"]),
            seconds(r["training_s"]),
            "-" if r["steps"] is None else str(r["steps"]),
            f"{r['load_1min']:.1f}",
            r["status"],
        ]
        for r in result["rows"]
    ]
    return title, head, body
