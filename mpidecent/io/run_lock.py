"""The owner lock of a results file: one run at a time writes ``runs/<name>.h5``.

A run takes ``<results file>.lock`` (``lock_path``) before anything touches the results file or
its checkpoint (before ``--force`` replaces them, before ``--resume`` truncates them) and removes
it when it ends. Another launch that finds the lock held by a live run is refused with one line
naming that run (host, pid, start time), ``--force`` or not, and changes nothing. The lock holds
JSON (``Owner``): who wrote it, where, since when, for which job and Slurm job. It is created
atomically: the content goes to a temporary file first, then ``os.link`` gives it the lock's
name, which fails when the name exists (atomic on local file systems, NFS and Lustre alike;
``O_CREAT | O_EXCL`` where hard links are refused).

A lock whose run is gone (killed, its node lost) must not block forever. It is stale
(``stale_reason``), and the next run takes it over with a one-line notice, when:

* it was taken by an earlier incarnation of this Slurm job (same ``SLURM_JOB_ID``, lower
  ``SLURM_RESTART_COUNT``): Slurm runs one incarnation at a time, so a requeued job resumes at
  once;
* it was taken on this host (same host name, boot and pid namespace) by a process that no longer
  exists, or whose pid now belongs to another process (a different start time in ``/proc``); or
  the host has been restarted since;
* it was taken on another host and its heartbeat is old: the holder touches the lock's
  modification time every ``HEARTBEAT_S`` seconds (a thread of the holding process, so a long
  interval between log rows does not matter), and a lock untouched for ``stale_after_s()``
  seconds (``MPIDECENT_LOCK_STALE_S`` in the environment of the launch that finds it, default
  ``DEFAULT_STALE_S``, never under three of the holder's heartbeats) is stale. A job suspended
  for longer than that (``scontrol suspend``) loses its lock.

Only the process that took a lock removes it (``release``), after checking that the file still
holds its own content: a lock taken over meanwhile is left to its new owner.

Which ranks call: rank 0 alone (``runner/launch.py`` takes the locks of a launch's results files
on rank 0 and broadcasts the outcome, so every rank reports the same line). No MPI here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields

from mpidecent.errors import JobError

LOCK_SUFFIX = ".lock"
STALE_ENV = "MPIDECENT_LOCK_STALE_S"
DEFAULT_STALE_S = 600.0  # seconds without a heartbeat after which another host's lock is stale
HEARTBEAT_S = 10.0  # how often the holder touches its locks
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def lock_path(results: str) -> str:
    """The lock file of the results file ``results`` (``runs/x.h5`` → ``runs/x.h5.lock``)."""
    return results + LOCK_SUFFIX


def stale_after_s() -> float:
    """Seconds without a heartbeat after which another host's lock is stale:
    ``MPIDECENT_LOCK_STALE_S``, else ``DEFAULT_STALE_S`` (``JobError`` for a value that is not a
    positive number)."""
    text = os.environ.get(STALE_ENV, "").strip()
    if not text:
        return DEFAULT_STALE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise JobError(
            f"{STALE_ENV}={text!r}: give the seconds without a heartbeat after which a results "
            "file's lock from another host is stale, a positive number (default "
            f"{DEFAULT_STALE_S:g})"
        )
    return value


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: the JSON content of the lock file."""

    host: str
    pid: int
    started: str  # UTC, ISO 8601 to the second: 2026-12-06T20:01:02Z
    token: str  # random, tells this lock apart from any other
    job: str = ""  # [run] name
    world_size: int = 0  # ranks of the launch
    slurm_job: str = ""  # SLURM_JOB_ID, "" outside Slurm
    slurm_restart: int = 0  # SLURM_RESTART_COUNT (0: the first start)
    proc_start: str = ""  # the process's start time in clock ticks since boot (/proc/<pid>/stat)
    boot_id: str = ""  # this boot of the host (/proc/sys/kernel/random/boot_id)
    pid_ns: str = ""  # the pid namespace (/proc/self/ns/pid), so containers sharing a name differ
    heartbeat_s: float = HEARTBEAT_S

    def describe(self) -> str:
        """``host h, pid 123, started 2026-12-06T20:01:02Z`` (and the Slurm job, if any)."""
        text = f"host {self.host}, pid {self.pid}, started {self.started}"
        return f"{text}, Slurm job {self.slurm_job}" if self.slurm_job else text

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Owner | None:
        """The owner a lock file's bytes name, or None when they are not a lock's JSON."""
        try:
            stored = json.loads(data.decode())
            known = {f.name for f in fields(cls)}
            owner = cls(**{k: v for k, v in stored.items() if k in known})
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            return None
        ok = isinstance(owner.host, str) and isinstance(owner.pid, int) and owner.host
        return owner if ok and isinstance(owner.slurm_restart, int) else None


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (field 22 of
    ``/proc/<pid>/stat``); "" where unknown (no such process, no /proc)."""
    text = _read_text(f"/proc/{pid}/stat")
    fields = text.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else ""


def pid_alive(pid: int) -> bool:
    """Does a process ``pid`` exist on this host (of any user)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


