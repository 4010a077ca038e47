"""Checkpoints: one run's complete state in a parallel HDF5 file, written atomically, verified on
load.

Layout (``<results file without .h5>.ckpt.h5``)::

    /                 attrs: kind = "mpidecent-checkpoint", format_version, job (resolved TOML),
                             world_size, step (iterations completed), results_rows (rows of the
                             results file that belong to steps ≤ step), algorithm, created, rng,
                             results_file, checksums (format 2: JSON {"attr:<name>" |
                             "data:<group>/<name>": sha256} over the canonical value of every
                             other root attribute and, per dataset, its dtype, shape and its
                             shapes/sha256 attributes — so an edited or corrupted attribute is
                             named)
    /state/<name>     (n_ranks, *padded shape): the algorithm's state arrays (Algorithm.state())
    /runner/<name>    (n_ranks, *padded shape): the runner's counters (bits, bytes, messages,
                      seconds, minibatch losses since the last log point, wall time)
    every dataset:    attrs shapes (n_ranks, ndim) int64 — each rank's true shape (ranks may
                      differ, e.g. in-degrees), sha256 (n_ranks,) str — checksum of each rank's
                      bytes, verified on load

Reading first walks the file's global heaps (``hdf5guard.heap_problem``: a damaged one crashes
libhdf5) and bounds every attribute's size by the file's, then verifies the checksums (format 1
files have none), then checks every value resume trusts for range and consistency with this launch
and job (world size, job, algorithm, 0 ≤ step ≤ steps, results_rows = the rows logged up to step,
created an ISO 8601 time, rng this version's note, results_file a path, each dataset's layout, the
counters finite and ≥ 0), and bounds every size read from the file (by the dataset's extent and the
file's size) before allocating. ``mpidecent run --resume`` then checks the results file against it
(``runner.launch.check_pair``: its first results_rows steps are the job's log steps up to step)
before anything is written.

Randomness needs no stored generator state: every random draw comes from a generator derived from
(seed, rank, step, purpose) (``rng.py``), so the step is the complete random state.

Writing (every rank, collectively): the data goes to ``<path>.tmp``; after a successful collective
close, rank 0 fsyncs it and renames it over the previous checkpoint (atomic on POSIX), so a run
killed while writing leaves the previous checkpoint intact. Reading (each rank on its own, before
any collective, no pickle): the rank's rows are read back, checked against their checksums and the
job, and any problem is a ``JobError`` that leaves every file as it was.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

import h5py
import numpy as np
from h5py import h5fd, h5p, h5s

from mpidecent.errors import JobError, OutputError
from mpidecent.io.faults import guarded, remove_quietly
from mpidecent.io.hdf5guard import READ_ERRORS, attribute_problem, first_line, heap_problem
from mpidecent.io.layout import rows_logged

KIND = "mpidecent-checkpoint"
FORMAT_VERSION = 2  # 2: the checksums attribute
CHECKSUMS = "checksums"
RNG_NOTE = (
    "counter-based: every draw comes from a generator of (seed, rank, step, purpose); "
    "the step is its state"
)


def checkpoint_path(results_path: str) -> str:
    """``runs/x.h5`` → ``runs/x.ckpt.h5``."""
    stem = results_path.removesuffix(".h5")
    return f"{stem}.ckpt.h5"


@dataclass
class Snapshot:
    """One rank's complete state at a step boundary (arrays are copied on load, referenced on
    save)."""

    step: int
    results_rows: int
    state: dict[str, np.ndarray]
    counters: dict[str, np.ndarray]


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _canonical(value: object) -> str:
    """An attribute's value as text, the same whether taken from what is written or what is read
    back."""
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return "str:" + value
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        items = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()
        ]
        return f"strs:{array.shape}:" + json.dumps(items)
    if array.dtype.kind in "biu":
        return f"int:{array.shape}:{array.astype(np.int64).ravel().tolist()}"
    if array.dtype.kind == "f":
        return f"float:{array.shape}:{[repr(float(v)) for v in array.ravel()]}"
    return f"{array.dtype.str}:{array.shape}:{array.tobytes().hex()}"


def _sha(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _attr_checksum(value: object) -> str:
    return _sha(_canonical(value))


def _layout_checksum(dtype: str, shape: tuple[int, ...], shapes: object, digests: object) -> str:
    return _sha(
        np.dtype(dtype).str,
        repr(tuple(int(s) for s in shape)),
        _canonical(shapes),
        _canonical(digests),
    )


_COLLECTIVE = h5p.create(h5p.DATASET_XFER)
_COLLECTIVE.set_dxpl_mpio(h5fd.MPIO_COLLECTIVE)


def _write_row(dset: h5py.Dataset, rank: int, array: np.ndarray) -> None:
    """Collective: write ``array`` into row ``rank`` of ``dset`` (its leading corner when
    padded)."""
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
    """Collective over ``comm``: write every rank's snapshot to ``path`` atomically (see module
    doc).

    ``attrs`` must be identical on every rank (job, world_size, algorithm, ...). A failed write
    raises ``OutputError`` on the rank that saw it, after removing the temporary file; the previous
    checkpoint is untouched."""
    tmp = f"{path}.tmp"
    groups = {"state": snapshot.state, "runner": snapshot.counters}
    layouts = comm.allgather(
        {g: {k: (v.shape, v.dtype.str) for k, v in arrays.items()} for g, arrays in groups.items()}
    )
    digests = comm.allgather(
        {g: {k: _digest(v) for k, v in arrays.items()} for g, arrays in groups.items()}
    )
    created = comm.bcast(_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), root=0)
    root = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "step": int(snapshot.step),
        "results_rows": int(snapshot.results_rows),
        "created": created,
        "rng": RNG_NOTE,
        **attrs,
    }
    checksums = {f"attr:{k}": _attr_checksum(v) for k, v in root.items()}
    try:
        with guarded("writing the checkpoint", tmp):
            _write_file(tmp, comm, groups, layouts, digests, root, checksums)
        comm.Barrier()  # every rank has closed: the temporary file is complete
        if comm.rank == 0:
            with guarded("saving the checkpoint", path):
                _publish(tmp, path)
    except OutputError:
        remove_quietly(tmp)  # frees the room it took; the previous checkpoint is still in place
        raise
    comm.Barrier()


def _write_file(
    tmp: str,
    comm,
    groups: Mapping[str, Mapping[str, np.ndarray]],
    layouts: list,
    digests: list,
    root: Mapping[str, object],
    checksums: dict[str, str],
) -> None:
    """Collective: the checkpoint's content into ``tmp`` (see ``write_checkpoint``). Not a ``with``
    block: after a failed write the file must not be closed (a collective that the other ranks may
    never join); the caller ends the job instead."""
    f = h5py.File(tmp, "w", driver="mpio", comm=comm)
    for group, arrays in groups.items():
        for name in arrays:  # same names in the same order on every rank (the algorithm's contract)
            shapes = np.array(
                [layout[group][name][0] for layout in layouts], dtype=np.int64
            ).reshape(comm.size, -1)
            padded = tuple(int(m) for m in shapes.max(axis=0))
            dset = f.create_dataset(
                f"{group}/{name}",
                shape=(comm.size, *padded),
                dtype=np.dtype(layouts[0][group][name][1]),
            )
            rows = np.array([d[group][name] for d in digests], dtype=h5py.string_dtype())
            dset.attrs["shapes"] = shapes
            dset.attrs["sha256"] = rows
            checksums[f"data:{group}/{name}"] = _layout_checksum(
                dset.dtype.str, dset.shape, shapes, rows
            )
            if dset.size:  # an all-empty dataset has no storage to write to (same on every rank)
                _write_row(dset, comm.rank, arrays[name])
    f.attrs.update(root)
    f.attrs[CHECKSUMS] = json.dumps(checksums, sort_keys=True)
    f.close()


def _publish(tmp: str, path: str) -> None:
    """Rank 0: make the complete ``tmp`` durable and rename it over ``path`` (atomic on POSIX)."""
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


def _first_difference(ours: str, theirs: str) -> str:
    """The first place where two resolved jobs differ: ``key = ours, the checkpoint has key =
    theirs`` for a changed line, or the line that only one of them has."""
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


def _verify_checksums(path: str, f: h5py.File, limit: int, untouched: str) -> None:
    """Every root attribute and every dataset's layout against the stored checksums (format ≥ 2)."""
    try:
        stored = json.loads(str(_text(f.attrs[CHECKSUMS])))
        if not isinstance(stored, dict):
            raise TypeError("not a table")
    except (KeyError, ValueError, TypeError):
        raise JobError(
            f"checkpoint {path!r} has no readable {CHECKSUMS} attribute (corrupt or "
            f"edited){untouched}"
        ) from None
    found: dict[str, str] = {
        f"attr:{k}": _attr_checksum(v) for k, v in f.attrs.items() if k != CHECKSUMS
    }
    for group in ("state", "runner"):
        if not isinstance(f.get(group), h5py.Group):
            raise JobError(
                f"checkpoint {path!r} has no /{group} group (corrupt or truncated){untouched}"
            )
        for name, dset in f[group].items():
            if (
                not isinstance(dset, h5py.Dataset)
                or "shapes" not in dset.attrs
                or "sha256" not in dset.attrs
            ):
                raise JobError(
                    f"checkpoint {path!r}: {group}/{name} is not a checkpointed array (corrupt or "
                    f"edited){untouched}"
                )
            _check_attribute_sizes(path, dset, limit, untouched)
            found[f"data:{group}/{name}"] = _layout_checksum(
                dset.dtype.str, dset.shape, dset.attrs["shapes"], dset.attrs["sha256"]
            )
    for key in sorted(set(stored) | set(found)):
        what = f"attribute {key[5:]!r}" if key.startswith("attr:") else f"the layout of {key[5:]}"
        if key not in found:
            raise JobError(f"checkpoint {path!r}: {what} is missing (corrupt or edited){untouched}")
        if key not in stored:
            raise JobError(
                f"checkpoint {path!r}: {what} is not covered by its checksums (added or "
                f"edited){untouched}"
            )
        if stored[key] != found[key]:
            raise JobError(
                f"checkpoint {path!r}: {what} fails its checksum (corrupt or edited){untouched}"
            )


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _integer(path: str, attrs: h5py.AttributeManager, name: str, untouched: str) -> int:
    """A root attribute that must be one integer."""
    if name not in attrs:
        raise JobError(
            f"checkpoint {path!r} has no {name} attribute (corrupt or edited){untouched}"
        )
    value = np.asarray(attrs[name])
    if value.shape != () or value.dtype.kind not in "iu":
        raise JobError(
            f"checkpoint {path!r}: attribute {name!r} = {_text(attrs[name])[:40]!r} is not an "
            f"integer (corrupt or edited){untouched}"
        )
    return int(value)


