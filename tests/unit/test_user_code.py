"""The user's own model, loss and data by import path, the convolutional built-ins and MNIST-1D, on
simulated nodes (runner/simulate.py builds every node as an MPI run does); bad user code is refused
before any collective with one line naming the key."""

import textwrap

import numpy as np
import pytest
import torch

from mpidecent.config import load_text
from mpidecent.errors import JobError
from mpidecent.learning.flat import build_flat_model
from mpidecent.learning.models import resolve_model
from mpidecent.learning.sources import mnist1d, resolve_data
from mpidecent.plan import plan_job
from mpidecent.runner.simulate import Simulation

USER_MODULE = '''
import numpy as np
import torch

calls = []


class TinyNet(torch.nn.Module):
    def __init__(self, input_shape, classes, width=8):
        super().__init__()
        calls.append((tuple(input_shape), classes, width))
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), width),
                                       torch.nn.BatchNorm1d(width), torch.nn.ReLU(), torch.nn.Linear(width, classes))

    def forward(self, x):
        return self.net(x)


def no_input_shape(classes):
    return torch.nn.Linear(40, classes)


def wrong_output(input_shape, classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), classes + 1))


def not_a_module(input_shape, classes):
    return "a string"


def raises(input_shape, classes):
    raise RuntimeError("out of ideas")


def blobs(samples=120, shape=(2, 3), seed=0, as_tensors=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, samples)
    x = rng.standard_normal((samples, *shape)) + y.reshape(-1, *[1] * len(shape))
    xt, yt = x[:30] + 0.01, y[:30]
    if as_tensors:
        return torch.tensor(x), torch.tensor(y), torch.tensor(xt), torch.tensor(yt)
    return x, y, xt, yt


def shards(rank, world_size, samples=20):
    rng = np.random.default_rng(rank)
    y = np.full(samples, rank % 3)
    return rng.standard_normal((samples, 4)) + y[:, None], y, np.zeros((6, 4)), np.arange(6) % 3


def bad_lengths():
    return np.zeros((10, 4)), np.zeros(9)


def negative_labels():
    return np.zeros((10, 4)), -np.ones(10)


def nan_features():
    x = np.zeros((10, 4))
    x[3, 1] = np.nan
    return x, np.arange(10) % 2


def test_shape_mismatch():
    return np.zeros((10, 4)), np.arange(10) % 2, np.zeros((5, 3)), np.arange(5) % 2


def one_thing():
    return np.zeros(3)


def regression_data():
    return np.zeros((10, 4)), np.linspace(0, 1, 10)


def half_loss(outputs, targets, reduction="mean"):
    losses = torch.nn.functional.cross_entropy(outputs, targets, reduction="none") / 2
    return losses.mean() if reduction == "mean" else losses


def vector_loss(outputs, targets):
    return outputs.sum(dim=1)
'''

JOB = """
[run]
steps = 30
seed = 1
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
lr = 0.2
[data]
name = "user_code.py:blobs"
batch_size = 16
[model]
name = "user_code.py:TinyNet"
l2 = 0.0
"""


@pytest.fixture
def job_file(tmp_path):
    """A job file in tmp_path with user_code.py beside it; returns (path → Job loader)."""
    (tmp_path / "user_code.py").write_text(USER_MODULE)

    def load(text=JOB, overrides=()):
        path = tmp_path / "job.toml"
        path.write_text(textwrap.dedent(text))
        from mpidecent.config import load_job

        return load_job(path, list(overrides))
    return load


def test_a_model_and_data_set_of_the_users_own_train_on_simulated_nodes(job_file, tmp_path):
    job = job_file(overrides=["model.width=6"])
    assert job.model["width"] == 6 and job.data["name"] == "user_code.py:blobs"
    sim = Simulation.of_plan(plan_job(job, 4))
    node = sim.nodes[0]
    assert node.data.input_shape == (2, 3) and node.data.num_classes == 3 and node.data.num_test == 30
    assert node.data.test_all.num_samples == 30 and node.data.test.num_samples in (7, 8)
    before = np.mean([n.objective.evaluate(a.model_view()).objective for n, a in zip(sim.nodes, sim.algorithms)])
    sim.run(30)
    after = np.mean([n.objective.evaluate(a.model_view()).objective for n, a in zip(sim.nodes, sim.algorithms)])
    assert after < 0.7 * before, (before, after)
    # the factory got the [model] keys and the shape/classes it names
    import sys

    # this test's user_code.py (other tests load user modules of their own under the same prefix)
    module = next(m for name, m in sys.modules.items()
                  if name.startswith("mpidecent_user_") and getattr(m, "__file__", "") == str(tmp_path / "user_code.py"))
    assert (((2, 3), 3, 6)) in module.calls
    # batch norm's running statistics are the node's own buffers, moved by training
    buffers = node.objective.flat.buffers
    assert {"net.2.running_mean", "net.2.running_var", "net.2.num_batches_tracked"} <= set(buffers)
    assert int(buffers["net.2.num_batches_tracked"]) == 30 and np.any(buffers["net.2.running_mean"] != 0)


