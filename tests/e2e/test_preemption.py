"""Faults against the real CLI under mpirun: a stop signal, SIGKILL in the middle of a checkpoint write,
damaged checkpoints, the wrong number of ranks, and divergence — what survives each (issue 6)."""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from cli import ROOT, mpidecent
from mpidecent.io.checkpoint import read_checkpoint
from mpidecent.io.reader import ReportError, read_header, read_run

QUICKSTART = str(ROOT / "jobs" / "quickstart.toml")
LONG = ["--set", "run.steps=2000", "--set", "run.log_every=50"]
TIMING = {"wall_s", "compute_s", "comm_s"}


def _series(path) -> dict:
    run = read_run(str(path))
    # "rows": the length of /metrics/step as stored (read_run leaves out trailing rows never written)
    data = {"step": run.steps, "rows": np.int64(read_header(str(path)).rows)}
    for group, series in (("global", run.global_series), ("rank", run.rank_series)):
        data.update({f"{group}/{k}": v for k, v in series.items() if k not in TIMING})
    return data


def _same_numbers(a, b) -> list[str]:
    x, y = _series(a), _series(b)
    return [k for k in x if not np.array_equal(x[k], y.get(k), equal_nan=True)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "whole.h5"
    result = mpidecent("run", QUICKSTART, *LONG, "--out", str(out), "--quiet", ranks=4, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def _start(out, extra=(), env_extra=None, code=None) -> subprocess.Popen:
    """Start a long quickstart run under mpirun in the background (optionally as a python -c script)."""
    python = shlex.quote(sys.executable)
    target = f"-c {shlex.quote(code)}" if code else "-m mpidecent"
    args = " ".join(shlex.quote(a) for a in ["run", QUICKSTART, *LONG, "--out", str(out), "--quiet", *extra])
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(["bash", "-c", f". {ROOT / 'scripts/mpienv.sh'} && exec mpirun -n 4 {python} {target} {args}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_rows(out, rows: int, proc, limit: float = 120) -> None:
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        try:
            if read_header(str(out)).rows >= rows:  # opened without file locking: the ranks are writing it
                return
        except ReportError:  # not created yet, or its attributes not written yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"the run did not log {rows} rows in time")


@pytest.mark.timeout(600)
def test_stop_signal_checkpoints_and_resume_matches_an_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "cut.h5"
    proc = _start(out)
    _wait_for_rows(out, 4, proc)
    proc.send_signal(signal.SIGUSR1)  # mpirun forwards SIGUSR1 to every rank
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 4, stderr
    assert stderr.count("stop requested (SIGUSR1) at step") == 1
    assert read_header(str(out)).status == "preempted"
    resumed = mpidecent("run", QUICKSTART, *LONG, "--out", str(out), "--resume", "--quiet", ranks=4, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _same_numbers(reference, out) == []
    again = mpidecent("run", QUICKSTART, *LONG, "--out", str(out), "--resume", ranks=4, timeout=120)
    assert again.returncode == 0 and "already completed" in again.stdout


KILL_IN_CHECKPOINT = """
import os, signal, sys
import mpidecent.io.checkpoint as ck
from mpi4py import MPI
write_row = ck._write_row
def dying_write_row(dset, rank, array):
    # The second checkpoint (the first one is on disk): rank 0 dies after the temporary file has data.
    if MPI.COMM_WORLD.rank == 0 and os.path.exists(os.environ["CKPT"]) and dset.name == "/state/ref_out":
        os.kill(os.getpid(), signal.SIGKILL)
    write_row(dset, rank, array)
ck._write_row = dying_write_row
from mpidecent.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(600)
def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, reference):
    out = tmp_path / "killed.h5"
    checkpoint = tmp_path / "killed.ckpt.h5"
    proc = _start(out, ["--set", "run.checkpoint_every=300"], {"CKPT": str(checkpoint)}, code=KILL_IN_CHECKPOINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert (tmp_path / "killed.ckpt.h5.tmp").exists()  # the interrupted write
    job_toml = _job_toml(["run.checkpoint_every=300"])
    snapshots = [read_checkpoint(str(checkpoint), r, 4, job_toml) for r in range(4)]
    assert {s.step for s in snapshots} == {300}  # the previous checkpoint, intact and verified
    run = read_run(str(out))  # the results written so far stay readable
    assert run.status == "running" and run.last_step >= 600
    resumed = mpidecent("run", QUICKSTART, *LONG, "--set", "run.checkpoint_every=300", "--out", str(out),
                        "--resume", "--quiet", ranks=4, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _same_numbers(reference, out) == []


def _job_toml(overrides) -> str:
    from mpidecent.config import load_job

    return load_job(QUICKSTART, [*LONG[1::2], *overrides]).to_toml()


@pytest.mark.timeout(300)
def test_unusable_checkpoints_are_refused_and_nothing_is_destroyed(tmp_path):
    out = tmp_path / "short.h5"
    proc = _start(out, ["--set", "run.checkpoint_every=10"])
    _wait_for_rows(out, 3, proc)
    proc.send_signal(signal.SIGUSR1)
    proc.communicate(timeout=120)
    assert proc.returncode == 4
    checkpoint = tmp_path / "short.ckpt.h5"
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out, checkpoint)}
    args = ["run", QUICKSTART, *LONG, "--set", "run.checkpoint_every=10", "--out", str(out), "--resume"]
    wrong_size = mpidecent(*args, ranks=3, timeout=120)
    assert wrong_size.returncode == 2
    assert wrong_size.stderr.count("was written by 4 ranks but 3 were started: resume with mpirun -n 4") == 1
    other_job = mpidecent(*args, "--set", "algorithm.lr=0.3", ranks=4, timeout=120)
    assert other_job.returncode == 2 and other_job.stderr.count("belongs to a different job") == 1
    both = mpidecent(*args, "--force", ranks=4, timeout=120)
    assert both.returncode == 2 and "give one of them" in both.stderr
    with h5py.File(checkpoint, "r+") as f:  # flip one value of rank 3's model
        f["state/x"][3, 5] += 1.0
    digests[checkpoint] = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    corrupt = mpidecent(*args, ranks=4, timeout=120)
    assert corrupt.returncode == 2
    assert corrupt.stderr.count("state/x of rank 3 fails its checksum (corrupt); nothing was changed (on rank 3)") == 1
    assert "Traceback" not in corrupt.stderr
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out, checkpoint)} == digests


@pytest.mark.timeout(300)
def test_a_non_finite_run_stops_and_keeps_results_and_the_last_good_checkpoint(tmp_path):
    job = tmp_path / "unstable.toml"
    job.write_text(
        '[run]\nsteps = 400\nlog_every = 10\ncheckpoint_every = 5\n[topology]\nkind = "ring"\ndirected = true\n'
        '[algorithm]\nname = "quantized_push_sum"\nlr = 0.0\ngamma = 1.0\n'
        '[compression]\nname = "qsgd"\nlevels = 4\nbucket = 64\n'
        '[data]\nfeatures = 200\n[model]\ninit = "normal"\ninit_scale = 1.0\n')
    out = tmp_path / "unstable.h5"
    result = mpidecent("run", str(job), "--out", str(out), ranks=4, timeout=240)
    assert result.returncode == 3 and result.stderr.count("run diverged at step") == 1
    run = read_run(str(out))
    assert run.status == "diverged"
    diverged_at = int(run.attrs["steps_completed"])
    from mpidecent.config import load_job

    snapshot = read_checkpoint(str(tmp_path / "unstable.ckpt.h5"), 0, 4, load_job(job).to_toml())
    assert 0 < snapshot.step < diverged_at and np.all(np.isfinite(snapshot.state["x"]))
