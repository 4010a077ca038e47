"""Data sets, the train/test split, and how the training set is partitioned across nodes.

Kinds (``[data] name``, see ``DATASETS``): ``synthetic_logistic`` (binary), ``syn1`` / ``syn2``
(regression, SYN-1 / SYN-2 of ``specs/multi-gossip.md``), ``digits`` (scikit-learn's bundled 8×8 digits,
binary or multiclass) and ``hdf5`` (a user's file, read in parallel by ``mpidecent.io.datasets``).

How one node's data is made (``io.datasets.load_node_data`` for any kind; ``generate_node_data`` here
for the generated ones; called by every rank):

1. The full set of N samples: generated from the ``[data]`` keys only (the same on every rank; cheap at
   these sizes), or, for ``hdf5``, the labels read from the file.
2. Train/test split: a seeded permutation puts ⌊test_fraction·N⌋ samples in the test set; the rest is
   the training set. Both keep the order of the full set, so "training index k" means the k-th
   training row in file/generation order.
3. The training set is partitioned across the nodes (``partition``: iid, sorted or dirichlet); every
   node needs at least one sample. The test set is cut into ``nodes`` near-equal contiguous slices,
   node i evaluating slice i — only to share the evaluation work.

``load_node_data(values, nodes=1, node=0)`` (``generate_node_data`` here) returns the whole training
and test sets as one node's shards, which is how a single process can get the global set (e.g. for an
exact optimum).

This module is pure: it never imports mpi4py, h5py or the io layer (which builds on it: a file kind is
declared here, with its keys and task, and read by ``mpidecent.io.datasets``), and scikit-learn only when
``digits`` is used.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpidecent.errors import JobError
from mpidecent.params import REQUIRED, Param, resolve
from mpidecent.rng import generator

TASKS = ("binary", "multiclass", "regression")
PARTITIONS = ("iid", "sorted", "dirichlet")

# Dirichlet partitions are redrawn (attempt 0, 1, ...) until every node has a sample, at most this often.
DIRICHLET_ATTEMPTS = 100

# Streams of generator(seed, attempt, stream, "partition") / generator(seed, 0, stream, "data").
_IID_STREAM, _SPLIT_STREAM, _DIRICHLET_STREAM = 0, 1, 2
_SAMPLES_STREAM, _TRUTH_STREAM = 0, 1


# ---- containers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A whole data set held in memory (what the generators return).

    ``features``: (N, p) float64. ``targets``: (N,) int64 class ids in [0, num_classes) for
    classification, float64 for regression (``num_classes`` = 0).
    """

    name: str
    task: str
    features: np.ndarray
    targets: np.ndarray
    num_classes: int

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True)
class Shard:
    """One node's rows of the training (or test) set.

    ``indices``: (m,) int64, increasing indices into the global training (or test) set; ``features``:
    (m, p) float64; ``targets``: (m,) int64 class ids (binary: 0/1) or float64 regression targets.
    """

    node: int
    indices: np.ndarray
    features: np.ndarray
    targets: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.indices.shape[0])


@dataclass(frozen=True)
class NodeData:
    """Everything one node needs: its training shard and its slice of the test set.

    ``num_classes``: 2 for binary, C for multiclass, 0 for regression. ``test`` is ``None`` when there
    is no test set (``num_test`` = 0, e.g. test_fraction = 0); a node's test slice may be empty when
    the test set has fewer samples than there are nodes. ``num_train`` / ``num_test``: global sizes.
    """

    name: str
    task: str
    num_features: int
    num_classes: int
    train: Shard
    test: Shard | None
    num_train: int
    num_test: int


# ---- generators --------------------------------------------------------------------------------------


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
    return Dataset("synthetic_logistic", "binary", a, labels, num_classes=2)


def syn_truth(features: int, seed: int) -> np.ndarray:
    """The SYN-1/SYN-2 weight vector A ∈ R^d: entries N(1, 1) / √(d/2) (so ‖A‖² ≈ 4)."""
    rng = generator(seed, 0, _TRUTH_STREAM, "data")
    return (1.0 + rng.standard_normal(features)) / np.sqrt(features / 2.0)


