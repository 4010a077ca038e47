"""The owner lock of a results file (issue 23, ``mpidecent/io/run_lock.py``) on real files and
real processes: a live holder refuses, the stale rules (a dead pid on this host, a reused pid, an
old heartbeat from another host, an earlier start of the same Slurm job) let the next run take
over, and a lock is removed only by the process that holds it, with its own content."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from mpidecent.errors import JobError
from mpidecent.io import run_lock
from mpidecent.io.run_lock import Owner, acquire, lock_path, release, stale_reason, this_owner


@pytest.fixture(autouse=True)
def _no_slurm_and_no_leftovers(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", run_lock.STALE_ENV):
        monkeypatch.delenv(name, raising=False)
    yield
    run_lock.release_all()


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _other(**changes) -> Owner:
    """A lock's owner: this process, with ``changes``."""
    return dataclasses.replace(this_owner("other", 2), token="someone-else", **changes)


def _plant(results: str, owner: Owner, age_s: float = 0.0) -> str:
    """Write a lock file of ``owner`` for ``results`` whose last heartbeat was ``age_s`` ago."""
    path = lock_path(results)
    with open(path, "wb") as f:
        f.write(owner.to_json())
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_a_live_holder_refuses_another_run_which_changes_nothing(tmp_path):
    results = str(tmp_path / "x.h5")
    path = _plant(results, _other())  # this very process: alive, with its start time
    before = _bytes(path)
    with pytest.raises(JobError) as err:
        acquire(results, "mine", 2)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"results file {results!r} is being written by ")
    owner = this_owner()
    assert f"(host {owner.host}, pid {owner.pid}, started " in text
    assert "--force does not override a run in progress" in text and repr(path) in text
    assert _bytes(path) == before and sorted(os.listdir(tmp_path)) == ["x.h5.lock"]


def test_a_lock_is_taken_held_and_released_with_its_content(tmp_path):
    results = str(tmp_path / "x.h5")
    assert acquire(results, "mine", 3) is None
    owner = Owner.from_json(_bytes(lock_path(results)))
    assert owner is not None and (owner.host, owner.pid, owner.job, owner.world_size) == (
        socket.gethostname(),
        os.getpid(),
        "mine",
        3,
    )
    assert acquire(results) is None  # a lock this process holds: nothing to do
    assert release(results) and not os.path.exists(lock_path(results))
    assert not release(results)  # a second release finds nothing of ours
    assert sorted(os.listdir(tmp_path)) == []


def test_a_dead_process_lock_on_this_host_is_taken_over_with_a_notice(tmp_path):
    results = str(tmp_path / "x.h5")
    dead = _dead_pid()
    _plant(results, _other(pid=dead, proc_start=""))
    notice = acquire(results, "mine", 2)
    assert notice is not None and "\n" not in notice
    assert f"pid {dead}" in notice and f"process {dead} no longer exists" in notice
    assert Owner.from_json(_bytes(lock_path(results))).pid == os.getpid()


def test_a_reused_pid_is_no_holder_but_the_same_process_is():
    me = this_owner()
    assert me.proc_start  # Linux: /proc tells a process's start time
    assert stale_reason(_other(), me, 0.0, 600.0) is None
    reused = _other(proc_start=str(int(me.proc_start) + 1))
    assert stale_reason(reused, me, 0.0, 600.0) == f"pid {me.pid} now belongs to another process"
    assert "restarted" in stale_reason(_other(boot_id="another-boot"), me, 0.0, 600.0)


