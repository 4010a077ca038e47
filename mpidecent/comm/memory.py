"""The neighbour pattern in one process: n simulated nodes exchanging bytes through memory.

``MemoryNetwork(schedule)`` gives every simulated rank a ``Transport`` (``transport(rank)``) with the
same neighbour lists and the same message order as the MPI transport (``comm/graph.py``): row k of
``wait()`` is the message of the step's k-th in-neighbour. Each node runs in its own thread
(``run``), so an algorithm's ``step`` — encode, exchange, decode, mix — is the very code of an MPI run,
and the results are bit-identical to it: the same bytes arrive in the same order and every node's
arithmetic is its own.

An exchange is two barriers of all n threads: after every node has deposited (a copy of) its message,
each copies its in-neighbours' messages; after every node has copied, the exchange completes, so no
message is overwritten before it was read. Every node must make the same sequence of exchanges, as
under MPI. An exception in one node aborts the barriers, so the others fail instead of waiting forever,
and ``run`` re-raises it. Pure: numpy and threading, never mpi4py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from mpidecent.topology.schedule import Schedule

T = TypeVar("T")


class MemoryNetwork:
    """n simulated ranks on ``schedule``'s graphs (static, or time-varying with step t in slot t mod
    period)."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.n = schedule.n
        self.barrier = threading.Barrier(self.n)
        self._mailbox: dict[tuple[int, int], np.ndarray] = {}  # (exchange id, sender) → message bytes
        self._created = [0] * self.n  # exchanges created by each rank: ids match across ranks by order

    def transport(self, rank: int) -> MemoryTransport:
        return MemoryTransport(self, rank)

    def run(self, work: Sequence[Callable[[], T]]) -> list[T]:
        """Call ``work[rank]()`` for every rank, each in its own thread; returns their results in rank
        order, or re-raises the first exception (the other ranks' barriers are aborted)."""
        if len(work) != self.n:
            raise ValueError(f"run needs one callable per rank ({self.n}), got {len(work)}")
        results: list = [None] * self.n
        errors: list[BaseException | None] = [None] * self.n

        def node(rank: int) -> None:
            try:
                results[rank] = work[rank]()
            except BaseException as err:  # noqa: BLE001 - re-raised below, in the caller's thread
                errors[rank] = err
                self.barrier.abort()

        threads = [threading.Thread(target=node, args=(r,), name=f"rank {r}") for r in range(self.n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)),
                     next((e for e in errors if e is not None), None))
        if first is not None:
            self.barrier.reset()
            raise first
        return results

    def _new_exchange(self, rank: int) -> int:
        self._created[rank] += 1
        return self._created[rank] - 1


class MemoryTransport:
    """One simulated rank's neighbours and exchanges (implements ``comm.protocols.Transport``)."""

    def __init__(self, network: MemoryNetwork, rank: int) -> None:
        self.network = network
        self.rank = rank

    def in_neighbors(self, step: int = 0) -> np.ndarray:
        return np.asarray(self.network.schedule.at(step).in_neighbors(self.rank), dtype=np.int64)

    def out_neighbors(self, step: int = 0) -> np.ndarray:
        return np.asarray(self.network.schedule.at(step).out_neighbors(self.rank), dtype=np.int64)

    def exchange(self, send_nbytes: int, recv_nbytes: int) -> MemoryExchange:
        return MemoryExchange(self, self.network._new_exchange(self.rank), send_nbytes, recv_nbytes)

    def free(self) -> None:
        """Nothing to free (the MPI transport frees its communicator)."""


class MemoryExchange:
    """A preallocated exchange of fixed-size byte messages between simulated ranks."""

    def __init__(self, transport: MemoryTransport, ident: int, send_nbytes: int, recv_nbytes: int) -> None:
        self.transport, self.ident = transport, ident
        self.send_nbytes = int(send_nbytes)
        schedule = transport.network.schedule
        max_in = max(len(g.in_neighbors(transport.rank)) for g in schedule.graphs)
        self.recv = np.zeros((max_in, int(recv_nbytes)), dtype=np.uint8)
        self._step: int | None = None

    def start(self, send_buf: np.ndarray, step: int = 0, tag: int | None = None) -> None:
        if self._step is not None:
            raise RuntimeError("exchange started twice without wait()")
        if send_buf.dtype != np.uint8 or send_buf.nbytes != self.send_nbytes:
            raise ValueError(f"send buffer must be {self.send_nbytes} uint8 bytes, got {send_buf.nbytes} "
                             f"{send_buf.dtype}")
        network = self.transport.network
        network._mailbox[(self.ident, self.transport.rank)] = send_buf.copy()
        self._step = step

    def wait(self) -> np.ndarray:
        network = self.transport.network
        senders = self.transport.in_neighbors(self._step)
        network.barrier.wait()  # every rank has deposited its message of this exchange
        for k, sender in enumerate(senders):
            self.recv[k] = network._mailbox[(self.ident, int(sender))]
        network.barrier.wait()  # every rank has read: the next exchange may overwrite the mailbox
        self._step = None
        return self.recv[:len(senders)]