def syn_regression(samples: int, features: int, noise: float, seed: int, relu: bool) -> Dataset:
    """SYN-1 (``relu=False``): y = A·x + ε; SYN-2 (``relu=True``): y = max(A·x, 0) + ε.

    x ~ N(0, I_d), ε ~ N(0, noise²), A = ``syn_truth(features, seed)``. SYN-1 and SYN-2 with the same
    seed share A and the inputs.
    """
    a = syn_truth(features, seed)
    rng = generator(seed, 0, _SAMPLES_STREAM, "data")
    x = rng.standard_normal((samples, features))
    z = x @ a
    if relu:
        z = np.maximum(z, 0.0)
    y = z + noise * rng.standard_normal(samples)
    return Dataset("syn2" if relu else "syn1", "regression", x, y.astype(np.float64), num_classes=0)


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    features = np.ascontiguousarray(bunch.data, dtype=np.float64) / 16.0
    targets = np.asarray(bunch.target, dtype=np.int64)
    features.setflags(write=False)
    targets.setflags(write=False)
    return features, targets


def digits(classes: Sequence[int] = ()) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1797 samples, 64 features scaled to [0, 1]).

    ``classes`` empty: all ten digits, labels = digits. Otherwise only the listed digits, relabelled
    0..C−1 in the listed order (two digits: binary, the first → 0 and the second → 1). Samples keep
    scikit-learn's order.
    """
    features, targets = _digits_raw()
    chosen = list(classes) if classes else list(range(10))
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[chosen] = np.arange(len(chosen))
    mask = relabel[targets] >= 0
    task = "binary" if len(chosen) == 2 else "multiclass"
    return Dataset("digits", task, features[mask], relabel[targets[mask]], num_classes=len(chosen))


# ---- split and partition -----------------------------------------------------------------------------


def num_test_samples(samples: int, test_fraction: float) -> int:
    """⌊test_fraction · samples⌋ (robust to 0.29·100 = 28.999…)."""
    return min(samples, int(math.floor(test_fraction * samples + 1e-9)))


def split_train_test(samples: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the full set in the training and in the test set, each increasing (int64)."""
    n_test = num_test_samples(samples, test_fraction)
    if n_test == 0:
        return np.arange(samples, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = generator(seed, 0, _SPLIT_STREAM, "partition").permutation(samples)
    test = np.sort(order[:n_test]).astype(np.int64)
    keep = np.ones(samples, dtype=bool)
    keep[test] = False
    return np.flatnonzero(keep).astype(np.int64), test


def _is_classification(targets: np.ndarray) -> bool:
    return np.issubdtype(targets.dtype, np.integer) or targets.dtype == np.bool_


def partition(targets: np.ndarray, nodes: int, scheme: str, seed: int, alpha: float = 0.5) -> list[np.ndarray]:
    """Split the indices 0..N−1 of ``targets`` into ``nodes`` shards (each increasing, int64).

    ``iid``: a seeded random permutation cut into equal parts. ``sorted``: samples ordered by target
    (stable; class id, or the regression target value) and cut into contiguous parts, so most nodes
    see one class only (strongly non-IID, as in the decentralized-learning papers). Shard sizes of
    both differ by at most one. ``dirichlet`` (classification only): for each class, proportions
    p ~ Dir(α·1_n) cut the class's samples (in a seeded random order) between the nodes; redrawn
    (attempt 0, 1, … up to ``DIRICHLET_ATTEMPTS``) until every node has a sample, else ``JobError``.
    Smaller α = more skewed label distributions.
    """
    targets = np.asarray(targets)
    n = targets.shape[0]
    if scheme == "iid":
        order = generator(seed, 0, _IID_STREAM, "partition").permutation(n)
        return [np.sort(part).astype(np.int64) for part in np.array_split(order, nodes)]
    if scheme == "sorted":
        order = np.argsort(targets, kind="stable")
        return [np.sort(part).astype(np.int64) for part in np.array_split(order, nodes)]
    if scheme == "dirichlet":
        if not _is_classification(targets):
            raise JobError("[data] partition = 'dirichlet' needs class labels, but the targets are real "
                           "numbers (regression); use partition = \"iid\" or \"sorted\"")
        if not alpha > 0:
            raise JobError(f"[data] alpha must be > 0, got {alpha:g}")
        return _dirichlet(targets, nodes, seed, alpha)
    raise ValueError(f"unknown partition scheme {scheme!r}")  # guarded by the job schema


def _dirichlet(targets: np.ndarray, nodes: int, seed: int, alpha: float) -> list[np.ndarray]:
    classes = np.unique(targets)
    members = [np.flatnonzero(targets == c) for c in classes]
    for attempt in range(DIRICHLET_ATTEMPTS):
        rng = generator(seed, attempt, _DIRICHLET_STREAM, "partition")
        pieces: list[list[np.ndarray]] = [[] for _ in range(nodes)]
        for idx in members:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(nodes, alpha))
            if not np.all(np.isfinite(p)):
                p = np.zeros(nodes)
                p[rng.integers(nodes)] = 1.0
            bounds = np.floor(np.cumsum(p) * idx.size).astype(np.int64)
            bounds = np.clip(bounds, 0, idx.size)
            for node, piece in enumerate(np.split(idx, bounds[:-1])):
                pieces[node].append(piece)
        parts = [np.sort(np.concatenate(p)).astype(np.int64) for p in pieces]
        if all(part.size > 0 for part in parts):
            return parts
    raise JobError(f"[data] alpha = {alpha:g} leaves a node without samples; raise alpha "
                   f"({DIRICHLET_ATTEMPTS} Dirichlet draws for {nodes} nodes and {classes.size} classes "
                   "all left a node empty)")


