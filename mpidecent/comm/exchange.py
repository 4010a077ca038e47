"""Neighbour exchange of one packed byte buffer: nonblocking ``Isend``/``Irecv`` into reused buffers.

Each step a rank sends the same message (one uint8 buffer) to each of its out-neighbours and receives
one fixed-size message from each of its in-neighbours into a preallocated (in_degree, recv_nbytes)
array. Messages are raw bytes (uppercase buffer methods, ``MPI.BYTE``; never pickle). Receives are
posted before sends. Static graphs use one tag: MPI keeps messages between a pair of ranks in order on
one communicator and tag, and every step completes all its requests before the next one starts.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI


class NeighborExchange:
    """A reusable exchange; ``start(send_buf)`` then ``wait()`` once per step. All ranks of the graph
    communicator call them for the same step."""

    def __init__(self, comm: MPI.Comm, in_neighbors: np.ndarray, out_neighbors: np.ndarray,
                 send_nbytes: int, recv_nbytes: int, tag: int = 0) -> None:
        self.comm = comm
        self.in_neighbors = [int(j) for j in in_neighbors]
        self.out_neighbors = [int(j) for j in out_neighbors]
        self.send_nbytes = int(send_nbytes)
        self.recv = np.zeros((len(self.in_neighbors), int(recv_nbytes)), dtype=np.uint8)
        self.tag = int(tag)
        self._requests: list[MPI.Request] = []
        self._send_buf: np.ndarray | None = None

    @property
    def messages_per_step(self) -> int:
        return len(self.out_neighbors)

    @property
    def bytes_per_step(self) -> int:
        return self.send_nbytes * len(self.out_neighbors)

    def start(self, send_buf: np.ndarray) -> None:
        """Post all receives, then send ``send_buf`` (uint8, send_nbytes, contiguous) to every
        out-neighbour. ``send_buf`` must not be modified until ``wait()`` returns."""
        if self._requests:
            raise RuntimeError("exchange started twice without wait()")
        if send_buf.dtype != np.uint8 or send_buf.nbytes != self.send_nbytes or not send_buf.flags.c_contiguous:
            raise ValueError(f"send buffer must be {self.send_nbytes} contiguous uint8 bytes, got "
                             f"{send_buf.nbytes} {send_buf.dtype}")
        comm, tag = self.comm, self.tag
        requests = [comm.Irecv([self.recv[k], MPI.BYTE], source=src, tag=tag)
                    for k, src in enumerate(self.in_neighbors)]
        requests += [comm.Isend([send_buf, MPI.BYTE], dest=dst, tag=tag) for dst in self.out_neighbors]
        self._requests = requests
        self._send_buf = send_buf

    def wait(self) -> np.ndarray:
        """Complete the step's requests; returns ``recv`` (row k from in_neighbors[k])."""
        MPI.Request.Waitall(self._requests)
        self._requests = []
        self._send_buf = None
        return self.recv