def read_checkpoint(path: str, rank: int, world_size: int, job_toml: str) -> Snapshot:
    """Read and verify this rank's part of a checkpoint (local, not collective). Raises ``JobError``
    (one line, naming the problem and the fix) for a missing, foreign, corrupt, edited or truncated
    file, a different world size or job, or values out of range for the job; nothing is modified."""
    untouched = "; nothing was changed"
    if not os.path.exists(path):
        raise JobError(
            f"no checkpoint {path!r} to resume from; run without --resume to start the job"
        )
    # Before libhdf5 parses it: a damaged global heap makes libhdf5 read past its buffers
    # (hdf5guard.py).
    problem = heap_problem(path)
    if problem:
        raise JobError(f"checkpoint {path!r} is corrupt or truncated ({problem}){untouched}")
    try:
        f = h5py.File(path, "r")
    except READ_ERRORS as err:
        raise JobError(
            f"checkpoint {path!r} is corrupt or truncated ({first_line(err)}){untouched}"
        ) from None
    try:
        with f:
            return _read_verified(path, f, rank, world_size, job_toml, untouched)
    except READ_ERRORS as err:  # not MemoryError: every size is bounded before it is read
        raise JobError(
            f"checkpoint {path!r} is corrupt or truncated ({first_line(err)}){untouched}"
        ) from None


