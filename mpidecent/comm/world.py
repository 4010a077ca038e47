"""Starting MPI, ending every rank on an error, and describing the MPI library.

``init_mpi`` initialises MPI once per process (importing ``mpi4py.MPI``) and, when asked, finds the
one-sided (osc) component that serves windows on ``COMM_WORLD`` (see ``comm/osc.py``).

``abort_on_error`` makes an uncaught exception on any rank print its traceback once (from that rank)
and ``Abort`` the whole job, instead of leaving the other ranks blocked in a collective.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import traceback
from dataclasses import dataclass
from typing import NoReturn

from mpidecent.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, AgreedJobError, JobError

_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")


def launcher_rank() -> int | None:
    """This process's rank as told by the launcher's environment, before MPI is initialised."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return None


@dataclass(frozen=True)
class MpiEnvironment:
    rank: int
    size: int
    library: str
    standard: str
    thread_level: str
    osc_component: str
    mpi4py_version: str


_env: MpiEnvironment | None = None


def init_mpi(probe_osc: bool = False) -> MpiEnvironment:
    """Initialise MPI (idempotent) and describe it. Collective over COMM_WORLD when
    ``probe_osc``."""
    global _env
    if _env is not None and (_env.osc_component != "not probed" or not probe_osc):
        return _env
    import mpi4py
    from mpi4py import MPI

    from mpidecent.comm.osc import probe_osc_component

    levels = {
        MPI.THREAD_SINGLE: "single",
        MPI.THREAD_FUNNELED: "funneled",
        MPI.THREAD_SERIALIZED: "serialized",
        MPI.THREAD_MULTIPLE: "multiple",
    }
    version = MPI.Get_version()
    _env = MpiEnvironment(
        rank=MPI.COMM_WORLD.rank,
        size=MPI.COMM_WORLD.size,
        library=" ".join(MPI.Get_library_version().replace("\x00", "").split()),
        standard=f"{version[0]}.{version[1]}",
        thread_level=levels.get(MPI.Query_thread(), str(MPI.Query_thread())),
        osc_component=probe_osc_component(MPI.COMM_WORLD) if probe_osc else "not probed",
        mpi4py_version=mpi4py.__version__,
    )
    return _env


def abort_on_error() -> None:
    """Install an excepthook that prints the error from the failing rank and aborts every rank. Bad
    input that only shows once the ranks are running (``JobError``, e.g. a user's loader running out
    of memory) is one line and exit status 2; anything else is an internal error with its traceback
    (status 1). An ``AgreedJobError`` (raised on every rank together) is printed once, by rank 0,
    and every rank exits with status 2 without aborting (``_exit_agreed``)."""

    def hook(exc_type, exc, tb) -> None:  # pragma: no cover - exercised through subprocess tests
        if issubclass(exc_type, AgreedJobError):
            _exit_agreed(str(exc))
        rank = launcher_rank()
        if issubclass(exc_type, JobError):
            sys.stderr.write(f"mpidecent: error: {exc} (on rank {rank})\n")
            code = EXIT_BAD_INPUT
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            sys.stderr.write(f"mpidecent: internal error on rank {rank}:\n{text}")
            code = EXIT_INTERNAL
        sys.stderr.flush()
        try:
            from mpi4py import MPI

            if MPI.Is_initialized() and not MPI.Is_finalized():
                MPI.COMM_WORLD.Abort(code)
        finally:
            os._exit(code)

    sys.excepthook = hook


def _exit_agreed(message: str) -> None:
    """Every rank, for an error all ranks raised together: rank 0 prints ``message`` as one line,
    then each rank finalizes MPI (all ranks reach it, so no abort is needed and Open MPI prints no
    abort banner) and exits with status 2."""
    from mpi4py import MPI

    running = MPI.Is_initialized() and not MPI.Is_finalized()
    if (MPI.COMM_WORLD.rank if running else launcher_rank() or 0) == 0:
        sys.stderr.write(f"mpidecent: error: {message}\n")
    finalize_and_exit(EXIT_BAD_INPUT)


def finalize_and_exit(status: int, exit_handlers: bool = False) -> NoReturn:
    """Every rank, all reaching it: flush stdout and stderr, run the exit handlers when asked (what
    a normal exit would run: h5py's, torch's, a user plug-in's), finalize MPI (no abort needed) and
    end the process with ``status`` without the interpreter's tear-down."""
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe: nothing more can be said on it
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    if exit_handlers:
        atexit._run_exitfuncs()
    try:
        from mpi4py import MPI

        if MPI.Is_initialized() and not MPI.Is_finalized():
            MPI.Finalize()
    finally:
        os._exit(status)
