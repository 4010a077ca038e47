"""One-sided windows for asynchronous gossip: one ``Win.Allocate`` window per rank, passive target.

Layout of rank i's window (bytes, ``disp_unit`` 1; int64 fields, the model in the run's dtype)::

    [0, 32)              header: rounds completed N_i^i, publications, SGD steps done (int64),
                         logical time (float64)
    [32, 32 + 8n)        version vector V_i (int64, n entries)
    [32 + 8n, + d·size)  published model x_i

Which ranks call what: the constructor and ``free`` are collective over ``comm`` (passed explicitly
to ``Win.Allocate``); ``publish`` writes this rank's own window under an exclusive lock on itself
(local stores + ``Win.Sync``, valid in the separate and the unified memory model); ``read`` copies a
peer's whole window under a shared lock (``Lock(peer, LOCK_SHARED)``, ``Get``, ``Unlock``);
``read_rounds`` reads every rank's round counter (a shared lock per rank). No call holds two locks,
and every lock is released before the call returns, so no rank can wait on another forever: a lock
waits at most for the owner's own short exclusive publication. With an osc component that needs the
target to progress (``pt2pt``, some ``ucx`` transports), a read waits until the target next enters
MPI — ``measure_passive_progress`` detects that (``mpidecent info``).

Counters (this rank as origin): ``get_bytes`` / ``gets`` moved by Get, ``put_bytes`` written into
the own window by publications, ``lock_wait_s`` seconds spent in Lock/Unlock (Unlock completes the
Get).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

HEADER_BYTES = 32


class GossipWindow:
    """This rank's window and views of a peer's copy (module docstring). ``dim`` model entries of
    ``dtype``; ``n`` = comm size."""

    def __init__(self, comm: MPI.Intracomm, dim: int, dtype: np.dtype) -> None:
        self.comm = comm
        self.rank, self.n = comm.rank, comm.size
        self.dtype = np.dtype(dtype)
        self.versions_offset = HEADER_BYTES
        self.model_offset = HEADER_BYTES + 8 * self.n
        self.nbytes = self.model_offset + dim * self.dtype.itemsize
        self.win = MPI.Win.Allocate(self.nbytes, 1, comm=comm)
        # mpi4py's stub gives its buffer type __buffer__ only for Python >= 3.12:
        local = np.frombuffer(self.win.tomemory(), dtype=np.uint8)  # type: ignore[call-overload]
        self._local = local
        self._own = self._views(local)
        self.recv = np.zeros(self.nbytes, dtype=np.uint8)
        self.peer = self._views(self.recv)
        self._rounds = np.zeros((self.n, 8), dtype=np.uint8)
        self.get_bytes = self.put_bytes = self.gets = self.publications = 0
        self.lock_wait_s = 0.0
        self._freed = False

    def _views(self, buf: np.ndarray):
        header = buf[:HEADER_BYTES].view(np.int64)
        return (
            header,
            buf[self.versions_offset : self.model_offset].view(np.int64),
            buf[self.model_offset :].view(self.dtype),
        )

    @property
    def peer_header(self) -> np.ndarray:
        """(4,) int64 of the last ``read``: rounds, publications, steps, logical time (float64
        bits)."""
        return self.peer[0]

    @property
    def peer_versions(self) -> np.ndarray:
        return self.peer[1]

    @property
    def peer_model(self) -> np.ndarray:
        return self.peer[2]

    def publish(
        self, model: np.ndarray, versions: np.ndarray, rounds: int, steps: int, logical_time: float
    ) -> None:
        """Make (model, V, counters) this rank's published state: exclusive lock on the own
        window."""
        header, own_versions, own_model = self._own
        t0 = time.perf_counter()
        self.win.Lock(self.rank, MPI.LOCK_EXCLUSIVE)
        t1 = time.perf_counter()
        self.publications += 1
        header[0], header[1], header[2] = rounds, self.publications, steps
        header[3:4].view(np.float64)[0] = logical_time
        own_versions[:] = versions
        own_model[:] = model
        self.win.Sync()
        t2 = time.perf_counter()
        self.win.Unlock(self.rank)
        self.lock_wait_s += (t1 - t0) + (time.perf_counter() - t2)
        self.put_bytes += self.nbytes

    def read(self, peer: int) -> None:
        """Copy ``peer``'s published state into ``recv`` (views ``peer_header/versions/model``)."""
        t0 = time.perf_counter()
        self.win.Lock(peer, MPI.LOCK_SHARED)
        t1 = time.perf_counter()
        self.win.Get(self.recv, peer)
        t2 = time.perf_counter()
        self.win.Unlock(peer)
        self.lock_wait_s += (t1 - t0) + (time.perf_counter() - t2)
        self.get_bytes += self.nbytes
        self.gets += 1

    def read_rounds(self, out: np.ndarray) -> np.ndarray:
        """Every rank's published round counter N_j^j into ``out`` (n,) int64 (own entry: from the
        own window too): n Gets of 8 bytes, each under its own shared lock (so a peer busy
        publishing delays only its own read; measured faster than one ``Lock_all`` epoch on an
        oversubscribed node); not counted as gossip traffic."""
        t0 = time.perf_counter()
        for j in range(self.n):
            self.win.Lock(j, MPI.LOCK_SHARED)
            self.win.Get([self._rounds[j], MPI.BYTE], j, target=(0, 8, MPI.BYTE))
            self.win.Unlock(j)
        self.lock_wait_s += time.perf_counter() - t0
        out[:] = self._rounds.view(np.int64)[:, 0]
        return out

    def free(self) -> None:
        """Collective: free the window (returns when every rank has called it, so no rank can still
        be reading it)."""
        if not self._freed:
            self._own = self.peer = None  # views into the window memory must not outlive it
            self._local = None
            self.win.Free()
            self._freed = True