def eval_slice(num_test: int, nodes: int, node: int) -> np.ndarray:
    """Node ``node``'s contiguous slice of the test indices 0..num_test−1 (near-equal slices)."""
    base, extra = divmod(num_test, nodes)
    start = node * base + min(node, extra)
    stop = start + base + (1 if node < extra else 0)
    return np.arange(start, stop, dtype=np.int64)


@dataclass(frozen=True)
class Layout:
    """Where every sample goes: ``train_rows`` / ``test_rows`` are rows of the full set (increasing);
    ``parts[i]`` are node i's indices into the training set (increasing)."""

    train_rows: np.ndarray
    test_rows: np.ndarray
    parts: list[np.ndarray]

    @property
    def num_train(self) -> int:
        return int(self.train_rows.size)

    @property
    def num_test(self) -> int:
        return int(self.test_rows.size)

    def train_indices(self, node: int) -> np.ndarray:
        return self.parts[node]

    def test_indices(self, node: int) -> np.ndarray:
        return eval_slice(self.num_test, len(self.parts), node)


def _check_train_size(samples: int, test_fraction: float, nodes: int) -> None:
    n_train = samples - num_test_samples(samples, test_fraction)
    if n_train < nodes:
        raise JobError(f"[data] test_fraction = {test_fraction:g} leaves {n_train} of {samples} samples for "
                       f"training, fewer than the {nodes} nodes; every node needs a training sample "
                       "(lower test_fraction)")


def make_layout(targets: np.ndarray, values: Mapping[str, Any], nodes: int) -> Layout:
    """Split the full set (its ``targets``) into train/test and partition the training set.

    Raises ``JobError`` when the training set is smaller than ``nodes`` or a Dirichlet partition leaves
    a node empty. The caller checks that the full set itself has at least ``nodes`` samples (its
    message names the key that sets the size).
    """
    samples = int(targets.shape[0])
    _check_train_size(samples, values["test_fraction"], nodes)
    train_rows, test_rows = split_train_test(samples, values["test_fraction"], values["seed"])
    parts = partition(targets[train_rows], nodes, values["partition"], values["seed"], alpha=values["alpha"])
    return Layout(train_rows, test_rows, parts)


def node_data_from_dataset(dataset: Dataset, values: Mapping[str, Any], nodes: int, node: int) -> NodeData:
    """Node ``node``'s ``NodeData`` from a whole data set held in memory."""
    layout = make_layout(dataset.targets, values, nodes)
    return assemble(dataset.name, dataset.task, dataset.num_features, dataset.num_classes, layout, node,
                    lambda rows: (dataset.features[rows], dataset.targets[rows]))


