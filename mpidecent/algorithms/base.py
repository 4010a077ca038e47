"""The algorithm interface, its registry, and what the runner hands each algorithm.

An algorithm is one file: it declares its job keys (``params``), what graph and mixing weights it needs,
its state (named flat arrays), and its per-step update. It talks to other ranks only through the comm
objects in its ``Context`` (a ``Neighborhood`` for graph exchanges, ``Collectives`` for reductions), and
compresses only through the shared ``Compressor``; it never re-implements packing, exchange or logging.
Algorithm modules do not import mpi4py, so they (and the job validation that reads their declarations)
load without MPI.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from mpidecent.errors import NonFiniteInputError
from mpidecent.params import Param
from mpidecent.rng import RandomKey

if TYPE_CHECKING:
    from mpidecent.compression import Compressor, Packed
    from mpidecent.learning.problems import Objective


class Exchange(Protocol):
    """A preallocated neighbour exchange of fixed-size byte messages (see ``comm/exchange.py``)."""

    def start(self, send_buf: np.ndarray, step: int = 0) -> None: ...

    def wait(self) -> np.ndarray: ...  # (in-degree of the step, recv_nbytes) uint8, row k from in-neighbour k


class Neighborhood(Protocol):
    """This rank's neighbours at each step of a static or time-varying graph (see ``comm/graph.py``)."""

    def in_neighbors(self, step: int = 0) -> np.ndarray: ...

    def out_neighbors(self, step: int = 0) -> np.ndarray: ...

    def exchange(self, send_nbytes: int, recv_nbytes: int) -> Exchange: ...


class Collectives(Protocol):
    """Reductions over all ranks (see ``comm/collectives.py``)."""

    size: int

    def allreduce_sum(self, array: np.ndarray) -> None: ...


@dataclass(frozen=True)
class MixingRow:
    """Row ``rank`` of the mixing matrix W of one slot of the schedule (row = receiver).

    ``in_neighbors`` in the order the exchange delivers their messages; ``in_weights`` (float64) the
    weights w_ij given to them; ``self_weight`` = w_ii; ``out_neighbors`` this rank's receivers.
    """

    in_neighbors: np.ndarray
    out_neighbors: np.ndarray
    self_weight: float
    in_weights: np.ndarray


def mixing_rows(graphs, slot_weights, rank: int) -> tuple[MixingRow, ...]:
    """Row ``rank`` of each slot's mixing matrix: ``graphs`` and ``slot_weights`` ((n, n) float64 each)
    are a schedule's graphs and weights, slot by slot."""
    return tuple(MixingRow(g.in_neighbors(rank), g.out_neighbors(rank), float(w[rank, rank]),
                           w[rank, g.in_neighbors(rank)]) for g, w in zip(graphs, slot_weights))


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


@dataclass(frozen=True)
class DataLayout:
    """Which data a rank trains on and evaluates (see ``Algorithm.data_layout``).

    The training set is cut into ``nodes`` partitions (the job's partition scheme). ``train`` lists
    (partition, weight) pairs: the rank's objective is Σ weight · mean loss of the partition (one
    partition with weight 1 = the usual F_i). ``evaluate`` is the partition this rank evaluates for the
    network metrics (None: none), so that every partition counts once. ``regularize``: whether the rank's
    gradient includes the ℓ2 term (a master that adds it itself turns it off on its workers).
    """

    nodes: int
    train: tuple[tuple[int, float], ...]
    evaluate: int | None
    regularize: bool = True


@dataclass
class Context:
    """Everything the runner builds for an algorithm on one rank."""

    rank: int
    size: int
    seed: int
    dtype: np.dtype
    params: Mapping[str, Any]
    objective: Objective
    compressor: Compressor
    collectives: Collectives
    neighborhood: Neighborhood | None = None
    # One mixing row per slot of the (possibly time-varying) graph; the row of step t is rows[t % period].
    rows: tuple[MixingRow, ...] = ()
    steps: int = 0  # iterations of the run
    l2: float = 0.0  # ℓ2 coefficient λ of the model
    stragglers: Mapping[str, Any] | None = None  # [stragglers] of the job (master/worker algorithms)
    master_worker: Any = None  # comm/master.py MasterWorker (master/worker algorithms)

    def row(self, step: int) -> MixingRow:
        return self.rows[step % len(self.rows)]

    @property
    def period(self) -> int:
        return len(self.rows)


class Stopwatch:
    """Accumulates compute and communication seconds of one step."""

    def __init__(self) -> None:
        self.compute_s = 0.0
        self.comm_s = 0.0
        self._t = time.perf_counter()

    def compute(self) -> None:
        now = time.perf_counter()
        self.compute_s += now - self._t
        self._t = now

    def comm(self) -> None:
        now = time.perf_counter()
        self.comm_s += now - self._t
        self._t = now