@dataclass(frozen=True)
class ProgressProbe:
    """Latency of one Lock/Get/Unlock from rank 0 to a target that waits inside MPI (``idle_s``) and
    to one that sleeps without MPI calls for ``busy_s`` (``busy_get_s``)."""

    idle_s: float
    busy_get_s: float
    busy_s: float

    @property
    def progresses(self) -> bool:
        """Passive target progress: the read did not wait for the sleeping target."""
        return self.busy_get_s < 0.25 * self.busy_s

    def describe(self) -> str:
        verdict = (
            "yes"
            if self.progresses
            else "NO - a Get waited for the target to enter MPI: asynchronous gossip runs "
            "synchronously"
        )
        return (
            f"{verdict} (Lock/Get/Unlock {self.busy_get_s * 1e6:.0f} µs while the target sleeps "
            f"{self.busy_s * 1e3:.0f} ms outside MPI, {self.idle_s * 1e6:.0f} µs while it waits in "
            "MPI)"
        )


def measure_passive_progress(
    comm: MPI.Intracomm, busy_s: float = 0.2, nbytes: int = 4096, repeats: int = 5
) -> ProgressProbe | None:
    """Collective: does passive-target RMA progress without the target entering MPI? Rank 0 reads
    ``nbytes`` from the last rank (a) ``repeats`` times while that rank waits in a barrier, then (b)
    once while it sleeps ``busy_s`` seconds without any MPI call. None on fewer than two ranks; the
    same result on every rank."""
    if comm.size < 2:
        return None
    target = comm.size - 1
    win = MPI.Win.Allocate(nbytes, 1, comm=comm)
    buf = np.zeros(nbytes, dtype=np.uint8)
    result = np.zeros(2)
    try:
        comm.Barrier()
        if comm.rank == 0:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                win.Lock(target, MPI.LOCK_SHARED)
                win.Get(buf, target)
                win.Unlock(target)
                times.append(time.perf_counter() - t0)
            result[0] = float(np.median(times))
        comm.Barrier()
        if comm.rank == target:
            time.sleep(busy_s)  # "compute" without entering MPI
        elif comm.rank == 0:
            time.sleep(busy_s / 10)  # let the target be well inside its sleep
            t0 = time.perf_counter()
            win.Lock(target, MPI.LOCK_SHARED)
            win.Get(buf, target)
            win.Unlock(target)
            result[1] = time.perf_counter() - t0
        comm.Bcast(result, root=0)
    finally:
        win.Free()
    return ProgressProbe(float(result[0]), float(result[1]), busy_s)
