"""Compute threads per rank, the one rule: SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS, else 1.

Never the libraries' default (all cores), which oversubscribes a node as soon as several ranks share
it. ``limit_native_threads`` applies the rule to numpy's BLAS (OpenBLAS, MKL) and OpenMP; the
package calls it on import, before any submodule imports numpy (BLAS reads these once, at load); a
value the user set wins. The runner applies it to torch (``torch.set_num_threads``). Why: with 8
ranks on 2 cores, each rank's BLAS otherwise started one spinning thread per core — the quickstart
took 35.7 s instead of 14.8 s, mostly in the small matrix products of the optimum's Newton
iterations.
"""

from __future__ import annotations

import os


def threads_per_rank() -> int:
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def limit_native_threads() -> None:
    threads = str(threads_per_rank())
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, threads)