class Algorithm(ABC):
    """Base class of every algorithm; subclasses register with ``@register``."""

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    # "directed": a strongly connected digraph; "undirected": a connected undirected graph;
    # "complete": no graph (a collective over all ranks); "master": rank 0 serves ranks 1..n;
    # "gossip": one-sided reads of peers, the in-neighbours of a strongly connected graph (no graph
    # communicator; complete = any rank).
    graph: ClassVar[str] = "directed"
    # True: the runner reduces a status (divergence, stop signals) after every step. False: only at log and
    # checkpoint boundaries, so ranks need not wait for each other in between (master/worker with stragglers).
    status_every_step: ClassVar[bool] = True
    # Property W must have: "column_stochastic" (push-sum) or "doubly_stochastic" (D-PSGD), or None.
    weights_property: ClassVar[str | None] = None
    default_weights: ClassVar[str] = "column_uniform"
    # Compressor names this algorithm accepts (None = any; see also needs_contractive).
    compressors: ClassVar[tuple[str, ...] | None] = ("identity",)
    # The compressor must be contractive (E‖C(v) − v‖² ≤ (1 − δ)‖v‖²), as CHOCO-style gossip needs.
    needs_contractive: ClassVar[bool] = False
    # Time-varying schedules (e.g. one_peer_exponential) are supported.
    time_varying: ClassVar[bool] = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.compressor = ctx.compressor
        self.objective = ctx.objective
        self.nonfinite = False
        self._zeros: np.ndarray | None = None

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

    def close(self) -> None:
        """Collective, called on every rank at the end of a run (e.g. to free an RMA window)."""

    @classmethod
    def check_world(cls, job: Any, world_size: int) -> None:
        """Raise ``JobError`` if the job cannot run on ``world_size`` ranks (pure; called by plan_job)."""

    def events(self, steps_done: int) -> dict[str, np.ndarray]:
        """Arrays to store under /events at the end of the run (rank 0's are written)."""
        return {}

    @classmethod
    def data_layout(cls, job: Any, world_size: int, rank: int) -> DataLayout:
        """Default: one partition per rank, trained and evaluated by that rank."""
        return DataLayout(world_size, ((rank, 1.0),), rank)

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
        keys = ", ".join(f"{p.name}={self.ctx.params[p.name]}" for p in self.params)
        text = f"{self.name}({keys})"
        if self.compressors != ("identity",):
            text += f" with {self.compressor.describe()}"
        return text

    def encode_or_flag(self, v: np.ndarray, key: RandomKey, out: np.ndarray) -> Packed:
        """Encode ``v``; if it holds NaN/inf, flag this rank and send an all-zero message instead.

        A rank must never drop out of an exchange its neighbours are waiting on: the runner's per-step
        status reduction then stops every rank together with a clear message.
        """
        try:
            return self.compressor.encode(v, key, out)
        except NonFiniteInputError:
            self.nonfinite = True
            if self._zeros is None:
                self._zeros = np.zeros_like(v)
            return self.compressor.encode(self._zeros, key, out)


def decode_messages(compressor: Compressor, recv: np.ndarray, senders: np.ndarray, seed: int, step: int,
                    out: np.ndarray, offset: int = 0) -> np.ndarray:
    """Decode the payload at bytes [offset, offset + compressor.nbytes) of each received row k, sent by
    ``senders[k]`` at ``step``, into ``out[k]``; returns ``out[:len(senders)]``. A loop over messages
    (the in-degree), each decode vectorised."""
    end = offset + compressor.nbytes
    for k, sender in enumerate(senders):
        compressor.decode(recv[k, offset:end], RandomKey(seed, int(sender), step), out=out[k])
    return out[:len(senders)]


ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    ALGORITHMS[cls.name] = cls
    return cls


LR_PARAMS: tuple[Param, ...] = (
    Param("lr", float, 0.1, "learning rate α₀ (step size of the gradient step)", minimum=0.0),
    Param("lr_schedule", str, "constant",
          "step size α_t: constant = α₀; inverse = α₀ / (1 + t/lr_decay_steps); "
          "inverse_sqrt = α₀ / √(1 + t/lr_decay_steps)", choices=("constant", "inverse", "inverse_sqrt")),
    Param("lr_decay_steps", float, 100.0, "time scale of the decaying schedules, in steps",
          minimum=0.0, exclusive_minimum=True),
)


def step_size(params: Mapping[str, Any], t: int) -> float:
    """α_t of the job's schedule at iteration t (0-based)."""
    lr, schedule = float(params["lr"]), params["lr_schedule"]
    if schedule == "constant":
        return lr
    scale = 1.0 + t / float(params["lr_decay_steps"])
    return lr / scale if schedule == "inverse" else lr / scale ** 0.5
