"""The models of ``[model] name``: declarations, keys and the tasks each solves (pure: no torch).

Built-in models, registered with the tasks they solve (see ``learning/data.py`` for tasks):
``logistic`` (binary), ``softmax`` (multiclass, linear), ``mlp`` (binary or multiclass), ``linear``
and ``relu`` (regression: w·x and max(w·x, 0), no bias, as in the SYN-1/SYN-2 problems) — these take
the sample flattened — and the convolutional ``cnn1d`` (the MNIST-1D benchmark's CNN for signals)
and ``cnn`` (LeNet-style, for images). Or the user's own: ``name = "package.module:factory"`` (or
``"file.py:factory"`` relative to the job file), called with the ``[model]`` table's other keys plus
``input_shape`` (the shape of one sample) and ``classes`` (2 binary, C multiclass, 0 regression),
returning a ``torch.nn.Module``.

``[model] loss``: ``auto`` (by task: binary → logistic loss on one logit, multiclass → softmax
cross-entropy, regression → ½·squared error), ``cross_entropy``, ``bce``, ``mse`` (mean squared
error), or an import path to ``fn(outputs, targets) → mean loss`` (with ``reduction="none"``:
per-sample losses, as master/worker codes need).

The torch modules are in ``learning/networks.py`` and are imported only when a model is built
(``learning/flat.py``), so a job can be checked without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod
from typing import Any

from mpidecent import plugins
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
    # (input_shape, classes, params) → torch.nn.Module
    build: Callable[[tuple[int, ...], int, dict[str, Any]], Any]
    convex: bool  # with ℓ2 > 0 the optimum is unique and computed exactly (learning/problems.py)


def _flat(name: str, *args: Any) -> Callable[[tuple[int, ...], int, dict[str, Any]], Any]:
    """A built-in model of flat inputs: ``networks.<name>(features, *args(classes, params))``, the
    sample flattened first when it is not a vector."""

    def build(shape: tuple[int, ...], classes: int, params: dict[str, Any]) -> Any:
        module = _network(name, prod(shape), *(a(classes, params) for a in args))
        return _network("Flattened", module) if len(shape) > 1 else module

    return build


def _outputs(classes: int) -> int:
    return 1 if classes == 2 else classes


def _hidden_sizes(value: list) -> str | None:
    if not value or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value
    ):
        return "must be a non-empty list of positive integers (layer widths)"
    return None


def _positive_list(value: list) -> str | None:
    if not value or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value
    ):
        return "must be a non-empty list of positive integers"
    return None


LOSSES = ("auto", "cross_entropy", "bce", "mse")
LOSS_TASKS = {"cross_entropy": "multiclass", "bce": "binary", "mse": "regression"}


def _loss_name(value: str) -> str | None:
    if value in LOSSES or plugins.is_import_path(value):
        return None
    return f'must be one of {", ".join(LOSSES)} or an import path "package.module:function"'


COMMON_PARAMS: tuple[Param, ...] = (
    Param(
        "l2",
        float,
        1e-3,
        "ℓ2 regularisation λ: the objective adds (λ/2)‖θ‖² over all parameters",
        minimum=0.0,
    ),
    Param(
        "init",
        str,
        "auto",
        "initial model: zeros, normal (N(0, init_scale²)), torch (the layers' default "
        "initialisation); auto = zeros for linear models, torch for the others",
        choices=("auto", "zeros", "normal", "torch"),
    ),
    Param(
        "init_scale", float, 0.1, "standard deviation of the 'normal' initialisation", minimum=0.0
    ),
    Param(
        "init_identical",
        bool,
        True,
        "every node starts from the same model (false: each node draws its own, seeded by its "
        "rank)",
    ),
    Param(
        "loss",
        str,
        "auto",
        "auto (by task: logistic loss, softmax cross-entropy, ½·squared error), "
        "cross_entropy (multiclass), bce (binary), mse (regression: mean squared error), or "
        '"package.module:function" called as fn(outputs, targets) → mean loss',
        check=_loss_name,
    ),
)
COMMON_KEYS: tuple[str, ...] = tuple(p.name for p in COMMON_PARAMS)

CLASSIFICATION = ("binary", "multiclass")

MODELS: dict[str, ModelKind] = {
    m.name: m
    for m in (
        ModelKind(
            "logistic",
            (),
            "ℓ2-regularised logistic regression (binary labels; weights and bias)",
            ("binary",),
            _flat("LogisticModel"),
            convex=True,
        ),
        ModelKind(
            "softmax",
            (),
            "multinomial logistic regression (linear layer + softmax cross-entropy)",
            ("multiclass",),
            _flat("SoftmaxModel", lambda c, p: c),
            convex=True,
        ),
        ModelKind(
            "mlp",
            (Param("hidden", list, [32], "hidden layer widths", check=_hidden_sizes),),
            "multilayer perceptron with ReLU activations",
            CLASSIFICATION,
            _flat("MLP", lambda c, p: list(p["hidden"]), lambda c, p: _outputs(c)),
            convex=False,
        ),
        ModelKind(
            "linear",
            (),
            "linear regression w·x, loss ½·squared error (SYN-1)",
            ("regression",),
            _flat("LinearRegressionModel"),
            convex=True,
        ),
        ModelKind(
            "relu",
            (),
            "ReLU regression max(w·x, 0), loss ½·squared error (SYN-2, non-convex)",
            ("regression",),
            _flat("ReLURegressionModel"),
            convex=False,
        ),
        ModelKind(
            "cnn1d",
            (Param("channels", int, 25, "channels of each of the three convolutions", minimum=1),),
            "the 1-D CNN of the MNIST-1D benchmark for signals (L,) or (C, L): three convolutions "
            "(kernel 5, 3, 3, stride 2, ReLU) and a linear layer; 5,210 parameters for length 40 "
            "and 10 classes",
            CLASSIFICATION,
            lambda shape, c, p: _network("CNN1d", shape, _outputs(c), p["channels"]),
            convex=False,
        ),
        ModelKind(
            "cnn",
            (
                Param(
                    "channels",
                    list,
                    [6, 16],
                    "channels of the two convolutions (kernel 5, each "
                    "followed by ReLU and 2×2 max pooling)",
                    check=_positive_list,
                ),
                Param(
                    "hidden",
                    list,
                    [120, 84],
                    "widths of the fully connected layers",
                    check=_positive_list,
                ),
            ),
            "LeNet-style 2-D CNN for images (H, W) or (C, H, W) such as 28×28 or 32×32, channels "
            "from the data",
            CLASSIFICATION,
            lambda shape, c, p: _network(
                "LeNet", shape, _outputs(c), list(p["channels"]), list(p["hidden"])
            ),
            convex=False,
        ),
    )
}


def resolve_model(table: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the [model] table; returns all keys with defaults, including ``name``. An
    import-path model keeps the table's other keys as given (they are its factory's arguments)."""
    name = table.get("name", "logistic")
    if plugins.is_import_path(name):
        plugins.check_syntax(name, "[model] name")
        common = resolve(
            "model", COMMON_PARAMS, {k: v for k, v in table.items() if k in COMMON_KEYS}
        )
        return {
            "name": name,
            **common,
            **{k: v for k, v in table.items() if k not in COMMON_KEYS and k != "name"},
        }
    if name not in MODELS:
        Param("name", str, choices=tuple(MODELS)).coerce("model", name)
    values = resolve(
        "model", MODELS[name].params + COMMON_PARAMS, table, owner=name, ignore=("name",)
    )
    return {"name": name, **values}


