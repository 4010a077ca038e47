"""io/faults.py: rank 0's look at the output folder before a write, and the words for a failed write
(the whole fault paths under mpirun are in tests/e2e/test_output_faults.py)."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from mpidecent.errors import OutputError
from mpidecent.io import faults
from mpidecent.io.faults import CLOSING_RESERVE_BYTES, OutputWatch, diagnose, free_bytes, guarded


def test_the_watch_sees_nothing_wrong_with_a_healthy_folder(tmp_path):
    out = tmp_path / "r.h5"
    out.write_bytes(b"x")
    assert OutputWatch(str(out)).problem(1024) is None


def test_the_watch_asks_for_the_writes_plus_the_closing_reserve(tmp_path, monkeypatch):
    out = tmp_path / "r.h5"
    out.write_bytes(b"x")
    assert free_bytes(str(tmp_path)) > 0
    free = 10 * CLOSING_RESERVE_BYTES
    monkeypatch.setattr(faults, "free_bytes", lambda folder: free)  # other processes share the real disk
    problem = OutputWatch(str(out)).problem(free)  # the writes alone would fit exactly, the reserve not
    assert problem == (f"no room for the results: 2.5 MiB free in {tmp_path}, about 2.8 MiB needed for the "
                       "next writes")
    assert OutputWatch(str(out)).problem(free - CLOSING_RESERVE_BYTES) is None


def test_the_watch_notices_a_removed_folder_and_a_replaced_file(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    out = folder / "r.h5"
    out.write_bytes(b"x")
    watch = OutputWatch(str(out))
    replacement = folder / "other.h5"
    replacement.write_bytes(b"y")
    os.replace(replacement, out)  # same name, another file
    assert "was deleted, moved or replaced" in watch.problem(0)
    assert not watch.intact()
    shutil.rmtree(folder)
    assert "the output folder" in watch.problem(0) and "was removed" in watch.problem(0)


def test_a_failed_write_names_the_file_and_the_cause(tmp_path):
    out = str(tmp_path / "r.h5")
    with pytest.raises(OutputError, match=r"^writing a log row to .*r\.h5 failed: No space left on device \(ENOSPC\)$"):
        with guarded("writing a log row to", out):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OutputError, match=r"failed: write error \(Unable to flush cached data \(file write failed\)\)"):
        with guarded("closing", out):
            raise RuntimeError("Unable to flush\n cached data (file write failed)")
    with pytest.raises(ValueError):  # not an output fault: passes through untouched
        with guarded("closing", out):
            raise ValueError("a bug")


def test_a_vanished_folder_is_named_as_the_cause(tmp_path):
    path = str(tmp_path / "gone" / "r.h5")
    assert diagnose(path, RuntimeError("file write failed")).startswith(f"the folder {tmp_path / 'gone'} no longer")


def test_the_crash_probe_turns_a_crash_or_a_runaway_allocation_into_words(tmp_path):
    """io/hdf5guard.crash_probe: what libhdf5 may do on a damaged header, done by a reader in the child."""
    import ctypes

    from mpidecent.io.hdf5guard import crash_probe

    path = tmp_path / "f.h5"
    path.write_bytes(b"\0" * 1024)

    def segfault(_path):
        ctypes.string_at(0)  # reads address 0: SIGSEGV in the child only

    def runaway(_path):
        bytearray(64 << 30)  # 64 GiB for a 1 KiB file: refused by the child's address-space limit

    def refuses(_path):
        raise RuntimeError("a damaged file the real reader reports itself")

    assert crash_probe(str(path), segfault) == "libhdf5 crashed reading it (SIGSEGV)"
    assert crash_probe(str(path), runaway) == "reading it asks for far more memory than the file holds"
    assert crash_probe(str(path), refuses) is None
    assert crash_probe(str(path), lambda _path: None) is None


def test_the_crash_probe_child_says_nothing_when_it_crashes(tmp_path):
    """A crash in the probe's child is the probe's answer, not a "Fatal Python error" dump on the terminal
    or in a CI log, even with a faulthandler inherited from the parent (PYTHONFAULTHANDLER=1, pytest's)."""
    import os
    import subprocess
    import sys

    path = tmp_path / "f.h5"
    path.write_bytes(b"\0" * 1024)
    script = ("import ctypes; from mpidecent.io.hdf5guard import crash_probe; "
              f"print(crash_probe({str(path)!r}, lambda _path: ctypes.string_at(0)))")
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "libhdf5 crashed reading it (SIGSEGV)", result
    assert "Fatal Python error" not in result.stderr and result.stderr == "", result.stderr
