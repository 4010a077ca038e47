"""Gradient codes: which partitions each worker holds, how it combines their gradients, how the
master decodes (``docs/algorithms/gradient-coding.md``). Pure numpy, no MPI.

n workers, n data partitions, target g = Σ_j g_j. Worker i sends c_i = Σ_j B_ij g_j; for a finished
set F the master forms ĝ = Σ_{i∈F} a_i c_i with decoding coefficients a (0 outside F).

- FRC (fractional repetition, exact, tolerates s stragglers, needs (s+1) | n): G = n/(s+1) groups of
  s+1 workers (workers g(s+1) … g(s+1)+s form group g); all workers of group g hold the group's s+1
  partitions {j : j ≡ g mod G} with B_ij = 1. Decode: the finished workers of each group averaged,
  a_i = 1 / |F ∩ group(i)|.
- CRC (cyclic repetition, exact, tolerates s): worker i holds {i, …, i+s} mod n; B from the random
  construction: H ∈ R^{s×n} Gaussian with H·1 = 0, B_ii = 1, B_{i,S_i∖i} = −H_{:,S_i∖i}^{-1}
  H_{:,i}. Every row of B is then orthogonal to the rows of H, so any n − s rows span 1ᵀ. Decode:
  B_Fᵀ a = 1 by least squares (checked).
- SGC (stochastic gradient coding, unbiased, not exact): each partition on d workers (cyclic), B_ij
  = 1, ĝ = (1/(d(1−p))) Σ_{i∈F} c_i for workers that finish independently with probability 1 − p.
- uncoded: B = I, ĝ = (n/|F|) Σ_{i∈F} c_i (approximate whenever someone straggles).

Decision (FRC partitions): the spec leaves open which s+1 partitions a group holds. A stride
(partitions g, g+G, g+2G, …) rather than a contiguous block makes each group's data span the whole
data order, so with label-sorted partitions a group's gradient sum is closer to its share of the
full gradient; the 1-bit scale R = ‖c‖∞ then shrinks near the optimum instead of staying at the size
of one class's gradient.

Decision (FRC decoding): the spec decodes with one finished worker per group (a = 1). Any a with
Σ_{i∈group∩F} a_i = 1 per group is exact for full-precision messages; the average is the one of
least variance for 1-bit messages, whose quantization noise is independent across workers, and it
costs no extra uplink bits (the other finished workers sent anyway). E[ĝ | F] = g either way.

Decision: with more stragglers than an exact code tolerates, ``decode`` raises ``NotDecodable``
unless ``approximate=True``, which then uses the least-squares a (CRC) or rescales the groups that
finished (FRC) — never a silently wrong gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpidecent.rng import generator


class NotDecodable(ValueError):
    """The finished set does not determine Σ_j g_j under this code."""


@dataclass(frozen=True)
class GradientCode:
    """An (n × n) encoding matrix with its decoder. ``tolerance`` = stragglers an exact code
    survives."""

    name: str
    B: np.ndarray  # (n, n) float64, row i = worker i
    tolerance: int
    exact: bool
    group: np.ndarray | None = None  # FRC: group id of each worker
    sgc_scale: float = 1.0  # SGC: 1 / (d (1 − p))

    @property
    def n(self) -> int:
        return int(self.B.shape[0])

    def partitions(self, worker: int) -> np.ndarray:
        """Partitions worker ``worker`` holds (the non-zero columns of its row), increasing."""
        return np.flatnonzero(self.B[worker])

    def decodable(self, finished: np.ndarray) -> bool:
        try:
            self.decode(finished)
        except NotDecodable:
            return False
        return True

    def decode(self, finished: np.ndarray, approximate: bool = False) -> np.ndarray:
        """Coefficients a (n,) with a_i = 0 outside ``finished`` ((n,) bool) such that
        Σ_i a_i c_i = Σ_j g_j (exact codes) or its unbiased/rescaled estimate (SGC, uncoded)."""
        finished = np.asarray(finished, dtype=bool)
        count = int(finished.sum())
        if count == 0:
            raise NotDecodable("no worker finished")
        if self.name == "frc":
            return self._decode_frc(finished, approximate)
        if self.name == "crc":
            return self._decode_crc(finished, approximate)
        a = np.zeros(self.n)
        a[finished] = self.sgc_scale if self.name == "sgc" else self.n / count
        return a

    def _decode_frc(self, finished: np.ndarray, approximate: bool) -> np.ndarray:
        # Every finished worker of a group sent (a quantization of) the same sum, so averaging them
        # is as exact as taking one, and averages their independent quantization noise (see module
        # docstring).
        group = self.group
        assert group is not None  # frc() sets it: the code is FRC
        groups = int(group.max()) + 1
        per_group = np.bincount(group[finished], minlength=groups)
        missing = int(np.sum(per_group == 0))
        if missing and not approximate:
            raise NotDecodable(
                f"{missing} of {groups} FRC groups have no finished worker (more than "
                f"s = {self.tolerance} stragglers)"
            )
        a = np.zeros(self.n)
        a[finished] = (
            groups / (groups - missing) / per_group[group[finished]]
        )  # = 1/|F ∩ group| if none missing
        return a

    def _decode_crc(self, finished: np.ndarray, approximate: bool) -> np.ndarray:
        rows = np.flatnonzero(finished)
        coef, *_ = np.linalg.lstsq(self.B[rows].T, np.ones(self.n), rcond=None)
        residual = np.linalg.norm(self.B[rows].T @ coef - 1.0)
        if residual > 1e-8 * np.sqrt(self.n) and not approximate:
            raise NotDecodable(
                f"CRC cannot decode {len(rows)} finished workers (more than s = {self.tolerance} "
                f"stragglers; least-squares residual {residual:.2e})"
            )
        a = np.zeros(self.n)
        a[rows] = coef
        return a


def frc(n: int, s: int) -> GradientCode:
    if s < 0 or (n % (s + 1)) != 0:
        raise ValueError(f"FRC needs (s + 1) | n; got n = {n} workers and s = {s}")
    groups = n // (s + 1)
    group = np.arange(n) // (s + 1)  # workers 0..s form group 0, and so on
    # Group g holds the partitions j ≡ g (mod groups): a stride through the data (see module
    # docstring).
    B = (group[:, None] == (np.arange(n) % groups)[None, :]).astype(np.float64)
    return GradientCode("frc", B, s, True, group=group)


def crc(n: int, s: int, seed: int = 0) -> GradientCode:
    if not 0 <= s < n:
        raise ValueError(f"CRC needs 0 ≤ s < n; got n = {n}, s = {s}")
    B = np.zeros((n, n))
    if s == 0:
        return GradientCode("crc", np.eye(n), 0, True)
    rng = generator(seed, 0, 0, "straggler")
    H = rng.standard_normal((s, n))
    H -= H.mean(axis=1, keepdims=True)  # H·1 = 0
    for i in range(n):  # one s × s solve per worker (set-up only)
        others = (i + np.arange(1, s + 1)) % n
        B[i, i] = 1.0
        B[i, others] = -np.linalg.solve(H[:, others], H[:, i])
    return GradientCode("crc", B, s, True)


def sgc(n: int, d: int, p: float) -> GradientCode:
    if not 1 <= d <= n:
        raise ValueError(f"SGC needs 1 ≤ d ≤ n; got n = {n}, d = {d}")
    rows = (np.arange(n)[:, None] + np.arange(d)[None, :]) % n
    B = np.zeros((n, n))
    np.put_along_axis(B, rows, 1.0, axis=1)
    return GradientCode("sgc", B, 0, False, sgc_scale=1.0 / (d * (1.0 - p)))


def uncoded(n: int) -> GradientCode:
    return GradientCode("uncoded", np.eye(n), 0, False)
