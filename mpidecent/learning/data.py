"""Data sets and how they are split across nodes.

Every rank generates the same global data set from the job's seed (generation is cheap for the
synthetic problems) and keeps only its own shard; rank 0 also uses the global set once to compute the
exact optimum. Shards may differ in size by one sample (``np.array_split``); the objective is the
average of the per-node mean losses, so that is what the optimum minimises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpidecent.errors import JobError
from mpidecent.params import Param, resolve
from mpidecent.rng import generator


@dataclass(frozen=True)
class Dataset:
    """A labelled data set held in memory.

    ``features``: (N, p) float64. ``labels``: (N,) int64 class ids in [0, num_classes).
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    num_classes: int

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True)
class Shard:
    """The samples of one node: ``indices`` into the global set, and the rows they select."""

    node: int
    indices: np.ndarray
    features: np.ndarray
    labels: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.indices.shape[0])


def synthetic_logistic(samples: int, features: int, seed: int, separation: float) -> Dataset:
    """Binary classification data drawn from a logistic model.

    a_k ~ N(0, I_p), w_true ~ N(0, I_p / p) scaled by ``separation``, so the margin a_k · w_true has
    standard deviation ≈ ``separation`` (larger = more separable) and the Hessian of the mean logistic
    loss is of order 0.1·I: step sizes of order 1 are stable. b_k ~ Bernoulli(σ(a_k · w_true)): the
    labels are noisy, so the ℓ2-regularised optimum is finite and well conditioned.
    """
    rng = generator(seed, 0, 0, "data")
    w_true = rng.standard_normal(features) * (separation / np.sqrt(features))
    a = rng.standard_normal((samples, features))
    p_one = 1.0 / (1.0 + np.exp(-(a @ w_true)))
    labels = (rng.random(samples) < p_one).astype(np.int64)
    return Dataset("synthetic_logistic", a, labels, num_classes=2)


def partition(labels: np.ndarray, nodes: int, scheme: str, seed: int) -> list[np.ndarray]:
    """Split sample indices into ``nodes`` shards.

    ``iid``: a seeded random permutation cut into equal parts. ``sorted``: samples ordered by label
    (stable) and cut into contiguous parts, so most nodes see one class only (strongly non-IID, as in the
    decentralized-learning papers). Shard sizes differ by at most one.
    """
    if scheme == "iid":
        order = generator(seed, 0, 0, "partition").permutation(labels.shape[0])
    elif scheme == "sorted":
        order = np.argsort(labels, kind="stable")
    else:  # guarded by the job schema
        raise ValueError(f"unknown partition scheme {scheme!r}")
    return [np.sort(part) if scheme == "iid" else part for part in np.array_split(order, nodes)]


def make_shard(dataset: Dataset, parts: list[np.ndarray], node: int) -> Shard:
    idx = parts[node]
    return Shard(node, idx, dataset.features[idx], dataset.labels[idx])


# ---- registry: [data] name → generator with its job keys ------------------------------------------------


@dataclass(frozen=True)
class DataKind:
    name: str
    params: tuple[Param, ...]
    doc: str
    build: Callable[[dict[str, Any]], Dataset]


COMMON_PARAMS: tuple[Param, ...] = (
    Param("partition", str, "iid", "how samples are split across nodes", choices=("iid", "sorted")),
    Param("batch_size", int, 32, "minibatch size per node and step; 0 = full local batch (deterministic)",
          minimum=0),
    Param("seed", int, 0, "seed of the data generator and of the iid partition (independent of [run] seed)",
          minimum=0),
)

DATASETS: dict[str, DataKind] = {
    "synthetic_logistic": DataKind(
        "synthetic_logistic",
        (
            Param("samples", int, 4000, "number of samples in the global data set", minimum=1),
            Param("features", int, 50, "number of input features (the model has features + 1 parameters)",
                  minimum=1),
            Param("separation", float, 3.0, "scale of the true weight vector; larger = more separable",
                  minimum=0.0),
        ),
        "binary classification drawn from a logistic model (see learning/data.py)",
        lambda p: synthetic_logistic(p["samples"], p["features"], p["seed"], p["separation"]),
    ),
}


def resolve_data(table: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the [data] table; returns all keys with defaults, including ``name``."""
    name = table.get("name", "synthetic_logistic")
    if name not in DATASETS:
        Param("name", str, choices=tuple(DATASETS)).coerce("data", name)
    kind = DATASETS[name]
    values = resolve("data", kind.params + COMMON_PARAMS, table, owner=name, ignore=("name",))
    return {"name": name, **values}


def load_dataset(values: Mapping[str, Any]) -> Dataset:
    return DATASETS[values["name"]].build(dict(values))


def check_shards(values: Mapping[str, Any], nodes: int) -> None:
    """Every node needs at least one sample."""
    samples = values.get("samples")
    if samples is not None and samples < nodes:
        raise JobError(f"[data] samples = {samples} is fewer than the {nodes} nodes; every node needs a sample")
