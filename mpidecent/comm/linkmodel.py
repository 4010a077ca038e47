"""A link model: "how long would this run take on a network of bandwidth B and latency λ?"

Pure (numpy only, never mpi4py): the report applies it to the counters a run stored, so a run made
anywhere (a laptop, an oversubscribed container) can be read as if it had run on a given cluster.

The model. For each interval between two consecutive log points k−1 → k and each rank i, from the
cumulative per-rank series of the results file::

    t_i,k = Δcompute_s_i,k + 8 · Δbytes_sent_i,k / bandwidth_bps + Δmessages_sent_i,k · latency_s

    modelled time at log point K = Σ_{k ≤ K} max_i t_i,k              (row 0 counts from 0)

Units: ``compute_s`` in seconds (measured: gradients, compression, mixing), ``bytes_sent`` in bytes
(what was handed to MPI sends), ``messages_sent`` a count, ``bandwidth_bps`` in bits per second,
``latency_s`` in seconds; the result is in seconds.

With ``shared = True`` all ranks send over one link of that bandwidth (nodes behind one slow uplink,
or the emulated link of ``mpidecent bench``'s network section), so an interval's bytes of all ranks
queue on it together::

    modelled interval k = max_i Δcompute_s_i,k + 8 · Σ_i Δbytes_sent_i,k / bandwidth_bps
                          + max_i Δmessages_sent_i,k · latency_s

This is a model, not a measurement: it assumes synchronous ranks that wait for the slowest one at
every log interval, a dedicated link per rank (no contention; ``shared``: one link, fully used) with
sends not overlapped with compute, and counts only the measured compute time of this run's machine.
Label it "modelled" wherever shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinkModel:
    """``bandwidth_bps``: bits per second (> 0); ``latency_s``: seconds per message (≥ 0);
    ``shared``: one link for all ranks instead of one per rank."""

    bandwidth_bps: float = 10e9
    latency_s: float = 5e-6
    shared: bool = False

    def __post_init__(self) -> None:
        if not (
            isinstance(self.bandwidth_bps, (int, float))
            and math.isfinite(self.bandwidth_bps)
            and self.bandwidth_bps > 0
        ):
            raise ValueError(
                "bandwidth must be a finite number of bits per second > 0, got "
                f"{self.bandwidth_bps!r}"
            )
        if not (
            isinstance(self.latency_s, (int, float))
            and math.isfinite(self.latency_s)
            and self.latency_s >= 0
        ):
            raise ValueError(
                f"latency must be a finite number of seconds ≥ 0, got {self.latency_s!r}"
            )

    @staticmethod
    def _deltas(
        compute_s: np.ndarray, bytes_sent: np.ndarray, messages_sent: np.ndarray
    ) -> list[np.ndarray]:
        c, b, m = (np.asarray(a, dtype=np.float64) for a in (compute_s, bytes_sent, messages_sent))
        if not (c.shape == b.shape == m.shape) or c.ndim != 2:
            raise ValueError(
                f"compute_s, bytes_sent and messages_sent must be (L, n) arrays of one shape, got "
                f"{c.shape}, {b.shape}, {m.shape}"
            )
        return [np.diff(a, axis=0, prepend=np.zeros((1, a.shape[1]))) for a in (c, b, m)]

    def interval_times(
        self, compute_s: np.ndarray, bytes_sent: np.ndarray, messages_sent: np.ndarray
    ) -> np.ndarray:
        """Per-interval, per-rank modelled seconds ``(L, n)`` from cumulative ``(L, n)`` counters
        (row 0 is the interval from the start of the run to the first log point), each rank on its
        own link."""
        c, b, m = self._deltas(compute_s, bytes_sent, messages_sent)
        return c + 8.0 * b / self.bandwidth_bps + m * self.latency_s

    def modelled_time(
        self, compute_s: np.ndarray, bytes_sent: np.ndarray, messages_sent: np.ndarray
    ) -> np.ndarray:
        """Cumulative modelled seconds ``(L,)`` at each log point (see the module docstring)."""
        c, b, m = self._deltas(compute_s, bytes_sent, messages_sent)
        if c.shape[1] == 0:
            return np.zeros(c.shape[0])
        if self.shared:
            return np.cumsum(
                c.max(axis=1)
                + 8.0 * b.sum(axis=1) / self.bandwidth_bps
                + m.max(axis=1) * self.latency_s
            )
        return np.cumsum((c + 8.0 * b / self.bandwidth_bps + m * self.latency_s).max(axis=1))

    def describe(self) -> str:
        """``10 Gbit/s, latency 5 µs`` (``… shared by all ranks`` for a shared link)."""
        return (
            f"{format_rate(self.bandwidth_bps)}{' shared by all ranks' if self.shared else ''}, "
            f"latency {format_seconds(self.latency_s)}"
        )


def format_rate(bps: float) -> str:
    for factor, unit in ((1e12, "Tbit/s"), (1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if bps >= factor:
            return f"{bps / factor:g} {unit}"
    return f"{bps:g} bit/s"


def format_seconds(s: float) -> str:
    if s == 0:
        return "0 s"
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if s >= factor:
            return f"{s / factor:g} {unit}"
    return f"{s / 1e-9:g} ns"
