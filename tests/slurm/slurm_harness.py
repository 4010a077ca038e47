"""A real single-node Slurm for the tests, started and stopped by the test session itself.

``SlurmCluster.start()``:

1. installs Debian's ``slurm-wlm`` and ``munge`` with apt when they are missing (root only; without root,
   apt or a package mirror the tests are skipped, with the reason);
2. makes munge work: creates ``/etc/munge/munge.key`` when missing, ``/run/munge`` owned by the munge
   user, and starts ``munged`` as that user unless a working one already answers (it is stopped again
   only if this session started it);
3. writes ``slurm.conf`` into a fresh temporary directory (state, spool, logs and pid files live there
   too): one node named after this host (``NodeAddr=127.0.0.1``) declared with 16 CPUs, more than the
   machine has, which ``SlurmdParameters=config_overrides`` accepts, so 8 ranks fit on 2 cores; no
   cgroups (``proctrack/linuxproc``, ``task/none``, ``jobacct_gather/none``: containers have none);
   requeue allowed; free TCP ports picked at start-up;
4. starts ``slurmctld -D`` and ``slurmd -D`` in the background and waits until ``sinfo`` shows the node
   idle.

``stop()`` cancels jobs, kills the daemons and every process still carrying this cluster's
``SLURM_CONF`` (job shells, ``mpirun``, ranks, ``slurmstepd``), removes the directory and stops munged if
it was started here. A session holds ``/tmp/mpidecent-slurm.lock`` while its cluster exists, so two
test runs on one machine take turns; leftovers of a session that died without stopping (daemons and
directories with the ``mpidecent-slurm-`` prefix) are cleaned up by the next one.

Clients (``sbatch``, ``scontrol``, ...) must run with ``cluster.env`` (it sets ``SLURM_CONF``).
"""

from __future__ import annotations

import fcntl
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PREFIX = "mpidecent-slurm-"
LOCK_PATH = os.path.join(tempfile.gettempdir(), "mpidecent-slurm.lock")
# The pid of a munged these tests started (so a later session stops one left by a session that died).
MUNGED_MARK = os.path.join(tempfile.gettempdir(), "mpidecent-slurm.munged")
PACKAGES = ["slurm-wlm", "munge"]
PROGRAMS = ["slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel", "sinfo", "squeue", "munged", "munge",
            "unmunge"]
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
NODE_CPUS = 16


class SlurmUnavailable(Exception):
    """Slurm cannot be installed or started here for a reason outside the project (the tests skip)."""


def _run(cmd, timeout=60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not readable)"


# ---- installation --------------------------------------------------------------------------------

def missing_programs() -> list[str]:
    # /usr/sbin is not on every root PATH (e.g. some container images).
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [p for p in PROGRAMS if shutil.which(p, path=path) is None]


def ensure_installed() -> None:
    """apt-get install slurm-wlm munge when a program is missing; SlurmUnavailable when that cannot be done."""
    missing = missing_programs()
    if not missing:
        return
    what = f"Slurm/munge programs missing ({', '.join(missing)})"
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{what} and installing them needs root (apt-get install {' '.join(PACKAGES)})")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"{what} and there is no apt-get to install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    try:
        result = _run(install, timeout=900, env=env)
        if result.returncode != 0:  # a stale package index: refresh it once
            _run(["apt-get", "update", "-q"], timeout=600, env=env)
            result = _run(install, timeout=900, env=env)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{what}; apt-get did not finish in time (no package mirror reachable?)") from None
    if result.returncode != 0 or missing_programs():
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise SlurmUnavailable(f"{what}; apt-get install {' '.join(PACKAGES)} failed: {' | '.join(detail)}")


# ---- munge ---------------------------------------------------------------------------------------

