"""Error types that reach the user as one line.

``JobError`` is bad input (job file, topology, CLI flag, data file): the CLI prints its message as
one line on rank 0 and every rank exits with status 2. Messages name the job key (``[section] key``)
and say how to fix it.
"""

from __future__ import annotations


class JobError(Exception):
    """Invalid user input; ``str(err)`` is the complete one-line message."""


class AgreedJobError(JobError):
    """A ``JobError`` that every rank raises together, with the same message, after the ranks agreed
    on it in a collective (e.g. bad data found while loading it). The excepthook
    (``comm/world.abort_on_error``) prints it once, from rank 0, and every rank exits with status 2
    without aborting; a ``JobError`` raised on one rank alone aborts the job instead."""


class OutputError(Exception):
    """Writing an output file failed (full disk, vanished folder, I/O error); ``str(err)`` says what
    was written where and why, in one line. The runner stops every rank with ``EXIT_IO``."""


class NonFiniteInputError(ValueError):
    """A compressor was asked to encode NaN or infinite values (a diverging run)."""


# Exit statuses of the CLI (documented in docs/running.md).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 4  # stopped by SIGUSR1/SIGTERM after writing a checkpoint
EXIT_IO = 5  # an output file could not be written (full disk, vanished folder, I/O error)
