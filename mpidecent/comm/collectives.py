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
