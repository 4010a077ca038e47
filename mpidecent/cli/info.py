"""``mpidecent info``: the MPI library, thread level, one-sided component and its passive-target
progress, h5py's MPI support (start with mpirun -n 2 to measure the progress)."""

from __future__ import annotations

import argparse

import mpidecent
from mpidecent.errors import EXIT_OK
from mpidecent.texttable import pairs


def add_parser(sub) -> None:
    sub.add_parser(
        "info",
        help="MPI library, thread level, one-sided component, passive-target RMA progress, "
        "h5py MPI support",
    )


def main(args: argparse.Namespace) -> int:
    from mpidecent.comm.world import init_mpi
    from mpidecent.threads import threads_per_rank

    env = init_mpi(probe_osc=True)
    import h5py
    import numpy as np
    import torch
    from mpi4py import MPI

    from mpidecent.comm.window import measure_passive_progress

    probe = measure_passive_progress(MPI.COMM_WORLD)  # collective; None on one rank
    if env.rank != 0:
        return EXIT_OK
    rows = [
        ("mpidecent", mpidecent.__version__),
        ("MPI library", env.library),
        ("MPI standard", env.standard),
        ("thread level", env.thread_level),
        ("ranks in this launch", str(env.size)),
        ("one-sided (osc) component", env.osc_component),
        (
            "passive-target progress",
            probe.describe()
            if probe
            else "not measured (start 2 or more ranks: mpirun -n 2 mpidecent info)",
        ),
        ("mpi4py", env.mpi4py_version),
        ("h5py", f"{h5py.__version__} (HDF5 {h5py.version.hdf5_version})"),
        (
            "h5py has MPI",
            "yes" if h5py.get_config().mpi else "NO - parallel results files will not work",
        ),
        ("torch", f"{torch.__version__}, {threads_per_rank()} thread(s) per rank"),
        ("numpy", np.__version__),
    ]
    print(pairs(rows))
    return EXIT_OK
