"""Reading one results file (``docs/results-format.md``) into a ``Run`` — serially, read-only.

The one reader of results files: ``mpidecent report``, ``mpidecent run --resume`` (``read_header``),
the bench and the tests use it. Pure: h5py with its default driver and numpy, never mpi4py, so it
runs anywhere (a laptop without MPI, a login node) on files written by any number of ranks. The
layout's names and format version come from ``io/layout.py``, shared with the parallel writer
``io/results.py``.

A file that is not an mpidecent results file is refused with one line (``ReportError``); a file of a
newer ``format_version`` than this reader knows is refused too. A file of a run that crashed, was
killed, diverged or is still going is read as far as it goes and flagged ``partial`` with the
reason.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from mpidecent.comm.linkmodel import LinkModel
from mpidecent.io.hdf5guard import (
    READ_ERRORS,
    attribute_problem,
    crash_probe,
    first_line,
    heap_problem,
    nbytes,
)
from mpidecent.io.layout import (
    FORMAT_VERSION,
    GLOBAL_SERIES,
    RANK_SERIES,
    RANK_TEST_SERIES,
    TEST_SERIES,
    rows_logged,
)

__all__ = [
    "BASE_GLOBAL_SERIES",
    "BASE_RANK_SERIES",
    "DEFAULT_LINK",
    "SUPPORTED_FORMAT_VERSION",
    "ReportError",
    "Run",
    "RunHeader",
    "expected_rows",
    "read_header",
    "read_run",
    "read_runs",
]

# The newest results format this reader understands: the one the writer writes. Policy:
# docs/results-format.md.
SUPPORTED_FORMAT_VERSION = FORMAT_VERSION

# The series the runner writes (io/layout.py); anything else under /metrics/rank or /metrics/global
# is an algorithm's extra. The test-set series (global: the average model; per rank: each node's own
# model) exist only in runs with a test set.
BASE_RANK_SERIES: tuple[str, ...] = (*RANK_SERIES, *RANK_TEST_SERIES)
BASE_GLOBAL_SERIES: tuple[str, ...] = (*GLOBAL_SERIES, *TEST_SERIES)

DEFAULT_LINK = LinkModel()

# Sizes read from a file are bounded before numpy allocates them: the writer stores every dataset
# uncompressed, so one that claims more than SIZE_FACTOR × the file's size (plus SIZE_SLACK for
# chunks not yet written, read as fill values) has a damaged shape.
SIZE_FACTOR = 2
SIZE_SLACK = 1 << 20
MAX_WORLD_SIZE = 1 << 24  # far beyond any MPI launch: a larger world_size is a damaged attribute

# Root attributes the report shows or computes with, and the Python type each must have
# (docs/results-format.md).
TEXT_ATTRS = (
    "job",
    "status",
    "run_name",
    "algorithm",
    "algorithm_description",
    "compressor",
    "compressor_description",
    "message",
)
COUNT_ATTRS = {"world_size": (1, MAX_WORLD_SIZE), "steps_requested": (0, None)}
TOPOLOGY_TEXT = ("kind",)
TOPOLOGY_COUNTS = {"period": (1, None), "n": (1, MAX_WORLD_SIZE)}


class ReportError(Exception):
    """A file or flag the report cannot use; the message is one line for the user."""


@dataclass(frozen=True)
class RunHeader:
    """What ``mpidecent run --resume`` needs of an existing results file (``read_header``)."""

    job: str  # the stored resolved job: the TOML text of the root attribute ``job`` ("" if absent)
    status: str  # root attribute ``status``; "unknown" if absent
    rows: int  # log rows written: the length of /metrics/step


@dataclass
class Run:
    """One run's results, as numpy arrays (rows = log points)."""

    path: str
    attrs: dict[str, Any]  # root attributes (numpy scalars converted to Python values)
    job: dict[str, Any]  # the stored resolved job (parsed TOML; {} if absent or unreadable)
    topology: dict[str, Any]  # /topology attributes
    edges: np.ndarray | None  # (E, 2) src → dst
    weights: np.ndarray | None  # (n, n)
    steps: np.ndarray  # (L,) int64
    rank_series: dict[str, np.ndarray]  # name → (L, n)
    global_series: dict[str, np.ndarray]  # name → (L,)
    units: dict[str, str]  # "rank/<name>" or "global/<name>" → unit ("" = dimensionless)
    events: dict[str, np.ndarray] = field(default_factory=dict)  # /events/<name>
    partial: bool = False
    partial_reason: str = ""
    expected_rows: int | None = None
    link: LinkModel = DEFAULT_LINK
    link_source: str = "default"  # "job [link]", "default" (job without [link]) or "report flags"
    label: str = (
        ""  # unique name among the runs of one report (set by the caller; default: run name)
    )

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    # ---- identification --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(
            self.attrs.get("run_name")
            or self.job.get("run", {}).get("name")
            or os.path.splitext(os.path.basename(self.path))[0]
        )

    @property
    def status(self) -> str:
        return str(self.attrs.get("status", "unknown"))

    @property
    def n(self) -> int:
        if "world_size" in self.attrs:
            return int(self.attrs["world_size"])
        for values in self.rank_series.values():
            return int(values.shape[1])
        return 0

    @property
    def rows(self) -> int:
        return int(self.steps.shape[0])

    @property
    def last_step(self) -> int:
        return int(self.steps[-1]) if self.rows else 0

    @property
    def steps_requested(self) -> int | None:
        value = self.attrs.get("steps_requested", self.job.get("run", {}).get("steps"))
        return None if value is None else int(value)

    @property
    def algorithm(self) -> str:
        return str(self.attrs.get("algorithm") or self.job.get("algorithm", {}).get("name", "?"))

    @property
    def compressor(self) -> str:
        return str(self.attrs.get("compressor") or self.job.get("compression", {}).get("name", "?"))

    @property
    def optimum(self) -> float:
        value = self.attrs.get("optimum", math.nan)
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    # ---- series ----------------------------------------------------------------------------------

    def glob(self, name: str) -> np.ndarray | None:
        """A global series (L,), or None if the file has none of that name."""
        return self.global_series.get(name)

    def rank(self, name: str) -> np.ndarray | None:
        """A per-rank series (L, n), or None."""
        return self.rank_series.get(name)

    def need_glob(self, name: str) -> np.ndarray:
        """A global series (L,) the caller needs (every run of the runner writes it, or the caller
        listed it); ReportError when the file has none of that name."""
        values = self.global_series.get(name)
        if values is None:
            raise ReportError(f"{self.path}: no global series {name!r} (not a file of this run?)")
        return values

    def need_rank(self, name: str) -> np.ndarray:
        """A per-rank series (L, n) the caller needs; ReportError when the file has none."""
        values = self.rank_series.get(name)
        if values is None:
            raise ReportError(f"{self.path}: no per-rank series {name!r} (not a file of this run?)")
        return values

    def unit(self, group: str, name: str) -> str:
        return self.units.get(f"{group}/{name}", "")

    @property
    def rank_extras(self) -> list[str]:
        """Algorithm-specific per-rank series (push_sum_weight, paper_bits, staleness_mean, ...)."""
        return [k for k in self.rank_series if k not in BASE_RANK_SERIES]

    @property
    def global_extras(self) -> list[str]:
        return [k for k in self.global_series if k not in BASE_GLOBAL_SERIES]

    def has_optimum(self) -> bool:
        sub = self.glob("suboptimality")
        return sub is not None and math.isfinite(self.optimum) and bool(np.any(np.isfinite(sub)))

    def accuracy_series(self) -> tuple[np.ndarray | None, str]:
        """(accuracy series of the average model, "test" or "training"): the test accuracy when the
        run has a test set; (None, "") when it has neither (regression)."""
        for name, kind in (("test_accuracy", "test"), ("accuracy", "training")):
            values = self.glob(name)
            if values is not None and np.any(np.isfinite(values)):
                return values, kind
        return None, ""

    def node_test_series(self, name: str) -> np.ndarray | None:
        """Each node's own model on the test set (``name``: "test_loss" or "test_accuracy"), (L, n)
        float64, or None when the file has no such per-rank series or it holds no finite value
        (regression accuracy)."""
        values = self.rank(name)
        if values is None:
            return None
        values = np.asarray(values, dtype=np.float64)
        return values if np.any(np.isfinite(values)) else None

    def modelled_time(self, link: LinkModel | None = None) -> np.ndarray | None:
        """Modelled seconds at each log point under ``link`` (default: this run's), or None when the
        file lacks the counters (see comm/linkmodel.py)."""
        compute, sent, messages = (
            self.rank(k) for k in ("compute_s", "bytes_sent", "messages_sent")
        )
        if compute is None or sent is None or messages is None:
            return None
        # Master/worker runs count the workers' uploads in bytes_sent (the paper's budget) and log
        # the master's full-precision broadcast of θ apart, as downlink_bits: the link carries both.
        downlink = self.rank("downlink_bits")
        if downlink is not None:
            sent = sent + downlink / 8
        return (link or self.link).modelled_time(compute, sent, messages)


