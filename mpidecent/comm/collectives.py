"""Reductions over all ranks, on flat numpy buffers (uppercase, in place, no pickle): the MPI
implementation of ``comm.protocols.Collectives``.

Every rank of ``comm`` must call each method in the same order.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI


class Collectives:
    def __init__(self, comm: MPI.Intracomm) -> None:
        self.comm = comm
        self.size = comm.size
        self.rank = comm.rank

    def allreduce_sum(self, array: np.ndarray) -> None:
        """array ← Σ over ranks of array (contiguous numpy array, in place)."""
        self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)

    def reduce_sum(self, array: np.ndarray) -> np.ndarray | None:
        """Σ over ranks of ``array`` (contiguous, in its own dtype) on rank 0, None elsewhere (one
        ``Reduce``)."""
        total = np.empty_like(array) if self.rank == 0 else None
        self.comm.Reduce(array, total, op=MPI.SUM, root=0)
        return total

    def start_allreduce_sum(self, array: np.ndarray) -> AllreduceInFlight:
        """Start array ← Σ over ranks of array (in place, non-blocking ``Iallreduce``); the array
        must not be touched until the handle's ``wait``."""
        return AllreduceInFlight(self.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM))

    def broadcast(self, array: np.ndarray) -> None:
        """array ← rank 0's array (contiguous numpy array, in place)."""
        self.comm.Bcast(array, root=0)

    def allreduce_max(self, array: np.ndarray) -> None:
        self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.MAX)

    def barrier(self) -> None:
        self.comm.Barrier()

    def sum_scalars(self, *values: float) -> np.ndarray:
        """Element-wise sum over ranks of a few float64 scalars (one Allreduce)."""
        buf = np.array(values, dtype=np.float64)
        self.allreduce_sum(buf)
        return buf


class AllreduceInFlight:
    """A started ``Iallreduce``: ``wait`` completes it (again: nothing), ``test`` lets MPI move
    it."""

    def __init__(self, request: MPI.Request) -> None:
        self.request = request

    def test(self) -> bool:
        return bool(self.request.Test())

    def wait(self) -> None:
        self.request.Wait()
