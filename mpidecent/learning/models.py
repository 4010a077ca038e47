"""Torch models whose parameters (and gradients) are views into one flat buffer.

``FlatParameters`` rebinds every parameter of a module to a slice of one contiguous numpy array (and
every ``.grad`` to a slice of a second one), shared with torch through ``torch.from_numpy``. Sending,
compressing or averaging the model is then an operation on one flat vector with no copy, and a
backward pass accumulates straight into the flat gradient buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from mpidecent.params import Param, resolve
from mpidecent.rng import generator


class FlatParameters:
    """Flat, contiguous storage for a module's parameters and gradients.

    ``values`` and ``grads`` are 1-D numpy arrays of length ``dim`` and the module's dtype; the module's
    parameters are views of ``values`` (in ``module.parameters()`` order) and their ``.grad`` are views of
    ``grads``. Call ``zero_grad()`` (one memset) before each backward pass.
    """

    def __init__(self, module: torch.nn.Module, dtype: np.dtype):
        self.module = module.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
        params = list(self.module.parameters())
        sizes = [p.numel() for p in params]
        self.dim = int(sum(sizes))
        self.values = np.zeros(self.dim, dtype=dtype)
        self.grads = np.zeros(self.dim, dtype=dtype)
        values_t = torch.from_numpy(self.values)
        grads_t = torch.from_numpy(self.grads)
        offset = 0
        for p, size in zip(params, sizes):  # one-time rebinding at set-up, not a hot path
            values_t[offset:offset + size].copy_(p.data.reshape(-1))
            p.data = values_t[offset:offset + size].view_as(p)
            p.grad = grads_t[offset:offset + size].view_as(p)
            offset += size

    def zero_grad(self) -> None:
        self.grads.fill(0.0)


class LogisticModel(torch.nn.Module):
    """Linear logit a·w + b for binary labels; flat layout [w (features), b (1)]."""

    def __init__(self, features: int):
        super().__init__()
        self.linear = torch.nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)

    @staticmethod
    def data_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


@dataclass(frozen=True)
class ModelKind:
    name: str
    params: tuple[Param, ...]
    doc: str
    build: Callable[[int, int, dict[str, Any]], torch.nn.Module]  # (features, classes, params)


COMMON_PARAMS: tuple[Param, ...] = (
    Param("l2", float, 1e-3, "ℓ2 regularisation λ: the objective adds (λ/2)‖θ‖² over all parameters",
          minimum=0.0),
    Param("init", str, "zeros", "initial model, identical on every node", choices=("zeros", "normal")),
    Param("init_scale", float, 0.1, "standard deviation of the 'normal' initialisation", minimum=0.0),
)

MODELS: dict[str, ModelKind] = {
    "logistic": ModelKind("logistic", (), "ℓ2-regularised logistic regression (binary labels)",
                          lambda features, classes, p: LogisticModel(features)),
}


def resolve_model(table: Mapping[str, Any]) -> dict[str, Any]:
    name = table.get("name", "logistic")
    if name not in MODELS:
        Param("name", str, choices=tuple(MODELS)).coerce("model", name)
    values = resolve("model", MODELS[name].params + COMMON_PARAMS, table, owner=name, ignore=("name",))
    return {"name": name, **values}


def build_flat_model(values: Mapping[str, Any], features: int, classes: int, dtype: np.dtype,
                     seed: int) -> FlatParameters:
    """Build the model on flat buffers and initialise it identically on every node."""
    module = MODELS[values["name"]].build(features, classes, dict(values))
    flat = FlatParameters(module, dtype)
    if values["init"] == "zeros":
        flat.values.fill(0.0)
    else:
        # Rank 0's generator on purpose: the initial model is the same on all nodes.
        flat.values[:] = generator(seed, 0, 0, "init").standard_normal(flat.dim) * values["init_scale"]
    return flat