# ---- reading -------------------------------------------------------------------------------------


def _python(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _open(path: str) -> h5py.File:
    if not os.path.exists(path):
        raise ReportError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ReportError(f"{path}: is a directory, not a results file")
    try:
        if not h5py.is_hdf5(path):
            raise ReportError(f"not an mpidecent results file: {path} (not an HDF5 file)")
    except READ_ERRORS as err:
        raise ReportError(f"{path}: cannot be read ({first_line(err)})") from None
    # Before libhdf5 parses it: a damaged global heap makes libhdf5 read past its buffers
    # (hdf5guard.py).
    problem = heap_problem(path)
    if problem:
        raise ReportError(f"{path}: damaged results file ({problem}); it cannot be read safely")
    try:
        # locking=False: a running job's file (open for writing by the ranks) can be read too.
        return h5py.File(path, "r", locking=False)
    except TypeError:  # an HDF5 without the locking switch
        pass
    except READ_ERRORS as err:
        raise ReportError(f"{path}: cannot be opened ({first_line(err)})") from None
    try:
        return h5py.File(path, "r")
    except READ_ERRORS as err:
        raise ReportError(
            f"{path}: cannot be opened ({first_line(err)}); if a run is still writing it, "
            "try HDF5_USE_FILE_LOCKING=FALSE"
        ) from None


@contextmanager
def _reading(path: str) -> Iterator[h5py.File]:
    """The open file (``_open``); any error h5py raises while it is read becomes a one-line
    ``ReportError``."""
    with _open(path) as f:
        try:
            yield f
        except READ_ERRORS as err:
            raise ReportError(f"{path}: damaged results file ({first_line(err)})") from None


def _check_version(path: str, attrs: h5py.AttributeManager) -> int:
    if "format_version" not in attrs:
        raise ReportError(f"not an mpidecent results file: {path} (no format_version attribute)")
    raw = _python(attrs["format_version"])
    if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)) or raw < 1:
        raise ReportError(
            f"not an mpidecent results file: {path} (format_version {raw!r} is not a version "
            "number)"
        )
    if raw > SUPPORTED_FORMAT_VERSION:
        raise ReportError(
            f"{path}: results format_version {raw} is newer than this mpidecent reads "
            f"(up to {SUPPORTED_FORMAT_VERSION}); upgrade mpidecent to report on it"
        )
    return int(raw)


