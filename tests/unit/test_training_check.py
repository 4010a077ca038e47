"""The set-up check runs what training runs (learning/trial.py): one step in train mode on a batch of
the job's batch size with the loss and a backward pass, so a model that only fails in training is one
line naming its key at set-up; and the step leaves no trace (parameters, buffers, gradients, mode,
the global random states), so runs stay bit-identical."""

import random
import textwrap

import numpy as np
import pytest
import torch

from mpidecent.config import load_text
from mpidecent.errors import JobError
from mpidecent.learning.problems import data_loss
from mpidecent.learning.trial import check_training_step
from mpidecent.plan import plan_job

NETS = '''
import torch


class BatchNormNet(torch.nn.Module):
    def __init__(self, input_shape, classes):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], 6),
                                       torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 1))

    def forward(self, x):
        return self.net(x)


class TrainsOnlyInEvalMode(BatchNormNet):
    def forward(self, x):
        if self.training:
            raise RuntimeError("no training here")
        return super().forward(x)


def bad_backward(outputs, targets):
    return (outputs.sum() * 0).detach()  # no graph: backward() fails
'''


def _job(tmp_path, model="nets.py:BatchNormNet", loss="auto", **data):
    (tmp_path / "nets.py").write_text(NETS)
    extra = "".join(f"{k} = {v!r}\n" for k, v in data.items())
    text = textwrap.dedent(f"""
        [run]
        name = "t"
        steps = 2
        [topology]
        kind = "ring"
        [algorithm]
        name = "dpsgd"
        [data]
        name = "synthetic_logistic"
        samples = 40
        features = 5
        {extra}
        [model]
        name = "{model}"
        loss = "{loss}"
        """)
    (tmp_path / "job.toml").write_text(text)
    return load_text(text, str(tmp_path / "job.toml"))


def test_batch_norm_with_batch_size_1_is_refused_at_set_up_in_one_line(tmp_path):
    with pytest.raises(JobError) as err:
        plan_job(_job(tmp_path, batch_size=1), 2)
    message = str(err.value)
    assert message.startswith("[model] name = 'nets.py:BatchNormNet' fails in a training step (train mode, "
                              "a batch of 1 sample of shape (5,)) (ValueError: Expected more than 1 value per "
                              "channel when training")
    assert "BatchNorm needs batch_size >= 2 in training: set [data] batch_size to 2 or more" in message
    assert "\n" not in message
    plan_job(_job(tmp_path, batch_size=2), 2)  # what training does works: accepted
    plan_job(_job(tmp_path, batch_size=0), 2)  # full batch (a shard of 20 samples)


def test_a_model_or_loss_that_fails_only_in_training_names_its_key(tmp_path):
    job = _job(tmp_path, model="nets.py:TrainsOnlyInEvalMode", batch_size=4)
    with pytest.raises(JobError, match=r"^\[model\] name = 'nets.py:TrainsOnlyInEvalMode' fails in a training "
                                       r"step \(train mode, a batch of 4 samples of shape \(5,\)\) \(RuntimeError: "
                                       r"no training here\); it must train on batches of 4"):
        plan_job(job, 2)
    job = _job(tmp_path, loss="nets.py:bad_backward", batch_size=4)
    with pytest.raises(JobError, match=r"^\[model\] loss = 'nets.py:bad_backward' fails in a training step .* in "
                                       r"its loss or backward pass \(RuntimeError: "):
        plan_job(job, 2)


class _Noisy(torch.nn.Module):
    """Batch normalisation (running statistics, num_batches_tracked), dropout (draws from torch's
    generator) and a forward that draws from numpy's and Python's global generators."""

    def __init__(self):
        super().__init__()
        self.linear, self.norm, self.drop = torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2), torch.nn.Dropout(0.5)

    def forward(self, x):
        np.random.random()
        random.random()
        return self.drop(self.norm(self.linear(x + 1.0)))


def test_the_training_step_leaves_no_trace():
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    module = _Noisy().eval()
    module.norm.running_mean += 0.25
    grads = torch.arange(float(sum(p.numel() for p in module.parameters())))
    offset = 0
    for p in module.parameters():  # gradients as views of one buffer, as FlatParameters binds them
        p.grad = grads[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    grads_before, bound = grads.clone(), [p.grad for p in module.parameters()]
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    check_training_step(module, {"name": "m", "loss": "auto"}, (3,), "multiclass", 8, data_loss("multiclass"))
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "parameters or buffers changed"
    assert int(after["norm.num_batches_tracked"]) == 0
    assert torch.equal(grads, grads_before) and all(p.grad is g for p, g in zip(module.parameters(), bound))
    assert not module.training and not module.norm.training
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    fresh = _Noisy()  # .grad None before: None after
    check_training_step(fresh, {"name": "m", "loss": "auto"}, (3,), "multiclass", 8, data_loss("multiclass"))
    assert all(p.grad is None for p in fresh.parameters()) and fresh.training
