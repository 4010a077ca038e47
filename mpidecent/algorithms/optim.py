"""The local optimizer: the direction d an algorithm steps along in place of its gradient g.

Declared by the ``[algorithm]`` keys of ``lr.OPTIMIZER_PARAMS`` for the algorithms whose maths
allows it (``catalog.py``); the algorithm does its usual step with d in place of g (x ← x − α_t d,
or D-PSGD's x ← Σ_j w_ij x_j − α_t d). On the flat buffers, vectorised::

    sgd:         d = g                         (the gradient tensor itself: no copy, no state)
    heavy_ball:  m ← β m + g;  d = m
    nesterov:    m ← β m + g;  d = g + β m
    adam:        k ← k + 1;  m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²
                 d = (m / (1 − β₁ᵏ)) / (√v / √(1 − β₂ᵏ) + ε)           (PyTorch's bias correction)

heavy_ball and nesterov are linear in g, so averaging over ranks commutes with them. adam is not:
where ranks step on different local gradients (the neighbour and async algorithms) the fixed point
of local adam solves Σ_i d_i = 0 rather than Σ_i g_i = 0, a bias that heterogeneous local data makes
real (``tests/unit/test_optimizers.py`` measures it); all-reduce SGD and the master apply it to the
averaged or decoded gradient and have none.

With sgd every algorithm computes exactly what it computes without the keys (the same torch
operations in the same order). An optimizer is configured by a mapping of its own keys
(``optimizer``, ``momentum``, ``adam_beta1``, ``adam_beta2``, ``adam_eps``; the ``[algorithm]``
table for the usual local optimizer) and has a ``name`` that prefixes its state, so one algorithm
can hold several (an inner Adam and an outer Nesterov step, say) without their keys or arrays
colliding (``Algorithm.optimizer``). Its arrays are part of the algorithm's ``state()``
(``<name>_m``, ``<name>_v`` for adam, ``<name>_steps`` = k as a shape-(1,) int64 array;
``optimizer_m`` … for the default name) only when it has state, so SGD checkpoints keep their names.
A rank that never steps (a master/worker algorithm's workers) builds one with ``dim = 0``: the same
names, empty arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class LocalOptimizer:
    """One optimizer on one rank, over flat vectors of length ``dim``: the rule
    ``keys["optimizer"]`` (default sgd) with its coefficients from ``keys``, state arrays named
    ``<name>_m`` etc."""

    def __init__(
        self, keys: Mapping[str, Any], dim: int, dtype: np.dtype, name: str = "optimizer"
    ) -> None:
        self.name = name
        self.kind = str(keys.get("optimizer", "sgd"))
        self.beta = float(keys.get("momentum", 0.9))
        self.beta1 = float(keys.get("adam_beta1", 0.9))
        self.beta2 = float(keys.get("adam_beta2", 0.999))
        self.eps = float(keys.get("adam_eps", 1e-8))
        self._state: dict[str, np.ndarray] = {}
        if self.kind == "sgd":
            return
        if self.kind not in ("heavy_ball", "nesterov", "adam"):
            raise ValueError(f"unknown local optimizer {self.kind!r}")
        self.m = np.zeros(dim, dtype=dtype)
        self.steps = np.zeros(1, dtype=np.int64)
        self._m_t = torch.from_numpy(self.m)
        self._state = {f"{name}_m": self.m}
        if self.kind == "adam":
            self.v = np.zeros(dim, dtype=dtype)
            self._v_t = torch.from_numpy(self.v)
            self._state[f"{name}_v"] = self.v
        self._state[f"{name}_steps"] = self.steps
        if self.kind != "heavy_ball":  # d lives in its own buffer (heavy ball's d is m itself)
            self._d_t = torch.from_numpy(np.zeros(dim, dtype=dtype))

    @property
    def is_sgd(self) -> bool:
        return self.kind == "sgd"

    def state(self) -> dict[str, np.ndarray]:
        """The live arrays to checkpoint (a restore writes into them); empty for sgd."""
        return dict(self._state)

    def direction(self, g_t: torch.Tensor) -> torch.Tensor:
        """d for the gradient ``g_t`` (one optimizer step: updates m, v, k); sgd returns ``g_t``
        itself. The returned tensor is valid until the next call."""
        if self.kind == "sgd":
            return g_t
        self.steps[0] += 1
        m = self._m_t
        if self.kind == "heavy_ball":
            return m.mul_(self.beta).add_(g_t)
        if self.kind == "nesterov":
            m.mul_(self.beta).add_(g_t)
            return torch.add(g_t, m, alpha=self.beta, out=self._d_t)
        k = int(self.steps[0])
        m.mul_(self.beta1).add_(g_t, alpha=1.0 - self.beta1)
        self._v_t.mul_(self.beta2).addcmul_(g_t, g_t, value=1.0 - self.beta2)
        d = self._d_t
        torch.sqrt(self._v_t, out=d)
        d.div_(math.sqrt(1.0 - self.beta2**k)).add_(self.eps)  # √v̂ + ε
        torch.div(m, d, out=d)
        return d.div_(1.0 - self.beta1**k)  # m̂ / (√v̂ + ε)

    def descend(self, x_t: torch.Tensor, g_t: torch.Tensor, lr: float, divisor: float = 1) -> None:
        """x ← x − α d(g / divisor). With sgd exactly ``x.add_(g, alpha=-lr / divisor)`` (for
        all-reduce SGD the 1/n of the mean gradient folds into the step size); otherwise g is
        divided in place first (the optimizer sees the mean gradient: Adam is not linear in g)."""
        if self.kind == "sgd":
            x_t.add_(g_t, alpha=-lr / divisor)
            return
        if divisor != 1:
            g_t.div_(divisor)
        x_t.add_(self.direction(g_t), alpha=-lr)
