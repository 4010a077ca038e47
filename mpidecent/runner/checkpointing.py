"""A run's state to and from a checkpoint snapshot: the algorithm's arrays, the model's
non-trainable buffers (e.g. batch-norm running statistics, local to each node) and the runner's
counters (``io/checkpoint.py`` writes and verifies the file)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mpidecent.algorithms.base import Algorithm
from mpidecent.errors import JobError
from mpidecent.io.checkpoint import Snapshot
from mpidecent.runner.metrics import Totals

BUFFER = "model_buffer:"  # prefix of the model buffers' names in the snapshot


def live_state(algorithm: Algorithm, objective: Any) -> dict[str, np.ndarray]:
    """Every array that makes up this rank's state, by name: the algorithm's, then the model
    buffers."""
    buffers = getattr(getattr(objective, "flat", None), "buffers", {})
    return {**algorithm.state(), **{BUFFER + name: array for name, array in buffers.items()}}


def snapshot(
    step: int,
    results_rows: int,
    algorithm: Algorithm,
    objective: Any,
    totals: Totals,
    wall_s: float,
) -> Snapshot:
    """This rank's complete state at a step boundary (the live arrays, referenced)."""
    counters = {
        "bits": np.array([totals.bits], dtype=np.int64),
        "bytes": np.array([totals.bytes], dtype=np.int64),
        "messages": np.array([totals.messages], dtype=np.int64),
        "compute_s": np.array([totals.compute_s]),
        "comm_s": np.array([totals.comm_s]),
        "losses": np.array(totals.losses, dtype=np.float64),
        "wall_s": np.array([wall_s]),
    }
    return Snapshot(step, results_rows, live_state(algorithm, objective), counters)


def check_shapes(saved: Snapshot, live: dict[str, np.ndarray]) -> None:
    """``JobError`` unless the checkpoint holds exactly the live arrays, with their shapes and kinds
    of values (checked before anything is overwritten)."""
    if set(saved.state) != set(live):
        raise JobError(
            f"the checkpoint's state {sorted(saved.state)} does not match the algorithm's "
            f"{sorted(live)} (corrupt or edited)"
        )
    for name, array in live.items():
        stored = saved.state[name]
        if stored.shape != array.shape or not np.can_cast(
            stored.dtype, array.dtype, casting="same_kind"
        ):
            raise JobError(
                f"the checkpoint's {name} is {stored.dtype} {stored.shape} but this run's is "
                f"{array.dtype} {array.shape} (corrupt or edited)"
            )


def restore(saved: Snapshot, algorithm: Algorithm, objective: Any, totals: Totals) -> float:
    """Overwrite the algorithm's state, the model buffers and the counters from ``saved``; returns
    the wall time already spent (the run's clock continues from it)."""
    check_shapes(saved, live_state(algorithm, objective))
    live = live_state(algorithm, objective)
    for name, array in live.items():
        np.copyto(array, saved.state[name])
    algorithm.after_restore()
    c = saved.counters
    totals.bits, totals.bytes, totals.messages = (
        int(c["bits"][0]),
        int(c["bytes"][0]),
        int(c["messages"][0]),
    )
    totals.compute_s, totals.comm_s = float(c["compute_s"][0]), float(c["comm_s"][0])
    totals.losses = [float(v) for v in c["losses"]]
    return float(c["wall_s"][0])
