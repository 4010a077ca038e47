"""Which data a rank trains on and evaluates, for its algorithm's ``DataLayout``.

The usual layout (partition ``rank`` of ``size``, trained and evaluated by that rank) is read
collectively (parallel HDF5 for a file). Other layouts — a master/worker code where a worker trains
on several weighted partitions and the master on none — are assembled from the partitions it names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mpidecent.algorithms import DataLayout
from mpidecent.config import Job
from mpidecent.errors import AgreedJobError, JobError
from mpidecent.io.datasets import load_node_data
from mpidecent.learning.data import NodeData, Shard
from mpidecent.plan import job_folder
from mpidecent.runner.launch import agree


def layout_data(
    job: Job, layout: DataLayout, rank: int, size: int, comm: Any = None
) -> tuple[NodeData, np.ndarray | None, Shard | None]:
    """This rank's data: (NodeData, per-sample weights or None, evaluation shard or None).
    Collective over ``comm`` (when given): bad data found on any rank (``JobError``) is raised on
    every rank as one ``AgreedJobError``."""
    folder = job_folder(job)
    if layout.nodes == size and layout.train == ((rank, 1.0),) and layout.evaluate == rank:
        return load_node_data(job.data, size, rank, comm=comm, base_dir=folder), None, None
    try:  # serial reads, no collective: every rank reaches the agreement below
        parts = {
            j: load_node_data(job.data, layout.nodes, j, base_dir=folder)
            for j in {j for j, _ in layout.train}
            | ({layout.evaluate} if layout.evaluate is not None else set())
        }
        template = (
            next(iter(parts.values()))
            if parts
            else load_node_data(job.data, layout.nodes, 0, base_dir=folder)
        )
        problem = None
    except JobError as err:  # e.g. NaN features in a partition only some ranks read
        if comm is None:
            raise
        problem = str(err)
    if comm is not None:
        agreed = agree(comm, problem)
        if agreed:
            raise AgreedJobError(agreed)  # one line from rank 0, every rank exits 2
    chosen = [parts[j].train for j, _ in layout.train]
    features = (
        np.concatenate([s.features for s in chosen]) if chosen else template.train.features[:0]
    )
    targets = np.concatenate([s.targets for s in chosen]) if chosen else template.train.targets[:0]
    indices = np.concatenate([s.indices for s in chosen]) if chosen else template.train.indices[:0]
    weights = (
        np.concatenate(
            [
                np.full(s.num_samples, w / max(s.num_samples, 1))
                for s, (_, w) in zip(chosen, layout.train, strict=True)
            ]
        )
        if chosen
        else np.zeros(0)
    )
    train = Shard(rank, indices, features, targets)
    evaluate = (
        parts[layout.evaluate].train
        if layout.evaluate is not None
        else Shard(rank, indices[:0], features[:0], targets[:0])
    )
    test = parts[layout.evaluate].test if layout.evaluate is not None else None
    data = dataclasses.replace(template, train=train, test=test)
    return data, weights, evaluate