def factory_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """An import-path model's keyword arguments: the [model] keys other than name and the common
    ones."""
    return {k: v for k, v in values.items() if k not in COMMON_KEYS and k != "name"}


def check_model_task(values: Mapping[str, Any], task: str, data_name: str) -> None:
    """The model and its loss must fit the data set's task (pure; part of job validation). An
    import-path model, or a data set whose task is only known once loaded (``auto``), is checked
    with a forward pass when the job is planned."""
    loss = values["loss"]
    if task != "auto" and loss in LOSS_TASKS and LOSS_TASKS[loss] != task:
        raise JobError(
            f"[model] loss = {loss!r} is for {LOSS_TASKS[loss]} tasks but [data] {data_name!r} is "
            "a "
            f'{task} task; use loss = "auto"'
        )
    if plugins.is_import_path(values["name"]) or task == "auto":
        return
    kind = MODELS[values["name"]]
    if task not in kind.tasks:
        fits = [m.name for m in MODELS.values() if task in m.tasks]
        raise JobError(
            f"[model] name = {kind.name!r} solves {' or '.join(kind.tasks)} tasks but [data] "
            f"{data_name!r} is a {task} task; use {' or '.join(repr(f) for f in fits)}"
        )


def is_convex(values: Mapping[str, Any]) -> bool:
    """A built-in convex model with the default loss: its optimum is computed exactly."""
    kind = MODELS.get(values["name"])
    return kind is not None and kind.convex and values["loss"] == "auto"
