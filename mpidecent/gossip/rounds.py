"""Delta semantics of an update round (pure): a model that arrives mid-round is not lost.

Two processes share one rank's model (spec, "Two engines"): local training runs K SGD steps on a
working copy w that starts the round at x_before = x; gossip mixes the published model x at any
time, x ← ½(x + x_peer). When the round completes, its progress is applied as a delta to whatever x
has become:

    x ← x_mixed + (x_after_round − x_before_round) = x + (w − x_before)

so with no arrival during the round x = w (plain local SGD), and with an arrival the peer's
information stays in x. All arrays are flat, of the run's dtype; every operation is one vectorised
pass.
"""

from __future__ import annotations

import numpy as np


class DeltaRound:
    """``x`` the published (mixed) model and ``w`` the working copy SGD updates (e.g. the
    objective's flat parameters); both are used in place, length d."""

    def __init__(self, x: np.ndarray, w: np.ndarray) -> None:
        self.x, self.w = x, w
        self.before = x.copy()
        self._delta = np.zeros_like(x)
        self.active = False  # inside a round (begin called, finish not yet)

    def begin(self) -> None:
        """Start a round: x_before ← x, w ← x."""
        np.copyto(self.before, self.x)
        np.copyto(self.w, self.x)
        self.active = True

    def mix(self, peer: np.ndarray) -> None:
        """Pull-and-average with a peer's published model: x ← ½(x + x_peer) (w is not touched)."""
        np.add(self.x, peer, out=self.x)
        self.x *= 0.5

    def finish(self) -> None:
        """Complete the round: x ← x_mixed + (w − x_before)."""
        np.subtract(self.w, self.before, out=self._delta)
        self.x += self._delta
        self.active = False

    def current(self, out: np.ndarray) -> np.ndarray:
        """The rank's model including the partial round, x + (w − x_before), into ``out`` (x between
        rounds)."""
        if not self.active:
            np.copyto(out, self.x)
            return out
        np.subtract(self.w, self.before, out=out)
        out += self.x
        return out
