"""The runner: builds a run from a validated plan and owns the step loop (one module per job).

    build.py          one rank's data, objective, compressor, pattern connection and algorithm
    data.py           the data of a rank's layout (one partition, or a code's weighted partitions)
    metrics.py        per-rank counters and the network metrics of a log row; the optimum f*
    metadata.py       the results file's attributes
    checkpointing.py  a run's state to and from a checkpoint snapshot
    loop.py           Runner: the step loop, logging and checkpoint cadence, stop, divergence (MPI)
    summary.py        what rank 0 prints: the run summary, a sweep's table
    simulate.py       the in-memory twin: a neighbour algorithm on n simulated nodes (no MPI)

``Runner``, ``RunResult``, ``comparison_table`` and ``gossip_only`` are importable from here; they
are loaded on first use, so importing ``mpidecent.runner.simulate`` never initialises MPI.
"""

from importlib import import_module

_EXPORTS = {
    "Runner": "loop",
    "RunResult": "summary",
    "comparison_table": "summary",
    "gossip_only": "build",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"mpidecent.runner.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mpidecent.runner' has no attribute {name!r}")