def expected_rows(steps: int, log_every: int) -> int:
    """Log rows of a completed run (``layout.rows_logged`` at its last step)."""
    steps = max(int(steps), 0)
    return rows_logged(steps, steps, log_every)


def _link_from_job(job: dict[str, Any]) -> tuple[LinkModel, str]:
    table = job.get("link")
    if not isinstance(table, dict):
        return DEFAULT_LINK, "default"
    try:
        return LinkModel(
            float(table.get("bandwidth_bps", DEFAULT_LINK.bandwidth_bps)),
            float(table.get("latency_s", DEFAULT_LINK.latency_s)),
            table.get("shared", False) is True,
        ), "job [link]"
    except (TypeError, ValueError):
        return DEFAULT_LINK, "default"


def read_run(path: str) -> Run:
    """Read a results file (see module docstring); raises ``ReportError`` with a one-line
    message."""
    path = str(path)
    with _reading(path) as f:
        return _read(path, f)


def read_header(path: str) -> RunHeader:
    """The stored job, the status and the row count of a results file, without reading its series;
    raises ``ReportError`` with a one-line message (no such file, not a results file, a newer
    format, no /metrics/step)."""
    path = str(path)
    with _reading(path) as f:
        _check_version(path, f.attrs)
        step = _step_series(path, f)
        attrs = _attributes(path, f, _limit(path))
        _check_attributes(path, attrs)
        return RunHeader(
            job=str(attrs.get("job", "")),
            status=str(attrs.get("status", "unknown")),
            rows=int(step.shape[0]),
        )


