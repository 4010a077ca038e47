"""Algorithms, one file per family; importing this package fills the registry ``ALGORITHMS``."""

from mpidecent.algorithms.base import ALGORITHMS, Algorithm, Context, MixingRow, StepStats, register
from mpidecent.algorithms import allreduce_sgd, dpsgd, momentum, multi_gossip, push_sum  # noqa: F401  (registration)

__all__ = ["ALGORITHMS", "Algorithm", "Context", "MixingRow", "StepStats", "register"]
