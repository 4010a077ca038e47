"""Helpers shared by the compressor tests."""

import numpy as np

from mpidecent.rng import RandomKey

KEY = RandomKey(seed=7, rank=3, step=11)


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bit patterns (distinguishes −0.0 from 0.0, unlike ==)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
