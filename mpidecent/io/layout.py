"""The results file's layout, declared once: its format version and the series every run writes.

Pure (no h5py, no mpi4py): the parallel writer (``io/results.py``), the serial reader
(``io/reader.py``), the runner and the tests all take these names from here.
``docs/results-format.md`` documents them and the format version policy.

Each series is declared as name → ``Series(dtype, unit, description)``; ``unit`` "" is
dimensionless. The order of the mappings is the order the writer creates the datasets in.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

# Raised when a change would make a reader of the previous version misread a file
# (docs/results-format.md).
FORMAT_VERSION = 1


class Series(NamedTuple):
    """One dataset under /metrics: its HDF5 dtype, the ``unit`` and ``description`` attributes."""

    dtype: str
    unit: str
    description: str


# /metrics/step (L,)
STEP_SERIES = Series("i8", "", "logged step (iterations completed)")

# /metrics/rank/<name> (L, n): every run.
RANK_SERIES: Mapping[str, Series] = MappingProxyType(
    {
        "loss": Series(
            "f8",
            "",
            "mean minibatch training loss (incl. ℓ2) over the steps since the previous log point",
        ),
        "local_objective": Series(
            "f8", "", "F_i at this rank's reported model: full-shard loss + ℓ2"
        ),
        "bits_sent": Series(
            "i8", "bits", "cumulative bits sent (packed payload + headers, counted per out-edge)"
        ),
        "bytes_sent": Series("i8", "bytes", "cumulative bytes handed to MPI sends"),
        "messages_sent": Series("i8", "messages", "cumulative point-to-point messages sent"),
        "compute_s": Series(
            "f8", "s", "cumulative seconds computing (gradients, compression, mixing)"
        ),
        "comm_s": Series("f8", "s", "cumulative seconds in communication calls"),
    }
)

# An algorithm's own per-rank series (``Algorithm.extra_metrics``): any other name under
# /metrics/rank.
RANK_EXTRA_SERIES = Series("f8", "", "algorithm-specific per-rank value")

# /metrics/global/<name> (L,), written by rank 0: every run.
GLOBAL_SERIES: Mapping[str, Series] = MappingProxyType(
    {
        "avg_model_loss": Series(
            "f8", "", "f(x̄): the network objective at the average of the reported models"
        ),
        "suboptimality": Series(
            "f8", "", "f(x̄) − f*, with f* computed once by Newton's method (NaN if unknown)"
        ),
        "accuracy": Series("f8", "fraction", "training accuracy of the average model"),
        "consensus_distance": Series("f8", "", "(1/n) Σ_i ‖x_i − x̄‖² over the reported models"),
        "cumulative_bits": Series("i8", "bits", "Σ over ranks of bits_sent"),
        "cumulative_bytes": Series("i8", "bytes", "Σ over ranks of bytes_sent"),
        "wall_s": Series(
            "f8", "s", "wall-clock seconds since the start of the training loop (rank 0)"
        ),
    }
)

# /metrics/global/<name>, only in runs with a held-out test set (after GLOBAL_SERIES).
TEST_SERIES: Mapping[str, Series] = MappingProxyType(
    {
        "test_loss": Series(
            "f8", "", "mean loss (no ℓ2) of the average model on the held-out test set"
        ),
        "test_accuracy": Series("f8", "fraction", "accuracy of the average model on the test set"),
    }
)

# /metrics/rank/<name> (L, n), only in runs with a held-out test set (after RANK_SERIES): column i =
# rank i's own model x_i evaluated on the whole test set (the global TEST_SERIES evaluate the
# average model).
RANK_TEST_SERIES: Mapping[str, Series] = MappingProxyType(
    {
        "test_loss": Series(
            "f8", "", "each node's own model: mean loss (no ℓ2) on the whole test set"
        ),
        "test_accuracy": Series(
            "f8", "fraction", "each node's own model: top-1 accuracy on the whole test set"
        ),
    }
)

# HDF5 dimension scales (so netCDF-style readers such as xarray name the axes): /metrics/step is the
# scale of axis 0 ("step", the log row) of every /metrics series, /metrics/rank_index (n,) int64 = 0
# … n−1 the scale of axis 1 ("rank") of every /metrics/rank/<name>. Files written before the scales
# lack both; readers must not need them.
STEP_DIM = "step"
RANK_DIM = "rank"
RANK_INDEX = "rank_index"
RANK_INDEX_DESCRIPTION = (
    "rank number of each column of the /metrics/rank series (dimension scale 'rank')"
)


# ---- which steps have a row ----------------------------------------------------------------------
# Step 0, every ``log_every`` steps, and the last step: the writer (runner/loop.py) logs these, the
# reader counts them to tell a partial file, and a resume checks a results file against its
# checkpoint with them.


def rows_logged(step: int, steps: int, log_every: int) -> int:
    """Rows of the results file that belong to steps ≤ ``step`` of a ``steps``-step run (counted,
    not listed: the numbers may come from a file and be huge)."""
    every = max(int(log_every), 1)
    return step // every + 1 + int(step == steps and steps % every != 0)


def logged_steps(step: int, steps: int, log_every: int) -> list[int]:
    """The steps of the rows ``rows_logged`` counts, in order (what /metrics/step starts with)."""
    every = max(int(log_every), 1)
    last = [int(step)] if step == steps and steps % every != 0 else []
    return [*range(0, int(step) + 1, every), *last]
