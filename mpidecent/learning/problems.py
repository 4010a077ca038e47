"""Local objectives (what a node differentiates) and exact global evaluation.

The network objective is f(θ) = (1/n) Σ_i F_i(θ), with F_i the mean loss over node i's shard plus the
ℓ2 term (λ/2)‖θ‖². Training gradients come from torch autograd on the flat-buffer model; the ℓ2 term
is applied directly on the flat buffers (one vectorised pass, no loop over parameters). Evaluation of
the global metrics and the optimum use float64 numpy so suboptimality f(θ̄) − f* is exact to rounding.

Which ranks call what: every rank owns one ``TorchObjective`` (its shard) and calls ``loss_grad`` each
step and ``evaluate`` at log points (the runner sums the results across ranks); rank 0 calls
``logistic_optimum`` once on the global data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mpidecent.learning.data import Shard
from mpidecent.learning.models import FlatParameters
from mpidecent.rng import generator


@dataclass(frozen=True)
class LocalEval:
    """Node i's share of the global metrics at a point θ: F_i(θ) (incl. ℓ2), correct predictions, samples."""

    objective: float
    correct: int
    count: int


class Objective(Protocol):
    """What an algorithm needs from the learning problem on one node.

    ``params`` is the flat evaluation point (dtype of the run, length ``dim``) and ``grads`` the flat
    gradient; algorithms write the point they want differentiated into ``params`` (or use it as their
    model state directly) and call ``loss_grad``.
    """

    dim: int
    params: np.ndarray
    grads: np.ndarray

    def loss_grad(self, step: int) -> float:
        """Minibatch loss at ``params`` (incl. ℓ2); writes ∇ into ``grads``."""
        ...

    def evaluate(self, theta: np.ndarray) -> LocalEval:
        """Full-shard objective and accuracy at ``theta`` (float64, length dim)."""
        ...


class TorchObjective:
    """F_i on node ``rank``'s shard for a torch model on flat buffers.

    Minibatches: ``batch_size`` samples drawn with replacement by the generator of
    (seed, rank, step, "minibatch"); ``batch_size = 0`` means the whole shard every step.
    """

    def __init__(self, flat: FlatParameters, shard: Shard, l2: float, batch_size: int, seed: int, rank: int,
                 data_loss) -> None:
        self.flat = flat
        self.dim = flat.dim
        self.params = flat.values
        self.grads = flat.grads
        self.l2 = l2
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.data_loss = data_loss
        torch_dtype = torch.float64 if self.params.dtype == np.float64 else torch.float32
        self.features = torch.as_tensor(shard.features, dtype=torch_dtype)
        self.targets = torch.as_tensor(shard.labels, dtype=torch_dtype)
        self.shard = shard

    def loss_grad(self, step: int) -> float:
        if self.batch_size == 0:
            features, targets = self.features, self.targets
        else:
            idx = generator(self.seed, self.rank, step, "minibatch").integers(
                0, self.shard.num_samples, size=self.batch_size)
            index = torch.from_numpy(idx)
            features, targets = self.features[index], self.targets[index]
        self.flat.zero_grad()
        loss = self.data_loss(self.flat.module(features), targets)
        loss.backward()
        value = float(loss.detach())
        if self.l2:
            # (λ/2)‖θ‖² and its gradient λθ on the flat buffers: one pass each, no per-parameter loop.
            value += 0.5 * self.l2 * float(np.dot(self.params, self.params))
            self.grads += self.l2 * self.params
        return value

    def evaluate(self, theta: np.ndarray) -> LocalEval:
        data_loss, correct = logistic_data_terms(theta, self.shard.features, self.shard.labels)
        return LocalEval(data_loss + 0.5 * self.l2 * float(theta @ theta), correct, self.shard.num_samples)


class NullObjective:
    """Zero loss and zero gradient: turns any algorithm into pure gossip (average consensus)."""

    def __init__(self, dim: int, dtype: np.dtype) -> None:
        self.dim = dim
        self.params = np.zeros(dim, dtype=dtype)
        self.grads = np.zeros(dim, dtype=dtype)

    def loss_grad(self, step: int) -> float:
        return 0.0

    def evaluate(self, theta: np.ndarray) -> LocalEval:
        return LocalEval(0.0, 0, 0)


# ---- exact float64 maths of ℓ2-regularised logistic regression --------------------------------------------


def _logits(theta: np.ndarray, features: np.ndarray) -> np.ndarray:
    return features @ theta[:-1] + theta[-1]


def logistic_data_terms(theta: np.ndarray, features: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Mean logistic loss (no ℓ2) and number of correct predictions; θ = [w (p), b]."""
    if features.shape[0] == 0:
        return 0.0, 0
    z = _logits(np.asarray(theta, dtype=np.float64), features)
    loss = np.logaddexp(0.0, z) - labels * z  # log(1 + e^z) − b z, stable for large |z|
    correct = int(np.count_nonzero((z > 0) == (labels == 1)))
    return float(loss.mean()), correct


@dataclass(frozen=True)
class Optimum:
    theta: np.ndarray
    value: float
    grad_norm: float
    iterations: int


def logistic_optimum(shards: list[tuple[np.ndarray, np.ndarray]], l2: float, tol: float = 1e-13,
                     max_iter: int = 100) -> Optimum:
    """Minimise f(θ) = (1/n) Σ_i mean-loss_i(θ) + (λ/2)‖θ‖² by Newton's method with backtracking.

    ``shards``: the n nodes' (features (m_i, p), labels (m_i,)). Sample k of shard i weighs 1/(n m_i), so
    unequal shard sizes give exactly the objective the nodes minimise. Requires λ > 0 (strongly convex,
    the optimum exists and Newton converges globally). Stops when ‖∇f‖ ≤ tol·max(1, |f|).
    """
    if l2 <= 0:
        raise ValueError("logistic_optimum needs l2 > 0 (otherwise the optimum need not exist)")
    n = len(shards)
    features = np.concatenate([np.hstack([a, np.ones((a.shape[0], 1))]) for a, _ in shards])
    labels = np.concatenate([b for _, b in shards]).astype(np.float64)
    weights = np.concatenate([np.full(a.shape[0], 1.0 / (n * a.shape[0])) for a, _ in shards])
    theta = np.zeros(features.shape[1])

    def value(t: np.ndarray) -> float:
        z = features @ t
        return float(weights @ (np.logaddexp(0.0, z) - labels * z) + 0.5 * l2 * (t @ t))

    f = value(theta)
    for it in range(1, max_iter + 1):
        z = features @ theta
        sig = 0.5 * (1.0 + np.tanh(0.5 * z))  # σ(z) without overflow
        grad = features.T @ (weights * (sig - labels)) + l2 * theta
        gnorm = float(np.linalg.norm(grad))
        if gnorm <= tol * max(1.0, abs(f)):
            return Optimum(theta, f, gnorm, it - 1)
        hess = (features * (weights * sig * (1.0 - sig))[:, None]).T @ features + l2 * np.eye(theta.size)
        direction = np.linalg.solve(hess, grad)
        step = 1.0
        while True:  # Armijo backtracking; Newton steps are accepted at once near the optimum
            candidate = theta - step * direction
            f_new = value(candidate)
            if f_new <= f - 1e-4 * step * float(grad @ direction) or step < 1e-12:
                break
            step *= 0.5
        theta, f = candidate, f_new
    z = features @ theta
    sig = 0.5 * (1.0 + np.tanh(0.5 * z))
    gnorm = float(np.linalg.norm(features.T @ (weights * (sig - labels)) + l2 * theta))
    return Optimum(theta, f, gnorm, max_iter)
