"""Local objectives (what a node differentiates), exact evaluation, and the optimum of convex
problems.

The network objective is f(θ) = (1/n) Σ_i F_i(θ), with F_i the mean loss over node i's training
shard plus the ℓ2 term (λ/2)‖θ‖². The loss is ``[model] loss``; ``auto`` depends on the task: binary
→ logistic (BCE with logits), multiclass → softmax cross-entropy, regression → ½·squared error. A
model's output for binary and regression tasks may be (B,) or (B, 1); multiclass models output (B,
classes) logits. Training gradients come from torch autograd on the flat-buffer model; the ℓ2 term
is applied directly on the flat buffers (one vectorised pass, no loop over parameters). Evaluation
for the metrics runs a float64 copy of the model, so suboptimality f(θ̄) − f* is exact to rounding
whatever the training dtype.

Which ranks call what: every rank owns one ``TorchObjective`` (its shard) and calls ``loss_grad``
each step and ``evaluate`` at log points (the runner sums the results across ranks). ``glm_optimum``
is collective: every rank calls it with its own shard and a ``Reducer`` (no MPI import here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from mpidecent import plugins
from mpidecent.errors import JobError
from mpidecent.learning.data import NodeData, Shard
from mpidecent.learning.flat import FlatParameters, build_module
from mpidecent.learning.models import LOSS_TASKS
from mpidecent.learning.trial import check_training_step
from mpidecent.rng import generator


@dataclass(frozen=True)
class LocalEval:
    """Node i's share of the global metrics at a point θ: the mean loss over its rows (+ ℓ2 for the
    training shard), its number of correct predictions (classification) and of rows."""

    objective: float
    correct: int
    count: int


class Objective(Protocol):
    """What an algorithm needs from the learning problem on one node.

    ``params`` is the flat evaluation point (dtype of the run, length ``dim``) and ``grads`` the
    flat gradient; algorithms write the point they want differentiated into ``params`` (or use it as
    their model state directly) and call ``loss_grad``.
    """

    dim: int
    params: np.ndarray
    grads: np.ndarray

    def loss_grad(self, step: int) -> float:
        """Minibatch loss at ``params`` (incl. ℓ2); writes ∇ into ``grads``."""
        ...

    def on_progress(self, poke: Callable[[], None]) -> None:
        """Call ``poke`` at points inside ``loss_grad`` where communication in flight may
        progress."""
        ...

    def evaluate(self, theta: np.ndarray) -> LocalEval:
        """Full-shard objective F_i(θ) (incl. ℓ2) and accuracy at ``theta`` (float64, length
        dim)."""
        ...


def _half_squared_error(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    errors = 0.5 * (pred - target) ** 2
    return errors.mean() if reduction == "mean" else errors


_LOSSES = {
    "bce": torch.nn.functional.binary_cross_entropy_with_logits,
    "cross_entropy": torch.nn.functional.cross_entropy,
    "mse": torch.nn.functional.mse_loss,
}
_AUTO = {"binary": "bce", "multiclass": "cross_entropy"}


def data_loss(task: str, loss: str = "auto", base_dir: str | None = None):
    """Loss over a batch: (outputs, targets, reduction="mean"|"none") → scalar (or per-sample)
    tensor. ``loss``: ``[model] loss`` (a name, or an import path of fn(outputs, targets[,
    reduction]))."""
    if plugins.is_import_path(loss):
        fn = plugins.load(loss, "[model] loss", base_dir)

        def user_loss(
            outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
        ) -> torch.Tensor:
            return (
                fn(outputs, targets)
                if reduction == "mean"
                else fn(outputs, targets, reduction=reduction)
            )

        return user_loss
    if loss == "auto":
        return _LOSSES[_AUTO[task]] if task in _AUTO else _half_squared_error
    return _LOSSES[loss]


def fit_outputs(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """A (B, 1) output of a binary or regression model as (B,), the targets' shape."""
    if task != "multiclass" and outputs.ndim == 2 and outputs.shape[1] == 1:
        return outputs.squeeze(-1)
    return outputs


def _correct(task: str, outputs: torch.Tensor, targets: torch.Tensor) -> int:
    if task == "binary":
        return int(torch.count_nonzero((outputs > 0) == (targets > 0.5)))
    if task == "multiclass":
        return int(torch.count_nonzero(outputs.argmax(dim=-1) == targets))
    return 0