def test_named_losses_and_a_loss_by_import_path(job_file):
    """loss = "cross_entropy" is what auto means for multiclass (bit for bit); an import path's loss is
    used for the gradient (half the cross-entropy halves the first step)."""
    runs = {}
    for loss in ("auto", "cross_entropy", "user_code.py:half_loss"):
        sim = Simulation.of_plan(plan_job(job_file(overrides=[f'model.loss="{loss}"', "run.steps=1"]), 2))
        start = sim.models()
        sim.run(1)
        runs[loss] = sim.models() - start
    np.testing.assert_array_equal(runs["auto"], runs["cross_entropy"])
    assert not np.array_equal(runs["auto"], runs["user_code.py:half_loss"])
    # batch norm couples the samples, so compare the output layer's bias step: it is exactly halved
    np.testing.assert_allclose(runs["user_code.py:half_loss"][:, -3:], runs["auto"][:, -3:] / 2, rtol=1e-9)


def test_a_shard_loader_is_told_its_rank_and_returns_only_its_shard(job_file):
    job = job_file(overrides=['data.name="user_code.py:shards"', "data.samples=12"])
    sim = Simulation.of_plan(plan_job(job, 3))
    for rank, node in enumerate(sim.nodes):
        assert node.data.train.num_samples == 12 and np.all(node.data.train.targets == rank % 3)
        assert node.data.test_all.num_samples == 6


def test_tensors_from_a_loader_and_partitions_apply(job_file):
    job = job_file(overrides=["data.as_tensors=true", 'data.partition="sorted"'])
    sim = Simulation.of_plan(plan_job(job, 3))
    targets = [node.data.train.targets for node in sim.nodes]
    assert targets[0].max() <= targets[1].min() and targets[1].max() <= targets[2].min()  # label-sorted shards
    assert np.mean(targets[0] == 0) > 0.8 and np.mean(targets[2] == 2) > 0.8


@pytest.mark.parametrize("overrides, message", [
    (['model.name="nowhere_module_xyz:Net"'], "[model] name = 'nowhere_module_xyz:Net': cannot import module "
                                               "'nowhere_module_xyz' (ModuleNotFoundError"),
    (['model.name="missing.py:Net"'], "[model] name = 'missing.py:Net': no file"),
    (['model.name="user_code.py:Nope"'], "[model] name = 'user_code.py:Nope': 'user_code.py' has no attribute 'Nope'"),
    (['model.name="user_code.py:np"'], "[model] name = 'user_code.py:np' is a module, not a callable"),
    (['model.name="user_code.py:raises"'], "[model] name = 'user_code.py:raises' raised RuntimeError: out of ideas"),
    (['model.name="user_code.py:not_a_module"'], "[model] name = 'user_code.py:not_a_module' returned a str, not "
                                                 "a torch.nn.Module"),
    (['model.name="user_code.py:wrong_output"'], "[model] name = 'user_code.py:wrong_output' outputs shape (4,) per "
                                                 "batch of samples, but the multiclass task with 3 classes needs "
                                                 "(B, 3)"),
    (['model.name="user_code.py:no_input_shape"'], "[model] name = 'user_code.py:no_input_shape' fails on a batch "
                                                   "of samples of shape (2, 3)"),
    (['model.loss="user_code.py:vector_loss"'], "[model] loss = 'user_code.py:vector_loss' must return one finite "
                                                "number per batch"),
    (['model.name="torch"'], "[model] name must be one of"),
    (['model.name=":Net"'], "[model] name = ':Net' is not an import path"),
    (['data.name="user_code.py:bad_lengths"'], "[data] name = 'user_code.py:bad_lengths': x of shape (10, 4) and y "
                                               "of shape (9,) must have one row per sample each"),
    (['data.name="user_code.py:negative_labels"'], "[data] name = 'user_code.py:negative_labels': y holds negative "
                                                   "labels"),
    (['data.name="user_code.py:nan_features"'], "[data] name = 'user_code.py:nan_features': x holds NaN or infinite"),
    (['data.name="user_code.py:test_shape_mismatch"'], "x_test (5, 3) and y_test (5,) must be (M, 4)"),
    (['data.name="user_code.py:one_thing"'], "[data] name = 'user_code.py:one_thing' returned ndarray; return (x, y) "
                                             "or (x, y, x_test, y_test) arrays"),
    (['data.name="user_code.py:blobs"', "data.task=\"binary\""], "y holds labels above 1 (e.g. 2) but task = "
                                                                 "'binary' needs 0 or 1"),
    (['data.name="user_code.py:blobs"', "data.bogus=1"], "[data] name = 'user_code.py:blobs' raised TypeError"),
    (['algorithm.name="uncoded"', 'topology.kind="star"', "data.batch_size=0", 'data.name="user_code.py:shards"'],
     "returns one shard per rank, but uncoded trains every rank on partitions of the whole set"),
    (['model.name="cnn"'], "[model] name = 'cnn' cannot take samples of shape (2, 3) (RuntimeError: Calculated "
                           "padded input size"),
    (['model.name="cnn"', "data.shape=[3]"], "[model] name = 'cnn' cannot take samples of shape (3,) (cnn takes "
                                             "images of shape (H, W) or (C, H, W)"),
    (['model.name="cnn1d"', 'data.shape=[2, 3, 4]'], "cnn1d takes signals of shape (L,) or (C, L)"),
    (['model.loss="bce"'], "[model] loss = 'bce' is for binary tasks"),
    (['data.name="user_code.py:regression_data"', 'data.partition="dirichlet"'],
     "[data] partition = 'dirichlet' needs class labels, but 'user_code.py:regression_data' returned real-valued"),
])
def test_bad_user_code_is_refused_in_one_line_naming_the_key(job_file, overrides, message):
    try:
        plan_job(job_file(overrides=overrides), 3)
    except JobError as err:
        text = str(err)
    else:
        pytest.fail("accepted")
    assert message in text and "\n" not in text, text


