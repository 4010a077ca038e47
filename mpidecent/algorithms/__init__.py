"""Algorithms, one file per family; importing this package fills the registry ``ALGORITHMS``."""

from mpidecent.algorithms.base import (ALGORITHMS, Algorithm, Context, DataLayout, MixingRow, StepStats,
                                       mixing_rows, register)
from mpidecent.algorithms import (allreduce_sgd, async_gossip, dpsgd, gradient_coding, momentum,  # noqa: F401
                                  multi_gossip, push_sum)  # (registration)

__all__ = ["ALGORITHMS", "Algorithm", "Context", "DataLayout", "MixingRow", "StepStats", "mixing_rows", "register"]
