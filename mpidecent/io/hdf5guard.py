"""Checks on an HDF5 file before libhdf5 and numpy trust what it says (results files and
checkpoints).

libhdf5 (1.10) does not validate everything it parses. In a damaged file a global-heap object whose
size field is wrong makes it read past its buffer (a segfault) or loop forever while reading a
variable-length string attribute, and a flipped dimension in a dataspace makes numpy try to allocate
petabytes. What can be checked from outside libhdf5 is checked here first:

- ``heap_problem``: every global heap collection (where variable-length strings live) is walked and
  its objects must tile it exactly, inside the file;
- ``nbytes`` / ``attribute_problem``: the bytes a dataset or attribute would take in memory,
  computed from its shape before reading it, so the reader can bound it by the file's size.

What remains (documented in docs/results-format.md, "Corrupted files"): damage inside object
headers, B-trees and symbol tables is parsed by libhdf5 alone and can still crash it.
"""

from __future__ import annotations

import faulthandler
import os
import signal
from collections.abc import Callable, Iterable

import h5py
import numpy as np

# Every error h5py and numpy raise while reading a damaged file: libhdf5's errors arrive as OSError,
# RuntimeError (NotImplementedError among them), KeyError, ValueError or TypeError; a bad size or
# index as IndexError or OverflowError. Not MemoryError: sizes are bounded before reading, so one
# would be real.
READ_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    RuntimeError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    OverflowError,
)

HEAP_SIGNATURE = b"GCOL"
HEAP_HEADER = (
    16  # signature, version, 3 reserved bytes, collection size (8-byte lengths: h5py's default)
)
OBJECT_HEADER = 16  # heap object index (2), reference count (2), reserved (4), object size (8)


