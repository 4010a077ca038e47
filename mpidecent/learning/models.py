"""The models of ``[model] name``: declarations, keys and the tasks each solves (pure: no torch).

Models are registered with the tasks they solve (see ``learning/data.py`` for tasks): ``logistic``
(binary), ``softmax`` (multiclass, linear), ``mlp`` (binary or multiclass), ``linear`` and ``relu``
(regression: w·x and max(w·x, 0), no bias, as in the SYN-1/SYN-2 problems). The torch modules are in
``learning/networks.py`` and are imported only when a model is built (``learning/flat.py``), so a job
can be checked without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from mpidecent.errors import JobError
from mpidecent.params import Param, resolve


def _network(name: str, *args: Any) -> Any:
    """A module of ``learning/networks.py`` (imports torch)."""
    from mpidecent.learning import networks

    return getattr(networks, name)(*args)


@dataclass(frozen=True)
class ModelKind:
    name: str
    params: tuple[Param, ...]
    doc: str
    tasks: tuple[str, ...]
    build: Callable[[int, int, dict[str, Any]], Any]  # (features, classes, params) → torch.nn.Module
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
              ("binary",), lambda f, c, p: _network("LogisticModel", f), convex=True),
    ModelKind("softmax", (), "multinomial logistic regression (linear layer + softmax cross-entropy)",
              ("multiclass",), lambda f, c, p: _network("SoftmaxModel", f, c), convex=True),
    ModelKind("mlp", (Param("hidden", list, [32], "hidden layer widths", check=_hidden_sizes),),
              "multilayer perceptron with ReLU activations", ("binary", "multiclass"),
              lambda f, c, p: _network("MLP", f, list(p["hidden"]), _outputs(c)), convex=False),
    ModelKind("linear", (), "linear regression w·x, loss ½·squared error (SYN-1)", ("regression",),
              lambda f, c, p: _network("LinearRegressionModel", f), convex=True),
    ModelKind("relu", (), "ReLU regression max(w·x, 0), loss ½·squared error (SYN-2, non-convex)",
              ("regression",), lambda f, c, p: _network("ReLURegressionModel", f), convex=False),
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