def _munge_works() -> bool:
    try:
        cred = _run(["munge", "-n"], timeout=10)
        return cred.returncode == 0 and _run(["unmunge"], input=cred.stdout, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _marked_munged() -> int | None:
    try:
        pid = int(Path(MUNGED_MARK).read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if b"munged" in f.read() else None
    except (OSError, ValueError, IndexError):
        return None


def ensure_munge() -> int | None:
    """A working munged on the default socket; returns the pid of one started by these tests (None: the
    system's, left alone)."""
    if _munge_works():
        return _marked_munged()
    try:
        user = pwd.getpwnam("munge")
    except KeyError:
        raise SlurmUnavailable("the munge package created no 'munge' user") from None
    if os.geteuid() != 0:
        raise SlurmUnavailable("munged is not running and starting it needs root")
    for folder, mode in ((MUNGE_KEY.parent, 0o700), (Path("/var/lib/munge"), 0o700), (Path("/var/log/munge"), 0o700),
                         (MUNGE_RUN, 0o755)):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, user.pw_uid, user.pw_gid)
        os.chmod(folder, mode)
    if not MUNGE_KEY.exists():
        created = _run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)]) if shutil.which("mungekey") else None
        if created is None or created.returncode != 0:
            MUNGE_KEY.write_bytes(os.urandom(1024))
    os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
    os.chmod(MUNGE_KEY, 0o400)
    pidfile = MUNGE_RUN / "munged.pid"
    # --force: take over a socket left by a munged that died.
    result = _run(["runuser", "-u", "munge", "--", shutil.which("munged", path="/usr/sbin:/sbin:" + os.environ["PATH"]),
                   "--force", f"--pid-file={pidfile}"], timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and not _munge_works():
        time.sleep(0.2)
    if not _munge_works():
        raise RuntimeError(f"munged did not start (exit {result.returncode}): {result.stderr.strip()}\n"
                           f"{_tail(Path('/var/log/munge/munged.log'))}")
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    Path(MUNGED_MARK).write_text(f"{pid}\n")
    return pid


# ---- processes -----------------------------------------------------------------------------------

def _processes_with_conf(prefix: str) -> list[int]:
    """Pids whose command line or environment names a slurm.conf below ``prefix`` (ours, by construction:
    daemons get -f, everything they start inherits SLURM_CONF)."""
    needle = prefix.encode()
    found = []
    for proc in glob.glob("/proc/[0-9]*"):
        pid = int(proc.rsplit("/", 1)[1])
        if pid == os.getpid():
            continue
        try:
            with open(f"{proc}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"{proc}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in cmdline or b"SLURM_CONF=" + needle in environ:
            found.append(pid)
    return found


def _kill(pids: list[int], wait: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``wait`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + wait
        while time.time() < deadline and any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in pids):
            time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the cluster ---------------------------------------------------------------------------------

class SlurmCluster:
    def __init__(self) -> None:
        self.dir: Path | None = None
        self.conf: Path | None = None
        self.node = socket.gethostname().split(".")[0]
        self.env: dict[str, str] = {}
        self._daemons: dict[str, subprocess.Popen] = {}
        self._munged: int | None = None
        self._lock = None

    # -- start ------------------------------------------------------------------------------------
    def start(self) -> SlurmCluster:
        ensure_installed()
        self._take_lock()
        try:
            self._clean_stale()
            self._munged = ensure_munge()
            self.dir = Path(tempfile.mkdtemp(prefix=PREFIX))
            os.chmod(self.dir, 0o755)
            for sub in ("state", "spool", "log"):
                (self.dir / sub).mkdir()
            self.conf = self.dir / "slurm.conf"
            self.conf.write_text(self._conf_text())
            sbin = "/usr/sbin:/sbin"
            self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{os.environ.get('PATH', '')}:{sbin}"}
            for name in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_NTASKS", "SLURM_RESTART_COUNT"):
                self.env.pop(name, None)  # a test session inside a real allocation must not leak into ours
            self._start_daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._start_daemon("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)])
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def _take_lock(self) -> None:
        self._lock = open(LOCK_PATH, "w")
        deadline = time.time() + 600
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.time() > deadline:
                    raise RuntimeError(f"another test session has held {LOCK_PATH} for 10 minutes") from None
                time.sleep(1)

    def _clean_stale(self) -> None:
        """Leftovers of an earlier session that died without stop() (we hold the lock: none is live)."""
        base = tempfile.gettempdir()
        stale = _processes_with_conf(os.path.join(base, PREFIX))
        if stale:
            _kill(stale)
        for folder in glob.glob(os.path.join(base, PREFIX + "*")):
            shutil.rmtree(folder, ignore_errors=True)

    def _conf_text(self) -> str:
        d = self.dir
        return f"""\
# Written by tests/slurm/slurm_harness.py: a one-node test cluster, no cgroups, no accounting.
ClusterName=mpidecent-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Credential lifetime; it is also how long a requeued job waits before it may start again (Slurm sets
# its BeginTime to now + cred_expire + 1; default 120 s).
AuthInfo=cred_expire=20
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Pending jobs (also a requeued one) are looked at every second or two, not every minute.
SchedulerParameters=bf_interval=1,sched_interval=2
# Node declared with more CPUs than this machine has: config_overrides makes slurmd use these values
# instead of the detected hardware, so 8 ranks (8 tasks) fit on a 2-core machine.
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
# A second partition: a job lands there only when asked (sbatch -p other, or SBATCH_PARTITION=other).
PartitionName=other Nodes={self.node} Default=NO MaxTime=INFINITE State=UP
ReturnToService=2
JobRequeue=1
# sbatch --wait polls a job every 2 s, then 8 s, then 32 s, growing while the interval is below
# MinJobAge / 2 (so that a finished job is still there when it looks): with 120 a 10-s job was seen
# finished only after 42 s. 16 keeps the polls at 8 s and a finished job's record for at least 16 s,
# longer than a poll, so sbatch --wait and the tests' scontrol queries after it still find it.
MinJobAge=16
KillWait=5
InactiveLimit=0
SlurmdTimeout=300
MessageTimeout=20
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
"""

    def _start_daemon(self, name: str, cmd: list[str]) -> None:
        log = open(self.dir / "log" / f"{name}.stdout", "w")
        self._daemons[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _wait_idle(self, limit: float = 60) -> None:
        deadline, state = time.time() + limit, ""
        while time.time() < deadline:
            for name, proc in self._daemons.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{self.logs()}")
            result = self.run(["sinfo", "-h", "-N", "-o", "%t"], timeout=15, check=False)
            state = result.stdout.strip()  # one line per partition the node is in
            if result.returncode == 0 and state and set(state.split()) <= {"idle", "mix"}:
                return
            time.sleep(0.5)
        detail = self.run(["scontrol", "show", "node"], timeout=15, check=False).stdout
        raise RuntimeError(f"the Slurm node is not idle after {limit:.0f} s (state {state!r}):\n{detail}\n{self.logs()}")

    # -- use ---------------------------------------------------------------------------------------
    def run(self, cmd: list[str], timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        result = _run(cmd, timeout=timeout, env=kw.pop("env", self.env), **kw)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {result.returncode}: {result.stderr.strip()}")
        return result

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict ({} once the job has left slurmctld's memory)."""
        result = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        if result.returncode != 0:
            return {}
        return dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)

    def logs(self, lines: int = 40) -> str:
        if self.dir is None:
            return ""
        return "\n".join(f"--- {p.name} (last {lines} lines) ---\n{_tail(p, lines)}"
                         for p in sorted((self.dir / "log").glob("*")))

    # -- stop --------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.conf is not None and all(p.poll() is None for p in self._daemons.values()) and self._daemons:
            self.run(["scancel", "--full", "--user", pwd.getpwuid(os.geteuid()).pw_name], timeout=15, check=False)
        for name in ("slurmd", "slurmctld"):
            proc = self._daemons.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        self._daemons.clear()
        if self.dir is not None:
            leftovers = _processes_with_conf(str(self.dir))
            if leftovers:
                _kill(leftovers)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self._munged is not None:
            _kill([self._munged])
            self._munged = None
            Path(MUNGED_MARK).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
