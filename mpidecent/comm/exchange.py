"""Neighbour exchange of one packed byte buffer: nonblocking ``Isend``/``Irecv`` into reused
buffers.

An exchange sends one message (one uint8 buffer) to each out-neighbour of its step and receives one
fixed-size message from each in-neighbour of that step into a preallocated (max in-degree,
recv_nbytes) array. Messages are raw bytes (uppercase buffer methods, ``MPI.BYTE``; never pickle).
Receives are posted before sends.

Tags: the caller (a message stream, ``comm/neighbor.py``) gives every exchange a tag that names the
stream and counts its exchanges, so messages of different streams, and of different exchanges of one
stream, can only match their own receive — even with several exchanges in flight at once. MPI also
keeps the messages between a pair of ranks in order on one communicator and tag.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI


class NeighborExchange:
    """A reusable exchange over a periodic sequence of neighbourhoods (period 1 = a static graph),
    with at most one message in flight: a stream holds one ``NeighborExchange`` per message it can
    have in flight.

    ``slots[s] = (in_neighbors, out_neighbors)`` of this rank at steps t ≡ s (mod period). Every
    rank calls ``start(send_buf, step, tag)`` then ``wait()`` (or ``test()`` until it is true) for
    the same steps and tags.
    """

    def __init__(
        self,
        comm: MPI.Comm,
        slots: Sequence[tuple[Sequence[int], Sequence[int]]],
        send_nbytes: int,
        recv_nbytes: int,
    ) -> None:
        self.comm = comm
        self.slots = [([int(j) for j in ins], [int(j) for j in outs]) for ins, outs in slots]
        self.send_nbytes = int(send_nbytes)
        max_in = max(len(ins) for ins, _ in self.slots)
        self.recv = np.zeros((max_in, int(recv_nbytes)), dtype=np.uint8)
        self.tag_limit = tag_limit()
        self._requests: list[MPI.Request] = []
        self._received = 0
        self._done = True

    def start(self, send_buf: np.ndarray, step: int = 0, tag: int = 0) -> None:
        """Post this step's receives, then send ``send_buf`` (uint8, send_nbytes, contiguous) to
        every out-neighbour of the step, with ``tag`` (modulo the MPI tag limit). ``send_buf`` must
        not be modified until the exchange is complete."""
        if not self._done:
            raise RuntimeError("exchange started again before it completed")
        if (
            send_buf.dtype != np.uint8
            or send_buf.nbytes != self.send_nbytes
            or not send_buf.flags.c_contiguous
        ):
            raise ValueError(
                f"send buffer must be {self.send_nbytes} contiguous uint8 bytes, got "
                f"{send_buf.nbytes} {send_buf.dtype}"
            )
        ins, outs = self.slots[step % len(self.slots)]
        comm, tag = self.comm, tag % self.tag_limit
        requests = [
            comm.Irecv([self.recv[k], MPI.BYTE], source=src, tag=tag) for k, src in enumerate(ins)
        ]
        requests += [comm.Isend([send_buf, MPI.BYTE], dest=dst, tag=tag) for dst in outs]
        self._requests = requests
        self._received = len(ins)
        self._done = False

    def test(self) -> bool:
        """Let MPI progress the exchange (a rendezvous over TCP moves only inside MPI calls); True
        once it is complete. Never blocks."""
        if not self._done and MPI.Request.Testall(self._requests):
            self._done = True
            self._requests = []
        return self._done

    def wait(self) -> np.ndarray:
        """Complete the exchange; returns the received rows (row k from the step's k-th
        in-neighbour), a view of ``recv``."""
        if not self._done:
            MPI.Request.Waitall(self._requests)
            self._requests = []
            self._done = True
        return self.recv[: self._received]


def tag_limit() -> int:
    """The number of usable tags (MPI_TAG_UB + 1; at least 32768 by the standard). The bound is an
    attribute of COMM_WORLD that holds for every communicator (a distributed-graph communicator does
    not carry it)."""
    tag_ub = MPI.COMM_WORLD.Get_attr(MPI.TAG_UB)
    assert tag_ub is not None  # set on COMM_WORLD by the standard
    return int(tag_ub) + 1
