"""Building one rank's run from a plan: its data and objective, the compressor, the pattern's MPI
objects and the algorithm.

``build_node`` is pure of MPI apart from the parallel read of a data file (``comm``);
``build_algorithm`` connects the algorithm's pattern (collective over ``comm``) and instantiates it.
``gossip_only`` builds an algorithm with zero gradients (average consensus) for tests and
benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpidecent.algorithms import ALGORITHMS, AlgorithmSpec, DataLayout
from mpidecent.algorithms.base import Algorithm, Context
from mpidecent.comm.patterns import Connection, Wiring
from mpidecent.comm.protocols import Collectives
from mpidecent.compression import Compressor, build_compressor
from mpidecent.footprint import memory_guard
from mpidecent.learning.data import NodeData
from mpidecent.learning.flat import build_flat_model
from mpidecent.learning.problems import NullObjective, TorchObjective
from mpidecent.plan import Plan, job_folder
from mpidecent.runner.data import layout_data
from mpidecent.topology.schedule import Schedule


@dataclass
class Node:
    """What one rank trains: its data layout and data, its objective (the model on flat buffers) and
    the compressor of its messages."""

    layout: DataLayout
    data: NodeData
    objective: TorchObjective
    compressor: Compressor


def build_node(plan: Plan, rank: int, size: int, comm: Any = None) -> Node:
    """Rank ``rank``'s data, model and compressor (the data read collectively over ``comm`` when
    given). Running out of memory raises ``JobError`` naming ``[data] name`` or ``[model] name``."""
    job, spec = plan.job, plan.algorithm
    dtype, seed = np.dtype(job.run["dtype"]), int(job.run["seed"])
    layout = spec.data_layout(job, size, rank)
    # plan_job estimated the memory from the job; what only the user's code knows (or an estimate
    # too low) can still run out here: one line naming the key, not a MemoryError deep inside.
    with memory_guard(f"[data] name = {job.data['name']!r}", size):
        data, weights, eval_shard = layout_data(job, layout, rank, size, comm)
    folder = job_folder(job)
    with memory_guard(f"[model] name = {job.model['name']!r}", size):
        flat = build_flat_model(
            job.model, data.input_shape, data.num_classes, dtype, seed, node=rank, base_dir=folder
        )
        objective = TorchObjective(
            flat,
            data,
            job.model["l2"] if layout.regularize else 0.0,
            job.data["batch_size"],
            seed,
            rank,
            sample_weights=weights,
            eval_shard=eval_shard,
            loss=job.model["loss"],
            base_dir=folder,
        )
        objective.eval_l2 = job.model[
            "l2"
        ]  # the network objective includes ℓ2 even if training does not
        objective.model_name = job.model["name"]
        compressor = build_compressor(job.compression["name"], flat.dim, dtype, job.compression)
    return Node(layout, data, objective, compressor)


def context(
    spec: AlgorithmSpec,
    connection: Connection,
    rank: int,
    size: int,
    seed: int,
    params: Mapping[str, Any],
    objective: Any,
    compressor: Compressor,
    collectives: Collectives,
    **extra: Any,
) -> Context:
    """The algorithm's context from the pattern's connection (MPI objects) and this rank's
    pieces."""
    return Context(
        spec=spec,
        rank=rank,
        size=size,
        seed=seed,
        dtype=compressor.dtype,
        params=params,
        objective=objective,
        compressor=compressor,
        collectives=collectives,
        neighbors=connection.neighbors,
        master_worker=connection.master_worker,
        window=connection.window,
        peers=connection.peers,
        **extra,
    )


def implementation(spec: AlgorithmSpec, outer: Any = None) -> type:
    """The class that runs ``spec``: its own, or with an ``[outer]`` table the round of local steps
    over its pattern (``algorithms/local_steps.py``)."""
    if outer:
        from mpidecent.algorithms.local_steps import local_steps_class

        return local_steps_class(spec)
    return spec.load()


def instantiate(spec: AlgorithmSpec, ctx: Context) -> Algorithm:
    """Collective over the ranks of ``ctx``'s pattern: build the algorithm, then (neighbour gossip)
    agree that every rank opened the same message streams (``Neighbors.seal``; a mismatch is the
    same ``StreamError`` on every rank)."""
    algorithm = implementation(spec, ctx.outer)(ctx)
    if ctx.neighbors is not None:
        ctx.neighbors.seal()
    return algorithm


def build_algorithm(
    plan: Plan, node: Node, comm: Any, collectives: Collectives
) -> tuple[Algorithm, Connection]:
    """Collective over ``comm``: connect the algorithm's pattern and build the algorithm on this
    rank. The caller closes the connection (collective) at the end of the run."""
    job, spec = plan.job, plan.algorithm
    rank, size = comm.rank, comm.size
    wiring = Wiring(
        rank,
        plan.schedule,
        plan.slot_weights,
        node.objective.dim,
        node.compressor.dtype,
        node.compressor.nbytes,
    )
    connection = spec.pattern.connect(comm, wiring)
    ctx = context(
        spec,
        connection,
        rank,
        size,
        int(job.run["seed"]),
        job.algorithm,
        node.objective,
        node.compressor,
        collectives,
        steps=job.run["steps"],
        l2=job.model["l2"],
        stragglers=job.stragglers,
        error_feedback=job.compression["error_feedback"],
        outer=job.outer or None,
    )
    load_kernels(node.compressor)
    algorithm = instantiate(spec, ctx)
    if ctx.neighbors is not None and job.run["progress"] == "hooks":
        node.objective.on_progress(
            ctx.neighbors.progress
        )  # exchanges move while the gradient is computed
    return algorithm, connection


def load_kernels(compressor: Any) -> None:
    """Encode and decode one zero vector, so that the compressor's compiled kernels (numba:
    imported, and compiled or loaded from its cache) are in place before the training clock starts
    rather than inside the first step: a one-time start-up cost of up to seconds per rank on
    oversubscribed cores, which a run's step times and time to target should not carry. Pure
    compute; no random state is consumed."""
    from mpidecent.rng import RandomKey

    zeros = np.zeros(compressor.dim, dtype=compressor.dtype)
    compressor.decode(compressor.encode(zeros, RandomKey(0, 0, 0)).buffer, RandomKey(0, 0, 0))


def gossip_only(
    comm: Any,
    schedule: Schedule,
    slot_weights: tuple[np.ndarray, ...],
    name: str | AlgorithmSpec,
    compressor: str,
    comp_params: dict,
    params: dict,
    x0: np.ndarray,
    seed: int = 0,
    steps: int = 0,
) -> tuple[Algorithm, Connection]:
    """Collective: neighbour algorithm ``name`` (or a declaration not in the catalog) with zero
    gradients (pure gossip, i.e. average consensus) on ``comm``, starting from this rank's ``x0``
    (its dtype is the state dtype); ``params`` override the algorithm's defaults; ``steps``: the
    run's length as the algorithm sees it. The caller closes the connection when done. For tests and
    benchmarks."""
    from mpidecent.comm.collectives import Collectives as MpiCollectives

    spec = ALGORITHMS[name] if isinstance(name, str) else name
    objective = NullObjective(x0.size, x0.dtype)
    objective.params[:] = x0
    codec = build_compressor(compressor, x0.size, x0.dtype, comp_params)
    connection = spec.pattern.connect(
        comm, Wiring(comm.rank, schedule, slot_weights, x0.size, x0.dtype, codec.nbytes)
    )
    ctx = context(
        spec,
        connection,
        comm.rank,
        comm.size,
        seed,
        {p.name: p.default for p in spec.params} | params,
        objective,
        codec,
        MpiCollectives(comm),
        steps=steps,
    )
    return instantiate(spec, ctx), connection
