"""Data sets in memory, the train/test split, and how the training set is partitioned across nodes.

The ``[data]`` kinds (built-in generators, MNIST-1D, a user's loader or file) are declared in
``learning/sources.py``; this module holds what they share. How one node's data is made
(``io.datasets.load_node_data``, called by every rank):

1. The full set of N samples (features of any sample shape): generated from the ``[data]`` keys (the
   same on every rank; cheap at these sizes), returned by a loader, or, for ``hdf5``, the labels
   read from the file.
2. Train/test split: a seeded permutation puts ⌊test_fraction·N⌋ samples in the test set (or the
   data set's own split: ``Dataset.fixed_test``); the rest is the training set. Both keep the order
   of the full set, so "training index k" means the k-th training row in file/generation order.
3. The training set is partitioned across the nodes (``partition``: iid, sorted or dirichlet); every
   node needs at least one sample. Every node holds the whole test set (to evaluate its own model)
   and evaluates the average model on its near-equal contiguous slice of it — only to share the
   work.

One node of ``nodes = 1`` gets the whole training and test sets, which is how a single process can
get the global set (e.g. for an exact optimum).

This module is pure: it never imports mpi4py, h5py or the io layer (which builds on it), and
scikit-learn only when ``digits`` is used.
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
from mpidecent.rng import generator

TASKS = ("binary", "multiclass", "regression")
PARTITIONS = ("iid", "sorted", "dirichlet")

# Dirichlet partitions are redrawn (attempt 0, 1, ...) until every node has a sample, at most this
# often.
DIRICHLET_ATTEMPTS = 100

# Streams of generator(seed, attempt, stream, "partition") / generator(seed, 0, stream, "data").
_IID_STREAM, _SPLIT_STREAM, _DIRICHLET_STREAM = 0, 1, 2
_SAMPLES_STREAM, _TRUTH_STREAM = 0, 1


# ---- containers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A whole data set held in memory (what the generators and loaders return).

    ``features``: (N, *sample_shape) float64 — (N, p) vectors, (N, C, H, W) images, (N, L) signals,
    ... ``targets``: (N,) int64 class ids in [0, num_classes) for classification, float64 for
    regression (``num_classes`` = 0). ``fixed_test``: the last ``fixed_test`` rows are the data
    set's own test set (MNIST-1D, a loader's test arrays); 0 = split by ``test_fraction``.
    """

    name: str
    task: str
    features: np.ndarray
    targets: np.ndarray
    num_classes: int
    fixed_test: int = 0

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return tuple(int(s) for s in self.features.shape[1:])


@dataclass(frozen=True)
class Shard:
    """One node's rows of the training (or test) set.

    ``indices``: (m,) int64, increasing indices into the global training (or test) set;
    ``features``: (m, p) float64; ``targets``: (m,) int64 class ids (binary: 0/1) or float64
    regression targets.
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
    """Everything one node needs: its training shard, its slice of the test set and the whole test
    set.

    ``input_shape``: the shape of one sample. ``num_classes``: 2 for binary, C for multiclass, 0 for
    regression. ``test`` is ``None`` when there is no test set (``num_test`` = 0, e.g. test_fraction
    = 0); a node's test slice may be empty when the test set has fewer samples than there are nodes
    — the slices share the work of evaluating the average model. ``test_all``: the whole test set,
    on which each node evaluates its own model. ``num_train`` / ``num_test``: global sizes.
    """

    name: str
    task: str
    input_shape: tuple[int, ...]
    num_classes: int
    train: Shard
    test: Shard | None
    num_train: int
    num_test: int
    test_all: Shard | None = None

    @property
    def num_features(self) -> int:
        """Entries of one sample (what a flat model takes)."""
        return int(np.prod(self.input_shape, dtype=np.int64))


# ---- generators ----------------------------------------------------------------------------------


def synthetic_logistic(samples: int, features: int, seed: int, separation: float) -> Dataset:
    """Binary classification data drawn from a logistic model.

    a_k ~ N(0, I_p), w_true ~ N(0, I_p / p) scaled by ``separation``, so the margin a_k · w_true has
    standard deviation ≈ ``separation`` (larger = more separable) and the Hessian of the mean
    logistic loss is of order 0.1·I: step sizes of order 1 are stable. b_k ~ Bernoulli(σ(a_k ·
    w_true)): the labels are noisy, so the ℓ2-regularised optimum is finite and well conditioned.
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

    x ~ N(0, I_d), ε ~ N(0, noise²), A = ``syn_truth(features, seed)``. SYN-1 and SYN-2 with the
    same seed share A and the inputs.
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


# ---- split and partition -------------------------------------------------------------------------


def num_test_samples(samples: int, test_fraction: float) -> int:
    """⌊test_fraction · samples⌋ (robust to 0.29·100 = 28.999…)."""
    return min(samples, math.floor(test_fraction * samples + 1e-9))


