"""Checkpoints: one run's complete state in a parallel HDF5 file, written atomically, verified on load.

Layout (``<results file without .h5>.ckpt.h5``)::

    /                 attrs: kind = "mpidecent-checkpoint", format_version, job (resolved TOML), world_size,
                             step (iterations completed), results_rows (rows of the results file that belong
                             to steps ≤ step), algorithm, created, rng
    /state/<name>     (n_ranks, *padded shape): the algorithm's state arrays (Algorithm.state())
    /runner/<name>    (n_ranks, *padded shape): the runner's counters (bits, bytes, messages, seconds,
                      minibatch losses since the last log point, wall time)
    every dataset:    attrs shapes (n_ranks, ndim) int64 — each rank's true shape (ranks may differ, e.g.
                      in-degrees), sha256 (n_ranks,) str — checksum of each rank's bytes, verified on load

Randomness needs no stored generator state: every random draw comes from a generator derived from
(seed, rank, step, purpose) (``rng.py``), so the step is the complete random state.

Writing (every rank, collectively): the data goes to ``<path>.tmp``; after a successful collective close,
rank 0 fsyncs it and renames it over the previous checkpoint (atomic on POSIX), so a run killed while
writing leaves the previous checkpoint intact. Reading (each rank on its own, before any collective, no
pickle): the rank's rows are read back, checked against their checksums and the job, and any problem is
a ``JobError`` that leaves every file as it was.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import h5py
import numpy as np
from h5py import h5fd, h5p, h5s

from mpidecent.errors import JobError

KIND = "mpidecent-checkpoint"
FORMAT_VERSION = 1
RNG_NOTE = "counter-based: every draw comes from a generator of (seed, rank, step, purpose); the step is its state"


def checkpoint_path(results_path: str) -> str:
    """``runs/x.h5`` → ``runs/x.ckpt.h5``."""
    stem = results_path[:-3] if results_path.endswith(".h5") else results_path
    return f"{stem}.ckpt.h5"


@dataclass
class Snapshot:
    """One rank's complete state at a step boundary (arrays are copied on load, referenced on save)."""

    step: int
    results_rows: int
    state: dict[str, np.ndarray]
    counters: dict[str, np.ndarray]


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


_COLLECTIVE = h5p.create(h5p.DATASET_XFER)
_COLLECTIVE.set_dxpl_mpio(h5fd.MPIO_COLLECTIVE)


def _write_row(dset: h5py.Dataset, rank: int, array: np.ndarray) -> None:
    """Collective: write ``array`` into row ``rank`` of ``dset`` (its leading corner when padded)."""
    fspace = dset.id.get_space()
    data = np.ascontiguousarray(array, dtype=dset.dtype).reshape(1, *array.shape)
    mspace = h5s.create_simple(data.shape)
    if data.size == 0:  # still take part in the collective call
        fspace.select_none()
        mspace.select_none()
    else:
        fspace.select_hyperslab((rank,) + (0,) * array.ndim, data.shape)
    dset.id.write(mspace, fspace, data, dxpl=_COLLECTIVE)


def write_checkpoint(path: str, comm, snapshot: Snapshot, attrs: Mapping[str, object]) -> None:
    """Collective over ``comm``: write every rank's snapshot to ``path`` atomically (see module doc).

    ``attrs`` must be identical on every rank (job, world_size, algorithm, ...)."""
    tmp = f"{path}.tmp"
    groups = {"state": snapshot.state, "runner": snapshot.counters}
    layouts = comm.allgather({g: {k: (v.shape, v.dtype.str) for k, v in arrays.items()}
                              for g, arrays in groups.items()})
    digests = comm.allgather({g: {k: _digest(v) for k, v in arrays.items()} for g, arrays in groups.items()})
    created = comm.bcast(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), root=0)
    with h5py.File(tmp, "w", driver="mpio", comm=comm) as f:
        f.attrs.update({"kind": KIND, "format_version": FORMAT_VERSION, "step": snapshot.step,
                        "results_rows": snapshot.results_rows, "created": created, "rng": RNG_NOTE, **attrs})
        for group, arrays in groups.items():
            for name in arrays:  # same names in the same order on every rank (the algorithm's contract)
                shapes = np.array([layout[group][name][0] for layout in layouts], dtype=np.int64).reshape(
                    comm.size, -1)
                padded = tuple(int(m) for m in shapes.max(axis=0))
                dset = f.create_dataset(f"{group}/{name}", shape=(comm.size, *padded),
                                        dtype=np.dtype(layouts[0][group][name][1]))
                dset.attrs["shapes"] = shapes
                dset.attrs["sha256"] = np.array([d[group][name] for d in digests], dtype=h5py.string_dtype())
                if dset.size:  # an all-empty dataset has no storage to write to (same on every rank)
                    _write_row(dset, comm.rank, arrays[name])
    comm.Barrier()  # every rank has closed: the temporary file is complete
    if comm.rank == 0:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    comm.Barrier()