def test_the_convolutional_built_ins():
    """cnn1d is the MNIST-1D benchmark's CNN: 5,210 parameters for length 40 and ten classes; cnn takes
    28×28 and 32×32 images, with the channels from the data."""
    cnn1d = build_flat_model(resolve_model({"name": "cnn1d"}), (40,), 10, np.float32, seed=0)
    assert cnn1d.dim == 5210 and cnn1d.module(torch.zeros(3, 40)).shape == (3, 10)
    for shape in ((28, 28), (1, 28, 28), (3, 32, 32)):
        cnn = build_flat_model(resolve_model({"name": "cnn", "hidden": [32]}), shape, 10, np.float64, seed=0)
        assert cnn.module(torch.zeros(2, *shape, dtype=torch.float64)).shape == (2, 10)
    binary = build_flat_model(resolve_model({"name": "cnn1d", "channels": 4}), (2, 40), 2, np.float32, seed=0)
    assert binary.module(torch.zeros(5, 2, 40)).shape == (5,)  # one logit for a binary task


def test_mnist1d_is_generated_with_its_own_split_and_seeded():
    data = mnist1d()
    assert data.features.shape == (5000, 40) and data.fixed_test == 1000 and data.num_classes == 10
    assert set(np.unique(data.targets)) == set(range(10))
    values = resolve_data({"name": "mnist1d", "partition": "sorted"})
    job = load_text("""
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
[data]
name = "mnist1d"
partition = "sorted"
[model]
name = "cnn1d"
""")
    nodes = Simulation.of_plan(plan_job(job, 4)).nodes
    assert sum(n.data.train.num_samples for n in nodes) == 4000
    assert all(n.data.num_test == 1000 and n.data.test_all.num_samples == 1000 for n in nodes)
    assert nodes[0].data.train.targets.max() <= nodes[-1].data.train.targets.min()  # label-sorted
    assert values["generator_seed"] == 42
    other = mnist1d(7)
    assert not np.array_equal(other.features, data.features)


def test_a_flat_model_takes_any_sample_shape(job_file):
    sim = Simulation.of_plan(plan_job(job_file(overrides=['model.name="mlp"', "model.hidden=[5]"]), 2))
    assert sim.nodes[0].objective.dim == 6 * 5 + 5 + 5 * 3 + 3
    sim.run(3)


def test_train_takes_a_path_toml_text_or_a_dict(job_file, tmp_path):
    """mpidecent.train's job argument: the same job from a file, its text, or a dict of sections."""
    from mpidecent.api import _jobs
    from mpidecent.config import table_to_toml

    job = job_file()
    text = (tmp_path / "job.toml").read_text()
    import tomllib

    from_dict = _jobs(tomllib.loads(text), [])[0]
    assert _jobs(str(tmp_path / "job.toml"), [])[0].to_toml() == job.to_toml()
    assert _jobs(text, [])[0].to_toml() == from_dict.to_toml() == load_text(table_to_toml(tomllib.loads(text))).to_toml()
    with pytest.raises(JobError, match="job must be a job file's path, TOML text or a dict"):
        _jobs(42, [])
