"""Output faults under the real CLI (issue 15): a full disk or a vanished output folder ends every rank with
one ``mpidecent: error:`` line and exit status 5 — never a hang, never a traceback — and leaves the last
checkpoint and the results up to the last complete row readable.

The disk is a small tmpfs this module mounts itself (skipped, with the reason, where mounting is not
permitted). Faults are injected at a fixed step from inside rank 0 (through the stop-signal hook the loop
calls once per step), so every run fails at the same place: no sleeps, no races with the run's speed.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import h5py
import pytest
from cli import ROOT, _launch, mpidecent

from mpidecent.io.reader import read_header

QUICKSTART = str(ROOT / "jobs" / "quickstart.toml")
STEPS = 200
SETS = ["--set", f"run.steps={STEPS}", "--set", "run.log_every=1", "--set", "run.checkpoint_every=50"]
FAULT_STEP = 60  # rank 0 makes the fault right after this step, before the run's look at the disk

# The run with a fault made by rank 0 after step FAULT_STEP: ``fill`` (leave LEAVE bytes free on the disk),
# ``remove`` (delete the output folder). With BLIND the runner's look-ahead is switched off, as when the
# disk fills up between the look and the write: the write itself fails.
FAULTY_RUN = """
import os, shutil, sys
from mpi4py import MPI
import mpidecent.runner.loop as loop
import mpidecent.io.faults as faults
KIND, LEAVE, BLIND, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "blind", sys.argv[4]
FOLDER = os.path.dirname(OUT)
calls = {"n": 0}
def fault_then_no_stop():
    calls["n"] += 1
    if calls["n"] == %(step)d and MPI.COMM_WORLD.rank == 0:
        if KIND == "remove":
            shutil.rmtree(FOLDER)
        else:
            stats = os.statvfs(FOLDER)
            try:
                with open(os.path.join(FOLDER, "filler"), "wb") as f:
                    f.write(bytes(max(0, stats.f_bavail * stats.f_frsize - LEAVE)))
                    while LEAVE == 0:
                        f.write(bytes(4096))
                        f.flush()
            except OSError:
                pass  # the disk is full
    return False
loop.stop_requested = fault_then_no_stop
if BLIND:
    faults.OutputWatch.problem = lambda self, needed: None
from mpidecent.cli import main
sys.exit(main(["run", %(job)r, *%(sets)r, "--quiet", "--out", OUT]))
""" % {"step": FAULT_STEP, "job": QUICKSTART, "sets": SETS}


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """A 4 MiB tmpfs mounted for this module (skip where that is not permitted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: the full-disk fault tests are skipped")
    folder = tmp_path_factory.mktemp("small_disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()}): full-disk tests skipped")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _run_with_fault(folder, kind: str, leave: int = 0, blind: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "faulty_run.py"
    script.write_text(FAULTY_RUN)
    out = folder / "out" / "r.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = _launch(f"{script} {kind} {leave} {'blind' if blind else 'look'} {out}", ranks=4, timeout=240)
    return result, out


def _one_error_line(result) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("mpidecent: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def _checkpoint_step(path) -> int:
    with h5py.File(path, "r") as f:
        return int(f.attrs["step"])


def test_a_full_disk_stops_every_rank_cleanly_and_the_run_resumes(small_disk):
    folder = small_disk / f"clean-{uuid.uuid4().hex[:6]}"
    result, out = _run_with_fault(folder, "fill", leave=128 * 1024)
    assert result.returncode == 5, result.stderr
    line = _one_error_line(result)
    assert f"stopped at step {FAULT_STEP}: no room for the results" in line
    assert f"up to step {FAULT_STEP - 1}" in line and "of step 50" in line and "--resume" in line
    header = read_header(str(out))
    assert header.status == "failed" and header.rows == FAULT_STEP  # steps 0 … 59, every row complete
    assert _checkpoint_step(out.with_suffix("").with_suffix(".ckpt.h5")) == 50
    assert not os.path.exists(f"{out.with_suffix('').with_suffix('.ckpt.h5')}.tmp")

    os.remove(out.parent / "filler")  # make room, then continue
    resumed = mpidecent("run", QUICKSTART, *SETS, "--quiet", "--resume", "--out", str(out), ranks=4, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    header = read_header(str(out))
    assert header.status == "completed" and header.rows == STEPS + 1


def test_a_write_that_fails_anyway_aborts_every_rank_with_one_line(small_disk):
    folder = small_disk / f"blind-{uuid.uuid4().hex[:6]}"
    result, out = _run_with_fault(folder, "fill", leave=0, blind=True)
    assert result.returncode == 5, result.stderr
    line = _one_error_line(result)
    assert "failed: no space left on the device" in line and "every rank was stopped" in line
    assert "the checkpoint" in line and "of step 50" in line
    checkpoint = out.with_suffix("").with_suffix(".ckpt.h5")
    assert _checkpoint_step(checkpoint) == 50  # the previous checkpoint survived, whole
    assert not os.path.exists(f"{checkpoint}.tmp")
    header = read_header(str(out))  # still readable, up to the last complete row at least
    assert header.status == "running" and header.rows >= FAULT_STEP


def test_a_vanished_output_folder_stops_every_rank_with_one_line(tmp_path):
    result, out = _run_with_fault(tmp_path / "gone", "remove")
    assert result.returncode == 5, result.stderr
    line = _one_error_line(result)
    assert f"stopped at step {FAULT_STEP}: the output folder" in line and "was removed" in line
    assert "start over with --force" in line
    assert not out.parent.exists()
