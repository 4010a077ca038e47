"""The algorithm interface and what the runner hands each algorithm.

An algorithm is one file holding its state (named flat arrays) and its per-step update equations.
Its declaration — job keys, communication pattern, accepted compressors — is in ``catalog.py``;
everything it shares with others of its pattern lives in ``comm/``: a neighbour algorithm opens
named message streams (``stream``, ``comm/neighbor.py``) and never touches buffers, keys, tags,
exchanges or bit counts; its optimizers come from ``add_optimizer`` (``optim.py``), each with its
own job keys and state names. Algorithm modules do not import mpi4py.
``docs/writing-an-algorithm.md`` walks through one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mpidecent.algorithms.lr import unused_optimizer_keys
from mpidecent.algorithms.optim import LocalOptimizer
from mpidecent.comm.messages import Stopwatch, Traffic

if TYPE_CHECKING:
    from mpidecent.algorithms.catalog import AlgorithmSpec
    from mpidecent.comm.neighbor import Neighbors, Stream
    from mpidecent.comm.protocols import Collectives, MasterWorkerLink, Window
    from mpidecent.compression import Compressor
    from mpidecent.learning.problems import Objective


@dataclass
class StepStats:
    """What one rank did in one step. Bits are counted from the packed buffers (payload + headers),
    per out-edge; bytes are what was handed to MPI; seconds are wall-clock on this rank."""

    loss: float
    bits_sent: int
    bytes_sent: int
    messages_sent: int
    compute_s: float
    comm_s: float
    nonfinite: bool = (
        False  # this rank's state became NaN/inf and it sent a neutral message instead
    )


@dataclass
class Context:
    """Everything the runner builds for an algorithm on one rank: its declaration and job keys, the
    objective, the compressor, and the MPI objects its pattern connected (``neighbors`` for
    neighbour gossip, ``master_worker`` for master/worker, ``window`` and ``peers`` for one-sided
    gossip; ``collectives`` always)."""

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
    stragglers: Mapping[str, Any] | None = (
        None  # [stragglers] of the job (master/worker algorithms)
    )
    error_feedback: bool = (
        False  # [compression] error_feedback: wrap the algorithm's compressed stream
    )
    outer: Mapping[str, Any] | None = (
        None  # [outer]: local steps and an outer optimizer (local_steps.py)
    )

    def need_neighbors(self) -> Neighbors:
        """``neighbors``, which a neighbour-gossip algorithm uses (TypeError under another pattern:
        the runner connected none)."""
        if self.neighbors is None:
            raise TypeError(
                f"{self.spec.name} needs neighbour gossip but its pattern connected none"
            )
        return self.neighbors

    def need_window(self) -> Window:
        """``window``, which a one-sided gossip algorithm reads and publishes (TypeError under
        another pattern)."""
        if self.window is None:
            raise TypeError(
                f"{self.spec.name} needs a one-sided window but its pattern opened none"
            )
        return self.window

    def need_master_worker(self) -> MasterWorkerLink:
        """``master_worker``, a master/worker algorithm's link (TypeError under another
        pattern)."""
        if self.master_worker is None:
            raise TypeError(
                f"{self.spec.name} needs a master/worker link but its pattern made none"
            )
        return self.master_worker


class Algorithm(ABC):
    """Base class of every algorithm (declared in ``catalog.py``)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.compressor = ctx.compressor
        self.objective = ctx.objective
        self.watch = Stopwatch()
        self.streams: dict[str, Stream] = {}
        self.optimizers: dict[str, LocalOptimizer] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    def stream(
        self,
        name: str,
        vectors: int = 1,
        scalars: int = 0,
        rounds: int = 1,
        in_flight: int = 1,
        compressor: Compressor | None = None,
        error_feedback: bool = False,
    ) -> Stream:
        """Open the neighbour message stream ``name`` (``comm/neighbor.py``): ``vectors`` compressed
        vectors (default: with the job's compressor) and ``scalars`` exact float64 numbers per
        message, ``rounds`` exchanges per step, up to ``in_flight`` exchanges in flight at once.
        Open every stream in ``__init__``, the same ones in the same order on every rank; the name
        gives the stream its own tags and random key."""
        if self.ctx.neighbors is None:
            raise TypeError(
                f"{self.name} opens a message stream but its pattern is not neighbour gossip"
            )
        stream = self.ctx.neighbors.stream(
            name,
            compressor or self.compressor,
            self.ctx.seed,
            self.ctx.rank,
            self.watch,
            vectors=vectors,
            scalars=scalars,
            rounds=rounds,
            in_flight=in_flight,
            error_feedback=error_feedback,
        )
        self.streams[name] = stream
        return stream

    def add_optimizer(
        self, keys: Mapping[str, Any] | None = None, name: str = "optimizer", dim: int | None = None
    ) -> LocalOptimizer:
        """A local optimizer over d-vectors (``dim``, default the model's) configured by ``keys``
        (default: the ``[algorithm]`` keys ``optimizer``, ``momentum``, ``adam_*``) whose state is
        checkpointed as ``<name>_m``, ``<name>_v``, ``<name>_steps``; an algorithm may hold several
        (e.g. inner and outer), each under its own name."""
        if name in self.optimizers:
            raise ValueError(f"{self.name}: a second optimizer named {name!r}")
        opt = LocalOptimizer(
            self.ctx.params if keys is None else keys,
            self.objective.dim if dim is None else dim,
            self.ctx.dtype,
            name=name,
        )
        self.optimizers[name] = opt
        return opt

    def stats(self, loss: float) -> StepStats:
        """The step's numbers: the traffic of its streams' completed exchanges, the watch's seconds,
        whether a vector was non-finite. Call at the end of ``step``."""
        self.watch.compute()
        sent = Traffic()
        for stream in self.streams.values():
            taken = stream.traffic.take()
            sent.add(taken.bits, taken.bytes, taken.messages)
        return StepStats(
            loss,
            sent.bits,
            sent.bytes,
            sent.messages,
            self.watch.compute_s,
            self.watch.comm_s,
            any(s.nonfinite for s in self.streams.values()),
        )

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume this rank bit for bit, by name: ``own_state`` followed by
        every optimizer's arrays (in the order they were made)."""
        state = dict(self.own_state())
        for opt in self.optimizers.values():
            for key, array in opt.state().items():
                if key in state:
                    raise ValueError(
                        f"{self.name}: state name {key!r} is used twice; rename the optimizer"
                    )
                state[key] = array
        return state

    @abstractmethod
    def own_state(self) -> dict[str, np.ndarray]:
        """The algorithm's own arrays needed to resume this rank bit for bit, by name: the live
        arrays themselves (a restore writes into them), scalars and counters as shape-(1,) arrays,
        the same names in the same order on every rank. Its optimizers' arrays are added by
        ``state``. Buffers derived from these (e.g. z = x / y) are rebuilt by ``after_restore``;
        scratch buffers and messages are not state: a message in flight at a step boundary is either
        finished by ``drain`` or derived from the state (and started again after a resume).
        Randomness needs nothing here: it is derived from (seed, rank, step)."""

    def after_restore(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called after ``state()`` arrays were overwritten from a checkpoint."""

    def drain(self) -> None:
        """Finish every exchange this rank has in flight, without changing the state: the runner
        calls it on every rank at the same step boundary before a log row, before a checkpoint and
        at the end of the run, so that no message is left in the network when the state is read or
        the run closes. By default every stream's exchanges in flight are completed; what arrived
        stays in its message for the next step to use."""
        if self.ctx.neighbors is not None:
            self.ctx.neighbors.drain()

    def before_log(self) -> None:  # noqa: B027 - an optional hook, empty by default
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
        params = self.ctx.params
        # sgd, and no overlap: described as before those keys existed
        unused = unused_optimizer_keys(params) | (
            {"overlap"} if not params.get("overlap", True) else set()
        )
        keys = ", ".join(
            f"{p.name}={params[p.name]}" for p in self.spec.params if p.name not in unused
        )
        text = f"{self.name}({keys})"
        if self.spec.compressors != ("identity",):
            text += f" with {self.compressor.describe()}"
            if self.ctx.error_feedback:
                text += " and error feedback"
        return text