def _pid_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _restart_count() -> int:
    text = os.environ.get("SLURM_RESTART_COUNT", "").strip()
    return int(text) if text.isdigit() else 0


def this_owner(job: str = "", world_size: int = 0) -> Owner:
    """The ``Owner`` this process writes into a lock it takes."""
    pid = os.getpid()
    return Owner(
        host=socket.gethostname(),
        pid=pid,
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        token=uuid.uuid4().hex,
        job=job,
        world_size=world_size,
        slurm_job=os.environ.get("SLURM_JOB_ID", "").strip(),
        slurm_restart=_restart_count(),
        proc_start=process_start(pid),
        boot_id=_read_text(_BOOT_ID),
        pid_ns=_pid_ns(),
    )


def stale_reason(owner: Owner | None, me: Owner, age_s: float, stale_s: float) -> str | None:
    """Why the lock of ``owner`` (None: a lock file whose content cannot be read), untouched for
    ``age_s`` seconds, is stale for the run ``me``, in words; None while its run may still be
    writing. ``stale_s``: the heartbeat bound (``stale_after_s``). The rules are the module
    docstring's; this host's processes are looked at through ``pid_alive`` and ``process_start``."""
    if owner is None:
        if age_s > stale_s:
            return f"its content cannot be read and it was not touched for {age_s:.0f} s"
        return None
    if me.slurm_job and owner.slurm_job == me.slurm_job and me.slurm_restart > owner.slurm_restart:
        return (
            f"an earlier start of this Slurm job (SLURM_RESTART_COUNT {owner.slurm_restart}, "
            f"now {me.slurm_restart})"
        )
    same_ns = not (owner.pid_ns and me.pid_ns and owner.pid_ns != me.pid_ns)
    if owner.host == me.host and same_ns:
        if owner.boot_id and me.boot_id and owner.boot_id != me.boot_id:
            return "this host was restarted since"
        if not pid_alive(owner.pid):
            return f"process {owner.pid} no longer exists"
        if owner.proc_start and process_start(owner.pid) not in ("", owner.proc_start):
            return f"pid {owner.pid} now belongs to another process"
        return None
    bound = max(stale_s, 3 * owner.heartbeat_s)
    if age_s > bound:
        return f"no heartbeat for {age_s:.0f} s (stale after {bound:g} s, {STALE_ENV})"
    return None


# ---- the lock file -------------------------------------------------------------------------------


def _write_new(path: str, data: bytes, token: str) -> None:
    """Create ``path`` holding ``data`` atomically; ``FileExistsError`` when it exists."""
    tmp = f"{path}.{token}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            return
        except FileExistsError:
            # NFS may answer a retried link that did succeed with "exists": then tmp has two names
            if os.stat(tmp).st_nlink == 2 and _same_file(tmp, path):
                return
            raise
        except OSError as err:  # a file system without hard links: exclusive creation instead
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_lock(path: str, results: str) -> tuple[bytes, float] | None:
    """(content, seconds since the last heartbeat) of the lock file; None when there is none
    (``JobError`` when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
            age = time.time() - os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _unwritable(results, os.path.dirname(os.path.abspath(path)), err) from None
    return data, max(age, 0.0)


def _remove_if(path: str, expected: bytes, token: str) -> bool:
    """Remove the lock file ``path`` if it still holds ``expected``; a lock that was replaced
    meanwhile is put back and left alone. The file is renamed to a name of our own first, so no one
    else's lock can be removed between looking and removing. Returns whether ours was removed."""
    aside = f"{path}.{token}.gone"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        with open(aside, "rb") as f:
            ours = f.read() == expected
        if not ours:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
        return ours
    finally:
        with contextlib.suppress(OSError):
            os.remove(aside)