def assemble(name: str, task: str, num_features: int, num_classes: int, layout: Layout, node: int,
             rows_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> NodeData:
    """Build ``NodeData`` from a layout; ``rows_of(rows)`` returns (features, targets) of increasing rows
    of the full set. It is called exactly twice (training rows, then test rows) when there is a test set,
    once otherwise — on every node, even for empty selections (so it may be collective)."""
    idx = layout.train_indices(node)
    features, targets = rows_of(layout.train_rows[idx])
    train = Shard(node, idx, _as_features(features), targets)
    test = None
    if layout.num_test:
        idx = layout.test_indices(node)
        features, targets = rows_of(layout.test_rows[idx])
        test = Shard(node, idx, _as_features(features), targets)
    return NodeData(name, task, num_features, num_classes, train, test, layout.num_train, layout.num_test)


def _as_features(features: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(features, dtype=np.float64)


# ---- registry: [data] name → kind with its job keys ---------------------------------------------------


@dataclass(frozen=True)
class DataKind:
    """One value of ``[data] name``.

    ``task(values)``: the task for resolved values. Generated kinds: ``load(values, nodes, node)``, this
    node's ``NodeData``, and ``check(values, nodes)``, pure checks before any MPI collective raising
    ``JobError``. A file kind has neither (``file = True``): ``mpidecent.io.datasets`` reads and checks it.
    """

    name: str
    params: tuple[Param, ...]
    doc: str
    task: Callable[[dict[str, Any]], str]
    load: Callable[[dict[str, Any], int, int], NodeData] | None = None
    check: Callable[[dict[str, Any], int], None] | None = None

    @property
    def file(self) -> bool:
        return self.load is None


def _below_one(value: float) -> str | None:
    return "must be < 1 (the training set cannot be empty)" if value >= 1 else None


def _test_fraction(default: float) -> Param:
    return Param("test_fraction", float, default,
                 "fraction of the samples held out as the test set (seeded split; 0 = no test set)",
                 minimum=0.0, check=_below_one)


def _digit_classes(value: list) -> str | None:
    if not value:
        return None
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        return "must list integer digits 0..9"
    if not all(0 <= c <= 9 for c in value):
        return "must list digits between 0 and 9"
    if len(set(value)) != len(value):
        return "must list distinct digits"
    if len(value) < 2:
        return "must list at least 2 digits (or be empty for all ten)"
    return None


COMMON_PARAMS: tuple[Param, ...] = (
    Param("partition", str, "iid",
          "how the training set is split across nodes: iid (random equal parts), sorted (by target, "
          "contiguous equal parts: strongly non-IID), dirichlet (per-class Dirichlet(alpha) proportions; "
          "classification only)", choices=PARTITIONS),
    Param("alpha", float, 0.5, "Dirichlet concentration of partition = \"dirichlet\" (smaller = more skewed)",
          minimum=0.0, exclusive_minimum=True),
    Param("batch_size", int, 32, "minibatch size per node and step; 0 = full local batch (deterministic)",
          minimum=0),
    Param("seed", int, 0, "seed of the data generator, the train/test split and the partition "
          "(independent of [run] seed)", minimum=0),
)


def _check_generated_size(samples: int, nodes: int) -> None:
    if samples < nodes:
        raise JobError(f"[data] samples = {samples} is fewer than the {nodes} nodes; every node needs a sample")


def _generated_kind(name: str, params: tuple[Param, ...], doc: str, task: Callable[[dict], str],
                    build: Callable[[dict], Dataset], size: Callable[[dict, int], None]) -> DataKind:
    """A kind whose whole set is generated from the job keys on every rank, then sliced."""

    def load(values: dict, nodes: int, node: int) -> NodeData:
        size(values, nodes)
        return node_data_from_dataset(build(values), values, nodes, node)

    def check(values: dict, nodes: int) -> None:
        size(values, nodes)
        if values["partition"] == "dirichlet":  # only this scheme can fail on the data itself
            make_layout(build(values).targets, values, nodes)

    return DataKind(name, params, doc, task, load, check)


def _samples_size(values: dict, nodes: int) -> None:
    _check_generated_size(values["samples"], nodes)
    _check_train_size(values["samples"], values["test_fraction"], nodes)


def _digits_size(values: dict, nodes: int) -> None:
    samples = digits(values["classes"]).num_samples
    if samples < nodes:
        raise JobError(f"[data] classes = {values['classes']} select {samples} samples, fewer than the "
                       f"{nodes} nodes; every node needs a sample")
    _check_train_size(samples, values["test_fraction"], nodes)


def _syn_params(samples: int, features: int) -> tuple[Param, ...]:
    return (
        Param("samples", int, samples, "number of samples in the whole data set (training + test)", minimum=1),
        Param("features", int, features, "input dimension d", minimum=1),
        Param("noise", float, 0.05, "standard deviation of the additive Gaussian noise on y", minimum=0.0),
        _test_fraction(0.0),
    )


DATASETS: dict[str, DataKind] = {
    "synthetic_logistic": _generated_kind(
        "synthetic_logistic",
        (
            Param("samples", int, 4000, "number of samples in the whole data set (training + test)", minimum=1),
            Param("features", int, 50, "number of input features (the model has features + 1 parameters)",
                  minimum=1),
            Param("separation", float, 3.0, "scale of the true weight vector; larger = more separable",
                  minimum=0.0),
            _test_fraction(0.0),
        ),
        "binary classification drawn from a logistic model (see learning/data.py)",
        lambda v: "binary",
        lambda v: synthetic_logistic(v["samples"], v["features"], v["seed"], v["separation"]),
        _samples_size,
    ),
    "syn1": _generated_kind(
        "syn1",
        _syn_params(2000, 200),
        "SYN-1 regression: y = A·x + N(0, noise²), x ~ N(0, I_d), A_j ~ N(1, 1)/√(d/2) (strongly convex "
        "with a linear model)",
        lambda v: "regression",
        lambda v: syn_regression(v["samples"], v["features"], v["noise"], v["seed"], relu=False),
        _samples_size,
    ),
    "syn2": _generated_kind(
        "syn2",
        _syn_params(2000, 200),
        "SYN-2 regression: y = max(A·x, 0) + N(0, noise²), same x and A as syn1 (non-convex with a ReLU "
        "model)",
        lambda v: "regression",
        lambda v: syn_regression(v["samples"], v["features"], v["noise"], v["seed"], relu=True),
        _samples_size,
    ),
    "digits": _generated_kind(
        "digits",
        (
            Param("classes", list, [], "digits to keep, relabelled 0..C−1 in this order; [] = all ten "
                  "(multiclass); exactly two = binary (first → 0, second → 1)", check=_digit_classes),
            _test_fraction(0.2),
        ),
        "scikit-learn's bundled 8×8 handwritten digits (1797 samples, 64 features scaled to [0, 1])",
        lambda v: "binary" if len(v["classes"]) == 2 else "multiclass",
        lambda v: digits(v["classes"]),
        _digits_size,
    ),
    "hdf5": DataKind(
        "hdf5",
        (
            Param("path", str, REQUIRED, "HDF5 file; a relative path is read from the job file's folder"),
            Param("features_dataset", str, "features", "dataset of the features, shape (N, p), numeric"),
            Param("labels_dataset", str, "labels", "dataset of the targets, shape (N,): class ids 0..C−1 "
                  "(binary: 0/1) or real numbers (regression)"),
            Param("task", str, "multiclass", "what the labels are", choices=TASKS),
            _test_fraction(0.0),
        ),
        "a user's HDF5 file (features (N, p) and labels (N,)); each rank reads only its own rows "
        "(parallel HDF5 when h5py has MPI)",
        lambda v: v["task"],
    ),
}


def _check_task_partition(values: Mapping[str, Any]) -> None:
    if values["partition"] == "dirichlet" and data_task(values) == "regression":
        raise JobError(f"[data] partition = 'dirichlet' needs class labels, but {values['name']} is a "
                       "regression data set; use partition = \"iid\" or \"sorted\"")


def resolve_data(table: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the [data] table; returns all keys with defaults, including ``name``."""
    name = table.get("name", "synthetic_logistic")
    if name not in DATASETS:
        Param("name", str, choices=tuple(DATASETS)).coerce("data", name)
    kind = DATASETS[name]
    values = resolve("data", kind.params + COMMON_PARAMS, table, owner=name, ignore=("name",))
    values = {key: (list(v) if isinstance(v, list) else v) for key, v in values.items()}
    values = {"name": name, **values}
    _check_task_partition(values)
    return values


def _kind(values: Mapping[str, Any]) -> DataKind:
    name = values.get("name")
    if name not in DATASETS:
        Param("name", str, choices=tuple(DATASETS)).coerce("data", name)
    return DATASETS[name]


def data_task(values: Mapping[str, Any]) -> str:
    """The task ("binary" | "multiclass" | "regression") of resolved [data] values."""
    return _kind(values).task(dict(values))


def data_kind(values: Mapping[str, Any]) -> DataKind:
    """The kind of resolved [data] values, after the checks every kind shares."""
    kind = _kind(values)
    _check_task_partition(values)
    return kind


def check_generated(values: Mapping[str, Any], nodes: int) -> None:
    """Pure checks of a generated kind's resolved [data] values against the number of nodes (too few
    samples for the nodes, a Dirichlet partition leaving a node empty, ...); raises ``JobError``."""
    data_kind(values).check(dict(values), nodes)


def generate_node_data(values: Mapping[str, Any], nodes: int, node: int) -> NodeData:
    """Node ``node``'s data of a generated kind (the same on every rank that asks for it)."""
    if not 0 <= node < nodes:
        raise ValueError(f"node {node} is not in 0..{nodes - 1}")
    return data_kind(values).load(dict(values), nodes, node)


def resolve_path(path: str, base_dir: str | None) -> str:
    """``path`` as given when absolute (or without ``base_dir``), else joined to ``base_dir``."""
    path = os.path.expanduser(path)
    if base_dir is None or os.path.isabs(path):
        return path
    return os.path.join(base_dir, path)
