"""Every algorithm's declaration: job keys, communication pattern, accepted compressors, checks,
memory use and the cases of its MPI tests.

Pure (numpy, the pattern declarations, the gradient codes): reading and checking a job
(``config.py``, ``plan.py``) uses only these declarations and never imports an algorithm's code,
torch or mpi4py. The implementation — one file per family holding the state and the update equations
— is imported by ``AlgorithmSpec.load`` when a run starts.

To add an algorithm: write its file (a subclass of ``algorithms.base.Algorithm``) and declare it
here, in one ``AlgorithmSpec`` (nothing else names it):

- ``params``, ``pattern``, ``compressors`` and the checks: what the job file may say and which
  graphs fit;
- ``memory``: the d-sized vectors it keeps and the messages it holds (``MemoryUse``); the memory
  estimate (``footprint.py``) reads only this, so count its state as its file allocates it;
- ``test_cases``: the cases its MPI tests run, as ``"section.key=value"`` overrides of the tests'
  base job for its pattern (the tests set ``algorithm.name`` and the pattern's graph; the default is
  one case named after the algorithm, no overrides). Every case runs in the bit-identical resume
  test (``tests/mpi/test_checkpoint.py``) and, for a ``NeighborGossip`` algorithm, in the in-memory
  twin (``tests/mpi/test_memory_twin.py``); where stop-and-resume is not step-for-step
  bit-identical, set ``resume_tested_by`` to the test that checks its resume instead
  (``"tests/<file>.py::<test>: why"``).

``tests/unit/test_catalog_declarations.py`` fails on a spec without test cases, a resume test that
is not named, or an algorithm named outside its declaration in ``footprint.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpidecent.algorithms.lr import LR_PARAMS, STEP_PARAMS, _below_one
from mpidecent.coding.codes import GradientCode, crc, frc, sgc, uncoded
from mpidecent.comm.patterns import AllReduce, MasterWorker, NeighborGossip, OneSidedGossip, Pattern
from mpidecent.errors import JobError
from mpidecent.gossip.versions import RATE_POLICIES
from mpidecent.params import Param


@dataclass(frozen=True)
class DataLayout:
    """Which data a rank trains on and evaluates.

    The training set is cut into ``nodes`` partitions (the job's partition scheme). ``train`` lists
    (partition, weight) pairs: the rank's objective is Σ weight · mean loss of the partition (one
    partition with weight 1 = the usual F_i). ``evaluate`` is the partition this rank evaluates for
    the network metrics (None: none), so that every partition counts once. ``regularize``: whether
    the rank's gradient includes the ℓ2 term (a master that adds it itself turns it off on its
    workers).
    """

    nodes: int
    train: tuple[tuple[int, float], ...]
    evaluate: int | None
    regularize: bool = True


def one_partition_per_rank(job: Any, world_size: int, rank: int) -> DataLayout:
    """The usual layout: partition ``rank`` of ``world_size``, trained and evaluated by that
    rank."""
    return DataLayout(world_size, ((rank, 1.0),), rank)


@dataclass(frozen=True)
class MessageStream:
    """One stream of messages as the memory estimate counts it: a message carries ``vectors``
    (compressed) d-vectors, and ``in_flight`` sets of buffers are held at once. One set is what the
    pattern holds per message (neighbour gossip: a send buffer and one receive buffer per
    in-neighbour, so a stream costs vectors × in_flight × (1 + max in-degree) messages of one
    d-vector)."""

    vectors: int = 1
    in_flight: int = 1


@dataclass(frozen=True)
class MemoryUse:
    """What one rank of an algorithm holds, in d-sized vectors, for the memory estimate
    (``footprint.py``).

    ``state_vectors``: its own state beyond the parameters and their gradient (scratch, mixes,
    momenta, push-sum weights' vectors; a little conservative); the local optimizer's, error
    feedback's and the compressor's are added by the estimate. ``copies_per_slot_and_neighbour``:
    vectors kept in every slot of the graph schedule for the rank itself and for each in-neighbour
    (quantized push-sum's reference copies x̂_i, x̂_j), counted period × (1 + max in-degree) times.
    ``streams``: its message streams.
    """

    state_vectors: int
    copies_per_slot_and_neighbour: int = 0
    streams: tuple[MessageStream, ...] = (MessageStream(),)

    @property
    def message_vectors(self) -> int:
        """Compressed d-vectors in one buffer set of every stream together: Σ vectors ×
        in_flight."""
        return sum(s.vectors * s.in_flight for s in self.streams)


CONSERVATIVE_MEMORY = MemoryUse(state_vectors=5)  # for a spec that does not declare its own


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm as the job file and the planner see it.

    ``implementation``: "module:Class" under ``mpidecent.algorithms``. ``compressors``: the
    ``[compression] name`` values it accepts (None: any). ``needs_contractive``: the operator must
    be contractive (E‖C(v) − v‖² ≤ (1 − δ)‖v‖²), as CHOCO-style gossip needs; ``needs_unbiased``:
    the operator must be unbiased (E[Q(v)] = v), as compressed Push-Pull needs. ``error_feedback``:
    it has a compressed stream that error feedback may wrap (``[compression] error_feedback =
    true``). ``status_every_step``: the runner starts an agreement on divergence and stop signals
    after every step, pipelined so that no step waits for it (``comm/status.py``: every rank acts at
    the same boundary, at most the graph's diameter later) (False: only at log and checkpoint
    boundaries, for algorithms whose ranks do not step together). ``check_world(job, n, weights)``:
    further checks for n ranks and each slot's mixing matrix (JobError). ``code``: master/worker
    algorithms' gradient code, (params, stragglers, workers, seed) → ``GradientCode``.

    ``memory``: what a rank holds (``MemoryUse``), or job → ``MemoryUse`` where a key changes it;
    the memory estimate reads it through ``memory_use``. ``test_cases``: case name →
    ``"section.key=value"`` overrides the MPI tests apply to their base job for the pattern (see the
    module docstring; empty: one case named after the algorithm, ``cases``). ``resume_tested_by``:
    None when the bit-identical resume test (``tests/mpi/test_checkpoint.py``) runs every case;
    otherwise ``"tests/<file>.py::<test>: why"``, the test that checks this algorithm's resume
    instead. ``outer``: how a round of local steps (``[outer]``, ``local_steps.py``) aggregates with
    this algorithm's pattern: "allreduce", "gossip" (exact), "compressed_gossip" (reference copies
    of φ and a compressed pseudo-gradient), "tracking" (Push-Pull of φ and a tracker of the
    pseudo-gradients); None: ``[outer]`` is refused.
    """

    name: str
    doc: str
    pattern: Pattern
    implementation: str
    params: tuple[Param, ...] = LR_PARAMS
    compressors: tuple[str, ...] | None = ("identity",)
    needs_contractive: bool = False
    needs_unbiased: bool = False
    error_feedback: bool = False
    status_every_step: bool = True
    check_world: Callable[[Any, int, tuple[np.ndarray, ...]], None] | None = None
    data_layout: Callable[[Any, int, int], DataLayout] = one_partition_per_rank
    code: Callable[[Mapping[str, Any], Mapping[str, Any], int, int], GradientCode] | None = None
    memory: MemoryUse | Callable[[Any], MemoryUse] = CONSERVATIVE_MEMORY
    test_cases: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    resume_tested_by: str | None = None
    outer: str | None = None

    def load(self) -> type:
        """The implementing class (imports its module: torch, and mpi4py where it needs it)."""
        module, _, cls = self.implementation.partition(":")
        return getattr(importlib.import_module(f"mpidecent.algorithms.{module}"), cls)

    def memory_use(self, job: Any) -> MemoryUse:
        """What one rank of ``job`` holds (``memory``, evaluated for the job where it depends on it;
        with ``[outer]`` the round of local steps' own, ``local_steps_memory``)."""
        if getattr(job, "outer", None):
            return local_steps_memory(self, job)
        return self.memory if isinstance(self.memory, MemoryUse) else self.memory(job)

    def cases(self) -> dict[str, tuple[str, ...]]:
        """The MPI tests' cases: ``test_cases``, or one case named after the algorithm with no
        overrides."""
        return dict(self.test_cases) or {self.name: ()}


# ---- shared keys ---------------------------------------------------------------------------------

DEBIAS = Param(
    "debias",
    bool,
    True,
    "take gradients at and report z = x / y (false: use the raw mass x; a negative control that "
    "is biased on irregular digraphs)",
)
OVERLAP = Param(
    "overlap",
    bool,
    False,
    "overlap communication with computation: the message of step t (built from x_t, before the "
    "gradient) is sent at the end of step t − 1 and travels while step t computes ∇F_i(z_t); the "
    "update becomes x ← P x − α d (SGP's overlap; quantized: x ← x + γ(Σ_j w_ij x̂_j − (1 − w_ii) "
    "x̂_i) − α d)",
)
BETA = Param("beta", float, 0.9, "momentum coefficient β", minimum=0.0, maximum=1.0)
GOSSIP_GAMMA = Param(
    "gamma",
    float,
    0.1,
    "consensus step size γ of each gossip round; with a biased operator (topk, sign, "
    "qsgd_contractive, randk with scaled = false) keep γ < 1 (e.g. ≤ 0.5): γ = 1 can diverge",
    minimum=0.0,
    exclusive_minimum=True,
    maximum=1.0,
)

# ---- async gossip --------------------------------------------------------------------------------


def _rank_list(value: list) -> str | None:
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return "must be a list of rank numbers (integers ≥ 0)"
    if len(set(value)) != len(value):
        return "lists a rank twice"
    return None


def _check_slow_ranks(job: Any, world_size: int, weights: tuple[np.ndarray, ...] = ()) -> None:
    slow = [r for r in job.algorithm["slow_ranks"] if r >= world_size]
    if slow:
        raise JobError(
            f"[algorithm] slow_ranks lists rank {slow[0]} but only {world_size} ranks were started "
            f"(ranks 0..{world_size - 1})"
        )


ASYNC_PARAMS: tuple[Param, ...] = (
    *STEP_PARAMS,
    Param(
        "local_steps",
        int,
        1,
        "K: local SGD steps per update round (one runner step = one SGD step)",
        minimum=1,
    ),
    Param(
        "gossip_rate",
        float,
        2.0,
        "λ: gossips per unit of logical time (clock = logical) or per second "
        "(clock = wall), before rate_policy",
        minimum=0.0,
        exclusive_minimum=True,
    ),
    Param(
        "rate_policy",
        str,
        "constant",
        "λ_i = gossip_rate (constant) or gossip_rate · ln n (log_n: "
        "staleness stays bounded as n grows)",
        choices=RATE_POLICIES,
    ),
    Param(
        "clock",
        str,
        "logical",
        "logical: seeded event times (rounds c + Exp(μ), gossips Exp(λ)), "
        "reproducible event order per rank; wall: gossips at Exp(λ) seconds of real time",
        choices=("logical", "wall"),
    ),
    Param(
        "round_shift",
        float,
        0.5,
        "c: fixed part of a round's logical length (version rate λ_e = 1/(c + 1/μ))",
        minimum=0.0,
    ),
    Param(
        "round_rate",
        float,
        2.0,
        "μ: rate of the exponential part of a round's logical length",
        minimum=0.0,
        exclusive_minimum=True,
    ),
    Param(
        "deadline_s",
        float,
        0.0,
        "shared wall-clock deadline in seconds after the start: every rank "
        "stops working then (0 = none: each rank runs its [run] steps)",
        minimum=0.0,
    ),
    Param(
        "slow_ranks",
        list,
        [],
        "ranks made slow: each of their rounds sleeps slow_delay_shift_s + "
        "Exp(slow_delay_mean_s) seconds (seeded)",
        check=_rank_list,
    ),
    Param(
        "slow_delay_shift_s",
        float,
        0.0,
        "slow ranks: fixed part of the sleep per round, seconds",
        minimum=0.0,
    ),
    Param(
        "slow_delay_mean_s",
        float,
        0.02,
        "slow ranks: mean of the exponential part of the sleep, seconds",
        minimum=0.0,
    ),
    Param(
        "sample_every",
        int,
        1,
        "sample the staleness every this many rounds (reads every rank's round "
        "counter: n Gets of 8 bytes)",
        minimum=1,
    ),
)

# ---- master/worker: gradient codes, data layout, checks ------------------------------------------


def straggle_probability(table: Mapping[str, Any], tolerance: int, workers: int) -> float:
    """p of SGC's scale 1/(d(1 − p)): the chance that a worker is among the stragglers of a step."""
    if table["model"] == "bernoulli":
        return float(table["p"])
    if table["model"] == "fixed":
        return table["count"] / workers
    if table["model"] == "delay":
        return tolerance / workers
    return 0.0


def gradient_code(
    params: Mapping[str, Any], stragglers: Mapping[str, Any], workers: int, seed: int
) -> GradientCode:
    kind = params["code"]
    if kind == "frc":
        return frc(workers, params["stragglers"])
    if kind == "crc":
        return crc(workers, params["stragglers"], seed)
    return sgc(
        workers,
        params["replication"],
        straggle_probability(stragglers, params["stragglers"], workers),
    )


def uncoded_code(
    params: Mapping[str, Any], stragglers: Mapping[str, Any], workers: int, seed: int
) -> GradientCode:
    return uncoded(workers)


def _coded_layout(code: Callable[..., GradientCode]) -> Callable[[Any, int, int], DataLayout]:
    def layout(job: Any, world_size: int, rank: int) -> DataLayout:
        """Worker w (rank w + 1) trains on the partitions it holds, weighted B_wj / n, and evaluates
        partition w (so each partition counts once); the master holds no data."""
        workers = world_size - 1
        if rank == 0:
            return DataLayout(workers, (), None, regularize=False)
        w = rank - 1
        matrix = code(job.algorithm, job.stragglers, workers, job.run["seed"])
        return DataLayout(
            workers,
            tuple((int(j), float(matrix.B[w, j]) / workers) for j in matrix.partitions(w)),
            w,
            regularize=False,
        )

    return layout


def _coded_check(
    code: Callable[..., GradientCode],
) -> Callable[[Any, int, tuple[np.ndarray, ...]], None]:
    def check(job: Any, n: int, weights: tuple[np.ndarray, ...]) -> None:
        """A code that fits n − 1 workers and survives the job's stragglers."""
        params, stragglers = job.algorithm, job.stragglers
        workers = n - 1
        try:
            matrix = code(params, stragglers, workers, job.run["seed"])
        except ValueError as err:
            raise JobError(
                f"[algorithm] {err} ({workers} workers = ranks − 1); change stragglers or the "
                "number of ranks"
            ) from None
        exact = matrix.exact and not params.get("approximate", False)
        if stragglers["model"] == "fixed" and stragglers["count"] > workers - 1:
            raise JobError(
                f"[stragglers] count = {stragglers['count']} leaves no worker among {workers}"
            )
        if exact and stragglers["model"] == "fixed" and stragglers["count"] > matrix.tolerance:
            raise JobError(
                f"[stragglers] count = {stragglers['count']} is more than the {params['code']} "
                f"code tolerates (stragglers = {matrix.tolerance}); raise [algorithm] stragglers "
                "or set approximate = true"
            )
        if exact and stragglers["model"] == "bernoulli":
            raise JobError(
                f'[stragglers] model = "bernoulli" can exceed what the exact {params["code"]} code '
                f'tolerates; use code = "sgc" or set [algorithm] approximate = true'
            )

    return check


_MASTER_WORKER_RESUME = (
    "tests/mpi/test_gradient_coding.py::test_resume_is_bit_identical_and_the_stop_waits_for_a_"
    "boundary: the ranks agree on a stop only at log boundaries, so the run stops at the next "
    "log step, not after the step the signal came in"
)


def _master_worker(
    name: str,
    doc: str,
    implementation: str,
    params: tuple[Param, ...],
    code: Callable[..., GradientCode],
) -> AlgorithmSpec:
    return AlgorithmSpec(
        name,
        doc,
        MasterWorker(),
        implementation,
        params,
        compressors=None,
        error_feedback=True,
        status_every_step=False,
        check_world=_coded_check(code),
        data_layout=_coded_layout(code),
        code=code,
        memory=MemoryUse(state_vectors=3),
        resume_tested_by=_MASTER_WORKER_RESUME,
    )


# ---- gradient tracking: pull weights, checks, memory ---------------------------------------------


def _check_push_pull(job: Any, n: int, weights: tuple[np.ndarray, ...]) -> None:
    """γ only with a compressor; ``pull_weights = "topology"`` only with row-stochastic [topology]
    weights."""
    params = job.algorithm
    if job.compression["name"] == "identity" and params["gamma"] != 1.0:
        raise JobError(
            f"[algorithm] gamma = {params['gamma']:g} is the consensus step of compressed "
            "Push-Pull, "
            'but [compression] name = "identity" runs exact Push-Pull; remove gamma or choose an '
            "unbiased compressor (e.g. qsgd)"
        )
    if params["pull_weights"] == "topology":
        from mpidecent.topology import is_row_stochastic

        if not all(map(is_row_stochastic, weights)):
            raise JobError(
                '[algorithm] pull_weights = "topology" needs row-stochastic [topology] weights, '
                "but "
                f"weights = {job.topology['weights']!r} are not row stochastic on this graph; use "
                'pull_weights = "row_uniform" (or weights = "metropolis" on an undirected graph)'
            )


def _push_pull_memory(job: Any) -> MemoryUse:
    """y, g^old, the mix (+ the scratch of the copies); two streams; compressed: x̂ and ŷ per slot
    for the rank and each in-neighbour."""
    streams = (MessageStream(), MessageStream())
    if job.compression["name"] == "identity":
        return MemoryUse(state_vectors=3, streams=streams)
    return MemoryUse(state_vectors=4, copies_per_slot_and_neighbour=2, streams=streams)


PULL_WEIGHTS = Param(
    "pull_weights",
    str,
    "row_uniform",
    "R, the row-stochastic weights of the models: row_uniform (R_ij = 1 / (in-degree(i) + 1), "
    "what receiver i knows alone) or topology (the [topology] weights themselves, which must "
    "then be row stochastic, e.g. metropolis on an undirected graph: R = C)",
    choices=("row_uniform", "topology"),
)

# ---- local steps and outer optimizers: [outer] (local_steps.py) ----------------------------------

OUTER_PARAMS: tuple[Param, ...] = (
    Param(
        "every",
        int,
        1,
        "H: inner steps per round; the round's pseudo-gradient Δ = φ − θ is aggregated and the "
        "outer step taken once per round (the [algorithm]'s optimizer keys are the inner "
        "optimizer)",
        minimum=1,
    ),
    Param(
        "optimizer",
        str,
        "nesterov",
        "outer optimizer on the aggregated pseudo-gradient Δ̄: nesterov (DiLoCo: m ← μ m + Δ̄, φ ← "
        "φ − η (Δ̄ + μ m)), heavy_ball (m ← μ m + Δ̄, φ ← φ − η m) or sgd (φ ← φ − η Δ̄; η = 1 is "
        "Local SGD, model averaging)",
        choices=("nesterov", "heavy_ball", "sgd"),
    ),
    Param("lr", float, 0.7, "η: the outer step size", minimum=0.0, exclusive_minimum=True),
    Param(
        "momentum", float, 0.9, "μ: the outer momentum, 0 ≤ μ < 1", minimum=0.0, check=_below_one
    ),
    Param(
        "delay",
        int,
        0,
        "τ: the round's exchange is started at its end and applied τ inner steps into the next "
        "round, overlapping them (Streaming DiLoCo); θ keeps those steps, θ ← θ + (φ_new − θ_end); "
        "0 ≤ τ < every",
        minimum=0,
    ),
    Param(
        "pairing",
        str,
        "graph",
        "graph: aggregate over the algorithm's own pattern and [topology]; random: NoLoCo, every "
        "round each rank averages with one partner of a permutation seeded by (seed, round) (no "
        "communication to agree; n odd: the last rank of the permutation sits out) and takes "
        "NoLoCo's step m ← μ m − η Δ̄ + η (φ̄ − φ), φ ← φ + m (dpsgd or push_sum only; no "
        "[topology])",
        choices=("graph", "random"),
    ),
)
OUTER_KEYS = tuple(p.name for p in OUTER_PARAMS)
_OUTER_REFUSED = {
    "gradient_coding": "its master/worker rounds are gradient codes",
    "uncoded": "its master/worker rounds are gradient codes",
    "async_gossip": "it already takes K local steps per round without a barrier",
    "push_diging": "its rounds are not implemented; push_pull with [outer] tracks the "
    "pseudo-gradients",
}


def local_steps_memory(spec: AlgorithmSpec, job: Any) -> MemoryUse:
    """``local_steps.py``: φ, its de-biased view, Δ, Δ̄, the kept steps, the outer momentum and
    NoLoCo's φ_old; compressed: three scratch vectors, Δ's error memory and the copies of φ; one
    stream of two vectors."""
    if spec.outer == "allreduce":
        return MemoryUse(state_vectors=7, streams=())
    if spec.outer == "compressed_gossip":
        return MemoryUse(
            state_vectors=11, copies_per_slot_and_neighbour=1, streams=(MessageStream(vectors=2),)
        )
    if spec.outer == "tracking":  # + y, Δ_old, y⁺, the mix; streams "model" and "tracker"
        return MemoryUse(state_vectors=11, streams=(MessageStream(), MessageStream()))
    return MemoryUse(state_vectors=8, streams=(MessageStream(vectors=2),))


def outer_algorithms() -> list[str]:
    """The algorithms that accept [outer]."""
    return [spec.name for spec in ALGORITHMS.values() if spec.outer is not None]


def check_outer(
    job: Any, outer_table: Mapping[str, Any], topology_table: Mapping[str, Any] | None
) -> None:
    """One-line JobError for an [outer] table that cannot run with the job's algorithm, compressor
    or graph (``outer_table``/``topology_table``: the keys the job file gave)."""
    spec, outer, params = ALGORITHMS[job.algorithm["name"]], job.outer, job.algorithm
    if spec.outer is None:
        why = _OUTER_REFUSED.get(spec.name, "it has no round aggregation")
        raise JobError(
            f"[outer] does not apply to {spec.name} ({why}); remove [outer] or use one of "
            f"{', '.join(outer_algorithms())}"
        )
    every, delay = outer["every"], outer["delay"]
    if delay >= every:
        raise JobError(
            f"[outer] delay = {delay} must be smaller than every = {every}: a round's exchange is "
            "applied within the next round; lower delay or raise every"
        )
    if every > job.run["steps"]:
        raise JobError(
            f"[outer] every = {every} is more than [run] steps = {job.run['steps']}: no round "
            "would end; lower every or raise steps"
        )
    if params.get("overlap"):
        raise JobError(
            "[algorithm] overlap = true overlaps per-step exchanges; with [outer] overlap the "
            "round's exchange with [outer] delay instead and remove overlap"
        )
    if params.get("debias") is False or params.get("reference") is False:
        key = "debias" if params.get("debias") is False else "reference"
        raise JobError(
            f"[algorithm] {key} = false is a negative control of the per-step algorithm; with "
            f"[outer] remove {key}"
        )
    if outer["pairing"] == "random":
        if spec.outer != "gossip":
            raise JobError(
                '[outer] pairing = "random" averages exact models between pairs: use it with '
                f"dpsgd or push_sum, not {spec.name}"
            )
        if topology_table and topology_table.get("kind") != "random_pairs":
            raise JobError(
                '[outer] pairing = "random" draws a new partner for every rank each round: remove '
                '[topology] or set its kind = "random_pairs" (or set pairing = "graph" to use the '
                "graph)"
            )
        if outer_table.get("optimizer", "heavy_ball") != "heavy_ball":
            raise JobError(
                f'[outer] pairing = "random" takes NoLoCo\'s momentum step (lr, momentum), not '
                f'optimizer = {outer_table["optimizer"]!r}: remove optimizer (or set "heavy_ball")'
            )
    if spec.outer == "tracking" and (
        job.compression["name"] != "identity" or params.get("normalize_tracker")
    ):
        key = (
            "[compression] name"
            if job.compression["name"] != "identity"
            else "[algorithm] normalize_tracker"
        )
        raise JobError(
            f"{key}: push_pull with [outer] tracks the pseudo-gradients with exact messages only; "
            "remove it (or use quantized_push_sum with [outer] for compressed rounds)"
        )
    operator = _operator(job) if job.compression["name"] != "identity" else None
    if operator is not None and not operator.unbiased and not job.compression["error_feedback"]:
        raise JobError(
            f"[compression] name = {job.compression['name']!r} is biased: with [outer] the "
            "pseudo-gradient it compresses needs error feedback; set [compression] error_feedback "
            "= true or use an unbiased operator (e.g. qsgd)"
        )


# ---- the registry --------------------------------------------------------------------------------

_DIRECTED = NeighborGossip(directed=True, weights="column_stochastic", time_varying=True)
_UNDIRECTED = NeighborGossip(directed=False, weights="doubly_stochastic")

ALGORITHMS: Mapping[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec(
            "allreduce_sgd",
            "centralized all-reduce SGD (the data-parallel reference); local optimizer on "
            "the averaged gradient",
            AllReduce(),
            "allreduce_sgd:AllreduceSGD",
            STEP_PARAMS,
            memory=MemoryUse(state_vectors=2),
            outer="allreduce",
            test_cases={
                "allreduce_sgd": (),
                "allreduce_heavy_ball": ("algorithm.optimizer=heavy_ball",),
                # DiLoCo: a round of 3 inner Adam steps, outer Nesterov, the all-reduce in flight
                # for one inner step (a checkpoint mid-round and mid-exchange)
                "diloco": (
                    "outer.every=3",
                    "outer.delay=1",
                    "algorithm.optimizer=adam",
                    "algorithm.lr=0.05",
                ),
            },
        ),
        AlgorithmSpec(
            "async_gossip",
            "asynchronous randomized gossip on one-sided MPI windows: K local SGD steps per round, "
            "pull-and-average with a random peer at rate λ, version vectors and staleness (Mitra & "
            "Ulukus 2024); local optimizer in the local steps",
            OneSidedGossip(),
            "async_gossip:AsyncGossip",
            ASYNC_PARAMS,
            status_every_step=False,
            check_world=_check_slow_ranks,
            memory=MemoryUse(state_vectors=4),
            resume_tested_by=(
                "tests/mpi/test_async_gossip.py::"
                "test_stop_and_resume_continues_every_ranks_event_sequence: the models depend on "
                "the real interleaving of one-sided reads, so the resume is checked on every "
                "rank's logical event sequence instead of bit for bit"
            ),
        ),
        AlgorithmSpec(
            "dpsgd",
            "decentralized parallel SGD (D-PSGD) over an undirected graph, full-precision "
            "exchange; local optimizer in the step x ← Σ_j w_ij x_j − α d",
            _UNDIRECTED,
            "dpsgd:DPSGD",
            STEP_PARAMS,
            memory=MemoryUse(state_vectors=3),
            outer="gossip",
            test_cases={
                "dpsgd": (),
                # a local optimizer with state (algorithms/optim.py): m, v and the step count
                "dpsgd_adam": ("algorithm.optimizer=adam", "algorithm.lr=0.05"),
                "dpsgd_local_steps": ("outer.every=3", "outer.delay=2"),
                # NoLoCo: a new random pairing every round, no fixed graph
                "noloco": ("outer.every=2", "outer.pairing=random", "outer.momentum=0.5"),
            },
        ),
        _master_worker(
            "gradient_coding",
            "gradient coding with stragglers, master/worker (Li & Skoglund 2024); 1-bit (onebit) "
            "or full-precision (identity) messages, or any other operator's; the master's local "
            "optimizer steps on the decoded gradient (+ ℓ2)",
            "gradient_coding:GradientCoding",
            (
                *STEP_PARAMS,
                Param(
                    "code",
                    str,
                    "frc",
                    "frc (fractional repetition), crc (cyclic repetition), sgc (stochastic)",
                    choices=("frc", "crc", "sgc"),
                ),
                Param(
                    "stragglers",
                    int,
                    1,
                    "s: stragglers an exact code (frc, crc) tolerates; with the "
                    "delay model the master waits for n − s workers",
                    minimum=0,
                ),
                Param("replication", int, 2, "sgc: workers holding each partition", minimum=1),
                Param(
                    "approximate",
                    bool,
                    False,
                    "allow more stragglers than the code tolerates "
                    "(rescaled partial decoding instead of an error)",
                ),
            ),
            gradient_code,
        ),
        _master_worker(
            "uncoded",
            "uncoded master/worker SGD: one partition per worker, the non-stragglers' messages "
            "rescaled by n/|F|; the master's local optimizer steps on their estimate (+ ℓ2)",
            "gradient_coding:Uncoded",
            (
                *STEP_PARAMS,
                Param(
                    "stragglers",
                    int,
                    0,
                    "with the delay model the master waits for n − s workers",
                    minimum=0,
                ),
            ),
            uncoded_code,
        ),
        AlgorithmSpec(
            "dmsgd",
            "momentum-accelerated consensus SGD: neighbours share parameters and momentum "
            "(Balu et al. 2021); its momentum is the algorithm's own, so no local optimizer keys",
            _UNDIRECTED,
            "momentum:DMSGD",
            (*LR_PARAMS, BETA),
            memory=MemoryUse(state_vectors=5, streams=(MessageStream(vectors=2),)),
        ),  # x and momentum
        AlgorithmSpec(
            "local_momentum",
            "decentralized SGD with heavy-ball momentum kept local, only models mixed "
            "(CDMSGD-style baseline); its momentum is the algorithm's own, so no local optimizer "
            "keys",
            _UNDIRECTED,
            "momentum:LocalMomentum",
            (*LR_PARAMS, BETA),
            memory=MemoryUse(state_vectors=3),
        ),
        AlgorithmSpec(
            "multi_gossip",
            "gradient step then Q compressed gossip rounds (Hashemi et al.); Q = 1 is "
            "CHOCO-SGD; local optimizer in the gradient step",
            _UNDIRECTED,
            "multi_gossip:MultiGossip",
            (
                *STEP_PARAMS,
                GOSSIP_GAMMA,
                Param(
                    "gossip_rounds",
                    int,
                    1,
                    "Q: compressed gossip rounds per gradient step",
                    minimum=1,
                ),
            ),
            compressors=None,
            needs_contractive=True,
            memory=MemoryUse(state_vectors=5),
            test_cases={
                "multi_gossip": (
                    "algorithm.gossip_rounds=2",
                    "compression.name=topk",
                    "compression.fraction=0.5",
                ),
                "multi_gossip_torus": (
                    "algorithm.gossip_rounds=3",
                    "algorithm.gamma=0.4",
                    "compression.name=qsgd_contractive",
                    "compression.bits=2",
                    "topology.kind=torus",
                ),
            },
        ),
        AlgorithmSpec(
            "choco_sgd",
            "CHOCO-SGD: gradient step then one compressed gossip round (multi_gossip with "
            "Q = 1); local optimizer in the gradient step",
            _UNDIRECTED,
            "multi_gossip:MultiGossip",
            (*STEP_PARAMS, GOSSIP_GAMMA),
            compressors=None,
            needs_contractive=True,
            memory=MemoryUse(state_vectors=5),
            outer="compressed_gossip",
            test_cases={
                "choco_sgd": ("compression.name=qsgd_contractive",),
                # top-k pseudo-gradients with error feedback, copies of φ (CHOCO's γ)
                "choco_local_steps": (
                    "outer.every=3",
                    "compression.name=topk",
                    "compression.fraction=0.5",
                    "compression.error_feedback=true",
                    "algorithm.gamma=0.5",
                ),
                "choco_sgd_randk_complete": (
                    "compression.name=randk",
                    "compression.fraction=0.3",
                    "topology.kind=complete",
                ),
            },
        ),
        AlgorithmSpec(
            "push_sum",
            "exact push-sum SGD (SGP) over a directed, possibly time-varying graph; local "
            "optimizer in the step on the mass x",
            _DIRECTED,
            "push_sum:PushSum",
            (*STEP_PARAMS, DEBIAS, OVERLAP),
            memory=MemoryUse(state_vectors=3),
            outer="gossip",
            test_cases={
                "push_sum": (),
                "push_sum_two_chords": ("topology.chords=2",),
                "push_sum_local_steps": (
                    "outer.every=3",
                    "outer.delay=1",
                    "topology.kind=one_peer_exponential",
                ),
                "push_sum_nesterov": ("algorithm.optimizer=nesterov", "algorithm.momentum=0.8"),
                # the exchange of step t + 1 in flight across the boundary (drain, resume)
                "push_sum_overlap": (
                    "algorithm.overlap=true",
                    "algorithm.optimizer=nesterov",
                    "algorithm.momentum=0.8",
                ),
            },
        ),
        AlgorithmSpec(
            "push_pull",
            "Push-Pull / AB gradient tracking over a directed, possibly time-varying graph: models "
            "pulled with row-stochastic R, gradient trackers pushed with column-stochastic C; "
            "exact, or compressed Push-Pull (CPP) with an unbiased operator and reference copies; "
            "local optimizer on the tracker",
            _DIRECTED,
            "gradient_tracking:PushPull",
            (
                *STEP_PARAMS,
                Param(
                    "gamma",
                    float,
                    1.0,
                    "consensus step size γ ∈ (0, 1] of compressed Push-Pull (with "
                    "[compression] identity it must stay 1)",
                    minimum=0.0,
                    exclusive_minimum=True,
                    maximum=1.0,
                ),
                PULL_WEIGHTS,
                Param(
                    "normalize_tracker",
                    bool,
                    False,
                    "step along y_i / v_i with v_i a push-sum weight sent with the tracker (+64 "
                    "bits per message): every node steps along ≈ ḡ instead of n·u_i·ḡ (u: C's "
                    "right Perron vector), which evens out the step sizes on an irregular digraph; "
                    "still exact",
                ),
            ),
            compressors=None,
            needs_unbiased=True,
            check_world=_check_push_pull,
            memory=_push_pull_memory,
            outer="tracking",
            test_cases={
                "push_pull": (),
                "push_pull_nesterov": ("algorithm.optimizer=nesterov", "algorithm.momentum=0.8"),
                "push_pull_qsgd": (
                    "compression.name=qsgd",
                    "compression.levels=8",
                    "algorithm.gamma=0.8",
                ),
                "push_pull_qsgd_time_varying": (
                    "compression.name=qsgd",
                    "compression.levels=8",
                    "topology.kind=one_peer_exponential",
                ),
                # gradient tracking of the pseudo-gradients, the round's exchange in flight
                "push_pull_local_steps": ("outer.every=3", "outer.delay=1"),
            },
        ),
        AlgorithmSpec(
            "push_diging",
            "Push-DIGing gradient tracking over a directed, possibly time-varying graph: push-sum "
            "SGD stepping along a push-sum tracker of the average gradient (column-stochastic "
            "weights only); local optimizer on the tracker",
            _DIRECTED,
            "gradient_tracking:PushDIGing",
            STEP_PARAMS,
            memory=MemoryUse(state_vectors=4, streams=(MessageStream(vectors=2),)),
            test_cases={
                "push_diging": (),
                "push_diging_time_varying": (
                    "topology.kind=one_peer_exponential",
                    "algorithm.optimizer=nesterov",
                    "algorithm.momentum=0.8",
                ),
            },
        ),
        AlgorithmSpec(
            "quantized_push_sum",
            "quantized push-sum SGD with reference copies (Taheri et al. 2020) over a directed "
            "graph; local optimizer in the step on the mass x; any operator, but a biased one "
            "needs gamma < 1",
            _DIRECTED,
            "push_sum:QuantizedPushSum",
            (
                *STEP_PARAMS,
                Param(
                    "gamma",
                    float,
                    1.0,
                    "consensus step size γ ∈ (0, 1]; γ = 1 is safe only with an unbiased operator "
                    "(identity, qsgd, onebit, randk with scaled = true): a biased one (topk, sign, "
                    "qsgd_contractive, randk with scaled = false) needs γ < 1, e.g. ≤ 0.5, and a "
                    "coarse qsgd (few levels) may need it too",
                    minimum=0.0,
                    exclusive_minimum=True,
                    maximum=1.0,
                ),
                Param(
                    "reference",
                    bool,
                    True,
                    "quantize x − x̂ against reference copies (false: send Q(x) "
                    "directly, a negative control)",
                ),
                DEBIAS,
                OVERLAP,
            ),
            compressors=None,
            memory=MemoryUse(state_vectors=3, copies_per_slot_and_neighbour=1),  # x̂_i, x̂_j
            outer="compressed_gossip",
            test_cases={
                "quantized_push_sum": ("compression.name=qsgd", "compression.levels=8"),
                "quantized_push_sum_float32": (
                    "algorithm.gamma=0.8",
                    "compression.name=qsgd",
                    "compression.levels=8",
                    "topology.chords=2",
                    "run.dtype=float32",
                ),
                "qps_time_varying": (
                    "compression.name=qsgd",
                    "compression.levels=8",
                    "topology.kind=one_peer_exponential",
                ),
                "qps_time_varying_16_levels": (
                    "compression.name=qsgd",
                    "topology.kind=one_peer_exponential",
                ),
                "qps_overlap_time_varying": (
                    "compression.name=qsgd",
                    "compression.levels=8",
                    "topology.kind=one_peer_exponential",
                    "algorithm.overlap=true",
                ),
                # decentralized DiLoCo over quantized push-sum, the exchange in flight
                "qps_local_steps": (
                    "outer.every=3",
                    "outer.delay=1",
                    "compression.name=qsgd",
                    "compression.levels=8",
                    "algorithm.optimizer=adam",
                    "algorithm.lr=0.05",
                ),
            },
        ),
    )
}


# ---- known-unstable combinations: the start-up warning and the divergence hint -------------------

_CONSENSUS_GAMMA = ("quantized_push_sum", "multi_gossip", "choco_sgd")


def _operator(job: Any) -> Any | None:
    """An instance of the job's compressor on a tiny vector (its unbiased/contractive flags can
    depend on its keys, e.g. randk's scaled), or None for full precision."""
    from mpidecent.compression import COMPRESSORS

    comp = job.compression
    if comp["name"] == "identity":
        return None
    options = {k: v for k, v in comp.items() if k not in ("name", "error_feedback")}
    return COMPRESSORS[comp["name"]](8, "float64", **options)


def _describe(job: Any) -> str:
    """The job's operator with its keys, as the job file gives them: ``topk(fraction=0.1)``."""
    comp = job.compression
    keys = ", ".join(f"{k}={v}" for k, v in comp.items() if k not in ("name", "error_feedback"))
    return f"{comp['name']}({keys})"


def stability_warnings(job: Any) -> list[str]:
    """One line per known-unstable setting of ``job`` (printed by rank 0 at the start of the
    run)."""
    algo, gamma = job.algorithm["name"], job.algorithm.get("gamma")
    if algo not in _CONSENSUS_GAMMA or gamma is None or gamma < 1.0:
        return []
    operator = _operator(job)
    if operator is None or operator.unbiased or job.compression.get("error_feedback"):
        return []
    return [
        f"{algo} with the biased operator {_describe(job)} and [algorithm] gamma = {gamma:g} is "
        "known to diverge; set gamma ≤ 0.5 (or use an unbiased operator such as qsgd)"
    ]


def divergence_hint(job: Any) -> str:
    """What to try after ``job`` diverged, for its algorithm and compressor."""
    params, algo = job.algorithm, job.algorithm["name"]
    gamma = params.get("gamma")
    operator = _operator(job) if job.compression["name"] != "identity" else None
    lr = (
        f"lower [algorithm] lr (now {params['lr']:g})"
        if params.get("lr")
        else "lower the step size"
    )
    if gamma is not None and operator is not None:
        kind = "unbiased" if operator.unbiased else "biased"
        if not operator.unbiased and gamma >= 1.0:
            return f"biased compressor ({operator.name}) with γ = {gamma:g}: try γ ≤ 0.5, or {lr}"
        finer = {
            "qsgd": "more levels",
            "qsgd_contractive": "more bits",
            "topk": "a larger fraction",
            "randk": "a larger fraction",
        }.get(operator.name, "a finer operator")
        return (
            f"{kind} compressor ({_describe(job)}) with γ = {gamma:g}: try γ ≤ "
            f"{min(gamma / 2, 0.5):g}, {finer}, or {lr}"
        )
    if operator is not None:
        return f"{lr}, or use a finer operator than {_describe(job)}" + (
            ""
            if job.compression.get("error_feedback") or operator.unbiased
            else " (or error feedback)"
        )
    if algo in (
        "push_pull",
        "push_diging",
    ):  # exact gradient tracking: γ is fixed at 1, the skew is the limit
        return (
            f"{lr}; on an irregular digraph node i steps with lr·n·u_i (u: the Perron vector that "
            "mpidecent topology JOB -n N prints), so the largest n·u_i sets the stable step size"
        )
    if gamma is not None:
        return f"{lr} or [algorithm] gamma (now {gamma:g})"
    return lr