def held_message(results: str, owner: Owner | None) -> str:
    """The one line of a launch refused because another run holds the lock of ``results``."""
    path = lock_path(results)
    who = (
        f"another run ({owner.describe()})"
        if owner is not None
        else f"another run (its lock {path!r} cannot be read)"
    )
    return (
        f"results file {results!r} is being written by {who}; wait for it to end, or write "
        f"elsewhere with --out or [run] out (--force does not override a run in progress; if that "
        f"run is gone, remove {path!r})"
    )


@dataclass
class _Held:
    path: str
    data: bytes
    token: str


_held: dict[str, _Held] = {}  # results file → the lock this process holds
_guard = threading.Lock()
_beat: threading.Thread | None = None
_wake = threading.Event()  # set when the last lock is released


def acquire(results: str, job: str = "", world_size: int = 0) -> str | None:
    """Take the lock of the results file ``results`` for this process (rank 0); ``job`` and
    ``world_size`` are recorded in it. Returns a notice when a stale lock was taken over (None
    otherwise). Raises ``JobError`` when a live run holds it (``held_message``) or the lock cannot
    be written. Taking a lock this process holds does nothing."""
    key = os.path.abspath(results)
    if key in _held:
        return None
    path = lock_path(results)
    me = this_owner(job, world_size)
    data = me.to_json()
    folder = os.path.dirname(os.path.abspath(path))
    notice = None
    for _ in range(5):  # each pass either takes the lock or finds a different lock in the way
        try:
            os.makedirs(folder, exist_ok=True)
            _write_new(path, data, me.token)
        except FileExistsError:
            found = _read_lock(path, results)
        except OSError as err:
            raise _unwritable(results, folder, err) from None
        else:
            with _guard:
                _held[key] = _Held(path, data, me.token)
            _start_heartbeat()
            return notice
        if found is None:
            continue  # released meanwhile
        content, age = found
        owner = Owner.from_json(content)
        reason = stale_reason(owner, me, age, stale_after_s())
        if reason is None:
            raise JobError(held_message(results, owner))
        if _remove_if(path, content, me.token):
            who = owner.describe() if owner is not None else "an unreadable lock"
            notice = (
                f"{results}: took over the lock {path} of a run that is no longer writing it "
                f"({who}: {reason})"
            )
    found = _read_lock(path, results)
    raise JobError(held_message(results, Owner.from_json(found[0]) if found else None))


def _unwritable(results: str, folder: str, err: OSError) -> JobError:
    return JobError(
        f"results file {results!r}: cannot write in {folder!r} ({err.strerror or err}; its lock "
        f"{os.path.basename(lock_path(results))!r} goes there); choose another --out or [run] out"
    )


def release(results: str) -> bool:
    """Remove the lock this process took for ``results``, if the file still holds our content.
    Returns whether a lock was removed; one that is not ours (taken over meanwhile) is left as it
    is."""
    with _guard:
        held = _held.pop(os.path.abspath(results), None)
        if not _held:
            _wake.set()  # the heartbeat thread ends now rather than at its next beat
    if held is None:
        return False
    try:
        return _remove_if(held.path, held.data, held.token)
    except OSError:
        return False


def release_all() -> None:
    """Release every lock this process holds (every way out of a launch)."""
    for results in list(_held):
        release(results)


def held() -> list[str]:
    """The results files (absolute paths) whose locks this process holds."""
    return list(_held)


def _start_heartbeat() -> None:
    """Start the thread that touches this process's locks every ``HEARTBEAT_S`` seconds, if it is
    not running; it ends once no lock is held (and with the process: a daemon)."""
    global _beat
    with _guard:
        if _beat is not None:
            return
        _beat = threading.Thread(target=_heartbeat, name="mpidecent-lock-heartbeat", daemon=True)
        _beat.start()


def _heartbeat() -> None:
    global _beat
    while True:
        _wake.wait(HEARTBEAT_S)
        with _guard:
            _wake.clear()
            paths = [h.path for h in _held.values()]
            if not paths:
                _beat = None  # under the guard: a lock taken from now on starts a new thread
                return
        for path in paths:
            with contextlib.suppress(OSError):
                os.utime(path)
