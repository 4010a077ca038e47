"""Torch models whose parameters (and gradients) are views into one flat buffer.

``FlatParameters`` rebinds every parameter of a module to a slice of one contiguous numpy array (and
every ``.grad`` to a slice of a second one), shared with torch through ``torch.from_numpy``. Sending,
compressing or averaging the model is then an operation on one flat vector with no copy, and a
backward pass accumulates straight into the flat gradient buffer.

Models are registered by ``[model] name`` together with the tasks they solve (see ``learning/data.py``
for tasks): ``logistic`` (binary), ``softmax`` (multiclass, linear), ``mlp`` (binary or multiclass),
``linear`` and ``relu`` (regression: w·x and max(w·x, 0), no bias, as in the SYN-1/SYN-2 problems).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from mpidecent.errors import JobError
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
    """Binary logit a·w + b; flat layout [w (features), b (1)]."""

    def __init__(self, features: int, outputs: int = 1):
        super().__init__()
        self.linear = torch.nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class SoftmaxModel(torch.nn.Module):
    """Multiclass logits W a + b, shape (m, classes)."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.linear = torch.nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class LinearRegressionModel(torch.nn.Module):
    """Prediction w·x (no bias: the SYN-1 targets have none)."""

    def __init__(self, features: int):
        super().__init__()
        self.linear = torch.nn.Linear(features, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class ReLURegressionModel(LinearRegressionModel):
    """Prediction max(w·x, 0) (SYN-2; non-convex)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class MLP(torch.nn.Module):
    """Fully connected ReLU network: features → hidden[0] → … → outputs (1 logit for binary)."""

    def __init__(self, features: int, hidden: list[int], outputs: int):
        super().__init__()
        sizes = [features, *hidden]
        layers: list[torch.nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(sizes[-1], outputs))
        self.net = torch.nn.Sequential(*layers)
        self.squeeze = outputs == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(-1) if self.squeeze else out


@dataclass(frozen=True)
class ModelKind:
    name: str
    params: tuple[Param, ...]
    doc: str
    tasks: tuple[str, ...]
    build: Callable[[int, int, dict[str, Any]], torch.nn.Module]  # (features, classes, params)
    convex: bool  # with ℓ2 > 0 the optimum is unique and computed exactly (learning/problems.py)


def _outputs(classes: int) -> int:
    return 1 if classes == 2 else classes


def _hidden_sizes(value: list) -> str | None:
    if not value or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value):
        return "must be a non-empty list of positive integers (layer widths)"
    return None


COMMON_PARAMS: tuple[Param, ...] = (
    Param("l2", float, 1e-3, "ℓ2 regularisation λ: the objective adds (λ/2)‖θ‖² over all parameters",
          minimum=0.0),
    Param("init", str, "auto",
          "initial model: zeros, normal (N(0, init_scale²)), torch (the layers' default initialisation); "
          "auto = zeros for linear models, torch for the MLP", choices=("auto", "zeros", "normal", "torch")),
    Param("init_scale", float, 0.1, "standard deviation of the 'normal' initialisation", minimum=0.0),
    Param("init_identical", bool, True,
          "every node starts from the same model (false: each node draws its own, seeded by its rank)"),
)

MODELS: dict[str, ModelKind] = {m.name: m for m in (
    ModelKind("logistic", (), "ℓ2-regularised logistic regression (binary labels; weights and bias)",
              ("binary",), lambda f, c, p: LogisticModel(f), convex=True),
    ModelKind("softmax", (), "multinomial logistic regression (linear layer + softmax cross-entropy)",
              ("multiclass",), lambda f, c, p: SoftmaxModel(f, c), convex=True),
    ModelKind("mlp", (Param("hidden", list, [32], "hidden layer widths", check=_hidden_sizes),),
              "multilayer perceptron with ReLU activations", ("binary", "multiclass"),
              lambda f, c, p: MLP(f, list(p["hidden"]), _outputs(c)), convex=False),
    ModelKind("linear", (), "linear regression w·x, loss ½·squared error (SYN-1)", ("regression",),
              lambda f, c, p: LinearRegressionModel(f), convex=True),
    ModelKind("relu", (), "ReLU regression max(w·x, 0), loss ½·squared error (SYN-2, non-convex)",
              ("regression",), lambda f, c, p: ReLURegressionModel(f), convex=False),
)}


def resolve_model(table: Mapping[str, Any]) -> dict[str, Any]:
    name = table.get("name", "logistic")
    if name not in MODELS:
        Param("name", str, choices=tuple(MODELS)).coerce("model", name)
    values = resolve("model", MODELS[name].params + COMMON_PARAMS, table, owner=name, ignore=("name",))
    return {"name": name, **values}


def check_model_task(values: Mapping[str, Any], task: str, data_name: str) -> None:
    """The model must solve the data set's task (pure; part of job validation)."""
    kind = MODELS[values["name"]]
    if task not in kind.tasks:
        fits = [m.name for m in MODELS.values() if task in m.tasks]
        raise JobError(f"[model] name = {kind.name!r} solves {' or '.join(kind.tasks)} tasks but [data] "
                       f"{data_name!r} is a {task} task; use {' or '.join(repr(f) for f in fits)}")


def _init_seed(seed: int, node: int) -> int:
    return int(np.random.SeedSequence([seed, node, 0, 3]).generate_state(1)[0])


def build_flat_model(values: Mapping[str, Any], features: int, classes: int, dtype: np.dtype,
                     seed: int, node: int = 0) -> FlatParameters:
    """Build the model on flat buffers and initialise it from (seed, node) — node 0's draw on every node
    when ``init_identical``, so identical initial models need no communication."""
    kind = MODELS[values["name"]]
    source = 0 if values["init_identical"] else node
    torch.manual_seed(_init_seed(seed, source))  # layer default initialisation, reproducible
    flat = FlatParameters(kind.build(features, classes, dict(values)), dtype)
    init = values["init"]
    if init == "auto":
        init = "zeros" if kind.convex else "torch"
    if init == "zeros":
        flat.values.fill(0.0)
    elif init == "normal":
        flat.values[:] = generator(seed, source, 0, "init").standard_normal(flat.dim) * values["init_scale"]
    return flat
