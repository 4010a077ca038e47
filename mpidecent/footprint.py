"""How much memory one rank of a job needs, estimated from the job before anything is allocated, and
the one-line refusal of a job that needs more than the rank's share of the machine.

``check_memory`` is called by every rank on its own (pure, before the first collective) from
``plan.plan_job``, after the topology checks and before the data are generated or read, so a job
whose sizes are out of reach (``[data] samples``, ``features``, ``[model] hidden`` or ``batch_size``
in the billions) ends every rank with one ``JobError`` naming the key that dominates and the
numbers, instead of a MemoryError deep inside (or the kernel's OOM killer). The estimate, in bytes
per rank:

* data: a generated or built-in set is held whole on every rank while its shard is cut (8 bytes per
  entry), then the rank's training rows, the whole test set and its slice; a file (``hdf5``) by its
  datasets' shapes: the labels, the rank's rows and the test set. Labels and the split/partition
  index arrays count 64 bytes per sample. A master/worker rank holding several partitions counts
  each.
* model: d parameters (from ``[model]`` and the sample shape: logistic, softmax, mlp, cnn1d, cnn)
  times the parameters, their gradient, the torch copy made while building, the float64 evaluation
  copy with its gradient and the metrics' float64 copies.
* algorithm: the d-sized vectors its declaration counts (``AlgorithmSpec.memory``: its state, and
  copies kept per schedule slot for itself and each in-neighbour, such as quantized push-sum's
  references), the local optimizer's, error feedback's and the compressor's scratch (measured on a
  small instance).
* messages: for each message stream the algorithm declares, its vectors per message × its buffer
  sets in flight × the pattern's buffers per set: the send buffer and one receive buffer per
  in-neighbour of this rank, each the compressed message's size (a master receives one from every
  worker).
* batch: the minibatch's gathered rows and the forward/backward activations of every layer (3 per
  width), or the evaluation's forward pass over the shard or the test set, whichever is larger.
* optimum: the exact f* of a convex model with ℓ2 > 0 (Newton on the d×d Hessian, about 4 d²
  floats).

What only the user's code knows (a loader's arrays, a factory's model) is not estimated; a
MemoryError while building it is turned into the same kind of one line by ``memory_guard``
(``plan_job`` and ``runner/build.py``). ``MPIDECENT_NO_MEMORY_CHECK=1`` skips the refusal (not the
guard).

No torch: validation never imports it (h5py only for a file's shapes, the compressors without
numba).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mpidecent.errors import JobError
from mpidecent.machine import MemoryShare, memory_share, size_text

if TYPE_CHECKING:
    from mpidecent.algorithms import AlgorithmSpec
    from mpidecent.comm.patterns import Pattern
    from mpidecent.config import Job

SKIP_ENV = "MPIDECENT_NO_MEMORY_CHECK"

F64 = 8  # bytes of a float64 entry (data, evaluation, the optimum)
INDEX_BYTES_PER_SAMPLE = (
    64  # labels, targets and the split/partition index arrays (int64), per sample
)
ACTIVATION_COPIES = 3  # per layer width: the output kept for backward, the activation, its gradient
MODEL_F64_COPIES = (
    4  # evaluation copy and its gradient (float64), the metrics' average and own model
)

_OPTIMIZER = {"sgd": 0, "heavy_ball": 1, "nesterov": 2, "adam": 3}
_ERROR_FEEDBACK = 3  # memory, v + e, the decoded own message
_SAMPLE_DIM = (
    4096  # compressors are measured at this length and scaled (their sizes are linear in d)
)


@dataclass(frozen=True)
class Part:
    """One component of the estimate: bytes per rank, and the job key that drives it (``[data]
    samples = 1000000000``) with how to lower it."""

    bytes: int
    key: str
    fix: str


@dataclass(frozen=True)
class Footprint:
    """A rank's estimated memory by component (bytes); components that cannot be estimated are
    absent."""

    parts: Mapping[str, Part]

    @property
    def total(self) -> int:
        return sum(p.bytes for p in self.parts.values())

    @property
    def dominant(self) -> Part:
        return max(self.parts.values(), key=lambda p: p.bytes)

    def breakdown(self) -> str:
        return ", ".join(f"{name} {size_text(p.bytes)}" for name, p in self.parts.items())


# ---- the check -----------------------------------------------------------------------------------


def check_memory(
    job: Job,
    weights: Sequence[np.ndarray],
    rank: int,
    base_dir: str | None = None,
    share: MemoryShare | None = None,
) -> Footprint | None:
    """Refuse (``JobError``, one line with the numbers) a job whose estimated memory on this rank is
    above the rank's share of the machine. Every rank, pure, before the first collective.
    ``weights``: the plan's mixing matrix per slot (n × n, row i = receiver i), for this rank's
    in-degree; ``share``: for tests (default: this machine's, ``machine.memory_share``). Returns the
    estimate (None: no share known or the check is switched off)."""
    if os.environ.get(SKIP_ENV, "").strip() not in ("", "0"):
        return None
    world = int(weights[0].shape[0])
    share = share if share is not None else memory_share(world)
    if share is None:
        return None
    footprint = estimate(job, weights, rank, base_dir)
    if footprint.parts and footprint.total > share.per_rank:
        raise JobError(refusal(footprint, share))
    return footprint


def refusal(footprint: Footprint, share: MemoryShare) -> str:
    """The one line of a refused job: the dominant key, the estimate by component, the rank's
    share."""
    top = footprint.dominant
    room = (
        f"each of the {share.ranks} ranks on this machine has about {size_text(share.per_rank)} "
        f"({size_text(share.available)} available)"
        if share.ranks > 1
        else f"this machine has about {size_text(share.available)} available"
    )
    more = (
        "use more machines (fewer ranks on each)"
        if share.ranks > 1
        else "use a machine with more memory"
    )
    return (
        f"{top.key} needs about {size_text(footprint.total)} per rank ({footprint.breakdown()}) "
        f"but {room}: {top.fix} or {more}; {SKIP_ENV}=1 skips this check"
    )


@contextmanager
def memory_guard(what: str, world_size: int) -> Iterator[None]:
    """Turn running out of memory inside the block (numpy's MemoryError, torch's allocator error)
    into a one-line ``JobError`` naming ``what`` (e.g. ``[model] name = 'nets.py:Big'``): for sizes
    only known once the user's code has built them. Every rank that allocates; the caller decides
    what a JobError means where it runs (before or after the ranks agreed)."""
    try:
        yield
    except MemoryError as err:
        raise JobError(out_of_memory(what, err, world_size)) from None
    except RuntimeError as err:
        if "can't allocate memory" not in str(err) and "DefaultCPUAllocator" not in str(err):
            raise
        raise JobError(out_of_memory(what, err, world_size)) from None


def out_of_memory(what: str, err: BaseException, world_size: int) -> str:
    """The line of an allocation that failed while building ``what``."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.split("DefaultCPUAllocator: ", 1)[-1]  # torch prefixes its enforce-fail location
    share = memory_share(world_size)
    room = ""
    if share is not None:
        room = (
            f"; each of the {share.ranks} ranks on this machine has about "
            f"{size_text(share.per_rank)} ({size_text(share.available)} available)"
            if share.ranks > 1
            else f"; this machine has about {size_text(share.available)} available"
        )
    return (
        f"{what} ran out of memory ({text}){room}: make its data or model smaller, or use more "
        "machines (fewer ranks on each)"
    )


# ---- the estimate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataShape:
    """A data set's sizes, known without building it. ``samples``: the whole set (training + test);
    ``test``: the test rows; ``whole``: the whole set is held in memory by every rank while its
    shard is cut (generated and built-in sets); ``key``/``fix``: the job key that sets the size;
    ``feature_key``: the key that sets a sample's size (for the model's first layer)."""

    samples: int
    test: int
    input_shape: tuple[int, ...]
    classes: int
    whole: bool
    key: str
    fix: str
    feature_key: str
    feature_fix: str

    @property
    def features(self) -> int:
        return math.prod(self.input_shape)


@dataclass(frozen=True)
class ModelShape:
    """A built-in model's parameter count d and the widths of its layers' outputs per sample (for
    the activations), with the key that sets d."""

    dim: int
    widths: tuple[int, ...]
    key: str
    fix: str


def estimate(
    job: Job, weights: Sequence[np.ndarray], rank: int, base_dir: str | None = None
) -> Footprint:
    """This rank's memory by component (see the module docstring); pure, no allocation beyond a
    small compressor instance."""
    from mpidecent.algorithms import ALGORITHMS

    spec = ALGORITHMS[job.algorithm["name"]]
    world = int(weights[0].shape[0])
    nodes = spec.pattern.data_nodes(world)
    state = np.dtype(job.run["dtype"]).itemsize
    parts: dict[str, Part] = {}
    data = data_shape(job.data, base_dir)
    if data is None:
        return Footprint(parts)  # a user's loader: the guard covers it
    partitions, loaded = _layout_partitions(spec, job, world, rank, nodes)
    train_rows = data.samples - data.test
    part_rows = -(-train_rows // max(nodes, 1))
    rows = partitions * part_rows  # this rank's training rows
    p = data.features
    shard, test_all, test_slice = (
        rows * p * F64,
        data.test * p * F64,
        -(-data.test // max(nodes, 1)) * p * F64,
    )
    data_bytes = shard + loaded * (test_all + test_slice) + data.samples * INDEX_BYTES_PER_SAMPLE
    if loaded > 1 or partitions > 1:
        data_bytes += shard  # the partitions are loaded one by one, then concatenated
    if data.whole:
        data_bytes += data.samples * p * F64
    if state != F64:
        data_bytes += rows * p * state  # torch's copy of the training rows in the run's dtype
    parts["data"] = Part(data_bytes, data.key, data.fix)
    model = model_shape(job.model, data)
    if model is None:
        return Footprint(parts)  # a user's model: the guard covers it
    d = model.dim
    parts["model"] = Part(d * (3 * state + MODEL_F64_COPIES * F64), model.key, model.fix)
    per_entry, scratch = _compressor_bytes(job.compression, state, d)
    max_in, period = _in_degree(weights, rank)
    memory = spec.memory_use(job)
    vectors = memory.state_vectors + _OPTIMIZER.get(job.algorithm.get("optimizer", "sgd"), 3)
    if job.compression.get("error_feedback"):
        vectors += _ERROR_FEEDBACK
    vectors += memory.copies_per_slot_and_neighbour * period * (1 + max_in)
    parts["algorithm"] = Part(int(d * (vectors * state + scratch)), model.key, model.fix)
    messages = memory.message_vectors * _buffers_per_message(spec.pattern, rank, world, max_in)
    parts["messages"] = Part(int(messages * (d * per_entry + 64)), model.key, model.fix)
    parts["batch"] = _batch(job, data, model, rows, state)
    optimum = _optimum(job.model, data, rows)
    if optimum:
        parts["optimum"] = Part(
            optimum,
            data.feature_key,
            f"{data.feature_fix} (the exact optimum f* of a "
            "convex model with [model] l2 > 0 solves a d×d Newton system)",
        )
    return Footprint(parts)


def _layout_partitions(
    spec: AlgorithmSpec, job: Job, world: int, rank: int, nodes: int
) -> tuple[int, int]:
    """(training partitions this rank holds, partitions it loads whole with their test set)."""
    try:
        layout = spec.data_layout(job, world, rank)
    except Exception:  # noqa: BLE001 - the plan's own checks report a bad layout
        return 1, 1
    trained = len(layout.train)
    loaded = len({j for j, _ in layout.train} | ({layout.evaluate} - {None}))
    return trained, max(loaded, 1)


def _in_degree(weights: Sequence[np.ndarray], rank: int) -> tuple[int, int]:
    """(this rank's largest in-degree over the slots, the number of slots)."""
    most = 0
    for w in weights:
        row = np.asarray(w)[rank]
        most = max(most, int(np.count_nonzero(row)) - int(row[rank] != 0))
    return most, len(weights)


def _buffers_per_message(pattern: Pattern, rank: int, world: int, max_in: int) -> int:
    """The buffers this rank holds for one message of a stream (one set in flight): the pattern's
    send buffer and receive buffers."""
    from mpidecent.comm.patterns import AllReduce, MasterWorker, NeighborGossip, OneSidedGossip

    if isinstance(pattern, NeighborGossip):
        return 1 + max_in
    if isinstance(pattern, MasterWorker):
        return world + 2 if rank == 0 else 3
    if isinstance(pattern, (OneSidedGossip, AllReduce)):
        return 3
    return 1 + max_in


def _compressor_bytes(table: Mapping[str, Any], state: int, dim: int) -> tuple[float, float]:
    """(message bytes per entry, scratch bytes per entry) of the job's compressor for ``dim``
    entries, measured on an instance of ``_SAMPLE_DIM`` entries (sizes are linear in d); the
    uncompressed size when it cannot be built. The sample runs the numpy reference (below the
    kernels' minimum length, so numba is not imported); where the fused kernels will run instead,
    their scratch is counted as one vector."""
    from mpidecent.compression import build_compressor

    try:
        sample = build_compressor(table["name"], _SAMPLE_DIM, np.dtype(f"f{state}"), table)
    except Exception:  # noqa: BLE001 - the plan and the run report a bad operator
        return float(state), float(4 * F64)
    if hasattr(sample, "kernels") and _kernels_at(dim):
        return sample.nbytes / _SAMPLE_DIM, float(state)
    scratch = sum(a.nbytes for a in vars(sample).values() if isinstance(a, np.ndarray))
    return sample.nbytes / _SAMPLE_DIM, scratch / _SAMPLE_DIM


def _kernels_at(dim: int) -> bool:
    """Whether a compressor of ``dim`` entries will use the compiled kernels
    (``compression/kernels.py``), decided without importing numba."""
    import importlib.util

    from mpidecent.compression import kernels

    return (
        dim >= kernels.MIN_DIM
        and os.environ.get("MPIDECENT_KERNELS", "") != "reference"
        and importlib.util.find_spec("numba") is not None
    )


def _batch(job: Job, data: DataShape, model: ModelShape, rows: int, state: int) -> Part:
    """The larger of a training step (the minibatch's rows, indices and activations) and the
    evaluation's forward pass over the shard or the whole test set (float64, no gradients: two
    layers at a time)."""
    size = int(job.data["batch_size"])
    batch = size or rows
    width = sum(model.widths)
    train = batch * width * ACTIVATION_COPIES * state + batch * F64 * 2
    if size:
        train += batch * data.features * state  # the gathered rows
    widest = max(model.widths)
    evaluate = max(rows, data.test) * (2 * widest + 2) * F64
    if train < evaluate:  # rows × widths: name the factor that is out of proportion
        return Part(
            evaluate,
            *((model.key, model.fix) if widest > max(rows, data.test) else (data.key, data.fix)),
        )
    if size and width <= size:
        return Part(train, f"[data] batch_size = {size}", "lower [data] batch_size")
    if not size and width <= rows:
        return Part(
            train,
            "[data] batch_size = 0 (the whole shard every step)",
            "set [data] batch_size to a minibatch size",
        )
    return Part(train, model.key, model.fix)


def _optimum(model: Mapping[str, Any], data: DataShape, rows: int) -> int:
    """Bytes of the exact optimum's Newton solve (runner/metrics.py ``network_optimum``), 0 when
    none."""
    name = model["name"]
    if name not in ("logistic", "linear") or model["l2"] <= 0 or model["loss"] != "auto":
        return 0
    dd = data.features + (1 if name == "logistic" else 0)
    return 4 * dd * dd * F64 + 2 * rows * dd * F64


# ---- the data set's and the model's shapes, from the job -----------------------------------------


def data_shape(values: Mapping[str, Any], base_dir: str | None = None) -> DataShape | None:
    """The sizes of the job's data set without building it; None for a user's loader or a file that
    cannot be read (``check_data`` then reports it)."""
    from mpidecent import plugins
    from mpidecent.learning.data import num_test_samples
    from mpidecent.learning.sources import DATASETS

    name = values["name"]
    if plugins.is_import_path(name) or name not in DATASETS:
        return None
    kind = DATASETS[name]
    task = kind.task(dict(values))
    classes = (
        2 if task == "binary" else (0 if task == "regression" else 2)
    )  # multiclass: at least 2
    if kind.file:
        return _file_shape(values, base_dir, classes)
    if "samples" in values and "features" in values:
        samples, features = int(values["samples"]), int(values["features"])
        sized = (
            ("[data] samples", samples) if samples >= features else ("[data] features", features)
        )
        return DataShape(
            samples,
            num_test_samples(samples, values["test_fraction"]),
            (features,),
            classes,
            True,
            f"{sized[0]} = {sized[1]}",
            f"lower {sized[0]}",
            f"[data] features = {features}",
            "lower [data] features",
        )
    assert kind.dataset is not None  # not a file kind (returned above)
    try:
        dataset = kind.dataset(
            dict(values), base_dir
        )  # the small built-in sets (cached: check_data reuses it)
    except Exception:  # noqa: BLE001 - check_data reports it
        return None
    test = dataset.fixed_test or num_test_samples(
        dataset.num_samples, values.get("test_fraction", 0.0)
    )
    where = f"[data] name = {name!r}"
    return DataShape(
        dataset.num_samples,
        test,
        dataset.input_shape,
        dataset.num_classes,
        True,
        where,
        "choose a smaller data set",
        where,
        "choose a smaller data set",
    )


def _file_shape(values: Mapping[str, Any], base_dir: str | None, classes: int) -> DataShape | None:
    import h5py

    from mpidecent.learning.data import num_test_samples, resolve_path

    try:
        with h5py.File(resolve_path(values["path"], base_dir), "r") as f:
            features = f[values["features_dataset"]]
            shape = tuple(int(s) for s in features.shape)
            own_test = values.get("test_features_dataset")
            test = int(f[own_test].shape[0]) if own_test else None
    except Exception:  # noqa: BLE001 - check_data names what is wrong with the file
        return None
    if len(shape) < 2:
        return None
    train = shape[0]
    samples = train + (test or 0)
    test = test if test is not None else num_test_samples(train, values["test_fraction"])
    where = f"[data] path = {values['path']!r} ({samples} samples of shape {shape[1:]})"
    return DataShape(
        samples,
        test,
        shape[1:],
        classes,
        False,
        where,
        "use a smaller data file",
        where,
        "use a data file with smaller samples",
    )


def model_shape(values: Mapping[str, Any], data: DataShape) -> ModelShape | None:
    """d and the layer widths of a built-in model on ``data``'s samples; None for a user's model (or
    a sample shape the model refuses: ``check_model`` reports that)."""
    name, shape, p = values["name"], data.input_shape, data.features
    outputs = 1 if data.classes in (0, 2) else data.classes
    feature = (data.feature_key, data.feature_fix)
    if name in ("linear", "relu"):
        return ModelShape(p, (1,), *feature)
    if name == "logistic":
        return ModelShape(p + 1, (1,), *feature)
    if name == "softmax":
        return ModelShape((p + 1) * outputs, (outputs,), *feature)
    if name == "mlp":
        hidden = [int(h) for h in values["hidden"]]
        sizes = [p, *hidden, outputs]
        dim = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
        key = (
            (f"[model] hidden = {hidden}", "lower [model] hidden") if max(hidden) >= p else feature
        )
        return ModelShape(dim, (*hidden, outputs), *key)
    if name == "cnn1d":
        return _cnn1d(shape, outputs, int(values["channels"]))
    if name == "cnn":
        return _lenet(
            shape, outputs, [int(c) for c in values["channels"]], [int(h) for h in values["hidden"]]
        )
    return None


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


def _cnn1d(shape: tuple[int, ...], outputs: int, channels: int) -> ModelShape | None:
    """``networks.CNN1d``: convolutions (kernel 5, 3, 3; stride 2; padding 1), then a linear
    layer."""
    if len(shape) not in (1, 2):
        return None
    fan_in, length = (1, shape[0]) if len(shape) == 1 else shape
    dim, widths = 0, []
    for kernel in (5, 3, 3):
        length = _conv_out(length, kernel, 2, 1)
        if length < 1:
            return None
        dim += (fan_in * kernel + 1) * channels
        widths.append(channels * length)
        fan_in = channels
    dim += (channels * length + 1) * outputs
    return ModelShape(
        dim, (*widths, outputs), f"[model] channels = {channels}", "lower [model] channels"
    )


def _lenet(
    shape: tuple[int, ...], outputs: int, channels: list[int], hidden: list[int]
) -> ModelShape | None:
    """``networks.LeNet``: 5×5 convolutions (the first padded by 2), each with ReLU and 2×2 pooling,
    then the fully connected layers."""
    if len(shape) not in (2, 3):
        return None
    fan_in, height, width = (1, *shape) if len(shape) == 2 else shape
    conv, widths = 0, []
    for i, c in enumerate(channels):
        pad = 2 if i == 0 else 0
        height, width = _conv_out(height, 5, 1, pad), _conv_out(width, 5, 1, pad)
        if height < 1 or width < 1:
            return None
        conv += (fan_in * 25 + 1) * c
        widths.append(c * height * width)
        height, width = height // 2, width // 2
        widths.append(c * height * width)
        fan_in = c
    sizes = [fan_in * height * width, *hidden, outputs]
    dense = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    key = (
        (f"[model] channels = {channels}", "lower [model] channels")
        if conv >= dense
        else (f"[model] hidden = {hidden}", "lower [model] hidden")
    )
    return ModelShape(conv + dense, (*widths, *hidden, outputs), *key)
