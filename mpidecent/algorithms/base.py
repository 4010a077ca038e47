"""The algorithm interface and what the runner hands each algorithm.

An algorithm is one file holding its state (named flat arrays) and its per-step update equations. Its
declaration — job keys, communication pattern, accepted compressors — is in ``catalog.py``; everything
it shares with others of its pattern lives in ``comm/``: a neighbour algorithm opens ``GossipChannel``s
on ``ctx.neighbors`` and never touches buffers, keys, exchanges or bit counts. Algorithm modules do not
import mpi4py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mpidecent.algorithms.lr import unused_optimizer_keys
from mpidecent.comm.messages import Stopwatch, Traffic

if TYPE_CHECKING:
    from mpidecent.algorithms.catalog import AlgorithmSpec
    from mpidecent.comm.neighbor import GossipChannel, Neighbors
    from mpidecent.comm.protocols import Collectives, MasterWorkerLink, Window
    from mpidecent.compression import Compressor
    from mpidecent.learning.problems import Objective


@dataclass
class StepStats:
    """What one rank did in one step. Bits are counted from the packed buffers (payload + headers), per
    out-edge; bytes are what was handed to MPI; seconds are wall-clock on this rank."""

    loss: float
    bits_sent: int
    bytes_sent: int
    messages_sent: int
    compute_s: float
    comm_s: float
    nonfinite: bool = False  # this rank's state became NaN/inf and it sent a neutral message instead


@dataclass
class Context:
    """Everything the runner builds for an algorithm on one rank: its declaration and job keys, the
    objective, the compressor, and the MPI objects its pattern connected (``neighbors`` for neighbour
    gossip, ``master_worker`` for master/worker, ``window`` and ``peers`` for one-sided gossip;
    ``collectives`` always)."""

    spec: AlgorithmSpec
    rank: int
    size: int
    seed: int
    dtype: np.dtype
    params: Mapping[str, Any]
    objective: Objective
    compressor: Compressor
    collectives: Collectives
    neighbors: Neighbors | None = None
    master_worker: MasterWorkerLink | None = None
    window: Window | None = None
    peers: np.ndarray | None = None
    steps: int = 0  # iterations of the run
    l2: float = 0.0  # ℓ2 coefficient λ of the model
    stragglers: Mapping[str, Any] | None = None  # [stragglers] of the job (master/worker algorithms)
    error_feedback: bool = False  # [compression] error_feedback: wrap the algorithm's compressed stream


class Algorithm(ABC):
    """Base class of every algorithm (declared in ``catalog.py``)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.compressor = ctx.compressor
        self.objective = ctx.objective
        self.watch = Stopwatch()
        self.channels: list[GossipChannel] = []

    @property
    def name(self) -> str:
        return self.spec.name

    def channel(self, vectors: int = 1, scalars: int = 0, rounds: int = 1) -> GossipChannel:
        """Open a neighbour message stream (see ``comm/neighbor.py``); every rank opens its channels in
        the same order."""
        assert self.ctx.neighbors is not None, f"{self.name} needs the neighbour pattern"
        channel = self.ctx.neighbors.channel(self.compressor, self.ctx.seed, self.ctx.rank, self.watch,
                                             vectors=vectors, scalars=scalars, rounds=rounds)
        self.channels.append(channel)
        return channel

    def stats(self, loss: float) -> StepStats:
        """The step's numbers: the traffic of its channels, the watch's seconds, whether a vector was
        non-finite. Call at the end of ``step``."""
        self.watch.compute()
        sent = Traffic()
        for channel in self.channels:
            taken = channel.traffic.take()
            sent.add(taken.bits, taken.bytes, taken.messages)
        return StepStats(loss, sent.bits, sent.bytes, sent.messages, self.watch.compute_s, self.watch.comm_s,
                         any(c.nonfinite for c in self.channels))

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume this rank bit for bit, by name: the live arrays themselves (a
        restore writes into them), scalars and counters as shape-(1,) arrays, the same names in the same
        order on every rank. Buffers derived from these (e.g. z = x / y) are rebuilt by
        ``after_restore``; scratch buffers and messages are not state. Randomness needs nothing here: it
        is derived from (seed, rank, step)."""

    def after_restore(self) -> None:
        """Called after ``state()`` arrays were overwritten from a checkpoint."""

    def before_log(self) -> None:
        """Collective, called on every rank before the metrics of a log point are computed."""

    def events(self, steps_done: int) -> dict[str, np.ndarray]:
        """Arrays to store under /events at the end of the run (rank 0's are written)."""
        return {}

    @abstractmethod
    def step(self, t: int) -> StepStats:
        """Run iteration ``t`` (0-based) on this rank; every rank calls it for the same t."""

    @abstractmethod
    def model_view(self) -> np.ndarray:
        """The model this rank reports (de-biased where the algorithm needs it), length dim."""

    def extra_metrics(self) -> dict[str, float]:
        """Algorithm-specific per-rank numbers logged as /metrics/rank/<name>."""
        return {}

    def describe(self) -> str:
        unused = unused_optimizer_keys(self.ctx.params)  # sgd: described as before the optimizer keys
        keys = ", ".join(f"{p.name}={self.ctx.params[p.name]}" for p in self.spec.params if p.name not in unused)
        text = f"{self.name}({keys})"
        if self.spec.compressors != ("identity",):
            text += f" with {self.compressor.describe()}"
            if self.ctx.error_feedback:
                text += " and error feedback"
        return text
