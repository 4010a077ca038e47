"""Neighbour exchange of one packed byte buffer: nonblocking ``Isend``/``Irecv`` into reused buffers.

Each step a rank sends the same message (one uint8 buffer) to each of its out-neighbours of that step
and receives one fixed-size message from each in-neighbour of that step into a preallocated
(max in-degree, recv_nbytes) array. Messages are raw bytes (uppercase buffer methods, ``MPI.BYTE``;
never pickle). Receives are posted before sends.

Static graphs use one tag: MPI keeps messages between a pair of ranks in order on one communicator and
tag, and every step completes its requests before the next one starts. Time-varying graphs put the
step number (or the caller's tag, e.g. the gossip round) in the tag, modulo the MPI tag limit, so a
message can only match the receive of its own exchange.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI


class NeighborExchange:
    """A reusable exchange over a periodic sequence of neighbourhoods (period 1 = a static graph).

    ``slots[s] = (in_neighbors, out_neighbors)`` of this rank at steps t ≡ s (mod period). Every rank
    calls ``start(send_buf, step)`` then ``wait()`` for the same steps.
    """

    def __init__(self, comm: MPI.Comm, slots: Sequence[tuple[Sequence[int], Sequence[int]]], send_nbytes: int,
                 recv_nbytes: int, tagged: bool) -> None:
        self.comm = comm
        self.slots = [([int(j) for j in ins], [int(j) for j in outs]) for ins, outs in slots]
        self.send_nbytes = int(send_nbytes)
        max_in = max(len(ins) for ins, _ in self.slots)
        self.recv = np.zeros((max_in, int(recv_nbytes)), dtype=np.uint8)
        self.tagged = tagged
        self.tag_limit = int(comm.Get_attr(MPI.TAG_UB)) + 1 if tagged else 1
        self._requests: list[MPI.Request] = []
        self._received = 0

    def start(self, send_buf: np.ndarray, step: int = 0, tag: int | None = None) -> None:
        """Post this step's receives, then send ``send_buf`` (uint8, send_nbytes, contiguous) to every
        out-neighbour of the step. ``send_buf`` must not be modified until ``wait()`` returns. ``tag``
        (default: ``step``) tells several exchanges of one step apart on time-varying graphs."""
        if self._requests:
            raise RuntimeError("exchange started twice without wait()")
        if send_buf.dtype != np.uint8 or send_buf.nbytes != self.send_nbytes or not send_buf.flags.c_contiguous:
            raise ValueError(f"send buffer must be {self.send_nbytes} contiguous uint8 bytes, got "
                             f"{send_buf.nbytes} {send_buf.dtype}")
        ins, outs = self.slots[step % len(self.slots)]
        comm, tag = self.comm, (step if tag is None else tag) % self.tag_limit
        requests = [comm.Irecv([self.recv[k], MPI.BYTE], source=src, tag=tag) for k, src in enumerate(ins)]
        requests += [comm.Isend([send_buf, MPI.BYTE], dest=dst, tag=tag) for dst in outs]
        self._requests = requests
        self._received = len(ins)

    def wait(self) -> np.ndarray:
        """Complete the step's requests; returns the received rows (row k from the step's k-th
        in-neighbour), a view of ``recv``."""
        MPI.Request.Waitall(self._requests)
        self._requests = []
        return self.recv[:self._received]