def _first_difference(ours: str, theirs: str) -> str:
    """The first place where two resolved jobs differ: ``key = ours, the checkpoint has key = theirs`` for a
    changed line, or the line that only one of them has."""
    removed: list[str] = []
    added: list[str] = []
    for line in difflib.unified_diff(theirs.splitlines(), ours.splitlines(), lineterm="", n=0):
        if line.startswith("@@"):
            if removed or added:
                break  # only the first hunk
            continue
        if line[:3] in ("+++", "---"):
            continue
        (added if line[0] == "+" else removed).append(line[1:].strip())
    if added and removed:
        return f"{added[0]}, the checkpoint has {removed[0]}"
    if added:
        return f"{added[0]} not in the checkpoint"
    if removed:
        return f"{removed[0]} only in the checkpoint"
    return "the section layout"


def read_checkpoint(path: str, rank: int, world_size: int, job_toml: str) -> Snapshot:
    """Read and verify this rank's part of a checkpoint (local, not collective). Raises ``JobError``
    (one line, naming the problem and the fix) for a missing, foreign, corrupt or truncated file, a
    different world size or job; nothing is modified."""
    untouched = "; nothing was changed"
    if not os.path.exists(path):
        raise JobError(f"no checkpoint {path!r} to resume from; run without --resume to start the job")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise JobError(f"checkpoint {path!r} is corrupt or truncated ({err}){untouched}") from None
    with f:
        attrs = f.attrs
        if attrs.get("kind") != KIND:
            raise JobError(f"{path!r} is not an mpidecent checkpoint (no kind = {KIND!r} attribute){untouched}")
        if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
            raise JobError(f"checkpoint {path!r} has format_version {int(attrs['format_version'])}, newer than "
                           f"this mpidecent reads ({FORMAT_VERSION}){untouched}")
        if int(attrs["world_size"]) != world_size:
            raise JobError(f"checkpoint {path!r} was written by {int(attrs['world_size'])} ranks but {world_size} "
                           f"were started: resume with mpirun -n {int(attrs['world_size'])}")
        stored = str(attrs["job"])
        if stored != job_toml:
            raise JobError(f"the job differs from the one checkpointed in {path!r} (here: "
                           f"{_first_difference(job_toml, stored)}); resume with the same job and --set "
                           "options, or run without --resume")
        groups: dict[str, dict[str, np.ndarray]] = {"state": {}, "runner": {}}
        try:
            for group, arrays in groups.items():
                for name, dset in f[group].items():
                    shape = tuple(int(s) for s in dset.attrs["shapes"][rank])
                    row = dset[(rank, *(slice(0, s) for s in shape))] if all(shape) else \
                        np.zeros(shape, dtype=dset.dtype)
                    digest = dset.attrs["sha256"][rank]
                    digest = digest.decode() if isinstance(digest, bytes) else str(digest)
                    if _digest(row) != digest:
                        raise JobError(f"checkpoint {path!r}: {group}/{name} of rank {rank} fails its checksum "
                                       f"(corrupt){untouched}")
                    arrays[name] = np.array(row)
            return Snapshot(int(attrs["step"]), int(attrs["results_rows"]), groups["state"], groups["runner"])
        except (OSError, KeyError, ValueError) as err:
            raise JobError(f"checkpoint {path!r} is corrupt or truncated ({err}){untouched}") from None
