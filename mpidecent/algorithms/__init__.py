"""Algorithms: their declarations (``catalog``, pure) and one implementation file per family.

``ALGORITHMS`` maps ``[algorithm] name`` to its ``AlgorithmSpec``; importing this package loads no
implementation (and so neither torch nor mpi4py): ``spec.load()`` does, when a run starts.
"""

from mpidecent.algorithms.catalog import ALGORITHMS, AlgorithmSpec, DataLayout

__all__ = ["ALGORITHMS", "AlgorithmSpec", "DataLayout"]
