"""The interfaces algorithms see of the communication layer (typing only; pure).

The MPI implementations live beside this file (``graph.py``/``exchange.py``, ``collectives.py``,
``master.py``, ``window.py``); ``memory.py`` implements ``Transport`` in one process. Algorithms are
written against these protocols, never against mpi4py objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class Exchange(Protocol):
    """A preallocated neighbour exchange of fixed-size byte messages, at most one in flight."""

    def start(self, send_buf: np.ndarray, step: int = 0, tag: int = 0) -> None:
        """Send ``send_buf`` (uint8) to the out-neighbours of ``step``'s slot and post the receives
        from its in-neighbours, all with ``tag`` (modulo the tag limit)."""

    def test(self) -> bool:
        """Progress the exchange without blocking; True once it is complete."""

    def wait(self) -> np.ndarray:
        """(in-degree of the step, recv_nbytes) uint8: row k from in-neighbour k."""


class Transport(Protocol):
    """This rank's neighbours at every step of a static or time-varying graph, and its exchanges."""

    tag_limit: int  # tags are taken modulo this

    def in_neighbors(self, step: int = 0) -> np.ndarray: ...

    def out_neighbors(self, step: int = 0) -> np.ndarray: ...

    def exchange(self, send_nbytes: int, recv_nbytes: int) -> Exchange: ...

    def agree(self, value: object) -> list:
        """Collective over every rank (set-up only): every rank's ``value`` in rank order."""

    def free(self) -> None: ...


class Collectives(Protocol):
    """Reductions over every rank, in place on flat contiguous numpy arrays; every rank calls each
    method in the same order."""

    size: int

    def allreduce_sum(self, array: np.ndarray) -> None: ...

    def allreduce_max(self, array: np.ndarray) -> None: ...

    def reduce_sum(self, array: np.ndarray) -> np.ndarray | None:
        """Σ over ranks of ``array`` in its own dtype on rank 0 (None on the others)."""

    def start_allreduce_sum(self, array: np.ndarray) -> Any:
        """Non-blocking ``allreduce_sum``: a handle with ``wait()`` and ``test()``."""

    def broadcast(self, array: np.ndarray) -> None:
        """array ← rank 0's array."""

    def sum_scalars(self, *values: float) -> np.ndarray: ...

    def barrier(self) -> None: ...


class MasterWorkerLink(Protocol):
    """Rank 0 (master) and ranks 1..n (workers) exchanging raw bytes tagged with the step."""

    workers: int
    drained: int

    def broadcast(self, buf: np.ndarray, step: int) -> None: ...

    def post(self, step: int, workers: np.ndarray) -> None: ...

    def wait_until(
        self, step: int, ready: Callable[[np.ndarray], bool]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def receive(self, buf: np.ndarray, step: int) -> None: ...

    def send(self, buf: np.ndarray, step: int) -> None: ...

    def complete_send(self) -> None: ...


class Window(Protocol):
    """This rank's one-sided window (its published model, version vector and counters) and reads of
    peers' windows under passive-target locks."""

    gets: int
    get_bytes: int
    put_bytes: int
    lock_wait_s: float

    @property
    def peer_versions(self) -> np.ndarray: ...

    @property
    def peer_model(self) -> np.ndarray: ...

    def publish(
        self, model: np.ndarray, versions: np.ndarray, rounds: int, steps: int, logical_time: float
    ) -> None: ...

    def read(self, peer: int) -> None: ...

    def read_rounds(self, out: np.ndarray) -> np.ndarray: ...

    def free(self) -> None: ...
