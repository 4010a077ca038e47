"""Write faults: why writing an output file failed, and rank 0's look-ahead for room before a write.

A full disk or a vanished folder must not hang a run. Parallel HDF5 turns a failed write into an
error on the ranks that performed it, not on every rank, and the library's own collectives (its
barriers inside ``MPI_File_sync`` and the metadata cache) can then wait forever for the rank that
failed. So the runner works on two levels (``runner/loop.py``):

* ``OutputWatch.problem`` (rank 0, at every log and checkpoint boundary, before anything is
  written): is the output folder still there, is the results file still the one we opened, is there
  room for the next row, the next checkpoint and the closing metadata? Its answer travels in the
  status reduction the ranks make at that boundary anyway, so every rank stops at the same step, the
  file is closed properly (status ``failed``) and the launch exits with ``EXIT_IO``.
* ``guarded``: a write that fails anyway (the disk filled up during the write, an I/O error) becomes
  an ``OutputError`` naming the file, the operation and the cause (``diagnose``). The rank that sees
  it prints one line and aborts the job, since the other ranks may be stuck inside HDF5; the
  previous checkpoint was never touched (checkpoints are written to a temporary file and renamed).

Every function here is local to the calling rank (no MPI).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from mpidecent.errors import OutputError
from mpidecent.machine import size_text

# Room kept free for what a run writes when it ends (status attributes, event records, the closing
# metadata flush): small next to any file system, large next to those attributes.
CLOSING_RESERVE_BYTES = 256 * 1024
# The least free room a run starts with (checked in ``runner/launch.py`` before any collective).
START_ROOM_BYTES = 1024 * 1024
# Metadata a new row may add besides its data chunks (B-tree nodes, object headers, the free-space
# list).
ROW_METADATA_BYTES = 64 * 1024


def free_bytes(folder: str) -> int | None:
    """Bytes an unprivileged writer may still use on ``folder``'s file system; None if unknown."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _os_reason(err: BaseException) -> str:
    """An OS error's cause in words, or '' (h5py's errors carry no errno: ``diagnose`` looks at the
    disk)."""
    code = getattr(err, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{os.strerror(code)} ({errno.errorcode[code]})"
    return ""


def diagnose(path: str, err: BaseException | None = None) -> str:
    """Why writing ``path`` failed, in words: its folder is gone, the disk is full (with the free
    bytes), the folder is not writable, else the error's own text."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"the folder {folder} no longer exists (removed while the run was going)"
    free = free_bytes(folder)
    if free is not None and free < ROW_METADATA_BYTES:
        return f"no space left on the device ({size_text(free)} free in {folder})"
    reason = _os_reason(err) if err is not None else ""
    if reason:
        return reason
    if not os.access(folder, os.W_OK):
        return f"the folder {folder} is not writable"
    text = " ".join(str(err).split()) if err is not None else ""
    return f"write error ({text})" if text else "write error"


@contextlib.contextmanager
def guarded(what: str, path: str) -> Iterator[None]:
    """Turn an OS or HDF5 error raised while ``what`` (e.g. "writing a log row to") ``path`` into an
    ``OutputError`` with the cause. h5py reports failed writes as ``OSError`` or
    ``RuntimeError``."""
    try:
        yield
    except OutputError:
        raise
    except (OSError, RuntimeError) as err:
        raise OutputError(f"{what} {path} failed: {diagnose(path, err)}") from err


def remove_quietly(path: str) -> None:
    """Remove a half-written temporary file (frees the room it took); a missing file is fine."""
    with contextlib.suppress(OSError):
        os.remove(path)


class OutputWatch:
    """Rank 0's look at the output folder before each write (see the module docstring).

    ``results_path``: the results file this run has open; its identity (device, inode) is taken now,
    so a file deleted, moved away or replaced by another during the run is noticed."""

    def __init__(self, results_path: str) -> None:
        self.results_path = os.path.abspath(results_path)
        self.folder = os.path.dirname(self.results_path)
        self.identity = self._identity()

    def _identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.results_path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def intact(self) -> bool:
        """Is the results file still the one this run opened?"""
        return self._identity() == self.identity

    def problem(self, needed_bytes: int) -> str | None:
        """What stops the next write, in words (None: nothing does). ``needed_bytes``: what the next
        writes may add (row chunks, a checkpoint) — ``CLOSING_RESERVE_BYTES`` is added here."""
        if not os.path.isdir(self.folder):
            return (
                f"the output folder {self.folder} was removed; the results file and checkpoint "
                "in it are gone"
            )
        if not self.intact():
            return (
                f"the results file {self.results_path} was deleted, moved or replaced while the "
                "run was writing it"
            )
        free = free_bytes(self.folder)
        wanted = needed_bytes + CLOSING_RESERVE_BYTES
        if free is not None and free < wanted:
            return (
                f"no room for the results: {size_text(free)} free in {self.folder}, about "
                f"{size_text(wanted)} needed for the next writes"
            )
        return None
