"""Master/worker messaging for gradient coding: rank 0 is the master, ranks 1..n the workers.

Every message carries its step in the tag, on a duplicate of the given communicator, and is raw
bytes (uppercase buffer methods). Per step t:

- master ``broadcast(buf, t)``: Isend of the model to every worker (the buffer is copied into a
  per-step slot, so it may be reused at once);
- master ``post(t, workers)``: one Irecv per expected worker into a fresh row of a per-step slot,
  then ``wait_until(t, ready)``: ``Waitany`` until ``ready(finished)`` holds (the finished set
  decodes). The receives still open (late workers) stay posted with their slot and are completed —
  drained — by later calls; their bytes are never used;
- worker ``receive(buf, t)``: blocking Recv of step t's model; ``send(buf, t)``: Isend of its update
  (the previous send is completed first, so one buffer serves every step).

``close()`` completes every outstanding request on both sides (the master waits for all late
messages: every posted receive has a matching send), so nothing is left pending at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from mpi4py import MPI


class MasterWorker:
    """Which ranks call: all ranks of ``comm`` construct it (collective Dup); then the master (rank
    0) uses broadcast/post/wait_until and the workers receive/send; all call close()."""

    def __init__(self, comm: MPI.Intracomm, down_nbytes: int, up_nbytes: int) -> None:
        self.comm = comm.Dup()
        self.rank = self.comm.rank
        self.workers = self.comm.size - 1
        self.down_nbytes, self.up_nbytes = int(down_nbytes), int(up_nbytes)
        tag_ub = self.comm.Get_attr(MPI.TAG_UB)
        assert tag_ub is not None  # every intracommunicator carries MPI_TAG_UB
        self.tag_limit = int(tag_ub) + 1
        # master: open receives and sends per step; workers: the last send
        self._receives: dict[int, tuple[list[MPI.Request], np.ndarray]] = {}
        self._sends: dict[int, tuple[list[MPI.Request], np.ndarray]] = {}
        self._last_send: MPI.Request | None = None
        self.drained = 0  # late messages received and discarded (master)

    def _tag(self, step: int) -> int:
        return step % self.tag_limit

    # ---- master ----------------------------------------------------------------------------------

    def broadcast(self, buf: np.ndarray, step: int) -> None:
        self._complete_done(self._sends)
        copy = buf.copy()
        requests = [
            self.comm.Isend([copy, MPI.BYTE], dest=w, tag=self._tag(step))
            for w in range(1, self.workers + 1)
        ]
        self._sends[step] = (requests, copy)

    def post(self, step: int, workers: np.ndarray) -> None:
        """Pre-post receives of step ``step`` from the 0-based ``workers`` (those expected to
        send)."""
        self._drain()
        rows = np.zeros((self.workers, self.up_nbytes), dtype=np.uint8)
        requests = [MPI.REQUEST_NULL] * self.workers
        for w in workers:
            requests[int(w)] = self.comm.Irecv(
                [rows[int(w)], MPI.BYTE], source=int(w) + 1, tag=self._tag(step)
            )
        self._receives[step] = (requests, rows)

    def wait_until(
        self, step: int, ready: Callable[[np.ndarray], bool]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Complete step ``step``'s receives one at a time until ``ready(finished)``; returns
        (finished (workers,) bool, rows (workers, up_nbytes)). Rows of unfinished workers are
        garbage. Raises RuntimeError if every expected message arrived and the set still is not
        ready."""
        requests, rows = self._receives[step]
        finished = np.zeros(self.workers, dtype=bool)
        while not ready(finished):
            index = MPI.Request.Waitany(requests)
            if index == MPI.UNDEFINED:
                raise RuntimeError(
                    f"step {step}: every expected worker answered but the set is not decodable"
                )
            finished[index] = True
        if all(r == MPI.REQUEST_NULL for r in requests):
            del self._receives[step]
        return finished, rows

    def _drain(self) -> None:
        """Discard late messages of earlier steps that have arrived (non-blocking)."""
        for step in list(self._receives):
            requests, _ = self._receives[step]
            pending = [r for r in requests if r != MPI.REQUEST_NULL]
            if pending and MPI.Request.Testall(pending):
                self.drained += len(pending)
                del self._receives[step]
            elif not pending:
                del self._receives[step]

    def complete_broadcasts(self) -> None:
        """Master: wait until every broadcast so far has reached its workers (their buffers are
        free)."""
        for requests, _ in self._sends.values():
            MPI.Request.Waitall(requests)
        self._sends.clear()

    @staticmethod
    def _complete_done(store: dict[int, tuple[list[MPI.Request], np.ndarray]]) -> None:
        for step in list(store):
            if MPI.Request.Testall(store[step][0]):
                del store[step]

    # ---- worker ----------------------------------------------------------------------------------

    def receive(self, buf: np.ndarray, step: int) -> None:
        self.comm.Recv([buf, MPI.BYTE], source=0, tag=self._tag(step))

    def complete_send(self) -> None:
        """Wait until the previous update has left ``buf``: call before writing the next one into
        it."""
        if self._last_send is not None:
            self._last_send.Wait()
            self._last_send = None

    def send(self, buf: np.ndarray, step: int) -> None:
        self.complete_send()
        self._last_send = self.comm.Isend([buf, MPI.BYTE], dest=0, tag=self._tag(step))

    # ---- both ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Complete everything outstanding (collective: every rank calls it), then free the
        communicator."""
        for store in (self._receives, self._sends):
            for step, (requests, _) in list(store.items()):
                pending = [r for r in requests if r != MPI.REQUEST_NULL]
                if store is self._receives:
                    self.drained += len(pending)
                MPI.Request.Waitall(requests)
                del store[step]
        self.complete_send()
        self.comm.Barrier()
        self.comm.Free()