def test_another_hosts_lock_is_stale_only_after_its_heartbeat_stops(tmp_path, monkeypatch):
    results = str(tmp_path / "x.h5")
    elsewhere = _other(host="node-17", pid=_dead_pid())  # its pid means nothing here
    me = this_owner()
    assert stale_reason(elsewhere, me, 599.0, 600.0) is None
    assert "no heartbeat for 601 s" in stale_reason(elsewhere, me, 601.0, 600.0)
    # the bound is the finder's MPIDECENT_LOCK_STALE_S, never under 3 heartbeats of the holder
    assert stale_reason(elsewhere, me, 25.0, 20.0) is None
    assert stale_reason(elsewhere, me, 31.0, 20.0) is not None
    _plant(results, elsewhere, age_s=60.0)
    with pytest.raises(JobError, match="host node-17"):
        acquire(results)
    monkeypatch.setenv(run_lock.STALE_ENV, "45")
    assert "no heartbeat for 60 s" in acquire(results)
    monkeypatch.setenv(run_lock.STALE_ENV, "soon")
    with pytest.raises(JobError, match="MPIDECENT_LOCK_STALE_S='soon': give the seconds"):
        run_lock.stale_after_s()


def test_the_holder_heartbeat_keeps_its_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    results = str(tmp_path / "x.h5")
    acquire(results)
    path = lock_path(results)
    os.utime(path, (0, 0))
    deadline = time.monotonic() + 30
    while os.stat(path).st_mtime == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    # an ordering, not a duration: the heartbeat thread moved the time stamp off the epoch
    assert os.stat(path).st_mtime > 0, "the holder's heartbeat never touched its lock"


def test_a_requeued_slurm_job_takes_over_its_earlier_start_but_not_a_parallel_step(
    tmp_path, monkeypatch
):
    results = str(tmp_path / "x.h5")
    # the first start ran on another node, still fresh: only the Slurm rule can free it
    _plant(results, _other(host="node-3", slurm_job="4242", slurm_restart=0))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with pytest.raises(JobError, match="Slurm job 4242"):  # a second step of the same start
        acquire(results)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    notice = acquire(results)
    assert "an earlier start of this Slurm job (SLURM_RESTART_COUNT 0, now 1)" in notice
    monkeypatch.setenv("SLURM_JOB_ID", "999")  # another job's lock is never freed by this rule
    run_lock.release_all()
    _plant(results, _other(host="node-3", slurm_job="4242", slurm_restart=0))
    with pytest.raises(JobError):
        acquire(results)


def test_an_unreadable_lock_refuses_until_it_is_old(tmp_path):
    results = str(tmp_path / "x.h5")
    path = lock_path(results)
    with open(path, "w") as f:
        f.write("not json")
    with pytest.raises(JobError, match=r"its lock .* cannot be read"):
        acquire(results)
    os.utime(path, (1, 1))
    assert "cannot be read" in acquire(results)


def test_release_leaves_a_lock_that_another_run_took_over(tmp_path):
    results = str(tmp_path / "x.h5")
    acquire(results)
    path = lock_path(results)
    theirs = _other(host="node-9").to_json()
    with open(path, "wb") as f:  # taken over meanwhile (this run was thought gone)
        f.write(theirs)
    assert not release(results)
    assert _bytes(path) == theirs and sorted(os.listdir(tmp_path)) == ["x.h5.lock"]


def test_release_all_frees_every_lock_of_a_launch_on_an_error(tmp_path):
    first, second = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    acquire(first)
    acquire(second)
    assert sorted(run_lock.held()) == [first, second]
    try:
        raise RuntimeError("a run failed")
    except RuntimeError:
        run_lock.release_all()
    assert run_lock.held() == [] and os.listdir(tmp_path) == []


def test_a_lock_that_cannot_be_written_is_one_line_naming_the_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JobError) as err:
        acquire(str(blocker / "x.h5"))
    assert f"cannot write in {str(blocker)!r} (" in str(err.value) and "--out" in str(err.value)


def test_lock_content_is_plain_json_naming_the_run(tmp_path):
    results = str(tmp_path / "x.h5")
    acquire(results, "quickstart", 8)
    stored = json.loads(_bytes(lock_path(results)))
    assert {"host", "pid", "started", "job", "world_size", "slurm_job"} <= set(stored)
    assert stored["job"] == "quickstart" and stored["world_size"] == 8