def _check_attribute_sizes(path: str, obj: h5py.HLObject, limit: int, untouched: str) -> None:
    """No attribute of ``obj`` may claim more bytes than the file holds (checked before reading
    it)."""
    problem = attribute_problem(obj, limit)
    if problem:
        raise JobError(f"checkpoint {path!r}: {obj.name} {problem} (corrupt){untouched}")


def _check_notes(path: str, attrs: h5py.AttributeManager, untouched: str) -> None:
    """The descriptive attributes, beyond their checksums (format 1 has none): ``created`` an ISO
    8601 time, ``rng`` the note this version writes, ``results_file`` a path."""
    notes: dict[str, str] = {}
    for name in ("created", "rng", "results_file"):
        if name in attrs:
            if not isinstance(attrs[name], (str, bytes, np.bytes_)):
                raise JobError(
                    f"checkpoint {path!r}: attribute {name!r} is not text (corrupt or "
                    f"edited){untouched}"
                )
            notes[name] = _text(attrs[name])
    if "created" in notes:
        try:
            _dt.datetime.fromisoformat(notes["created"])
        except ValueError:
            raise JobError(
                f"checkpoint {path!r}: attribute 'created' = {notes['created'][:40]!r} is not an "
                f"ISO 8601 time (corrupt or edited){untouched}"
            ) from None
    if "rng" in notes and notes["rng"] != RNG_NOTE:
        raise JobError(
            f"checkpoint {path!r}: attribute 'rng' = {notes['rng'][:40]!r} is not this version's "
            f"generator note (corrupt, edited, or another random scheme){untouched}"
        )
    if "results_file" in notes and (not notes["results_file"] or "\0" in notes["results_file"]):
        raise JobError(
            f"checkpoint {path!r}: attribute 'results_file' = {notes['results_file'][:40]!r} is "
            f"not a path (corrupt or edited){untouched}"
        )


