"""The gradient step every algorithm shares: the learning-rate schedule α_t and the local
optimizer's job keys (pure; the optimizer itself is ``optim.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mpidecent.params import Param

LR_PARAMS: tuple[Param, ...] = (
    Param("lr", float, 0.1, "learning rate α₀ (step size of the gradient step)", minimum=0.0),
    Param(
        "lr_schedule",
        str,
        "constant",
        "step size α_t: constant = α₀; inverse = α₀ / (1 + t/lr_decay_steps); "
        "inverse_sqrt = α₀ / √(1 + t/lr_decay_steps)",
        choices=("constant", "inverse", "inverse_sqrt"),
    ),
    Param(
        "lr_decay_steps",
        float,
        100.0,
        "time scale of the decaying schedules, in steps",
        minimum=0.0,
        exclusive_minimum=True,
    ),
)


def _below_one(value: float) -> str | None:
    return "must be < 1" if value >= 1.0 else None


# The local optimizer turns the local gradient g into a direction d, and the algorithm takes its
# usual step with d in place of g (x ← x − α_t d). Which keys each optimizer reads (the others are
# ignored):
OPTIMIZER_KEYS: Mapping[str, tuple[str, ...]] = {
    "sgd": (),
    "heavy_ball": ("momentum",),
    "nesterov": ("momentum",),
    "adam": ("adam_beta1", "adam_beta2", "adam_eps"),
}

OPTIMIZER_PARAMS: tuple[Param, ...] = (
    Param(
        "optimizer",
        str,
        "sgd",
        "local optimizer, the direction d that replaces the gradient g in the step x ← x − α_t d: "
        "sgd: d = g; heavy_ball: m ← β m + g, d = m; nesterov: m ← β m + g, d = g + β m; adam: m ← "
        "β₁ m + (1 − β₁) g, v ← β₂ v + (1 − β₂) g², d = m̂ / (√v̂ + ε) with the bias corrections "
        "m̂ = m / (1 − β₁ᵏ), v̂ = v / (1 − β₂ᵏ) at the optimizer's k-th step (PyTorch's "
        "convention). Each rank keeps its own m, v; adam is not linear in g, so where ranks step "
        "on different local gradients (the neighbour and async algorithms) its fixed point solves "
        "Σ_i d_i = 0 rather than Σ_i g_i = 0: with heterogeneous data it settles near, not at, the "
        "optimum",
        choices=tuple(OPTIMIZER_KEYS),
    ),
    Param(
        "momentum",
        float,
        0.9,
        "β of heavy_ball and nesterov, 0 ≤ β < 1",
        minimum=0.0,
        check=_below_one,
    ),
    Param(
        "adam_beta1",
        float,
        0.9,
        "adam: β₁, decay of the first moment m, 0 ≤ β₁ < 1",
        minimum=0.0,
        check=_below_one,
    ),
    Param(
        "adam_beta2",
        float,
        0.999,
        "adam: β₂, decay of the second moment v, 0 ≤ β₂ < 1",
        minimum=0.0,
        check=_below_one,
    ),
    Param("adam_eps", float, 1e-8, "adam: ε added to √v̂", minimum=0.0, exclusive_minimum=True),
)

# The keys of an algorithm whose maths allows a local optimizer (see ``catalog.py``).
STEP_PARAMS: tuple[Param, ...] = (*LR_PARAMS, *OPTIMIZER_PARAMS)


def step_size(params: Mapping[str, Any], t: int) -> float:
    """α_t of the job's schedule at iteration t (0-based)."""
    lr, schedule = float(params["lr"]), params["lr_schedule"]
    if schedule == "constant":
        return lr
    scale = 1.0 + t / float(params["lr_decay_steps"])
    return lr / scale if schedule == "inverse" else lr / scale**0.5


def unused_optimizer_keys(params: Mapping[str, Any]) -> frozenset[str]:
    """The optimizer keys the job's optimizer does not read; with sgd (or no optimizer keys at all)
    every one of them, ``optimizer`` included, so that an SGD algorithm describes itself as
    before."""
    name = params.get("optimizer", "sgd")
    every = {p.name for p in OPTIMIZER_PARAMS}
    return frozenset(every if name == "sgd" else every - {"optimizer", *OPTIMIZER_KEYS[name]})
