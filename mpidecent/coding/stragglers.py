"""Seeded straggler models for master/worker training, pure
(``docs/algorithms/gradient-coding.md``).

- ``fixed``: exactly ``count`` workers straggle each step, drawn by the generator of (seed, step):
  logical stragglers that skip sending, reproducible bit for bit.
- ``bernoulli``: each worker straggles with probability ``p`` per step (for SGC), also logical.
- ``delay``: nobody skips; every worker sleeps ``shift + Exp(mean)`` seconds (seeded by (seed,
  worker, step)) before sending, and the master takes the first arrivals: real straggling,
  reproducible only in distribution (which workers arrive first depends on the machine).

Every rank can evaluate a logical model for any step without communication, so the master knows whom
to wait for and the workers know whether to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpidecent.rng import generator


@dataclass(frozen=True)
class StragglerModel:
    name: str  # "none" | "fixed" | "bernoulli" | "delay"
    workers: int
    seed: int
    count: int = 0
    p: float = 0.0
    shift_s: float = 0.0
    mean_s: float = 0.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any], workers: int, seed: int) -> StragglerModel:
        """The model of a job's ``[stragglers]`` section."""
        return cls(
            table["model"],
            workers,
            seed,
            count=table["count"],
            p=table["p"],
            shift_s=table["delay_shift_s"],
            mean_s=table["delay_mean_s"],
        )

    @property
    def logical(self) -> bool:
        """Stragglers are decided by the seed (they skip sending), not by timing."""
        return self.name in ("none", "fixed", "bernoulli")

    def stragglers(self, step: int) -> np.ndarray:
        """(workers,) bool: who skips sending at ``step`` (all False for ``delay`` and ``none``)."""
        out = np.zeros(self.workers, dtype=bool)
        rng = generator(self.seed, 0, step, "straggler")
        if self.name == "fixed" and self.count:
            out[rng.choice(self.workers, size=self.count, replace=False)] = True
        elif self.name == "bernoulli":
            out = rng.random(self.workers) < self.p
        return out

    def delay(self, worker: int, step: int) -> float:
        """Seconds worker ``worker`` (0-based) waits before sending at ``step`` (0 unless
        ``delay``)."""
        if self.name != "delay":
            return 0.0
        return self.shift_s + float(
            generator(self.seed, worker + 1, step, "straggler").exponential(self.mean_s)
        )
