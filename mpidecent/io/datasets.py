"""The ``hdf5`` data kind: a user's HDF5 file, checked serially and read in parallel.

File layout: ``features_dataset`` of shape (N, ...) — one row per sample of any shape, (N, p)
vectors, (N, C, H, W) images, (N, L) sequences — numeric; ``labels_dataset`` of shape (N,): class
ids 0..C−1 for ``task = "multiclass"`` (C = largest label + 1), 0/1 for ``"binary"``, any finite
numbers for ``"regression"`` (integral floats are accepted as class ids).

``check_hdf5`` (every rank, before any collective): opens the file read-only with the default driver
and validates shapes, types and labels, raising a one-line ``JobError`` naming the ``[data]`` key.

``load_hdf5`` (every rank, collectively over ``comm``): with ``comm`` and an MPI-enabled h5py the
file is opened with ``driver="mpio"``; every rank reads the full labels (1-D, small) to compute the
same train/test split and partition, then reads only the feature rows it needs — its training shard,
then the test set (each node evaluates its own model on all of it) — with collective reads of unions
of hyperslabs over the increasing rows (every rank makes the same number of calls, computed from the
layout all ranks share; a rank with nothing left to read takes part with an empty selection, which
h5py's high-level indexing would skip). The file's own test set (``test_features_dataset``,
``test_labels_dataset``) replaces the ``test_fraction`` split. Without ``comm`` (or without MPI in
h5py) the same reads are done serially.

``load_node_data`` and ``check_data`` are the entry points for every ``[data]`` kind: this module
reads the file kinds and hands the generated ones to ``mpidecent.learning.data`` (which never
imports this layer). This module never imports mpi4py (it only calls methods of the ``comm`` it is
given).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mpidecent.errors import AgreedJobError, JobError
from mpidecent.learning.data import NodeData, assemble, make_layout, resolve_path
from mpidecent.learning.sources import DataInfo, check_in_memory, data_kind, in_memory_node_data

if TYPE_CHECKING:
    import h5py

# h5py is imported inside the functions that open a file: ``plan_job`` imports this module to check
# every kind of [data], and a job without an HDF5 file (or a bad job) should not pay h5py's import
# on every rank.

_MAX_LISTED = 20


def _shown(values: Mapping[str, Any]) -> str:
    return repr(values["path"])


def _open_serial(values: Mapping[str, Any], base_dir: str | None) -> h5py.File:
    import h5py

    full = resolve_path(values["path"], base_dir)
    if not os.path.isfile(full):
        where = ""
        if full != values["path"]:
            where = f" (looked for {full})"
        raise JobError(f"[data] path: no such file {values['path']!r}{where}")
    try:
        return h5py.File(full, "r")
    except OSError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise JobError(
            f"[data] path: cannot read {values['path']!r} as an HDF5 file ({reason})"
        ) from None


def _open_parallel(values: Mapping[str, Any], base_dir: str | None, comm: Any) -> h5py.File:
    import h5py

    full = resolve_path(values["path"], base_dir)
    if not os.path.isfile(full):  # every rank sees the same shared file system
        raise JobError(f"[data] path: no such file {values['path']!r}")
    try:
        return h5py.File(full, "r", driver="mpio", comm=comm)
    except OSError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise JobError(
            f"[data] path: cannot read {values['path']!r} as an HDF5 file ({reason})"
        ) from None


def _dataset_names(f: h5py.File) -> str:
    import h5py

    names: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            names.append(name)

    f.visititems(visit)
    if not names:
        return "no datasets there"
    listed = ", ".join(names[:_MAX_LISTED])
    more = f", … ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    return f"datasets there: {listed}{more}"


def _dataset(f: h5py.File, key: str, values: Mapping[str, Any]) -> h5py.Dataset:
    import h5py

    name = values[key]
    try:
        obj = f.get(name) if name else None
    except (KeyError, ValueError, OSError):
        obj = None
    if obj is None:
        raise JobError(
            f"[data] {key} = {name!r} not found in {_shown(values)} ({_dataset_names(f)})"
        )
    if not isinstance(obj, h5py.Dataset):
        raise JobError(
            f"[data] {key} = {name!r} in {_shown(values)} is a group, not a dataset "
            f"({_dataset_names(f)})"
        )
    return obj


def _numeric(dset: h5py.Dataset) -> bool:
    return dset.dtype.kind in "iufb"


def targets_from_labels(labels: np.ndarray, values: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """Validate the labels read from the file for ``values["task"]``; returns (targets,
    num_classes).

    Classification: int64 class ids, num_classes = 2 (binary) or largest label + 1 (multiclass).
    Regression: float64, num_classes = 0.
    """
    task = values["task"]
    where = f"[data] labels_dataset = {values['labels_dataset']!r} in {_shown(values)}"
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        bad = labels[~np.isfinite(labels)][0]
        raise JobError(
            f"{where} holds NaN or infinite values (e.g. {bad}); every sample needs a finite label"
        )
    if task == "regression":
        return labels.astype(np.float64), 0
    if labels.dtype.kind == "f":
        fractional = labels != np.round(labels)
        if np.any(fractional):
            raise JobError(
                f"{where} holds non-integer values (e.g. {labels[fractional][0]:g}); task = "
                f"{task!r} "
                'needs class ids 0..C−1 (use task = "regression" for real-valued targets)'
            )
    targets = labels.astype(np.int64)
    low, high = int(targets.min()), int(targets.max())
    if low < 0:
        raise JobError(
            f"{where} holds negative labels (e.g. {low}); task = {task!r} needs class ids "
            f"{'0 or 1' if task == 'binary' else '0..C−1'}"
        )
    if task == "binary":
        if high > 1:
            raise JobError(
                f"{where} holds labels outside 0 and 1 (e.g. {high}); task = 'binary' needs labels "
                '0 or 1 (use task = "multiclass" for more classes)'
            )
        return targets, 2
    if high < 1:
        raise JobError(
            f"{where} holds only class 0; task = 'multiclass' needs at least two classes 0..C−1"
        )
    return targets, high + 1


@dataclass(frozen=True)
class _Inspected:
    """A checked file: its feature datasets (training; test or None), the targets of all samples
    (the test set's after the training set's), the number of classes and the size of the file's own
    test set."""

    features: h5py.Dataset
    test_features: h5py.Dataset | None
    targets: np.ndarray
    num_classes: int
    fixed_test: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.features.shape[1:])

    def rows(self, rows: np.ndarray, dxpl: Any, calls: int) -> np.ndarray:
        """Feature rows of the whole set (training rows first, then the test set's): a read is of
        one dataset, as the layout's training and test reads are."""
        train = int(self.features.shape[0])
        if self.test_features is not None and rows.size and rows[0] >= train:
            return read_rows(self.test_features, rows - train, dxpl, calls)
        return read_rows(self.features, rows, dxpl, calls)


def _inspect(f: h5py.File, values: Mapping[str, Any], nodes: int) -> _Inspected:
    """Validate the file (and its own test set, when named)."""
    features, labels = _pair(f, values, "features_dataset", "labels_dataset")
    test = values.get("test_features_dataset") or values.get("test_labels_dataset")
    if not test:
        samples = int(features.shape[0])
        if samples < nodes:
            raise JobError(
                f"[data] path: {_shown(values)} has {samples} samples, fewer than the {nodes} "
                "nodes; every node needs a sample"
            )
        targets, num_classes = targets_from_labels(labels[()], values)
        return _Inspected(features, None, targets, num_classes, 0)
    if not (values["test_features_dataset"] and values["test_labels_dataset"]):
        raise JobError(
            "[data] test_features_dataset and test_labels_dataset name the file's own test set: "
            "give both, or neither (then test_fraction holds out a test set)"
        )
    test_features, test_labels = _pair(f, values, "test_features_dataset", "test_labels_dataset")
    if test_features.shape[1:] != features.shape[1:]:
        raise JobError(
            f"[data] test_features_dataset = {values['test_features_dataset']!r} holds samples of "
            f"shape {test_features.shape[1:]} but features_dataset = "
            f"{values['features_dataset']!r} holds {features.shape[1:]}; they must match"
        )
    if int(features.shape[0]) < nodes:
        raise JobError(
            f"[data] features_dataset = {values['features_dataset']!r} in {_shown(values)} has "
            f"{features.shape[0]} training samples, fewer than the {nodes} nodes"
        )
    targets, num_classes = targets_from_labels(
        np.concatenate([labels[()], test_labels[()]]), values
    )
    return _Inspected(features, test_features, targets, num_classes, int(test_features.shape[0]))


def _pair(
    f: h5py.File, values: Mapping[str, Any], fkey: str, lkey: str
) -> tuple[h5py.Dataset, h5py.Dataset]:
    """A features dataset (N, ...) and its labels (N,), checked."""
    features = _dataset(f, fkey, values)
    labels = _dataset(f, lkey, values)
    fwhere = f"[data] {fkey} = {values[fkey]!r} in {_shown(values)}"
    lwhere = f"[data] {lkey} = {values[lkey]!r} in {_shown(values)}"
    if len(features.shape) < 2:
        raise JobError(
            f"{fwhere} must have one row per sample, (samples, ...) such as (N, p) vectors or "
            f"(N, C, H, W) images, got shape {features.shape}"
        )
    if min(features.shape[1:]) < 1:
        raise JobError(f"{fwhere} has empty samples (shape {features.shape})")
    if not _numeric(features):
        raise JobError(f"{fwhere} must hold numbers, got type {features.dtype}")
    if len(labels.shape) != 1:
        raise JobError(f"{lwhere} must be 1-D (samples,), got shape {labels.shape}")
    if not _numeric(labels):
        raise JobError(f"{lwhere} must hold numbers, got type {labels.dtype}")
    if labels.shape[0] != features.shape[0]:
        raise JobError(
            f"{lwhere} has {labels.shape[0]} rows but {fkey} = {values[fkey]!r} has "
            f"{features.shape[0]}; they must match"
        )
    return features, labels


def check_hdf5(values: Mapping[str, Any], nodes: int, base_dir: str | None = None) -> DataInfo:
    """Serial, read-only checks of the file (see module docstring); raises ``JobError``."""
    with _open_serial(values, base_dir) as f:
        found = _inspect(f, values, nodes)
    # too few training samples, a Dirichlet partition leaving a node empty
    make_layout(found.targets, values, nodes, found.fixed_test)
    return DataInfo(values["task"], found.input_shape, found.num_classes)


# HDF5 (1.10) builds a union of n hyperslabs in O(n²) time, so a read selects at most this many runs
# of consecutive rows; longer selections are read in several calls.
RUNS_PER_READ = 512


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of consecutive values in increasing ``rows``: (starts, lengths)."""
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = rows[np.concatenate(([0], breaks))]
    lengths = np.diff(np.concatenate(([0], breaks, [rows.size])))
    return starts, lengths


def read_calls(rows: np.ndarray) -> int:
    """How many read calls ``read_rows`` needs for ``rows`` (at least one)."""
    return max(1, -(-_runs(np.asarray(rows, dtype=np.int64))[0].size // RUNS_PER_READ))


def read_rows(
    dset: h5py.Dataset, rows: np.ndarray, dxpl: Any = None, calls: int | None = None
) -> np.ndarray:
    """Rows ``rows`` (increasing) of a dataset of shape (N, *sample_shape) as float64, reading
    nothing else.

    The rows are read in ``calls`` read calls (default and minimum: ``read_calls(rows)``), each a
    union of at most ``RUNS_PER_READ`` hyperslabs. With a collective ``dxpl`` every rank of the
    file's communicator must make the same number of calls, so pass the same ``calls`` on every
    rank; calls with nothing left to read take part with an empty selection.
    """
    from h5py import h5s

    rows = np.asarray(rows, dtype=np.int64)
    m, tail = int(rows.size), tuple(int(s) for s in dset.shape[1:])
    zeros = (0,) * len(tail)
    starts, lengths = _runs(rows)
    needed = read_calls(rows)
    calls = needed if calls is None else calls
    if calls < needed:
        raise ValueError(f"{m} rows in {starts.size} runs need {needed} read calls, got {calls}")
    native = dset.dtype.kind in "iuf"  # HDF5 converts these to float64 on read
    out = np.empty((max(m, 1), *tail), dtype=np.float64 if native else dset.dtype)
    mspace = h5s.create_simple((max(m, 1), *tail))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    for call in range(calls):
        fspace = dset.id.get_space()
        first, last = call * RUNS_PER_READ, min((call + 1) * RUNS_PER_READ, starts.size)
        if first >= last:
            fspace.select_none()
            mspace.select_none()
        else:
            op = h5s.SELECT_SET
            for start, length in zip(
                starts[first:last].tolist(), lengths[first:last].tolist(), strict=True
            ):
                fspace.select_hyperslab((start, *zeros), (length, *tail), op=op)
                op = h5s.SELECT_OR
            mspace.select_hyperslab(
                (int(offsets[first]), *zeros), (int(offsets[last] - offsets[first]), *tail)
            )
        if dxpl is None:
            dset.id.read(mspace, fspace, out)
        else:
            dset.id.read(mspace, fspace, out, dxpl=dxpl)
    return out[:m].astype(np.float64, copy=False)


def _collective_dxpl() -> Any:
    from h5py import h5fd, h5p

    dxpl = h5p.create(h5p.DATASET_XFER)
    dxpl.set_dxpl_mpio(h5fd.MPIO_COLLECTIVE)
    return dxpl


def load_hdf5(
    values: Mapping[str, Any], nodes: int, node: int, comm: Any = None, base_dir: str | None = None
) -> NodeData:
    """Node ``node``'s data from the file; collective over ``comm`` when given (see module
    docstring)."""
    import h5py

    parallel = comm is not None and bool(h5py.get_config().mpi)
    f = _open_parallel(values, base_dir, comm) if parallel else _open_serial(values, base_dir)
    with f:
        found = _inspect(f, values, nodes)
        layout = make_layout(found.targets, values, nodes, found.fixed_test)
        dxpl = _collective_dxpl() if parallel else None
        # Collective reads: every rank makes as many calls as the node needing the most (known to
        # all).
        calls = iter(
            [
                max(read_calls(layout.train_rows[layout.train_indices(i)]) for i in range(nodes)),
                read_calls(layout.test_rows),
            ]
        )  # every node reads the whole test set
        data = assemble(
            "hdf5",
            values["task"],
            found.input_shape,
            found.num_classes,
            layout,
            node,
            lambda rows: (found.rows(rows, dxpl, next(calls)), found.targets[rows]),
        )
    # The file row of the first sample with a NaN/inf feature on this node (-1: none); the smallest
    # over ranks.
    first = -1
    for part, rows in (
        (data.train, layout.train_rows[layout.train_indices(node)]),
        (data.test_all, layout.test_rows),
    ):
        if part is None:
            continue
        finite = np.isfinite(part.features.reshape(len(part.features), -1)).all(axis=1)
        if not finite.all():
            row = (
                int(np.asarray(rows).reshape(-1)[np.flatnonzero(~finite)[0]])
                if len(rows) == len(finite)
                else int(np.flatnonzero(~finite)[0])
            )
            first = row if first < 0 else min(first, row)
    if comm is not None:
        firsts = [
            r for r in comm.allgather(first) if r >= 0
        ]  # every rank fails together, with the same line
        first = min(firsts) if firsts else -1
    if first >= 0:
        # with comm every rank raises this together: one line in all (AgreedJobError), no abort
        raise (JobError if comm is None else AgreedJobError)(
            f"[data] features_dataset = {values['features_dataset']!r} in {_shown(values)} holds "
            f"NaN or infinite values (first at sample {first}); every feature must be finite"
        )
    return data


def check_data(
    values: Mapping[str, Any], nodes: int, base_dir: str | None = None, rank: int = 0
) -> DataInfo:
    """Checks of resolved [data] values against the number of nodes, before any collective; returns
    the task, sample shape and classes a model needs.

    Raises ``JobError`` (unknown name, too few samples for the nodes, a Dirichlet partition leaving
    a node empty, a missing or malformed hdf5 file, a loader that fails, ...). ``base_dir``: the job
    file's folder, against which a relative path is resolved; ``rank``: whose shard a shard loader
    checks.
    """
    if data_kind(values).file:
        return check_hdf5(values, nodes, base_dir)
    return check_in_memory(values, nodes, base_dir, rank)


def load_node_data(
    values: Mapping[str, Any], nodes: int, node: int, comm: Any = None, base_dir: str | None = None
) -> NodeData:
    """Node ``node``'s data of any kind; every rank calls it (collectively over ``comm`` for a
    file)."""
    if not 0 <= node < nodes:
        raise ValueError(f"node {node} is not in 0..{nodes - 1}")
    if data_kind(values).file:
        return load_hdf5(values, nodes, node, comm, base_dir)
    return in_memory_node_data(values, nodes, node, base_dir)
