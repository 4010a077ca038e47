"""Algorithms, one file per family; importing this package fills the registry ``ALGORITHMS``."""

from mpidecent.algorithms.base import ALGORITHMS, Algorithm, Context, StepStats, register
from mpidecent.algorithms import allreduce_sgd, dpsgd, push_sum  # noqa: F401  (registration)

__all__ = ["ALGORITHMS", "Algorithm", "Context", "StepStats", "register"]
