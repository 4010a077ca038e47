"""Data, flat-buffer models, local objectives and the exact optimum (learning/)."""

import numpy as np
import pytest
import torch

from mpidecent.learning.data import make_shard, partition, synthetic_logistic
from mpidecent.learning.models import FlatParameters, LogisticModel, build_flat_model
from mpidecent.learning.problems import TorchObjective, logistic_data_terms, logistic_optimum

MODEL = {"name": "logistic", "l2": 1e-2, "init": "zeros", "init_scale": 0.1}


@pytest.fixture(scope="module")
def data():
    return synthetic_logistic(600, 10, seed=3, separation=3.0)


def test_synthetic_data_is_deterministic_and_noisy(data):
    again = synthetic_logistic(600, 10, seed=3, separation=3.0)
    np.testing.assert_array_equal(data.features, again.features)
    np.testing.assert_array_equal(data.labels, again.labels)
    assert 0.3 < data.labels.mean() < 0.7
    other = synthetic_logistic(600, 10, seed=4, separation=3.0)
    assert not np.array_equal(data.labels, other.labels)


def test_sorted_partition_is_label_homogeneous_and_balanced(data):
    parts = partition(data.labels, 8, "sorted", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 600
    assert sorted(np.concatenate(parts).tolist()) == list(range(600))
    pure = sum(len(np.unique(data.labels[p])) == 1 for p in parts)
    assert pure >= 7  # only the shard holding the class boundary mixes labels
    iid = partition(data.labels, 8, "iid", seed=0)
    assert all(0 < data.labels[p].mean() < 1 for p in iid)
    assert [p.tolist() for p in iid] == [p.tolist() for p in partition(data.labels, 8, "iid", seed=0)]


def test_flat_parameters_are_views_and_backward_accumulates_into_flat_grads():
    flat = FlatParameters(LogisticModel(5), np.float64)
    assert flat.dim == 6
    weight, bias = flat.module.linear.weight, flat.module.linear.bias
    flat.values[:] = np.arange(6.0)
    assert weight.detach().numpy().ravel().tolist() == [0, 1, 2, 3, 4] and float(bias.detach()) == 5
    grad_ptr = weight.grad.data_ptr()
    loss = flat.module(torch.ones(3, 5, dtype=torch.float64)).sum()
    loss.backward()
    assert weight.grad.data_ptr() == grad_ptr  # accumulated in place, not replaced
    np.testing.assert_array_equal(flat.grads, [3, 3, 3, 3, 3, 3])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_torch_loss_and_gradient_match_the_closed_form(data, dtype, tol):
    parts = partition(data.labels, 4, "iid", seed=0)
    shard = make_shard(data, parts, 1)
    flat = build_flat_model(MODEL, 10, 2, dtype, seed=0)
    objective = TorchObjective(flat, shard, MODEL["l2"], 0, seed=0, rank=1, data_loss=LogisticModel.data_loss)
    theta = np.random.default_rng(0).standard_normal(11)
    flat.values[:] = theta
    loss = objective.loss_grad(step=0)
    assert abs(loss - objective.evaluate(theta).objective) < tol * 10
    a = np.hstack([shard.features, np.ones((shard.num_samples, 1))])
    sig = 1 / (1 + np.exp(-(a @ theta)))
    expected = a.T @ (sig - shard.labels) / shard.num_samples + MODEL["l2"] * theta
    np.testing.assert_allclose(flat.grads, expected, rtol=tol * 100, atol=tol)


def test_minibatches_depend_on_seed_rank_and_step(data):
    shard = make_shard(data, partition(data.labels, 2, "iid", seed=0), 0)
    flat = build_flat_model(MODEL, 10, 2, np.float64, seed=0)
    flat.values[:] = 0.1

    def grad(seed, rank, step):
        TorchObjective(flat, shard, 0.0, 8, seed, rank, LogisticModel.data_loss).loss_grad(step)
        return flat.grads.copy()

    np.testing.assert_array_equal(grad(1, 0, 5), grad(1, 0, 5))
    assert not np.array_equal(grad(1, 0, 5), grad(1, 0, 6))
    assert not np.array_equal(grad(1, 0, 5), grad(1, 1, 5))
    assert not np.array_equal(grad(1, 0, 5), grad(2, 0, 5))


def test_optimum_is_stationary_and_minimal(data):
    parts = partition(data.labels, 5, "sorted", seed=0)  # unequal shard sizes: 120 each here, then vary
    shards = [(data.features[p], data.labels[p]) for p in parts[:4]] + [(data.features[parts[4][:50]],
                                                                         data.labels[parts[4][:50]])]
    opt = logistic_optimum(shards, l2=1e-2)
    assert opt.grad_norm < 1e-12

    def f(theta):
        return np.mean([logistic_data_terms(theta, a, b)[0] for a, b in shards]) + 0.5e-2 * theta @ theta

    assert abs(f(opt.theta) - opt.value) < 1e-14
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert f(opt.theta + 1e-3 * rng.standard_normal(11)) > opt.value
    with pytest.raises(ValueError, match="l2 > 0"):
        logistic_optimum(shards, l2=0.0)
