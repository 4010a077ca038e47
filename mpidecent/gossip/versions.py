"""Version vectors and staleness: the bookkeeping shared by the MPI engine and the simulator (pure).

Rank i keeps a version vector V_i ∈ N^n (int64): V_i[i] = N_i^i, the number of update rounds i has
completed, and V_i[j] = N_j^i, the newest version of j whose information has reached i (directly or
relayed). A gossip merges element-wise, V_i ← max(V_i, V_j). The staleness of j's information at i
is

    S_j^i = N_j^j − V_i[j]   (≥ 0: no rank can know a version of j that j has not produced)

in versions (update rounds). Both engines call ``merge_versions`` for every gossip and
``staleness_stats`` for every sample, so the MPI engine and the simulator count staleness
identically.

Reference formula (``expected_staleness``). Homogeneous users, rounds of length c + Exp(μ) (version
rate λ_e = 1 / (c + 1/μ)), gossip at rate λ to a uniformly random peer. Let D be the age of the
newest information about source i that j holds (time since it left i). With k of the n users
informed, a fresh version of i spreads to new users at rate

    push:      k informed senders, each hits one of the n − k uninformed w.p. (n − k)/(n − 1):
               r_k = λ k (n − k)/(n − 1)
    pull:      n − k uninformed readers, each reads an informed peer w.p. k/(n − 1): the same r_k
    exchange:  both directions at every gossip (push-pull): 2 r_k

A given j is the m-th user reached with probability 1/(n − 1), so E[D] = (1/(n − 1)) Σ_m Σ_{k ≤ m}
1/r_k = Σ_k (n − k)/((n − 1) r_k) = H_{n−1}/λ for push and pull (H_{n−1}/(2λ) for exchange).
Versions are a stationary renewal process at rate λ_e independent of the gossip, so E[S] = λ_e E[D]:

    E[S] = f · (λ_e / λ) · H_{n−1},   f = 1 (push), 1 (pull: i reads j, only i averages and merges),
                                       f = ½ (exchange: both merge, as a symmetric pull-and-average
                                       would)

The spec's "pull-and-average gives about half" holds for the symmetric exchange; the one-sided pull
the MPI engine does (only the reader changes) has the same rate r_k as push, hence f = 1. The
simulator checks all three (tests/unit/test_gossip_sim.py).
"""

from __future__ import annotations

import math

import numpy as np

# Factor f of the reference formula per gossip mode (derivation in the module docstring).
MODE_FACTOR: dict[str, float] = {"push": 1.0, "pull": 1.0, "exchange": 0.5}
RATE_POLICIES = ("constant", "log_n")


def harmonic(m: int) -> float:
    """H_m = Σ_{k=1}^m 1/k (0 for m ≤ 0)."""
    return float(np.sum(1.0 / np.arange(1, m + 1))) if m > 0 else 0.0


def version_rate(round_shift: float, round_rate: float) -> float:
    """λ_e = 1 / (c + 1/μ): update rounds per unit of logical time for rounds of length c +
    Exp(μ)."""
    return 1.0 / (round_shift + 1.0 / round_rate)


def gossip_rate(base: float, policy: str, n: int) -> float:
    """λ_i of a rate policy: ``constant`` → base; ``log_n`` → base · ln n (0 for n = 1)."""
    if policy == "constant":
        return float(base)
    if policy == "log_n":
        return float(base) * math.log(n) if n > 1 else 0.0
    raise ValueError(f"unknown rate policy {policy!r} (one of {', '.join(RATE_POLICIES)})")


def expected_staleness(n: int, rate: float, versions_per_time: float, mode: str = "push") -> float:
    """Time-averaged E[S_i^j] = f · (λ_e/λ) · H_{n−1} (module docstring), in versions."""
    if n < 2 or rate <= 0:
        return math.nan
    return MODE_FACTOR[mode] * versions_per_time / rate * harmonic(n - 1)


def merge_versions(mine: np.ndarray, theirs: np.ndarray, mine_sum: int | None = None) -> int:
    """V_mine ← max(V_mine, V_theirs) element-wise, in place (1-D int arrays of equal length).

    Returns Σ of the increase, i.e. how much total staleness the merge removed. ``mine_sum`` (Σ
    V_mine before the merge, if the caller tracks it) saves one pass."""
    before = int(mine.sum()) if mine_sum is None else int(mine_sum)
    np.maximum(mine, theirs, out=mine)
    return int(mine.sum()) - before


def staleness_stats(
    counts: np.ndarray, known: np.ndarray, own: int | np.ndarray
) -> tuple[np.ndarray | np.float64, np.ndarray | np.float64]:
    """Mean and max of S = counts − known over the peers' entries (the own entry excluded).

    ``counts`` (m,): N_s^s of the m sources tracked; ``known`` (m,) one rank's version vector or (r,
    m) r ranks' rows; ``own`` the column of each row's own entry (−1: none of the tracked sources).
    Returns (mean, max), float64 scalars for a 1-D ``known``, (r,) arrays otherwise (NaN for a row
    with no peer)."""
    rows = np.atleast_2d(known)
    own_cols = np.broadcast_to(np.asarray(own, dtype=np.int64), (rows.shape[0],))
    s = counts[None, :].astype(np.float64) - rows
    mask = np.zeros(s.shape, dtype=bool)
    has_own = own_cols >= 0
    mask[np.flatnonzero(has_own), own_cols[has_own]] = True
    peers = s.shape[1] - has_own.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mask, 0.0, s).sum(axis=1) / peers
    high = np.where(mask, -np.inf, s).max(axis=1, initial=-np.inf)
    mean = np.where(peers > 0, mean, np.nan)
    high = np.where(peers > 0, high, np.nan)
    if known.ndim == 1:
        return np.float64(mean[0]), np.float64(high[0])
    return mean, high


def inconsistencies(counts: np.ndarray, known: np.ndarray) -> int:
    """Entries where a rank knows a newer version than the source has produced (must be 0)."""
    return int(np.count_nonzero(np.atleast_2d(known) > counts[None, :]))