def read_logged_steps(path: str, count: int) -> np.ndarray:
    """The first ``count`` values of a results file's /metrics/step (``mpidecent run --resume``
    compares them with the checkpoint's); ``ReportError`` (one line) when the file has fewer rows or
    cannot be read."""
    path = str(path)
    with _reading(path) as f:
        step = _step_series(path, f)
        if step.shape[0] < count:
            raise ReportError(f"{path}: {step.shape[0]} log rows, fewer than {count}")
        if step.dtype.kind not in "iu":
            raise ReportError(
                f"{path}: damaged results file (/metrics/step is {step.dtype}, not integers)"
            )
        return (
            np.asarray(step[:count], dtype=np.int64) if count > 0 else np.zeros(0, dtype=np.int64)
        )


def _step_series(path: str, f: h5py.File) -> h5py.Dataset:
    """/metrics/step, a one-dimensional dataset (not read)."""
    step = f.get("metrics/step")
    if not isinstance(step, h5py.Dataset) or step.ndim != 1:
        raise ReportError(f"{path}: damaged results file (no /metrics/step series)")
    return step


def _limit(path: str) -> int:
    """The most bytes one dataset or attribute of the file at ``path`` may take in memory."""
    return SIZE_FACTOR * os.path.getsize(path) + SIZE_SLACK


def _attributes(path: str, obj: h5py.HLObject, limit: int) -> dict[str, Any]:
    """``obj``'s attributes as Python values, each bounded in size before it is read."""
    problem = attribute_problem(obj, limit)
    if problem:
        raise ReportError(f"{path}: damaged results file ({obj.name}: {problem})")
    return {k: _python(v) for k, v in obj.attrs.items()}