def _tensors(shard: Shard, task: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.as_tensor(shard.features, dtype=dtype)
    target_dtype = torch.int64 if task == "multiclass" else dtype
    return features, torch.as_tensor(shard.targets, dtype=target_dtype)


class TorchObjective:
    """F_i on node ``rank``'s shard for a torch model on flat buffers.

    Minibatches: ``batch_size`` samples drawn with replacement by the generator of
    (seed, rank, step, "minibatch"); ``batch_size = 0`` means the whole shard every step.

    ``sample_weights`` (m,) replace the mean by Σ_k w_k ℓ_k over the whole shard (full batch only):
    a master/worker code's combination Σ_j B_ij F_j / n of several partitions. ``eval_shard`` is the
    rows ``evaluate`` uses (default: the training shard), so that each partition is evaluated once
    even when several ranks train on it.
    """

    def __init__(
        self,
        flat: FlatParameters,
        data: NodeData,
        l2: float,
        batch_size: int,
        seed: int,
        rank: int,
        sample_weights: np.ndarray | None = None,
        eval_shard: Shard | None = None,
        loss: str = "auto",
        base_dir: str | None = None,
    ) -> None:
        self.flat = flat
        self.dim = flat.dim
        self.params = flat.values
        self.grads = flat.grads
        self.l2 = l2  # in the training loss and gradient
        self.eval_l2 = (
            l2  # in evaluate(); the runner sets it when training leaves ℓ2 to someone else
        )
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.task = data.task
        self.data = data
        self.loss_fn = data_loss(data.task, loss, base_dir)
        torch_dtype = torch.float64 if self.params.dtype == np.float64 else torch.float32
        self.features, self.targets = _tensors(data.train, data.task, torch_dtype)
        if sample_weights is not None and batch_size:
            raise ValueError("sample weights need full-batch gradients (batch_size = 0)")
        self.weights = (
            None if sample_weights is None else torch.as_tensor(sample_weights, dtype=torch_dtype)
        )
        # A float64 twin of the model for exact evaluation at arbitrary points (e.g. the network
        # average), in eval mode (dropout off, batch norm on the running statistics, copied from the
        # node's model).
        self._eval = FlatParameters(copy.deepcopy(flat.module), np.float64)
        self._eval.module.eval()
        self.eval_shard = data.train if eval_shard is None else eval_shard
        self.model_name = (
            ""  # [model] name, for the words when the user's code exits (build_node sets it)
        )
        self._eval_train = _tensors(self.eval_shard, data.task, torch.float64)
        self._eval_test = (
            _tensors(data.test, data.task, torch.float64) if data.test is not None else None
        )
        self._eval_test_all = (
            _tensors(data.test_all, data.task, torch.float64) if data.test_all is not None else None
        )

    def on_progress(self, poke: Callable[[], None]) -> None:
        """Call ``poke`` (cheap, never blocking) after every leaf module's forward pass and when
        every parameter's gradient has been computed: the points of ``loss_grad`` where a rank can
        let MPI move the exchanges it has in flight (a large message over TCP moves only inside MPI
        calls). Forward hooks and tensor hooks only observe: they change no value and no autograd
        graph (no module backward hooks, which break in-place activations)."""

        def after_forward(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            poke()

        def after_gradient(grad: torch.Tensor) -> None:
            poke()

        for module in self.flat.module.modules():
            if next(module.children(), None) is None:
                module.register_forward_hook(after_forward)
        for parameter in self.flat.module.parameters():
            if parameter.requires_grad:
                parameter.register_hook(after_gradient)

    def loss_grad(self, step: int) -> float:
        if self.batch_size == 0:
            features, targets = self.features, self.targets
        else:
            idx = generator(self.seed, self.rank, step, "minibatch").integers(
                0, self.data.train.num_samples, size=self.batch_size
            )
            index = torch.from_numpy(idx)
            features, targets = self.features[index], self.targets[index]
        self.flat.zero_grad()
        with plugins.user_code(
            "[model] name", self.model_name
        ):  # the user's forward, loss and backward
            outputs = fit_outputs(self.flat.module(features), self.task)
            if self.weights is None:
                loss = self.loss_fn(outputs, targets)
            else:
                loss = self.weights @ self.loss_fn(outputs, targets, reduction="none")
            loss.backward()
        value = float(loss.detach())
        if self.l2:
            # (λ/2)‖θ‖² and its gradient λθ on the flat buffers: one pass each, no per-parameter
            # loop.
            value += 0.5 * self.l2 * float(np.dot(self.params, self.params))
            self.grads += self.l2 * self.params
        return value

    def _eval_at(
        self, theta: np.ndarray, tensors: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[float, int, int]:
        features, targets = tensors
        if features.shape[0] == 0:
            return 0.0, 0, 0
        self._eval.values[:] = theta
        for name, buffer in self._eval.buffers.items():  # this node's running statistics
            buffer[...] = self.flat.buffers[name]
        with torch.no_grad(), plugins.user_code("[model] name", self.model_name):
            outputs = fit_outputs(self._eval.module(features), self.task)
            loss = float(self.loss_fn(outputs, targets))
        return loss, _correct(self.task, outputs, targets), int(features.shape[0])

    def evaluate(self, theta: np.ndarray) -> LocalEval:
        loss, correct, count = self._eval_at(theta, self._eval_train)
        if not count:  # a rank without data (a master) adds nothing to the network objective
            return LocalEval(0.0, 0, 0)
        return LocalEval(loss + 0.5 * self.eval_l2 * float(theta @ theta), correct, count)

    def evaluate_test(self, theta: np.ndarray) -> LocalEval | None:
        """Mean loss (no ℓ2) and correct predictions on this node's slice of the test set."""
        if self._eval_test is None:
            return None
        return LocalEval(*self._eval_at(theta, self._eval_test))

    def evaluate_test_all(self, theta: np.ndarray) -> LocalEval | None:
        """Mean loss (no ℓ2) and correct predictions on the whole test set (this node's own
        model)."""
        if self._eval_test_all is None:
            return None
        return LocalEval(*self._eval_at(theta, self._eval_test_all))


class NullObjective:
    """Zero loss and zero gradient: turns any algorithm into pure gossip (average consensus)."""

    def __init__(self, dim: int, dtype: np.dtype) -> None:
        self.dim = dim
        self.params = np.zeros(dim, dtype=dtype)
        self.grads = np.zeros(dim, dtype=dtype)

    def on_progress(self, poke: Callable[[], None]) -> None:
        """Nothing to hook: pure gossip computes no gradient."""

    def loss_grad(self, step: int) -> float:
        return 0.0

    def evaluate(self, theta: np.ndarray) -> LocalEval:
        return LocalEval(0.0, 0, 0)

    def evaluate_test(self, theta: np.ndarray) -> LocalEval | None:
        return None

    def evaluate_test_all(self, theta: np.ndarray) -> LocalEval | None:
        return None


def check_model(
    values: Mapping[str, Any],
    input_shape: tuple[int, ...],
    task: str,
    classes: int,
    base_dir: str | None = None,
    batch_size: int = 0,
) -> None:
    """One forward pass of the job's model (and its loss) on two zero samples, before any
    collective: the output must fit the task — (B,) or (B, 1) for binary and regression, (B,
    classes) for multiclass — and the loss must give a finite number; then one training step as
    training takes it (train mode, ``batch_size`` samples, the loss and a backward pass, leaving no
    trace: ``learning/trial.py``). JobError names ``[model] name`` or ``loss``."""
    loss = values["loss"]
    if loss in LOSS_TASKS and LOSS_TASKS[loss] != task:
        raise JobError(
            f"[model] loss = {loss!r} is for {LOSS_TASKS[loss]} tasks but the data set is a {task} "
            "task; "
            'use loss = "auto"'
        )
    module = build_module(values, input_shape, classes, base_dir).eval()
    name = values["name"]
    try:
        with torch.no_grad():
            raw = module(torch.zeros(2, *input_shape))
    except Exception as err:  # noqa: BLE001 - the user's model: any error becomes one line
        raise JobError(
            f"[model] name = {name!r} fails on a batch of samples of shape {tuple(input_shape)} "
            f"({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})"
        ) from None
    if not isinstance(raw, torch.Tensor):
        raise JobError(
            f"[model] name = {name!r} returned a {type(raw).__name__} from forward, not a tensor"
        )
    outputs = fit_outputs(raw, task)
    want = (2, classes) if task == "multiclass" else (2,)
    if tuple(outputs.shape) != want:
        shown = f"(B, {classes})" if task == "multiclass" else "(B,) or (B, 1)"
        raise JobError(
            f"[model] name = {name!r} outputs shape {tuple(raw.shape[1:])} per batch of samples, "
            f"but the {task} task{f' with {classes} classes' if task == 'multiclass' else ''} "
            f"needs {shown}"
        )
    targets = torch.zeros(2, dtype=torch.int64 if task == "multiclass" else outputs.dtype)
    loss_fn = data_loss(task, values["loss"], base_dir)
    try:
        value = loss_fn(outputs, targets)
        finite = (
            isinstance(value, torch.Tensor) and value.numel() == 1 and bool(torch.isfinite(value))
        )
    except Exception as err:  # noqa: BLE001
        raise JobError(
            f"[model] loss = {values['loss']!r} fails on the model's outputs "
            f"({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})"
        ) from None
    if not finite:
        raise JobError(
            f"[model] loss = {values['loss']!r} must return one finite number per batch, got "
            f"{value!r}"
        )
    check_training_step(module, values, input_shape, task, batch_size, loss_fn)


# ---- the exact optimum of convex generalised linear models, computed collectively ----------------


class Reducer(Protocol):
    """Sum over all ranks, in place (``comm/collectives.py``'s Collectives satisfies it)."""

    def allreduce_sum(self, array: np.ndarray) -> None: ...

    def broadcast(self, array: np.ndarray) -> None: ...


@dataclass(frozen=True)
class Optimum:
    theta: np.ndarray
    value: float
    grad_norm: float
    iterations: int


def _design(features: np.ndarray, bias: bool) -> np.ndarray:
    return np.hstack([features, np.ones((features.shape[0], 1))]) if bias else features


def glm_optimum(
    features: np.ndarray,
    targets: np.ndarray,
    nodes: int,
    l2: float,
    loss: str,
    bias: bool,
    reducer: Reducer,
    tol: float = 1e-13,
    max_iter: int = 100,
) -> Optimum:
    """Minimise f(θ) = (1/n) Σ_i mean_{k ∈ shard i} ℓ(θ; a_k, y_k) + (λ/2)‖θ‖² by Newton's method.

    Collective: every rank passes its own shard (``features`` (m_i, p), ``targets`` (m_i,));
    gradients, Hessians and objective values are summed with ``reducer``, so no rank needs the whole
    data set. ``loss``: "logistic" (y ∈ {0, 1}) or "squared" (½(θ·a − y)², where one Newton step is
    exact). θ = [w (p), b] when ``bias``. Needs λ > 0 (strong convexity: the optimum exists and
    Newton with Armijo backtracking converges globally). Stops when ‖∇f‖ ≤ tol·max(1, |f|). The
    result is rank 0's, broadcast, so every rank holds bitwise the same θ* and f*.
    """
    if l2 <= 0:
        raise ValueError("glm_optimum needs l2 > 0 (otherwise the optimum need not exist)")
    design = _design(np.asarray(features, dtype=np.float64), bias)
    y = np.asarray(targets, dtype=np.float64)
    weight = 1.0 / (
        nodes * max(design.shape[0], 1)
    )  # sample weight 1/(n m_i): the nodes' objective
    dim = design.shape[1]

    def local_terms(theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        z = design @ theta
        if loss == "logistic":
            value = float(np.sum(np.logaddexp(0.0, z) - y * z))
            sig = 0.5 * (1.0 + np.tanh(0.5 * z))  # σ(z) without overflow
            residual, curvature = sig - y, sig * (1.0 - sig)
        else:
            residual = z - y
            value = 0.5 * float(residual @ residual)
            curvature = np.ones_like(z)
        return value, design.T @ residual, (design * curvature[:, None]).T @ design

    def objective(theta: np.ndarray) -> float:
        z = design @ theta
        local = (
            np.sum(np.logaddexp(0.0, z) - y * z)
            if loss == "logistic"
            else 0.5 * np.sum((z - y) ** 2)
        )
        buf = np.array([weight * local])
        reducer.allreduce_sum(buf)
        return float(buf[0]) + 0.5 * l2 * float(theta @ theta)

    theta = np.zeros(dim)
    packed = np.empty(1 + dim + dim * dim)
    f, gnorm, iterations = objective(theta), np.inf, 0
    for iterations in range(max_iter + 1):
        value, grad, hess = local_terms(theta)
        packed[0], packed[1 : dim + 1], packed[dim + 1 :] = value, grad, hess.ravel()
        packed *= weight
        reducer.allreduce_sum(packed)
        grad = packed[1 : dim + 1] + l2 * theta
        gnorm = float(np.linalg.norm(grad))
        if gnorm <= tol * max(1.0, abs(f)) or iterations == max_iter:
            break
        hess = packed[dim + 1 :].reshape(dim, dim) + l2 * np.eye(dim)
        direction = np.linalg.solve(hess, grad)
        step = 1.0
        # Rounding noise of f: near the optimum the predicted decrease (the Newton decrement,
        # ~‖∇f‖²/λ) falls below f's resolution, and a full step may then round to a slightly larger
        # f. Accepting such a step is harmless; refusing it stalled the iteration at ‖∇f‖ ≈ 2e-11
        # for 100 iterations.
        noise = 8 * np.finfo(np.float64).eps * max(1.0, abs(f))
        while True:  # Armijo backtracking; full Newton steps are accepted near the optimum
            candidate = theta - step * direction
            f_new = objective(candidate)
            decrease = 1e-4 * step * float(grad @ direction)
            if f_new <= f - decrease or (step == 1.0 and f_new <= f + noise) or step < 1e-12:
                break
            step *= 0.5
        theta, f = candidate, f_new
    result = np.concatenate([[f, gnorm], theta])
    reducer.broadcast(result)
    return Optimum(result[2:], float(result[0]), float(result[1]), iterations)


GLM_LOSS = {
    "logistic": ("logistic", True),
    "linear": ("squared", False),
}  # model → (loss, has bias)
