"""The results file: one parallel HDF5 file per run (``h5py`` with ``driver="mpio"``).

Layout (``docs/results-format.md`` documents every item; the format version and the series are
declared in ``io/layout.py``, which the serial reader ``io/reader.py`` shares)::

    /                       attrs: format_version, mpidecent_version, job, job_source, overrides,
                                   world_size, mpi_library, mpi4py_version, h5py_version,
                                   osc_component, started, finished, status, message, algorithm,
                                   compressor, ...
    /topology/edges         (E, 2) int32, directed edges src → dst
    /topology/weights       (n, n) float64, the mixing matrix used (row i = receiver i)
    /metrics/step           (L,) int64, logged steps (0 = before the first iteration); dimension
                            scale "step"
    /metrics/rank_index     (n,) int64, 0 … n−1; dimension scale "rank"
    /metrics/rank/<name>    (L, n), one column per rank; axes attached to the scales step and rank
    /metrics/global/<name>  (L,); axis 0 attached to the scale step

Which ranks call: every method, on every rank, in the same order (HDF5 metadata operations — file
creation, dataset creation and resizing, attributes — are collective). Each rank writes its own
column of the per-rank series; rank 0 writes the global series. Datasets grow by one row per log
point and the file is flushed, so a crashed or still-running run leaves a readable file whose
``status`` says so. A failed write (full disk, vanished folder, I/O error) raises ``OutputError``
naming the file and the cause (``io/faults.py``); ``growth_bytes`` tells the runner's look-ahead how
much room the next row may take.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import h5py
import numpy as np
from h5py import h5fd, h5p, h5s
from mpi4py import MPI

from mpidecent.io.faults import ROW_METADATA_BYTES, guarded

# The layout's names, declared in io/layout.py (pure, shared with the reader); importable from here
# too.
from mpidecent.io.layout import (
    FORMAT_VERSION,
    GLOBAL_SERIES,
    RANK_DIM,
    RANK_EXTRA_SERIES,
    RANK_INDEX,
    RANK_INDEX_DESCRIPTION,
    RANK_SERIES,
    STEP_DIM,
    STEP_SERIES,
)

__all__ = ["FORMAT_VERSION", "GLOBAL_SERIES", "RANK_SERIES", "ResultsWriter"]


def _attr_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)  # plain str: h5py cannot store str subclasses such as torch.__version__
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    what: str,
) -> Callable[
    [Callable[Concatenate[ResultsWriter, _P], _R]], Callable[Concatenate[ResultsWriter, _P], _R]
]:
    """A ``ResultsWriter`` method whose OS/HDF5 errors become ``OutputError`` ("<what> <path>
    failed: …")."""

    def wrap(
        method: Callable[Concatenate[ResultsWriter, _P], _R],
    ) -> Callable[Concatenate[ResultsWriter, _P], _R]:
        @functools.wraps(method)
        def inner(self: ResultsWriter, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            with guarded(what, self.path):
                return method(self, *args, **kwargs)

        return inner

    return wrap


_COLLECTIVE = h5p.create(h5p.DATASET_XFER)
_COLLECTIVE.set_dxpl_mpio(h5fd.MPIO_COLLECTIVE)


def _write_element(dset: h5py.Dataset, index: tuple[int, ...] | None, value: float) -> None:
    """Collective write of one element at ``index`` (``None``: take part, write nothing)."""
    fspace = dset.id.get_space()
    mspace = h5s.create_simple((1,))
    if index is None:
        fspace.select_none()
        mspace.select_none()
    else:
        fspace.select_hyperslab(index, (1,) * len(index))
    dset.id.write(mspace, fspace, np.array([value], dtype=dset.dtype), dxpl=_COLLECTIVE)


class ResultsWriter:
    """Writes one run's results file collectively (see module docstring)."""

    def __init__(
        self,
        path: str,
        comm: MPI.Intracomm,
        overwrite: bool,
        rank_extras: Sequence[str] = (),
        global_extras: Mapping[str, tuple[str, str, str]] | None = None,
        resume_rows: int | None = None,
        rank_declared: Mapping[str, tuple[str, str, str]] | None = None,
    ):
        """Create the file (``overwrite``: replace an existing one), or with ``resume_rows`` reopen
        an existing file of the same run and drop the rows logged after the checkpoint being
        resumed. ``rank_declared``: per-rank series beyond the base ones with their own declaration
        (e.g. the nodes' test metrics); ``rank_extras``: the algorithm's own, declared
        generically."""
        self.path = path
        self.comm = comm
        self.rank = comm.rank
        self.size = comm.size
        self.rank_series = {**RANK_SERIES, **(rank_declared or {})}
        for name in rank_extras:
            self.rank_series[name] = RANK_EXTRA_SERIES
        self.global_series = {**GLOBAL_SERIES, **(global_extras or {})}
        self.file: h5py.File | None = None
        if resume_rows is not None:
            self._reopen(resume_rows)
        else:
            self._create(overwrite)

    @_guarded("creating the results file")
    def _create(self, overwrite: bool) -> None:
        path, comm = self.path, self.comm
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)  # every rank: harmless races with exist_ok
        self.file = h5py.File(path, "w" if overwrite else "w-", driver="mpio", comm=comm)
        self.rows = 0
        metrics = self.file.create_group("metrics")
        self._step = self._series(
            metrics, "step", STEP_SERIES.dtype, (), STEP_SERIES.unit, STEP_SERIES.description
        )
        group = metrics.create_group("rank")
        self._rank = {
            name: self._series(group, name, dt, (self.size,), unit, doc)
            for name, (dt, unit, doc) in self.rank_series.items()
        }
        group = metrics.create_group("global")
        self._global = {
            name: self._series(group, name, dt, (), unit, doc)
            for name, (dt, unit, doc) in self.global_series.items()
        }
        self._attach_scales(metrics)

    def _attach_scales(self, metrics: h5py.Group) -> None:
        """Collective (every rank makes the same calls): make /metrics/step and /metrics/rank_index
        dimension scales and attach them to the axes of every series, so netCDF-style readers
        (xarray) see named dimensions. Idempotent: a resumed file written before the scales gets
        them; one that has them is left."""
        if RANK_INDEX not in metrics:
            index = metrics.create_dataset(RANK_INDEX, data=np.arange(self.size, dtype=np.int64))
            index.attrs["unit"] = ""
            index.attrs["description"] = RANK_INDEX_DESCRIPTION
        index = metrics[RANK_INDEX]
        if not self._step.is_scale:
            self._step.make_scale(STEP_DIM)
        if not index.is_scale:
            index.make_scale(RANK_DIM)
        for dset in (*self._rank.values(), *self._global.values()):
            if len(dset.dims[0]) == 0:
                dset.dims[0].attach_scale(self._step)
                dset.dims[0].label = STEP_DIM
            if dset.ndim == 2 and len(dset.dims[1]) == 0:
                dset.dims[1].attach_scale(index)
                dset.dims[1].label = RANK_DIM

    @_guarded("reopening the results file")
    def _reopen(self, rows: int) -> None:
        self.file = h5py.File(self.path, "r+", driver="mpio", comm=self.comm)
        metrics = self.file["metrics"]
        self._step = metrics["step"]
        self._rank = {name: metrics["rank"][name] for name in self.rank_series}
        self._global = {name: metrics["global"][name] for name in self.global_series}
        for dset in (self._step, *self._rank.values(), *self._global.values()):
            dset.resize(rows, axis=0)  # collective; rows logged after the checkpoint are re-logged
        self._attach_scales(metrics)
        self.rows = rows
        self.file.flush()

    def growth_bytes(self) -> int:
        """Bytes the next ``append`` may add to the file: a new chunk of every series when the row
        starts one (chunks hold 64 rows), plus room for the metadata that indexes it."""
        if self.rows % 64:
            return ROW_METADATA_BYTES
        series = (self._step, *self._rank.values(), *self._global.values())
        return ROW_METADATA_BYTES + sum(int(np.prod(d.chunks)) * d.dtype.itemsize for d in series)

    @property
    def open_file(self) -> h5py.File:
        """The file, open from ``__init__`` until ``close`` (nothing writes after it)."""
        assert self.file is not None, f"{self.path} is closed"
        return self.file

    @staticmethod
    def _series(
        group: h5py.Group, name: str, dtype: str, tail: tuple[int, ...], unit: str, doc: str
    ) -> h5py.Dataset:
        dset = group.create_dataset(
            name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype, chunks=(64, *tail)
        )
        dset.attrs["unit"] = unit
        dset.attrs["description"] = doc
        return dset

    @_guarded("writing attributes to")
    def set_attrs(self, attrs: Mapping[str, Any], group: str = "/") -> None:
        """Collective: every rank passes identical values."""
        target = self.open_file[group]
        for key, value in attrs.items():
            target.attrs[key] = _attr_value(value)

    @_guarded("writing the topology to")
    def write_topology(
        self, edges: np.ndarray, slot_weights: Sequence[np.ndarray], attrs: Mapping[str, Any]
    ) -> None:
        """Collective. ``edges``: the graph (the union over a period for time-varying schedules);
        ``slot_weights``: the mixing matrix of each slot (one for a static graph)."""
        group = self.open_file.create_group("topology")
        e = group.create_dataset("edges", data=np.asarray(edges, dtype=np.int32).reshape(-1, 2))
        e.attrs["description"] = (
            "directed edges src → dst (undirected graphs list both directions; "
            "time-varying schedules: every edge used in a period)"
        )
        w = group.create_dataset("weights", data=np.asarray(slot_weights[0], dtype=np.float64))
        w.attrs["description"] = (
            "mixing matrix W actually used, row i = receiver i (slot 0 of a schedule)"
        )
        if len(slot_weights) > 1:
            sw = group.create_dataset(
                "schedule_weights", data=np.stack(slot_weights).astype(np.float64)
            )
            sw.attrs["description"] = (
                "(period, n, n): W of each slot; step t uses slot t mod period"
            )
        self.set_attrs(attrs, "topology")

    @_guarded("writing a log row to")
    def append(
        self, step: int, rank_values: Mapping[str, float], global_values: Mapping[str, float]
    ) -> None:
        """Add one log row. Collective: every rank passes its own ``rank_values``; ``global_values``
        are written by rank 0 (other ranks may pass the same or an empty mapping)."""
        row = self.rows
        for dset in (self._step, *self._rank.values(), *self._global.values()):
            dset.resize(row + 1, axis=0)
        # Collective writes: each rank writes its own element of every per-rank series and rank 0
        # the global ones; the other ranks still take part with an empty selection (h5py's
        # high-level indexing skips the write call for an empty selection, which would leave rank 0
        # alone in it).
        for name, dset in self._rank.items():
            _write_element(dset, (row, self.rank), rank_values[name])
        top = self.rank == 0
        _write_element(self._step, (row,) if top else None, step)
        for name, dset in self._global.items():
            _write_element(dset, (row,) if top else None, global_values[name] if top else 0)
        self.rows = row + 1
        self.open_file.flush()

    @_guarded("writing event records to")
    def create_event_dataset(self, name: str, data: np.ndarray) -> None:
        """Collective: write a small whole array under /events (every rank passes identical data). A
        resumed run replaces what the interrupted run wrote: its array covers every step from the
        start."""
        group = self.open_file.require_group("events")
        if name in group:
            del group[name]
        group.create_dataset(name, data=data)

    @_guarded("closing")
    def close(self) -> None:
        """Collective; a second call does nothing."""
        if self.file:
            file, self.file = self.file, None
            file.close()