# The runner's counters (runner/checkpointing.py): counts are integers ≥ 0, seconds finite floats ≥
# 0. losses (the minibatch losses since the last log point) may be anything a float holds: a
# diverging run is only stopped at its next log point, and a checkpoint may come before it.
COUNTS = ("bits", "bytes", "messages")
SECONDS = ("compute_s", "comm_s", "wall_s")


def _check_counters(
    path: str, counters: Mapping[str, np.ndarray], log_every: int, untouched: str
) -> None:
    """The runner's counters: one value each (losses: at most ``log_every``), of their kind and
    range."""
    for name in (*COUNTS, *SECONDS):
        if counters.get(name, np.zeros(0)).shape != (1,):
            raise JobError(
                f"checkpoint {path!r}: runner/{name} is missing or not one value (corrupt or "
                f"edited){untouched}"
            )
        value, kind = counters[name], "iu" if name in COUNTS else "f"
        if value.dtype.kind not in kind or not np.all(np.isfinite(value)) or value[0] < 0:
            raise JobError(
                f"checkpoint {path!r}: runner/{name} = {value[0].item()!r} is not a finite "
                f"{'count' if name in COUNTS else 'number of seconds'} ≥ 0 (corrupt or "
                f"edited){untouched}"
            )
    losses = counters.get("losses")
    if (
        losses is None
        or losses.ndim != 1
        or losses.size > max(log_every, 1)
        or losses.dtype.kind != "f"
    ):
        raise JobError(
            f"checkpoint {path!r}: runner/losses is missing, not floats or longer than [run] "
            f"log_every (corrupt or edited){untouched}"
        )


