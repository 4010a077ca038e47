"""mpidecent: decentralized, communication-compressed learning on MPI.

Layers (arrows point down only): cli → runner → algorithms → comm / compression / learning / io,
with topology and config as pure foundations. See ``docs/`` and the README.
"""

import os as _os

__version__ = "0.1.0"


def _limit_native_threads() -> None:
    """Threads of numpy's BLAS (OpenBLAS, MKL) and OpenMP per process: SLURM_CPUS_PER_TASK, else
    OMP_NUM_THREADS, else 1 — the rule ``comm.world.threads_per_rank`` applies to torch. Set here, before
    any submodule imports numpy (BLAS reads them once, at load); a value the user set wins. Why: with
    several ranks per node, each rank's BLAS otherwise starts one spinning thread per core — measured on 2
    cores with 8 ranks, the quickstart took 35.7 s instead of 14.8 s, mostly in the small matrix products
    of the optimum's Newton iterations."""
    threads = "1"
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = _os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            threads = value
            break
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        _os.environ.setdefault(name, threads)


_limit_native_threads()
