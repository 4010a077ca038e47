"""One run at a time writes a results file (issue 23): a second real launch on the path a live run
is writing is refused in one line naming that run, --force or --resume alike, and leaves the first
run's file, checkpoint and lock as they were; the lock goes on every way out of a run, and one left
by a killed run is taken over by the next launch.

The first run is held at a fixed training step by its own model (a plug-in ``gate.py``, on rank 0),
so the second launch meets it mid-run whatever the machine's speed: no sleeps, no races.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
import time

import pytest
from cli import ROOT, mpidecent

from mpidecent.io.reader import read_header, read_run

GATE = '''
import json, os, signal, socket, time
import torch


class Gated(torch.nn.Module):
    """A linear model whose rank 0, at its training call number ``at``, does ``action``: "wait"
    (say where it is in <gate>.waiting, then wait for the file <gate>; only the first run that gets
    there), "raise", "kill" (SIGKILL itself) or anything else (nothing)."""

    calls = 0

    def __init__(self, input_shape, classes, gate="", at=0, action="wait"):
        super().__init__()
        size = 1
        for n in input_shape:
            size *= n
        self.linear = torch.nn.Linear(size, 1 if classes == 2 else classes)
        self.gate, self.at, self.action = gate, at, action

    def forward(self, x):
        if self.training and os.environ.get("OMPI_COMM_WORLD_RANK") == "0":
            Gated.calls += 1
            if Gated.calls == self.at:
                if self.action == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.action == "raise":
                    raise RuntimeError("the gate model failed")
            waiting = self.gate + ".waiting"  # the first run to get here waits, no later one
            if Gated.calls == self.at and self.action == "wait" and not os.path.exists(waiting):
                me = {"host": socket.gethostname(), "pid": os.getpid()}
                with open(self.gate + ".tmp", "w") as f:
                    json.dump(me, f)
                os.replace(self.gate + ".tmp", waiting)
                deadline = time.monotonic() + 120  # a hang guard: the test opens it long before
                while not os.path.exists(self.gate) and time.monotonic() < deadline:
                    time.sleep(0.05)
        return self.linear(x.flatten(1))
'''

JOB = """
[run]
name = "locked"
steps = 30
log_every = 10
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
lr = 0.1
[data]
name = "synthetic_logistic"
samples = 200
features = 5
batch_size = 8
[model]
name = "gate.py:Gated"
gate = %(gate)r
at = 15
action = %(action)r
"""

ERROR = re.compile(r"^mpidecent: error: ", re.M)


def _job(tmp_path, action: str) -> str:
    (tmp_path / "gate.py").write_text(GATE)
    job = tmp_path / f"{action}.toml"
    job.write_text(JOB % {"gate": str(tmp_path / "open"), "action": action})
    return str(job)


def _start(job: str, out, *extra: str) -> subprocess.Popen:
    """``mpirun -n 2 mpidecent run job --out out`` in the background."""
    args = " ".join(shlex.quote(a) for a in ["run", job, "--out", str(out), "--quiet", *extra])
    command = f"mpirun -n 2 {shlex.quote(sys.executable)} -m mpidecent {args}"
    return subprocess.Popen(
        ["bash", "-c", f". {shlex.quote(str(ROOT / 'scripts/mpienv.sh'))} && exec {command}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path, proc: subprocess.Popen, limit: float = 120) -> None:
    """Poll until ``path`` exists (the limit is a hang guard: the run gets there at its pace)."""
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the first run ended (status {proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear: {proc.communicate()[1]}")
        time.sleep(0.05)


def _files(folder) -> dict[str, str]:
    """The results files, checkpoints and locks in ``folder``, with a digest of their content."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("shared*")}


@pytest.mark.timeout(300)
def test_a_second_launch_on_a_live_runs_results_file_is_refused_and_the_first_run_completes(
    tmp_path,
):
    job, out = _job(tmp_path, "wait"), tmp_path / "shared.h5"
    lock = tmp_path / "shared.h5.lock"
    first = _start(job, out, "--force")
    try:
        _wait_for(tmp_path / "open.waiting", first)  # run A is at step 15: rows 0 and 10 written
        holder = json.loads((tmp_path / "open.waiting").read_text())
        before = _files(tmp_path)  # A's results file and lock
        for flags in (["--force"], ["--resume"], []):
            second = mpidecent("run", job, "--out", str(out), "--quiet", *flags, ranks=2)
            errors = ERROR.findall(second.stderr)
            assert second.returncode == 2 and len(errors) == 1, (flags, second.stderr)
            line = next(x for x in second.stderr.splitlines() if x.startswith("mpidecent: error: "))
            assert f"results file {str(out)!r} is being written by another run (host " in line, line
            assert f"host {holder['host']}, pid {holder['pid']}, started " in line, line
            assert re.search(r"started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", line), line
            assert "--force does not override" in line, line
            # A's results file and lock are exactly as they were, and no checkpoint appeared
            assert _files(tmp_path) == before and sorted(before) == [out.name, lock.name], flags
        (tmp_path / "open").touch()  # let A go on
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    header, run = read_header(str(out)), read_run(str(out))
    assert header.status == "completed" and run.steps.tolist() == [0, 10, 20, 30], stderr
    assert not lock.exists()


@pytest.mark.timeout(300)
def test_the_lock_goes_when_a_run_fails_and_a_killed_runs_lock_is_taken_over(tmp_path):
    # rank 0 fails mid-run: its error ends the job, and its lock is removed on the way out
    out, lock = tmp_path / "runs.h5", tmp_path / "runs.h5.lock"
    failed = mpidecent("run", _job(tmp_path, "raise"), "--out", str(out), "--quiet", ranks=2)
    assert failed.returncode not in (0, None) and "the gate model failed" in failed.stderr
    assert not lock.exists(), failed.stderr
    # rank 0 is killed (SIGKILL: no way out runs): its lock stays, naming a process that is gone
    killed = mpidecent("run", _job(tmp_path, "kill"), "--out", str(out), "--force", ranks=2)
    assert killed.returncode != 0 and lock.exists(), killed.stderr
    dead = json.loads(lock.read_text())["pid"]
    # the next launch takes it over with one notice, runs, and removes it
    job = _job(tmp_path, "pass")
    again = mpidecent("run", job, "--out", str(out), "--force", "--quiet", ranks=2)
    assert again.returncode == 0, again.stderr
    notes = [x for x in again.stderr.splitlines() if x.startswith("mpidecent: note: ")]
    assert len(notes) == 1 and f"process {dead} no longer exists" in notes[0], again.stderr
    assert read_header(str(out)).status == "completed" and not lock.exists()
