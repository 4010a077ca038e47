"""The neighbour pattern in one process: n simulated nodes exchanging bytes through memory.

``MemoryNetwork(schedule)`` gives every simulated rank a ``Transport`` (``transport(rank)``) with
the same neighbour lists, the same message order and the same tags as the MPI transport
(``comm/graph.py``): row k of a completed exchange is the message of the step's k-th in-neighbour.
Each node runs in its own thread (``run``), so an algorithm's ``step`` — encode, exchange, decode,
mix — is the very code of an MPI run, and the results are bit-identical to it: the same bytes arrive
in the same order and every node's arithmetic is its own.

Like MPI point-to-point messages, an exchange is asynchronous: ``start`` posts (a copy of) the
message into each out-neighbour's inbox under (tag, sender) and returns; ``wait`` blocks until every
in-neighbour's message with that tag is there and takes it out. So a node may keep several exchanges
in flight, across its steps, and nodes need not move in lock step — only as far as their messages
allow. An exception in one node fails the others' waits instead of leaving them blocked, and so does
a deadlock (every running node waiting for a message that no node can still send: the exchanges do
not match); ``run`` re-raises the first real error. Pure: numpy and threading, never mpi4py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from mpidecent.topology.schedule import Schedule

T = TypeVar("T")

TAG_LIMIT = 2**31  # the tags the twin accepts (Open MPI's MPI_TAG_UB + 1)


class PeerFailed(RuntimeError):
    """Raised in a simulated node whose wait can never complete: another node failed, or every
    running node is waiting for a message that nobody will send."""


class MemoryNetwork:
    """n simulated ranks on ``schedule``'s graphs (static, or time-varying with step t in slot t mod
    period)."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.n = schedule.n
        self.barrier = threading.Barrier(self.n)  # for ``agree`` (set-up) only
        self._cond = threading.Condition()
        self._inbox: list[dict[tuple[int, int], np.ndarray]] = [
            {} for _ in range(self.n)
        ]  # (tag, sender) → bytes
        self._agreed: list[object] = [None] * self.n
        self._running = 0  # nodes of the current ``run`` still working
        self._waiters: dict[
            int, tuple[np.ndarray, int]
        ] = {}  # rank blocked in ``_take`` → (senders, tag)
        self._failure: str | None = None

    def transport(self, rank: int) -> MemoryTransport:
        return MemoryTransport(self, rank)

    def run(self, work: Sequence[Callable[[], T]]) -> list[T]:
        """Call ``work[rank]()`` for every rank, each in its own thread; returns their results in
        rank order, or re-raises the first exception (the other ranks' waits fail with
        ``PeerFailed``)."""
        if len(work) != self.n:
            raise ValueError(f"run needs one callable per rank ({self.n}), got {len(work)}")
        results: list = [None] * self.n
        errors: list[BaseException | None] = [None] * self.n
        self._running, self._failure = self.n, None
        self._waiters.clear()

        def node(rank: int) -> None:
            try:
                results[rank] = work[rank]()
            except BaseException as err:  # noqa: BLE001 - re-raised below, in the caller's thread
                errors[rank] = err
                self._fail(f"rank {rank} failed: {err}")
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()  # the waiting nodes re-check for a deadlock

        threads = [
            threading.Thread(target=node, args=(r,), name=f"rank {r}") for r in range(self.n)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        secondary = (PeerFailed, threading.BrokenBarrierError)
        first = next(
            (e for e in errors if e is not None and not isinstance(e, secondary)),
            next((e for e in errors if e is not None), None),
        )
        if first is not None:
            self.barrier.reset()
            for inbox in self._inbox:
                inbox.clear()
            raise first
        return results

    def undelivered(self) -> list[tuple[int, int, int]]:
        """(receiver, tag, sender) of every message posted but not yet taken: exchanges still in
        flight."""
        with self._cond:
            return sorted(
                (r, tag, sender) for r, inbox in enumerate(self._inbox) for tag, sender in inbox
            )

    def _fail(self, reason: str) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = reason
            self._cond.notify_all()
        self.barrier.abort()

    def _post(self, sender: int, receivers: np.ndarray, tag: int, message: np.ndarray) -> None:
        with self._cond:
            for receiver in receivers:
                inbox = self._inbox[int(receiver)]
                if (tag, sender) in inbox:
                    raise RuntimeError(
                        f"rank {sender} sent a second message with tag {tag} to rank {receiver} "
                        "before the first was received"
                    )
                inbox[(tag, sender)] = message
            self._cond.notify_all()

    def _ready(self, receiver: int, senders: np.ndarray, tag: int) -> bool:
        inbox = self._inbox[receiver]
        return all((tag, int(s)) in inbox for s in senders)

    def _take(self, receiver: int, senders: np.ndarray, tag: int, out: np.ndarray) -> None:
        """Block until every sender's message with ``tag`` is in ``receiver``'s inbox; move them
        into the rows of ``out`` in the senders' order."""
        with self._cond:
            self._waiters[receiver] = (senders, tag)
            try:
                while not self._ready(receiver, senders, tag):
                    if self._failure is None and self._deadlocked():
                        self._failure = (
                            f"deadlock: rank {receiver} waits for tag {tag} from ranks "
                            f"{[int(s) for s in senders]} while every other running rank waits for "
                            "a message nobody will send (the ranks' exchanges do not match)"
                        )
                        self._cond.notify_all()
                    if self._failure is not None:
                        raise PeerFailed(self._failure)
                    self._cond.wait()
            finally:
                del self._waiters[receiver]
            inbox = self._inbox[receiver]
            for k, sender in enumerate(senders):
                out[k] = inbox.pop((tag, int(sender)))

    def _deadlocked(self) -> bool:
        """Every running node is blocked in ``_take`` on a message that has not arrived (under the
        lock)."""
        return len(self._waiters) >= self._running and not any(
            self._ready(r, senders, tag) for r, (senders, tag) in self._waiters.items()
        )

    def _agree(self, rank: int, value: object) -> list:
        self._agreed[rank] = value
        self.barrier.wait()  # every rank has put its value
        values = list(self._agreed)
        self.barrier.wait()  # every rank has read: the next agreement may overwrite
        return values


class MemoryTransport:
    """One simulated rank's neighbours and exchanges (implements ``comm.protocols.Transport``)."""

    tag_limit = TAG_LIMIT

    def __init__(self, network: MemoryNetwork, rank: int) -> None:
        self.network = network
        self.rank = rank

    def in_neighbors(self, step: int = 0) -> np.ndarray:
        return np.asarray(self.network.schedule.at(step).in_neighbors(self.rank), dtype=np.int64)

    def out_neighbors(self, step: int = 0) -> np.ndarray:
        return np.asarray(self.network.schedule.at(step).out_neighbors(self.rank), dtype=np.int64)

    def exchange(self, send_nbytes: int, recv_nbytes: int) -> MemoryExchange:
        return MemoryExchange(self, send_nbytes, recv_nbytes)

    def agree(self, value: object) -> list:
        """Every simulated rank's ``value`` in rank order (all ranks call it, from their
        threads)."""
        return self.network._agree(self.rank, value)

    def free(self) -> None:
        """Nothing to free (the MPI transport frees its communicator)."""


class MemoryExchange:
    """A preallocated exchange of fixed-size byte messages between simulated ranks, at most one in
    flight (the same contract as ``comm.exchange.NeighborExchange``)."""

    def __init__(self, transport: MemoryTransport, send_nbytes: int, recv_nbytes: int) -> None:
        self.transport = transport
        self.send_nbytes = int(send_nbytes)
        schedule = transport.network.schedule
        max_in = max(len(g.in_neighbors(transport.rank)) for g in schedule.graphs)
        self.recv = np.zeros((max_in, int(recv_nbytes)), dtype=np.uint8)
        self._senders: np.ndarray | None = None
        self._tag = 0
        self._received = 0

    def start(self, send_buf: np.ndarray, step: int = 0, tag: int = 0) -> None:
        if self._senders is not None:
            raise RuntimeError("exchange started again before it completed")
        if send_buf.dtype != np.uint8 or send_buf.nbytes != self.send_nbytes:
            raise ValueError(
                f"send buffer must be {self.send_nbytes} uint8 bytes, got {send_buf.nbytes} "
                f"{send_buf.dtype}"
            )
        transport = self.transport
        self._tag = tag % TAG_LIMIT
        self._senders = transport.in_neighbors(step)
        transport.network._post(
            transport.rank, transport.out_neighbors(step), self._tag, send_buf.copy()
        )

    def test(self) -> bool:
        """True once the exchange is complete (every in-neighbour's message has arrived and was
        taken)."""
        if self._senders is None:
            return True
        network = self.transport.network
        with network._cond:
            if not network._ready(self.transport.rank, self._senders, self._tag):
                return False
        self.wait()
        return True

    def wait(self) -> np.ndarray:
        if self._senders is not None:
            self.transport.network._take(self.transport.rank, self._senders, self._tag, self.recv)
            self._received = len(self._senders)
            self._senders = None
        return self.recv[: self._received]
