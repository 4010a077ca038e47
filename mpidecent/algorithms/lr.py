"""The learning-rate schedule every algorithm shares: its job keys and α_t (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mpidecent.params import Param

LR_PARAMS: tuple[Param, ...] = (
    Param("lr", float, 0.1, "learning rate α₀ (step size of the gradient step)", minimum=0.0),
    Param("lr_schedule", str, "constant",
          "step size α_t: constant = α₀; inverse = α₀ / (1 + t/lr_decay_steps); "
          "inverse_sqrt = α₀ / √(1 + t/lr_decay_steps)", choices=("constant", "inverse", "inverse_sqrt")),
    Param("lr_decay_steps", float, 100.0, "time scale of the decaying schedules, in steps",
          minimum=0.0, exclusive_minimum=True),
)


def step_size(params: Mapping[str, Any], t: int) -> float:
    """α_t of the job's schedule at iteration t (0-based)."""
    lr, schedule = float(params["lr"]), params["lr_schedule"]
    if schedule == "constant":
        return lr
    scale = 1.0 + t / float(params["lr_decay_steps"])
    return lr / scale if schedule == "inverse" else lr / scale ** 0.5