def _check_types(
    path: str,
    where: str,
    attrs: dict[str, Any],
    texts: tuple[str, ...],
    counts: dict[str, tuple[int, int | None]],
) -> None:
    """``ReportError`` unless each of ``texts`` present is a string and each of ``counts`` an
    integer within its (low, high) bounds (high None: none)."""
    for name in texts:
        if name in attrs and not isinstance(attrs[name], str):
            raise ReportError(
                f"{path}: damaged results file ({where}attribute {name!r} is "
                f"{type(attrs[name]).__name__}, not text)"
            )
    for name, (low, high) in counts.items():
        if name not in attrs:
            continue
        value = attrs[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            bounds = f"≥ {low}" if high is None else f"in {low}..{high}"
            raise ReportError(
                f"{path}: damaged results file ({where}attribute {name!r} = {repr(value)[:40]} is "
                f"not an integer {bounds})"
            )


def _check_attributes(path: str, attrs: dict[str, Any]) -> None:
    """The root attributes the report trusts: their types and ranges."""
    _check_types(path, "", attrs, TEXT_ATTRS, COUNT_ATTRS)


def _parse_job(path: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """The stored resolved job as a table ({} when the file has none); damaged TOML is refused,
    since the report takes the link model, the expected rows and the job keys from it."""
    text = attrs.get("job", "")
    if not text:
        return {}
    try:
        job = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ReportError(
            f"{path}: damaged results file (its job attribute is not valid TOML: {first_line(err)})"
        ) from None
    for section, table in job.items():
        if not isinstance(table, dict):
            raise ReportError(
                f"{path}: damaged results file (its job's {section!r} is not a [section])"
            )
    _check_types(
        path,
        "the job's [run] ",
        job.get("run", {}),
        (),
        {"steps": (0, None), "log_every": (1, None)},
    )
    return job


def _dataset(path: str, dset: h5py.Dataset, limit: int) -> np.ndarray:
    """A whole dataset, its size bounded by ``limit`` before numpy allocates it."""
    size = nbytes(dset.shape, dset.dtype)
    if size > limit:
        raise ReportError(
            f"{path}: damaged results file ({dset.name} claims shape {dset.shape}, {size} bytes, "
            "more than the file holds)"
        )
    return dset[()]


def _series(
    path: str, dset: h5py.Dataset, limit: int, ndim: int, columns: int | None
) -> np.ndarray | None:
    """A /metrics series: None for one not of this layout (another rank count of axes), else its
    numeric values, with ``columns`` ranks when given."""
    if dset.ndim != ndim:
        return None  # not a series of this layout; ignore rather than guess
    # The writer stores integers and floats of at most 8 bytes; anything else (e.g. a long double
    # from a damaged type message) is damage, and would not survive the report's JSON and CSV output
    # either.
    if dset.dtype.kind not in "biuf" or dset.dtype.itemsize > 8:
        raise ReportError(
            f"{path}: damaged results file ({dset.name} holds {dset.dtype}, not numbers)"
        )
    if columns is not None and dset.shape[1] != columns:
        raise ReportError(
            f"{path}: damaged results file ({dset.name} has {dset.shape[1]} columns but "
            f"world_size is {columns})"
        )
    return _dataset(path, dset, limit)


def _check_name(path: str, group: h5py.Group, name: object) -> None:
    """A series or event name must be text: h5py hands a name that is not UTF-8 (a damaged link)
    over as bytes."""
    if not isinstance(name, str):
        raise ReportError(
            f"{path}: damaged results file (a name in {group.name} is not UTF-8: {name!r:.40})"
        )


def _unit(path: str, dset: h5py.Dataset, limit: int) -> str:
    """A series' ``unit`` attribute (only that one is read: the dimension-scale references are not
    needed)."""
    problem = attribute_problem(dset, limit, ["unit"])
    if problem:
        raise ReportError(f"{path}: damaged results file ({dset.name}: {problem})")
    unit = _python(dset.attrs["unit"]) if "unit" in dset.attrs else ""
    if not isinstance(unit, str):
        raise ReportError(f"{path}: damaged results file ({dset.name}: its unit is not text)")
    return unit


def _read(path: str, f: h5py.File) -> Run:
    limit = _limit(path)
    attrs = _attributes(path, f, limit)
    if (
        attrs.get("kind", "") == "mpidecent-checkpoint"
    ):  # io/checkpoint.py's KIND: it has a format_version too
        raise ReportError(
            f"{path}: a checkpoint (for mpidecent run --resume), not a results file; report on "
            "the run's results file (the same name without .ckpt)"
        )
    _check_version(path, f.attrs)
    _check_attributes(path, attrs)
    job = _parse_job(path, attrs)
    topo = f.get("topology")
    topology = _attributes(path, topo, limit) if isinstance(topo, h5py.Group) else {}
    _check_types(path, "/topology ", topology, TOPOLOGY_TEXT, TOPOLOGY_COUNTS)
    edges = (
        _dataset(path, topo["edges"], limit)
        if isinstance(topo, h5py.Group) and "edges" in topo
        else None
    )
    weights = (
        _dataset(path, topo["weights"], limit)
        if isinstance(topo, h5py.Group) and "weights" in topo
        else None
    )
    columns = attrs.get("world_size")

    units: dict[str, str] = {}
    metrics = f.get("metrics")
    raw_steps = np.zeros(0, dtype=np.int64)
    raw_rank: dict[str, np.ndarray] = {}
    raw_global: dict[str, np.ndarray] = {}
    if isinstance(metrics, h5py.Group):
        if isinstance(metrics.get("step"), h5py.Dataset):
            step = _series(path, metrics["step"], limit, 1, None)
            raw_steps = np.asarray(step if step is not None else [], dtype=np.int64).reshape(-1)
        for group, target in (("rank", raw_rank), ("global", raw_global)):
            g = metrics.get(group)
            if not isinstance(g, h5py.Group):
                continue
            for name, dset in g.items():
                if not isinstance(dset, h5py.Dataset):
                    continue
                _check_name(path, g, name)
                if group == "rank" and columns is None and dset.ndim == 2:
                    columns = dset.shape[
                        1
                    ]  # no world_size: every per-rank series as wide as the first
                data = _series(
                    path,
                    dset,
                    limit,
                    2 if group == "rank" else 1,
                    columns if group == "rank" else None,
                )
                if data is None:
                    continue
                target[name] = data
                units[f"{group}/{name}"] = _unit(path, dset, limit)
    events: dict[str, np.ndarray] = {}
    ev = f.get("events")
    if isinstance(ev, h5py.Group):
        for name, dset in ev.items():
            if isinstance(dset, h5py.Dataset):
                _check_name(path, ev, name)
                events[name] = _dataset(path, dset, limit)

    # Rows every series has (a killed writer may leave datasets one row apart), then drop trailing
    # rows that were allocated but never written (their step is not after the previous one).
    rows = min(
        [
            raw_steps.shape[0],
            *(a.shape[0] for a in raw_rank.values()),
            *(a.shape[0] for a in raw_global.values()),
        ]
    )
    while rows > 1 and raw_steps[rows - 1] <= raw_steps[rows - 2]:
        rows -= 1
    dropped = raw_steps.shape[0] - rows
    steps = raw_steps[:rows]
    rank_series = {k: v[:rows] for k, v in raw_rank.items()}
    global_series = {k: v[:rows] for k, v in raw_global.items()}

    link, link_source = _link_from_job(job)
    run = Run(
        path=path,
        attrs=attrs,
        job=job,
        topology=topology,
        edges=edges,
        weights=weights,
        steps=steps,
        rank_series=rank_series,
        global_series=global_series,
        units=units,
        events=events,
        link=link,
        link_source=link_source,
    )
    run_table = job.get("run", {})
    requested = run.steps_requested
    log_every = run_table.get("log_every")
    if requested is not None and isinstance(log_every, int):
        run.expected_rows = expected_rows(requested, log_every)
    reasons = []
    status = run.status
    if status == "running":
        reasons.append(
            "status 'running': the run is still going, or it ended without closing the file "
            "(crash, kill, time limit)"
        )
    elif status == "diverged":
        message = str(attrs.get("message", "")).split(";")[0]
        reasons.append(message or "diverged")
    elif status == "preempted":
        reasons.append(
            "stopped by a signal with a checkpoint; continue it with mpidecent run --resume"
        )
    elif status == "failed":
        message = str(attrs.get("message", "")).split(". Kept:")[0]
        reasons.append(f"stopped: an output file could not be written ({message or 'no message'})")
    elif status != "completed":
        reasons.append(f"status {status!r}")
    short = run.expected_rows is not None and rows < run.expected_rows
    if short:
        reasons.append(
            f"{rows} of {run.expected_rows} log rows, last step {run.last_step} of {requested}"
        )
    if rows == 0 and not short:
        reasons.append("no log rows")
    run.partial = status != "completed" or short or rows == 0
    if dropped and run.partial:
        reasons.append(f"{dropped} allocated but unwritten row{'s' if dropped > 1 else ''} ignored")
    run.partial_reason = "; ".join(reasons) if run.partial else ""
    return run


def read_runs(
    paths: list[str],
    bandwidth_bps: float | None = None,
    latency_s: float | None = None,
    shared: bool | None = None,
    probe: bool = False,
) -> list[Run]:
    """Read every file (``ReportError`` on the first unusable one) and give the runs unique labels.
    ``bandwidth_bps`` / ``latency_s`` / ``shared`` (report flags) replace that part of each run's
    link model. ``probe``: read each file first in a forked child (``hdf5guard.crash_probe``), so a
    file that crashes libhdf5 is refused in one line (``mpidecent report``; serial processes
    only)."""
    for path in paths if probe else ():
        crashed = crash_probe(path, read_run)
        if crashed:
            raise ReportError(f"{path}: damaged results file ({crashed}); it cannot be read safely")
    runs = [read_run(p) for p in paths]
    given = {"--bandwidth": bandwidth_bps, "--latency": latency_s, "--shared-link": shared}
    if any(v is not None for v in given.values()):
        flags = " and ".join(f for f, v in given.items() if v is not None)
        for run in runs:
            # The flags say it all when they give bandwidth and latency and the job's link is not
            # shared.
            complete = (
                bandwidth_bps is not None
                and latency_s is not None
                and (shared is not None or not run.link.shared)
            )
            run.link = LinkModel(
                run.link.bandwidth_bps if bandwidth_bps is None else bandwidth_bps,
                run.link.latency_s if latency_s is None else latency_s,
                run.link.shared if shared is None else shared,
            )
            run.link_source = flags if complete else f"{flags}, rest from {run.link_source}"
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            stem = os.path.splitext(os.path.basename(run.path))[0]
            run.label = f"{run.name} [{stem}]" if stem != run.name else f"{run.name} [{run.path}]"
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):  # still ambiguous (same name and file stem): number them
        if labels.count(run.label) > 1:
            run.label = f"{run.label} #{i + 1}"
    return runs
