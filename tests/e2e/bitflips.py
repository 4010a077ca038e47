"""Random single-bit flips of a results file and a checkpoint, each read in a forked child (issue 15).

    python tests/e2e/bitflips.py RESULTS.h5 CHECKPOINT.h5 FLIPS SEED WORKDIR

prints one JSON object: for each file, how many flips ended in each outcome, and a line per flip that was
neither refused nor harmless. h5py is imported once; every flip is read in a child made by ``os.fork``,
so a libhdf5 segfault or endless loop ends that child only. Outcomes:

- ``refused``: the reader's own one-line error (``ReportError`` / ``JobError``);
- ``harmless``: read without error (results: the report's tables render; checkpoint: every rank's
  snapshot and every root attribute equal the original's: the flip hit unused space);
- ``changed``: a checkpoint accepted with different arrays or attributes (must never happen);
- ``exception``: any other exception (a traceback for the user);
- ``memory``: a MemoryError under a 2 GiB address-space limit (a size read from the file, unbounded);
- ``crash``: killed by a signal (libhdf5); ``hang``: still reading after ``ALARM_S`` seconds.
"""

from __future__ import annotations

import functools
import json
import os
import random
import resource
import signal
import sys
import traceback
from collections import Counter

import h5py
import numpy as np

from mpidecent.errors import JobError
from mpidecent.io.checkpoint import _canonical, read_checkpoint
from mpidecent.io.hdf5guard import crash_probe, read_every_object
from mpidecent.io.reader import ReportError, read_header, read_runs
from mpidecent.report import tables

ADDRESS_SPACE = 2 << 30  # bytes: a child that tries to allocate more gets MemoryError
ALARM_S = 20  # a child still reading after this long is killed by SIGALRM (default action: terminate)
CODES = {0: "harmless", 10: "refused", 11: "exception", 12: "memory", 13: "changed"}


def read_results(path: str) -> int:
    """What ``mpidecent report`` does with a file, without figures: a first read in a forked child (a
    libhdf5 crash there is a refusal), then the read itself."""
    run = read_runs([path], probe=True)[0]
    tables.render_json([run])
    tables.render_text([run])
    tables.render_series_csv([run])
    read_header(path)
    return 0


def checkpoint_view(path: str, world_size: int, job: str) -> tuple[list, dict[str, str]]:
    """Every rank's snapshot and the root attributes (canonical text) of a checkpoint read as resume does."""
    snapshots = [read_checkpoint(path, rank, world_size, job) for rank in range(world_size)]
    with h5py.File(path, "r") as f:
        attrs = {name: _canonical(value) for name, value in f.attrs.items()}
    return [_flat(s) for s in snapshots], attrs


def _flat(snapshot) -> tuple:
    arrays = {f"{g}/{k}": (v.dtype.str, v.shape, v.tobytes())
              for g, group in (("state", snapshot.state), ("runner", snapshot.counters)) for k, v in group.items()}
    return snapshot.step, snapshot.results_rows, arrays


def child(kind: str, path: str, original: tuple | None, world_size: int, job: str) -> int:
    """Read one flipped file; the exit code says the outcome (``CODES``)."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    signal.alarm(ALARM_S)
    try:
        if kind == "results":
            return read_results(path)
        # as `mpidecent run --resume` does before MPI starts: each rank's probe in a forked child first
        if any(crash_probe(path, functools.partial(read_every_object, row=rank)) for rank in range(world_size)):
            return 10
        return 0 if checkpoint_view(path, world_size, job) == original else 13
    except (ReportError, JobError):
        return 10
    except MemoryError:
        traceback.print_exc(limit=-2)
        return 12
    except Exception:  # noqa: BLE001 - the outcome being measured
        traceback.print_exc(limit=-2)
        return 11


def outcome(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "hang" if os.WTERMSIG(status) == signal.SIGALRM else "crash"
    return CODES.get(os.WEXITSTATUS(status), "exception")


def fuzz(kind: str, source: str, flips: int, seed: int, workdir: str) -> tuple[Counter, list[str]]:
    """``flips`` seeded single-bit flips of ``source``, each read in a forked child."""
    with open(source, "rb") as f:
        data = f.read()
    path = os.path.join(workdir, f"flipped-{kind}.h5")
    original, world_size, job = None, 0, ""
    if kind == "checkpoint":
        with h5py.File(source, "r") as f:
            world_size, job = int(f.attrs["world_size"]), str(f.attrs["job"])
        original = checkpoint_view(source, world_size, job)
    rng = random.Random(seed)
    counts: Counter = Counter()
    notes: list[str] = []
    for _ in range(flips):
        at, bit = rng.randrange(len(data)), rng.randrange(8)
        flipped = bytearray(data)
        flipped[at] ^= 1 << bit
        with open(path, "wb") as f:
            f.write(flipped)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the tables' output is not needed
            code = 11
            try:
                code = child(kind, path, original, world_size, job)
            finally:
                sys.stderr.flush()
                os._exit(code)
        result = outcome(os.waitpid(pid, 0)[1])
        counts[result] += 1
        if result not in ("refused", "harmless"):
            notes.append(f"{kind}: byte {at} bit {bit}: {result}")
    return counts, notes


def main() -> None:
    results, checkpoint, flips, seed, workdir = sys.argv[1:6]
    report: dict[str, object] = {"notes": []}
    for kind, source in (("results", results), ("checkpoint", checkpoint)):
        counts, notes = fuzz(kind, source, int(flips), int(seed), workdir)
        report[kind] = dict(counts)
        report["notes"] += notes
    print(json.dumps(report))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
