"""End to end: a model and a data set of the user's own by import path through `mpidecent run`, image
data from an HDF5 file, the example script that calls `mpidecent.train`, and bad user code refused on
every rank in one line without touching earlier results."""

from __future__ import annotations

import hashlib
import importlib.util
import re

import h5py
import numpy as np
import pytest
import torch

from cli import ROOT, _launch, mpidecent, run_python
from mpidecent.io.reader import read_run
from mpidecent.learning.sources import mnist1d

NETS = '''
import os
import sys

import torch


class TwoLayer(torch.nn.Module):
    def __init__(self, input_shape, classes, width=16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[-1] * input_shape[-2], width),
                                       torch.nn.ReLU(), torch.nn.Linear(width, classes))

    def forward(self, x):
        return self.net(x)


def broken(input_shape, classes, width):
    raise ValueError("no such layer")


class ExitsLater(TwoLayer):
    """Ends the process on rank 0 at its fourth training batch, as a script's stray sys.exit() would."""

    calls = 0

    def forward(self, x):
        if self.training:
            ExitsLater.calls += 1
            if ExitsLater.calls > 3 and os.environ.get("OMPI_COMM_WORLD_RANK") == "0":
                sys.exit(0)
        return super().forward(x)
'''
QUITS = "import sys\nsys.exit(0)  # a training script that parses sys.argv when imported\n"

JOB = """
[run]
name = "images"
steps = 40
log_every = 20
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
lr = 0.2
[data]
name = "hdf5"
path = "images.h5"
test_features_dataset = "test_features"
test_labels_dataset = "test_labels"
batch_size = 16
[model]
name = "nets.py:TwoLayer"
width = 12
l2 = 0.0
"""


def _write_images(path):
    """(N, 1, 8, 8) 'images' of three classes (a bright row per class), with their own test set."""
    rng = np.random.default_rng(0)

    def images(n):
        y = rng.integers(0, 3, n)
        x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
        x[np.arange(n), 0, 2 * y + 1, :] += 1.0
        return x, y

    with h5py.File(path, "w") as f:
        x, y = images(240)
        f["features"], f["labels"] = x, y
        xt, yt = images(60)
        f["test_features"], f["test_labels"] = xt, yt


@pytest.mark.timeout(300)
def test_own_model_on_image_data_from_hdf5(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    _write_images(tmp_path / "images.h5")
    job = tmp_path / "job.toml"
    job.write_text(JOB)
    out = tmp_path / "images.h5.out.h5"
    result = mpidecent("run", str(job), "--out", str(out), ranks=3)
    assert result.returncode == 0, result.stderr
    assert "model" in result.stdout and "images.h5.out.model.pt" in result.stdout
    run = read_run(str(out))
    assert run.attrs["num_train"] == 240 and run.attrs["num_test"] == 60 and run.attrs["model"] == "nets.py:TwoLayer"
    assert run.glob("test_accuracy")[-1] > 0.8, run.glob("test_accuracy")
    assert run.rank("test_accuracy").shape == (3, 3)
    # the saved average model goes back into the user's class
    check = (f"import sys, torch; sys.path.insert(0, {str(tmp_path)!r}); from nets import TwoLayer; "
             f"net = TwoLayer((1, 8, 8), 3, width=12); "
             f"net.load_state_dict(torch.load({str(out)[:-3] + '.model.pt'!r}, weights_only=True)); print('ok')")
    loaded = run_python(check, ranks=1)
    assert loaded.stdout.strip() == "ok", loaded.stderr


@pytest.mark.timeout(300)
def test_bad_user_code_ends_every_rank_with_one_line_and_keeps_earlier_results(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "quits.py").write_text(QUITS)
    _write_images(tmp_path / "images.h5")
    job = tmp_path / "job.toml"
    job.write_text(JOB)
    out = tmp_path / "kept.h5"
    with h5py.File(out, "w") as f:  # earlier results (the shape --force agrees to overwrite)
        f.attrs["format_version"] = 1
        f["metrics/step"] = np.arange(3)
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    for overrides, message in (
            (["--set", 'model.name="nets.py:broken"'],
             "mpidecent: error: [model] name = 'nets.py:broken' raised ValueError: no such layer when called with "
             "(width, input_shape, classes)"),
            (["--set", 'model.name="nets.py:Missing"'],
             "mpidecent: error: [model] name = 'nets.py:Missing': 'nets.py' has no attribute 'Missing'"),
            (["--set", 'data.name="nowhere_xyz:load"'],
             "mpidecent: error: [data] name = 'nowhere_xyz:load': cannot import module 'nowhere_xyz'"),
            # an exit is an error naming the plug-in, not a silent exit 0 (at import, and during training)
            (["--set", 'model.name="quits.py:Net"'],
             "mpidecent: error: [model] name = 'quits.py:Net': importing ")):
        result = mpidecent("run", str(job), "--out", str(out), "--force", *overrides, ranks=3)
        assert result.returncode == 2, result.stderr
        mine = [line for line in result.stderr.splitlines() if line.startswith("mpidecent:")]
        assert len(mine) == 1 and mine[0].startswith(message), result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    # during training (the run has started): rank 0's exit stops every rank with one line and status 2
    result = mpidecent("run", str(job), "--out", str(tmp_path / "exits.h5"), "--set", 'model.name="nets.py:ExitsLater"',
                       ranks=3)
    mine = [line for line in result.stderr.splitlines() if line.startswith("mpidecent:")]
    assert result.returncode == 2 and len(mine) == 1, result.stderr
    assert mine[0].startswith("mpidecent: error: [model] name = 'nets.py:ExitsLater' called sys.exit(0) (a plug-in "
                              "must return"), mine


@pytest.mark.timeout(300)
def test_the_example_script_trains_its_own_cnn_class(tmp_path):
    """The example users copy first learns: 150 steps on 2 ranks (its defaults: 1,000 on 4, ~96 %)
    already reach ~78 % (the script before issue 23 reached 26 % after 200), and its saved model,
    loaded back the way its docstring says, classifies the test signals as well as reported."""
    out = tmp_path / "own.h5"
    script = ROOT / "jobs" / "own_model.py"
    result = _launch(f"{script} --steps 150 --out {out}", ranks=2, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "own_model: completed after 150 steps" in result.stdout and str(out) in result.stdout
    run = read_run(str(out))
    assert run.attrs["model"] == "__main__:SmallCNN" and run.status == "completed"
    reported = float(re.search(r"test accuracy of the average model ([0-9.]+)", result.stdout)[1])
    assert reported >= 0.65, result.stdout  # chance 0.10, logistic regression 0.32
    spec = importlib.util.spec_from_file_location("own_model_example", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model = example.SmallCNN((40,), 10)
    model.load_state_dict(torch.load(tmp_path / "own.model.pt", weights_only=True))
    data = mnist1d()
    test = slice(len(data.targets) - data.fixed_test, None)
    with torch.no_grad():
        logits = model.eval()(torch.as_tensor(data.features[test], dtype=torch.float32))
    accuracy = float((logits.argmax(1).numpy() == data.targets[test]).mean())
    assert accuracy >= 0.65 and abs(accuracy - reported) <= 0.03, (accuracy, reported)