def first_line(err: BaseException) -> str:
    """An exception's first line (its type's name when it has no text), for a one-line refusal."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def heap_problem(path: str) -> str | None:
    """The first inconsistent global heap collection of the HDF5 file at ``path``, described, or
    None. Reads with ``pread``, not a memory map: a file that a failed write left sparse on a full
    tmpfs raises SIGBUS when a hole is touched through a map (the kernel cannot allocate the page),
    while ``read`` returns zeros. An unreadable file is left to the HDF5 open to report."""
    try:
        with open(path, "rb") as fh:
            fd = fh.fileno()
            size = os.fstat(fd).st_size

            def read(offset: int, count: int) -> bytes:
                return os.pread(fd, count, offset)

            for start in _signatures(read, size):
                problem = _collection_problem(read, size, start)
                if problem:
                    return f"global heap at byte {start}: {problem}"
    except OSError:
        return None
    return None


_SCAN_BLOCK = 4 << 20  # bytes read at a time while looking for collection signatures


def _signatures(read: Callable[[int, int], bytes], size: int) -> Iterable[int]:
    """Every offset of ``HEAP_SIGNATURE`` in the file, in order (blocks overlap by the signature's
    length less one, so one that straddles two blocks is found once)."""
    overlap = len(HEAP_SIGNATURE) - 1
    for offset in range(0, size, _SCAN_BLOCK):
        block = read(offset, _SCAN_BLOCK + overlap)
        found = block.find(HEAP_SIGNATURE)
        while 0 <= found < _SCAN_BLOCK:
            yield offset + found
            found = block.find(HEAP_SIGNATURE, found + 1)


def _collection_problem(
    read: Callable[[int, int], bytes], file_size: int, start: int
) -> str | None:
    """One collection: its objects (index, size) must tile it from its header to its end, each index
    once, with the free-space object (index 0), if any, last and holding exactly the rest."""
    header = read(start, HEAP_HEADER)
    if len(header) < HEAP_HEADER or header[4] != 1 or header[5:8] != b"\0\0\0":
        return (
            None  # not a collection header (bytes that happen to read GCOL); libhdf5 checks its own
        )
    size = int.from_bytes(header[8:16], "little")
    end = start + size
    if size < HEAP_HEADER or end > file_size:
        return f"its size {size} runs past the end of the file ({file_size} bytes)"
    seen: set[int] = set()
    pos = start + HEAP_HEADER
    while end - pos >= OBJECT_HEADER:  # less room than a header is free space libhdf5 skips
        entry = read(pos, OBJECT_HEADER)
        index = int.from_bytes(entry[0:2], "little")
        length = int.from_bytes(entry[8:16], "little")
        if index == 0:  # free space: the rest of the collection, its header included
            return (
                None
                if length == end - pos
                else f"free space of {length} bytes where {end - pos} remain"
            )
        if index in seen:
            return f"object {index} appears twice"
        seen.add(index)
        pos += OBJECT_HEADER + (length + 7) // 8 * 8
        if pos > end:
            return f"object {index} of {length} bytes runs past the collection's end"
    return None


def nbytes(shape: Iterable[int] | None, dtype: np.dtype) -> int:
    """Bytes an array of ``shape`` and ``dtype`` takes in memory, in Python integers (no overflow);
    a variable-length item counts as its 16-byte descriptor (its data lives in a checked global
    heap)."""
    count = 1
    for extent in shape or ():
        count *= max(int(extent), 0)
    return count * max(np.dtype(dtype).itemsize, 1)


def attribute_problem(
    obj: h5py.HLObject, limit: int, names: Iterable[str] | None = None
) -> str | None:
    """The first attribute of ``obj`` (of ``names`` only, when given: every attribute opened is more
    of a damaged file for libhdf5 to parse) that would take more than ``limit`` bytes in memory,
    described (checked from its dataspace and type, before reading it), or None."""
    for name in obj.attrs if names is None else [n for n in names if n in obj.attrs]:
        attr = obj.attrs.get_id(name)
        size = nbytes(attr.shape, attr.dtype)
        if size > limit:
            return (
                f"attribute {name!r} claims {attr.shape} items ({size} bytes), more than the "
                "file holds"
            )
    return None


PROBE_TIMEOUT_S = (
    120  # a probe still reading after this long counts as a file libhdf5 cannot finish
)


PROBE_SPARE_BYTES = 2 << 30  # address space a probe may add beyond its own and 4 × the file's size
_PROBE_OK, _PROBE_ERROR, _PROBE_MEMORY = 0, 1, 3  # the child's exit codes


def crash_probe(path: str, read: Callable[[str], object]) -> str | None:
    """Run ``read(path)`` once in a forked child and say why the file cannot be read safely, if so
    (None: it finished, with or without an error of its own, which the real read reports). What the
    checks above cannot catch is libhdf5 itself on a damaged object header: crashing (SIGSEGV),
    looping, or allocating gigabytes for a file of kilobytes (measured: 24 GiB for a 24 KB
    checkpoint). In the child, under an address-space limit (its own size + 4 × the file +
    ``PROBE_SPARE_BYTES``) and an alarm, that ends the child only, and the caller refuses the file
    in one line. Never in a process that has started MPI: ``mpidecent report``, and ``mpidecent run
    --resume`` before it starts MPI (``cli/run.py``)."""
    if not hasattr(os, "fork"):
        return None
    pid = os.fork()
    if pid == 0:  # the child: read, say nothing, leave without running the parent's exit handlers
        # a crash here is the answer, not news: no "Fatal Python error" dump from an inherited
        # faulthandler (pytest's, or PYTHONFAULTHANDLER=1) into the user's terminal or a CI log
        faulthandler.disable()
        code = _PROBE_OK
        try:
            _limit_address_space(4 * os.path.getsize(path) + PROBE_SPARE_BYTES)
            signal.alarm(PROBE_TIMEOUT_S)
            read(path)
        except MemoryError:
            code = _PROBE_MEMORY
        except BaseException as err:  # noqa: BLE001 - the parent reads the file again and reports it itself
            code = _PROBE_MEMORY if "alloc" in str(err).lower() else _PROBE_ERROR
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGALRM:
            return f"libhdf5 did not finish reading it in {PROBE_TIMEOUT_S} s"
        return f"libhdf5 crashed reading it ({signal.Signals(number).name})"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _PROBE_MEMORY:
        return "reading it asks for far more memory than the file holds"
    return None


def _limit_address_space(extra_bytes: int) -> None:
    """This process may map ``extra_bytes`` more than it has now (RLIMIT_AS; Linux)."""
    import resource

    with open("/proc/self/statm") as statm:
        now = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = now + extra_bytes if hard == resource.RLIM_INFINITY else min(now + extra_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def read_every_object(path: str, row: int = 0) -> None:
    """Open ``path`` and read every attribute, and row ``row`` of every dataset (all of it when it
    has fewer rows), that the size checks allow, discarding them: what a ``crash_probe`` of a
    checkpoint runs on each rank (``row`` = its rank: the part of every dataset its real read
    touches). Errors of its own are the real reader's to report."""
    if heap_problem(path):
        return
    limit = 2 * os.path.getsize(path) + (1 << 20)
    with h5py.File(path, "r") as f:
        objects: list[h5py.HLObject] = [f]
        f.visititems(lambda _name, obj: objects.append(obj))
        for obj in objects:
            if attribute_problem(obj, limit):
                return
            for name in obj.attrs:
                obj.attrs[name]
            if not isinstance(obj, h5py.Dataset):
                continue
            if obj.ndim and obj.shape[0] > row:
                if nbytes(obj.shape[1:], obj.dtype) <= limit:
                    obj[row]
            elif nbytes(obj.shape, obj.dtype) <= limit:
                obj[()]
