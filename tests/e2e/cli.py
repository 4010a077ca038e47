"""Run the real CLI under mpirun as a subprocess (with the workstation settings of scripts/mpienv.sh)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def mpidecent(*args: str, ranks: int | None = None, timeout: float = 180) -> Result:
    """``mpirun -n ranks python -m mpidecent args...`` (or no mpirun when ranks is None)."""
    return _launch(f"-m mpidecent {' '.join(shlex.quote(a) for a in args)}", ranks, timeout)


def run_python(code: str, ranks: int, timeout: float = 180) -> Result:
    """``mpirun -n ranks python -c code``."""
    return _launch(f"-c {shlex.quote(code)}", ranks, timeout)


def _launch(python_args: str, ranks: int | None, timeout: float) -> Result:
    command = f"{shlex.quote(sys.executable)} {python_args}"
    if ranks is not None:
        command = f"mpirun -n {ranks} {command}"
    start = time.perf_counter()
    proc = subprocess.run(["bash", "-c", f". {shlex.quote(str(ROOT / 'scripts/mpienv.sh'))} && {command}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)
