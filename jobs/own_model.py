"""Train a model defined in your own script with mpidecent: a small 1-D CNN on MNIST-1D.

    mpirun -n 4 python jobs/own_model.py                   # (. scripts/mpienv.sh first on a workstation)
    mpirun -n 4 python jobs/own_model.py --steps 2000

Every rank runs this script; ``mpidecent.train`` validates the job on every rank, runs it and returns
the same result everywhere. ``SmallCNN`` gets the ``[model]`` keys as keyword arguments, plus
``input_shape`` (one sample's shape, here (40,)) and ``classes`` (10). The trained average model is
saved as a torch state_dict next to the results file; load it back with
``SmallCNN((40,), 10).load_state_dict(torch.load(path, weights_only=True))``.
"""

import argparse

import torch

import mpidecent


class SmallCNN(torch.nn.Module):
    """Two 1-D convolutions and a linear read-out, with batch normalisation (its running statistics stay
    local to each node during training; the saved average model gets the nodes' mean)."""

    def __init__(self, input_shape, classes, channels=16):
        super().__init__()
        self.length = input_shape[-1]
        self.body = torch.nn.Sequential(
            torch.nn.Conv1d(1, channels, 5, stride=2, padding=2), torch.nn.BatchNorm1d(channels), torch.nn.ReLU(),
            torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool1d(4), torch.nn.Flatten())
        self.head = torch.nn.Linear(4 * channels, classes)

    def forward(self, x):
        return self.head(self.body(x.reshape(x.shape[0], 1, self.length)))


JOB = """
[run]
name = "own_model"
steps = 400
log_every = 100
dtype = "float32"

[topology]
kind = "exponential"
directed = false

[algorithm]
name = "dpsgd"
lr = 0.05

[data]
name = "mnist1d"
batch_size = 32

[model]
channels = 16      # passed to SmallCNN
l2 = 0.0
"""

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", default="runs/own_model.h5")
    args = parser.parse_args()
    result = mpidecent.train(JOB, model=SmallCNN, out=args.out, overrides=[f"run.steps={args.steps}"], force=True,
                             quiet=True)
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank == 0:
        print(f"{result.name}: {result.status} after {result.steps} steps, test accuracy of the average model "
              f"{result.metrics['test_accuracy']:.3f}; results {result.results}, model {result.model}")
