"""Flat-buffer models, local objectives per task, and the exact optimum (learning/models.py, problems.py)."""

import numpy as np
import pytest
import torch

from mpidecent.errors import JobError
from mpidecent.io.datasets import load_node_data
from mpidecent.learning.sources import resolve_data
from mpidecent.learning.flat import FlatParameters, build_flat_model
from mpidecent.learning.models import check_model_task, resolve_model
from mpidecent.learning.networks import LogisticModel
from mpidecent.learning.problems import TorchObjective, glm_optimum


class OneProcess:
    """The Reducer of a single process: sums over one rank are the values themselves."""

    def allreduce_sum(self, array):
        pass

    def broadcast(self, array):
        pass


def node(data_table, model_table, nodes=4, rank=1, dtype=np.float64, seed=0):
    data = load_node_data(resolve_data(data_table), nodes, rank)
    model = resolve_model(model_table)
    flat = build_flat_model(model, data.input_shape, data.num_classes, dtype, seed, node=rank)
    return data, flat, TorchObjective(flat, data, model["l2"], resolve_data(data_table)["batch_size"], seed, rank)


LOGISTIC = {"name": "synthetic_logistic", "samples": 400, "features": 10, "batch_size": 0}


def test_flat_parameters_are_views_and_backward_accumulates_into_flat_grads():
    flat = FlatParameters(LogisticModel(5), np.float64)
    assert flat.dim == 6
    weight, bias = flat.module.linear.weight, flat.module.linear.bias
    flat.values[:] = np.arange(6.0)
    assert weight.detach().numpy().ravel().tolist() == [0, 1, 2, 3, 4] and float(bias.detach()) == 5
    grad_ptr = weight.grad.data_ptr()
    flat.module(torch.ones(3, 5, dtype=torch.float64)).sum().backward()
    assert weight.grad.data_ptr() == grad_ptr  # accumulated in place, not replaced
    np.testing.assert_array_equal(flat.grads, [3, 3, 3, 3, 3, 3])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_logistic_loss_and_gradient_match_the_closed_form(dtype, tol):
    data, flat, objective = node(LOGISTIC, {"name": "logistic", "l2": 0.01}, dtype=dtype)
    theta = np.random.default_rng(0).standard_normal(11)
    flat.values[:] = theta
    loss = objective.loss_grad(step=0)
    assert abs(loss - objective.evaluate(theta).objective) < tol * 10
    a = np.hstack([data.train.features, np.ones((data.train.num_samples, 1))])
    sig = 1 / (1 + np.exp(-(a @ theta)))
    expected = a.T @ (sig - data.train.targets) / data.train.num_samples + 0.01 * theta
    np.testing.assert_allclose(flat.grads, expected, rtol=tol * 100, atol=tol)


def test_regression_and_multiclass_losses():
    data, flat, objective = node({"name": "syn1", "samples": 200, "features": 8, "batch_size": 0},
                                 {"name": "linear", "l2": 0.0})
    theta = np.random.default_rng(1).standard_normal(8)
    flat.values[:] = theta
    residual = data.train.features @ theta - data.train.targets
    assert objective.loss_grad(0) == pytest.approx(0.5 * np.mean(residual ** 2), rel=1e-12)
    np.testing.assert_allclose(flat.grads, data.train.features.T @ residual / data.train.num_samples, rtol=1e-10)
    assert objective.evaluate(theta).objective == pytest.approx(0.5 * np.mean(residual ** 2), rel=1e-12)
    data, flat, objective = node({"name": "digits", "batch_size": 0}, {"name": "softmax", "l2": 0.0})
    assert data.task == "multiclass" and flat.dim == 64 * 10 + 10
    flat.values.fill(0.0)
    assert objective.loss_grad(0) == pytest.approx(np.log(10), rel=1e-12)  # uniform softmax
    assert objective.evaluate_test(flat.values.copy()).count == data.test.num_samples


def test_minibatches_depend_on_seed_rank_and_step():
    table = dict(LOGISTIC, batch_size=8)

    def grad(seed, rank, step):
        _, flat, objective = node(table, {"name": "logistic", "l2": 0.0}, rank=rank, seed=seed)
        flat.values[:] = 0.1
        objective.loss_grad(step)
        return flat.grads.copy()

    np.testing.assert_array_equal(grad(1, 0, 5), grad(1, 0, 5))
    assert not np.array_equal(grad(1, 0, 5), grad(1, 0, 6))
    assert not np.array_equal(grad(1, 0, 5), grad(1, 1, 5))
    assert not np.array_equal(grad(1, 0, 5), grad(2, 0, 5))


def test_initial_models_identical_or_per_node():
    model = resolve_model({"name": "mlp", "hidden": [4]})
    a = build_flat_model(model, (3,), 10, np.float64, seed=0, node=0).values
    b = build_flat_model(model, (3,), 10, np.float64, seed=0, node=5).values
    np.testing.assert_array_equal(a, b)
    assert np.any(a != 0)  # the MLP's layer initialisation, not zeros
    per_node = resolve_model({"name": "mlp", "hidden": [4], "init_identical": False})
    c = build_flat_model(per_node, (3,), 10, np.float64, seed=0, node=5).values
    assert not np.array_equal(a, c)
    zeros = build_flat_model(resolve_model({"name": "logistic"}), (3,), 2, np.float64, seed=0).values
    assert not zeros.any()


def test_logistic_optimum_is_stationary_and_minimal():
    data, flat, objective = node(LOGISTIC, {"name": "logistic", "l2": 0.01}, nodes=1, rank=0)
    opt = glm_optimum(data.train.features, data.train.targets, 1, 0.01, "logistic", True, OneProcess())
    assert opt.grad_norm < 1e-12 and opt.iterations < 20
    assert objective.evaluate(opt.theta).objective == pytest.approx(opt.value, abs=1e-14)
    rng = np.random.default_rng(0)
    assert all(objective.evaluate(opt.theta + 1e-3 * rng.standard_normal(11)).objective > opt.value
               for _ in range(20))
    with pytest.raises(ValueError, match="l2 > 0"):
        glm_optimum(data.train.features, data.train.targets, 1, 0.0, "logistic", True, OneProcess())


def test_ridge_optimum_equals_the_closed_form():
    data, _, objective = node({"name": "syn1", "samples": 300, "features": 20, "batch_size": 0},
                              {"name": "linear", "l2": 0.01}, nodes=1, rank=0)
    a, y = data.train.features, data.train.targets
    opt = glm_optimum(a, y, 1, 0.01, "squared", False, OneProcess())
    closed = np.linalg.solve(a.T @ a / len(y) + 0.01 * np.eye(20), a.T @ y / len(y))
    np.testing.assert_allclose(opt.theta, closed, rtol=1e-10)
    assert objective.evaluate(opt.theta).objective == pytest.approx(opt.value, rel=1e-12)


def test_models_must_fit_the_task():
    with pytest.raises(JobError, match=r"\[model\] name = 'logistic' solves binary tasks but \[data\] 'digits' "
                                       r"is a multiclass task; use 'softmax' or 'mlp'"):
        check_model_task(resolve_model({"name": "logistic"}), "multiclass", "digits")
    with pytest.raises(JobError, match="hidden must be a non-empty list of positive integers"):
        resolve_model({"name": "mlp", "hidden": [0]})