def split_train_test(
    samples: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
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


def partition(
    targets: np.ndarray, nodes: int, scheme: str, seed: int, alpha: float = 0.5
) -> list[np.ndarray]:
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
            raise JobError(
                "[data] partition = 'dirichlet' needs class labels, but the targets are real "
                'numbers (regression); use partition = "iid" or "sorted"'
            )
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
    raise JobError(
        f"[data] alpha = {alpha:g} leaves a node without samples; raise alpha "
        f"({DIRICHLET_ATTEMPTS} Dirichlet draws for {nodes} nodes and {classes.size} classes "
        "all left a node empty)"
    )


def eval_slice(num_test: int, nodes: int, node: int) -> np.ndarray:
    """Node ``node``'s contiguous slice of the test indices 0..num_test−1 (near-equal slices)."""
    base, extra = divmod(num_test, nodes)
    start = node * base + min(node, extra)
    stop = start + base + (1 if node < extra else 0)
    return np.arange(start, stop, dtype=np.int64)


@dataclass(frozen=True)
class Layout:
    """Where every sample goes: ``train_rows`` / ``test_rows`` are rows of the full set
    (increasing); ``parts[i]`` are node i's indices into the training set (increasing)."""

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
        raise JobError(
            f"[data] test_fraction = {test_fraction:g} leaves {n_train} of {samples} samples for "
            f"training, fewer than the {nodes} nodes; every node needs a training sample "
            "(lower test_fraction)"
        )


def make_layout(
    targets: np.ndarray, values: Mapping[str, Any], nodes: int, fixed_test: int = 0
) -> Layout:
    """Split the full set (its ``targets``) into train/test and partition the training set. With
    ``fixed_test`` > 0 the last ``fixed_test`` rows are the test set (the data set's own split).

    Raises ``JobError`` when the training set is smaller than ``nodes`` or a Dirichlet partition
    leaves a node empty. The caller checks that the full set itself has at least ``nodes`` samples
    (its message names the key that sets the size).
    """
    samples = int(targets.shape[0])
    if fixed_test:
        train_rows = np.arange(samples - fixed_test, dtype=np.int64)
        test_rows = np.arange(samples - fixed_test, samples, dtype=np.int64)
        if train_rows.size < nodes:
            raise JobError(
                f"[data] {values['name']!r} has {train_rows.size} training samples, fewer than the "
                f"{nodes} nodes; every node needs a training sample"
            )
    else:
        _check_train_size(samples, values["test_fraction"], nodes)
        train_rows, test_rows = split_train_test(samples, values["test_fraction"], values["seed"])
    parts = partition(
        targets[train_rows], nodes, values["partition"], values["seed"], alpha=values["alpha"]
    )
    return Layout(train_rows, test_rows, parts)


def node_data_from_dataset(
    dataset: Dataset, values: Mapping[str, Any], nodes: int, node: int
) -> NodeData:
    """Node ``node``'s ``NodeData`` from a whole data set held in memory."""
    layout = make_layout(dataset.targets, values, nodes, dataset.fixed_test)
    return assemble(
        dataset.name,
        dataset.task,
        dataset.input_shape,
        dataset.num_classes,
        layout,
        node,
        lambda rows: (dataset.features[rows], dataset.targets[rows]),
    )


def assemble(
    name: str,
    task: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    layout: Layout,
    node: int,
    rows_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> NodeData:
    """Build ``NodeData`` from a layout; ``rows_of(rows)`` returns (features, targets) of increasing
    rows of the full set. It is called exactly twice (this node's training rows, then every test
    row) when there is a test set, once otherwise — on every node, even for empty selections (so it
    may be collective). The node's test slice is cut from the whole test set."""
    idx = layout.train_indices(node)
    features, targets = rows_of(layout.train_rows[idx])
    train = Shard(node, idx, _as_features(features), targets)
    test = test_all = None
    if layout.num_test:
        features, targets = rows_of(layout.test_rows)
        test_all = Shard(
            node, np.arange(layout.num_test, dtype=np.int64), _as_features(features), targets
        )
        idx = layout.test_indices(node)
        test = Shard(node, idx, test_all.features[idx], test_all.targets[idx])
    return NodeData(
        name,
        task,
        tuple(input_shape),
        num_classes,
        train,
        test,
        layout.num_train,
        layout.num_test,
        test_all,
    )


def _as_features(features: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(features, dtype=np.float64)


def resolve_path(path: str, base_dir: str | None) -> str:
    """``path`` as given when absolute (or without ``base_dir``), else joined to ``base_dir``."""
    path = os.path.expanduser(path)
    if base_dir is None or os.path.isabs(path):
        return path
    return os.path.join(base_dir, path)
