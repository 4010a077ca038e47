"""The master/worker pattern's message streams on one rank: the model down, one compressed update
up.

Over a ``MasterWorkerLink`` (MPI: ``comm/master.py``). Per step t::

    master  broadcast(θ, t)               θ at full precision to every worker
            gather(t, expected, ready)    pre-posted receives; returns once ``ready(finished)``
            updates(finished, t)          each finished worker's update, decoded from its bytes
    worker  receive(θ, t)                 the master's θ of step t
            encode(v, t)                  the update, compressed (with error feedback when asked)
            send(t)                       to the master

Worker i's message of step t is keyed by (seed, i, t) so the master rebuilds the sender's key. With
error feedback the worker sends C(v + e) and keeps e ← (v + e) − decode(message)
(``compression/memory.py``); ``state()`` then holds e for the checkpoint (an empty array on the
master, so every rank has the same names). Pure: numpy and the compression package; the MPI calls
are the link's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from mpidecent.comm.messages import Encoder, Stopwatch
from mpidecent.comm.protocols import MasterWorkerLink
from mpidecent.compression import Compressor, Packed
from mpidecent.rng import RandomKey


class Uplink:
    """One rank's side of the master/worker streams (see the module docstring)."""

    def __init__(
        self,
        link: MasterWorkerLink,
        compressor: Compressor,
        seed: int,
        rank: int,
        watch: Stopwatch,
        error_feedback: bool = False,
    ) -> None:
        self.link, self.compressor, self.seed, self.rank, self.watch = (
            link,
            compressor,
            seed,
            rank,
            watch,
        )
        self.dtype = compressor.dtype
        self.workers = link.workers
        self.encoder = Encoder(compressor, error_feedback and rank != 0)
        self.error_feedback = error_feedback
        self.down = np.zeros(
            compressor.dim * self.dtype.itemsize, dtype=np.uint8
        )  # θ at full precision
        self.up = np.zeros(compressor.nbytes, dtype=np.uint8)
        self._decoded = np.zeros(compressor.dim, dtype=self.dtype) if rank == 0 else None
        self._rows: np.ndarray | None = None

    @property
    def nonfinite(self) -> bool:
        return self.encoder.nonfinite

    def state(self) -> dict[str, np.ndarray]:
        """Error feedback's residual e (worker: (dim,); master: empty), or nothing without it."""
        if not self.error_feedback:
            return {}
        memory = self.encoder.memory
        return {"error_feedback": memory if memory is not None else np.zeros(0, dtype=self.dtype)}

    # ---- master ----------------------------------------------------------------------------------

    def broadcast(self, theta: np.ndarray, step: int) -> int:
        """Send θ to every worker; returns the downlink bits (full precision, per worker)."""
        self.down.view(self.dtype)[:] = theta
        self.link.broadcast(self.down, step)
        return 8 * self.down.nbytes * self.workers

    def gather(
        self, step: int, expected: np.ndarray, ready: Callable[[np.ndarray], bool]
    ) -> np.ndarray:
        """Receive step ``step``'s updates from the 0-based ``expected`` workers until
        ``ready(finished)``; returns finished (workers,) bool. Late messages are drained by later
        calls."""
        self.link.post(step, expected)
        self.watch.comm()
        finished, self._rows = self.link.wait_until(step, ready)
        self.watch.comm()
        return finished

    def updates(self, finished: np.ndarray, step: int) -> Iterator[tuple[int, np.ndarray]]:
        """(worker, decoded update) for each finished worker, in worker order: a loop over ≤ n
        messages, each decode vectorised; the array is reused, consume it before the next item."""
        rows = self._rows
        assert rows is not None  # wait_until() received them
        for w in np.flatnonzero(finished):
            yield (
                int(w),
                self.compressor.decode(
                    rows[w], RandomKey(self.seed, int(w) + 1, step), out=self._decoded
                ),
            )

    # ---- worker ----------------------------------------------------------------------------------

    def receive(self, theta: np.ndarray, step: int) -> None:
        """θ ← the master's model of step ``step``."""
        self.link.receive(self.down, step)
        theta[:] = self.down.view(self.dtype)

    def encode(self, update: np.ndarray, step: int) -> Packed:
        """Compress this worker's update into the send buffer (after the previous send
        completed)."""
        self.link.complete_send()
        return self.encoder.encode(update, RandomKey(self.seed, self.rank, step), self.up)

    def send(self, step: int) -> None:
        self.link.send(self.up, step)
