"""Seeded random generators derived from (seed, rank, step, purpose).

Every random choice in mpidecent comes from ``generator(...)`` so that the same job gives the same
numbers on every run, and a resumed run draws exactly what an uninterrupted one would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Stable small integers per purpose: changing one would change every run's numbers.
PURPOSES: dict[str, int] = {
    "minibatch": 1,
    "quantize": 2,
    "init": 3,
    "graph": 4,
    "sparsify": 5,
    "straggler": 6,
    "gossip": 7,
    "data": 8,
    "partition": 9,
    "round": 10,  # async gossip: lengths of the update rounds on the logical clock
    "test": 99,
}


def generator(seed: int, rank: int, step: int, purpose: str) -> np.random.Generator:
    """A fresh PCG64 generator keyed by (seed, rank, step, purpose); all four must be ≥ 0."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, rank, step, PURPOSES[purpose]]))
    )


@dataclass(frozen=True)
class RandomKey:
    """Who draws, and when: sender ``rank`` at iteration ``step`` of a run seeded with ``seed``, for
    the message stream ``stream``.

    Compressors receive a key rather than a generator so that a receiver can rebuild the sender's
    generator when the wire format relies on shared randomness (rand-k indices).

    ``stream`` tells an algorithm's message streams apart (``comm/neighbor.py``: 0 for its first
    stream, a hash of the name for the others), so two streams never draw the same dither or
    indices. Stream 0 is keyed by (seed, rank, step, purpose) alone — exactly the key of every run
    made before streams had names — and any other by (seed, rank, step, purpose, stream).
    """

    seed: int
    rank: int
    step: int
    stream: int = 0

    def _sequence(self, purpose: str) -> np.random.SeedSequence:
        entropy = [self.seed, self.rank, self.step, PURPOSES[purpose]]
        return np.random.SeedSequence([*entropy, self.stream] if self.stream else entropy)

    def generator(self, purpose: str) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self._sequence(purpose)))

    def word(self, purpose: str) -> int:
        """A 64-bit key (0 ≤ key < 2^64) for counter-based streams such as the quantizers' dither
        (``compression/kernels.py``), from the same (seed, rank, step, purpose, stream) as
        ``generator``."""
        return int(self._sequence(purpose).generate_state(1, np.uint64)[0])