def _read_verified(
    path: str, f: h5py.File, rank: int, world_size: int, job_toml: str, untouched: str
) -> Snapshot:
    attrs = f.attrs
    limit = os.path.getsize(
        path
    )  # contiguous, uncompressed: nothing in it holds more bytes than the file
    _check_attribute_sizes(path, f, limit, untouched)
    if _text(attrs.get("kind", "")) != KIND:
        raise JobError(
            f"{path!r} is not an mpidecent checkpoint (no kind = {KIND!r} attribute){untouched}"
        )
    version = _integer(path, attrs, "format_version", untouched)
    if version > FORMAT_VERSION:
        raise JobError(
            f"checkpoint {path!r} has format_version {version}, newer than "
            f"this mpidecent reads ({FORMAT_VERSION}){untouched}"
        )
    if version < 1:
        raise JobError(
            f"checkpoint {path!r} has format_version {version}, not a version (corrupt or edited)"
            f"{untouched}"
        )
    if version >= 2 or CHECKSUMS in attrs:
        _verify_checksums(path, f, limit, untouched)
    _check_notes(path, attrs, untouched)
    stored_size = _integer(path, attrs, "world_size", untouched)
    if stored_size != world_size:
        raise JobError(
            f"checkpoint {path!r} was written by {stored_size} ranks but {world_size} "
            f"were started: resume with mpirun -n {stored_size}"
        )
    stored = _text(attrs.get("job", ""))
    if stored != job_toml:
        raise JobError(
            f"the job differs from the one checkpointed in {path!r} (here: "
            f"{_first_difference(job_toml, stored)}); resume with the same job and --set "
            "options, or run without --resume"
        )
    job = tomllib.loads(job_toml)
    run = job.get("run", {})
    steps, log_every = int(run.get("steps", 0)), int(run.get("log_every", 1))
    algorithm = str(job.get("algorithm", {}).get("name", ""))
    if "algorithm" in attrs and _text(attrs["algorithm"]) != algorithm:
        raise JobError(
            f"checkpoint {path!r}: attribute 'algorithm' = {_text(attrs['algorithm'])[:40]!r} but "
            f"its job runs {algorithm!r} (corrupt or edited){untouched}"
        )
    step = _integer(path, attrs, "step", untouched)
    if not 0 <= step <= steps:
        raise JobError(
            f"checkpoint {path!r}: attribute 'step' = {step} is outside 0..{steps} ([run] steps) "
            f"(corrupt or edited){untouched}"
        )
    results_rows = _integer(path, attrs, "results_rows", untouched)
    expected = rows_logged(step, steps, log_every)
    if results_rows != expected:
        raise JobError(
            f"checkpoint {path!r}: attribute 'results_rows' = {results_rows} but step {step} with "
            f"[run] log_every = {log_every} logs {expected} rows (corrupt or edited){untouched}"
        )
    groups: dict[str, dict[str, np.ndarray]] = {"state": {}, "runner": {}}
    for group, arrays in groups.items():
        if not isinstance(f.get(group), h5py.Group):
            raise JobError(
                f"checkpoint {path!r} has no /{group} group (corrupt or truncated){untouched}"
            )
        for name, dset in f[group].items():
            where = f"checkpoint {path!r}: {group}/{name}"
            if not isinstance(dset, h5py.Dataset) or dset.ndim < 1 or dset.shape[0] != world_size:
                raise JobError(f"{where} is not one row per rank (corrupt or edited){untouched}")
            _check_attribute_sizes(path, dset, limit, untouched)
            shapes = np.asarray(dset.attrs["shapes"])
            if shapes.dtype.kind not in "iu" or shapes.shape != (world_size, dset.ndim - 1):
                raise JobError(
                    f"{where} has a shapes attribute of shape {shapes.shape}, not "
                    f"{(world_size, dset.ndim - 1)} (corrupt or edited){untouched}"
                )
            shape = tuple(int(s) for s in shapes[rank])
            if any(not 0 <= s <= m for s, m in zip(shape, dset.shape[1:], strict=True)):
                raise JobError(
                    f"{where}: rank {rank}'s shape {shape} does not fit the stored "
                    f"{dset.shape[1:]} (corrupt or edited){untouched}"
                )
            nbytes = int(np.prod(shape, dtype=np.int64)) * dset.dtype.itemsize
            if nbytes > limit:
                raise JobError(
                    f"{where}: rank {rank}'s row claims {nbytes} bytes, more than the file holds "
                    f"(corrupt){untouched}"
                )
            digests = np.asarray(dset.attrs["sha256"]).ravel()
            if digests.shape != (world_size,):
                raise JobError(
                    f"{where} has {digests.size} checksums for {world_size} ranks (corrupt or "
                    f"edited){untouched}"
                )
            row = (
                dset[(rank, *(slice(0, s) for s in shape))]
                if all(shape)
                else np.zeros(shape, dtype=dset.dtype)
            )
            if _digest(row) != _text(digests[rank]):
                raise JobError(
                    f"checkpoint {path!r}: {group}/{name} of rank {rank} fails its checksum "
                    f"(corrupt){untouched}"
                )
            arrays[name] = np.array(row)
    _check_counters(path, groups["runner"], log_every, untouched)
    return Snapshot(step, results_rows, groups["state"], groups["runner"])
