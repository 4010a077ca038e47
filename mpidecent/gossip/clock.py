"""The logical clock of asynchronous gossip: seeded event times per rank, shared by the MPI engine
and the simulator (pure).

Rank i's schedule is three counter-based streams, each drawn in blocks of ``BLOCK`` values from the
generator of (seed, rank, block, purpose) (``rng.py``), so any event can be recomputed from its
index alone (the checkpoint of a clock is its counters) and the simulator's user i sees exactly the
events the MPI engine's rank i sees in logical-clock mode:

    "gossip"     k-th gossip: gap E_k / λ (E_k ~ Exp(1)) since the previous one, and a uniform draw
                 U_k that picks the peer ⌊U_k · m⌋ among the m candidates (every other rank, or the
                 in-neighbours of a topology)
    "round"      r-th update round: length c + E_r / μ
    "straggler"  r-th round of a slow rank: extra delay shift + mean · E_r seconds (real sleep)

Times are in logical units (``clock = "logical"``) or seconds (``clock = "wall"``, gossip gaps
only).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mpidecent.rng import generator

# draws per generator; part of the reproducibility contract (changing it changes every run)
BLOCK = 1024


def gossip_block(seed: int, rank: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(Exp(1) gaps, uniform peer draws), each (BLOCK,) float64, of gossips block·BLOCK ... + BLOCK
    − 1."""
    g = generator(seed, rank, block, "gossip")
    return g.standard_exponential(BLOCK), g.random(BLOCK)


def exp_block(seed: int, rank: int, block: int, purpose: str) -> np.ndarray:
    """(BLOCK,) Exp(1) draws of a "round" or "straggler" stream."""
    return generator(seed, rank, block, purpose).standard_exponential(BLOCK)


def peer_of(u: float | np.ndarray, rank: int | np.ndarray, n: int, candidates: np.ndarray | None):
    """The peer picked by uniform draw(s) ``u``: uniform over the other n − 1 ranks (``candidates``
    None) or over ``candidates`` (sorted peer ranks, e.g. in-neighbours). Works on scalars and
    arrays."""
    if candidates is None:
        idx = np.minimum((np.asarray(u) * (n - 1)).astype(np.int64), n - 2)
        peer = idx + (idx >= rank)
    else:
        m = len(candidates)
        peer = candidates[np.minimum((np.asarray(u) * m).astype(np.int64), m - 1)]
    return int(peer) if np.ndim(peer) == 0 else peer


class _Stream:
    """Indexable view of a blockwise stream that keeps the current block."""

    def __init__(self, draw: Callable[[int], tuple[np.ndarray, ...]]) -> None:
        self._draw = draw
        self._block = -1
        self._arrays: tuple[np.ndarray, ...] = ()

    def at(self, k: int) -> tuple[float, ...]:
        block, offset = divmod(k, BLOCK)
        if block != self._block:
            self._arrays, self._block = self._draw(block), block
        return tuple(float(a[offset]) for a in self._arrays)


class RankClock:
    """Rank ``rank``'s event streams (module docstring); stateless apart from a block cache.

    ``rate`` λ_i (≤ 0 or no candidates: never gossips), ``round_shift`` c ≥ 0, ``round_rate`` μ > 0,
    ``candidates`` the possible peers (None: every other rank of ``n``)."""

    def __init__(
        self,
        seed: int,
        rank: int,
        n: int,
        rate: float,
        round_shift: float,
        round_rate: float,
        candidates: np.ndarray | None = None,
        slow_shift_s: float = 0.0,
        slow_mean_s: float = 0.0,
    ):
        self.seed, self.rank, self.n, self.rate = seed, rank, n, float(rate)
        self.round_shift, self.round_rate = float(round_shift), float(round_rate)
        self.candidates = None if candidates is None else np.asarray(candidates, dtype=np.int64)
        self.slow_shift_s, self.slow_mean_s = float(slow_shift_s), float(slow_mean_s)
        self.gossips = self.rate > 0 and (
            n > 1 if self.candidates is None else len(self.candidates) > 0
        )
        self._gossip = _Stream(lambda b: gossip_block(seed, rank, b))
        self._round = _Stream(lambda b: (exp_block(seed, rank, b, "round"),))
        self._slow = _Stream(lambda b: (exp_block(seed, rank, b, "straggler"),))

    def gossip(self, k: int) -> tuple[float, int]:
        """(gap since gossip k − 1, peer) of gossip k (0-based); gap = inf for a rank that never
        gossips."""
        if not self.gossips:
            return float("inf"), -1
        e, u = self._gossip.at(k)
        return e / self.rate, peer_of(u, self.rank, self.n, self.candidates)

    def round_length(self, r: int) -> float:
        """Logical length c + Exp(μ) of update round r (0-based)."""
        (e,) = self._round.at(r)
        return self.round_shift + e / self.round_rate

    def slow_delay(self, r: int) -> float:
        """Seconds a slow rank sleeps in round r: shift + mean · Exp(1)."""
        (e,) = self._slow.at(r)
        return self.slow_shift_s + self.slow_mean_s * e


def _accumulate(start: float, gaps: np.ndarray) -> np.ndarray:
    """start + gap_1, (start + gap_1) + gap_2, ...: sequential sums, bit-identical to ``t +=
    gap``."""
    return np.cumsum(np.concatenate(([start], gaps)))[1:]


def gossip_schedule(clock: RankClock, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """All gossips of ``clock``'s rank with time ≤ horizon: (times (G,) float64, peers (G,) int64),
    vectorised per block and identical to stepping ``clock.gossip(k)`` with ``t += gap``."""
    if not clock.gossips:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    times, peers, t, block = [], [], 0.0, 0
    while t <= horizon:
        e, u = gossip_block(clock.seed, clock.rank, block)
        ts = _accumulate(t, e / clock.rate)
        times.append(ts)
        peers.append(peer_of(u, clock.rank, clock.n, clock.candidates))
        t, block = float(ts[-1]), block + 1
    all_t, all_p = np.concatenate(times), np.concatenate(peers)
    keep = all_t <= horizon
    return all_t[keep], all_p[keep]


def round_schedule(clock: RankClock, horizon: float) -> np.ndarray:
    """End times (≤ horizon) of the update rounds of ``clock``'s rank, identical to ``t +=
    length``."""
    ends, t, block = [], 0.0, 0
    while t <= horizon:
        ts = _accumulate(
            t,
            clock.round_shift
            + exp_block(clock.seed, clock.rank, block, "round") / clock.round_rate,
        )
        ends.append(ts)
        t, block = float(ts[-1]), block + 1
    out = np.concatenate(ends)
    return out[out <= horizon]
