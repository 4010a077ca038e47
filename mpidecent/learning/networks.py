"""The built-in torch modules (``[model] name`` → module: see ``learning/models.py``)."""

from __future__ import annotations

import itertools

import torch


class LogisticModel(torch.nn.Module):
    """Binary logit a·w + b; flat layout [w (features), b (1)]."""

    def __init__(self, features: int, outputs: int = 1):
        super().__init__()
        self.linear = torch.nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class SoftmaxModel(torch.nn.Module):
    """Multiclass logits W a + b, shape (m, classes)."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.linear = torch.nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class LinearRegressionModel(torch.nn.Module):
    """Prediction w·x (no bias: the SYN-1 targets have none)."""

    def __init__(self, features: int):
        super().__init__()
        self.linear = torch.nn.Linear(features, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class ReLURegressionModel(LinearRegressionModel):
    """Prediction max(w·x, 0) (SYN-2; non-convex)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class MLP(torch.nn.Module):
    """Fully connected ReLU network: features → hidden[0] → … → outputs (1 logit for binary)."""

    def __init__(self, features: int, hidden: list[int], outputs: int):
        super().__init__()
        sizes = [features, *hidden]
        layers: list[torch.nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(sizes[-1], outputs))
        self.net = torch.nn.Sequential(*layers)
        self.squeeze = outputs == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(-1) if self.squeeze else out


class Flattened(torch.nn.Module):
    """``module`` applied to each sample flattened to a vector (a flat model on images or
    signals)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.reshape(x.shape[0], -1))


def _flat_size(body: torch.nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, *shape)).reshape(1, -1).shape[1])


class CNN1d(torch.nn.Module):
    """The MNIST-1D benchmark's CNN (Greydanus 2020): samples (L,) or (C, L); three convolutions
    with kernels 5, 3, 3, stride 2, padding 1 and ReLU, then a linear layer on the flattened
    channels. With L = 40, 25 channels and 10 classes: 150 + 1,900 + 1,900 + 1,260 = 5,210
    parameters."""

    def __init__(self, shape: tuple[int, ...], outputs: int, channels: int = 25):
        super().__init__()
        if len(shape) not in (1, 2):
            raise ValueError(
                f"cnn1d takes signals of shape (L,) or (C, L), got samples of shape {shape}"
            )
        self.shape = (1, *shape) if len(shape) == 1 else tuple(shape)
        self.body = torch.nn.Sequential(
            torch.nn.Conv1d(self.shape[0], channels, 5, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            torch.nn.ReLU(),
        )
        self.linear = torch.nn.Linear(_flat_size(self.body, self.shape), outputs)
        self.squeeze = outputs == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(self.body(x.reshape(x.shape[0], *self.shape)).reshape(x.shape[0], -1))
        return out.squeeze(-1) if self.squeeze else out


class LeNet(torch.nn.Module):
    """LeNet-style CNN for images (H, W) or (C, H, W): per channel count a 5×5 convolution (the
    first padded by 2, so 28×28 and 32×32 both work), ReLU and 2×2 max pooling, then fully connected
    ReLU layers and the output layer."""

    def __init__(
        self, shape: tuple[int, ...], outputs: int, channels: list[int], hidden: list[int]
    ):
        super().__init__()
        if len(shape) not in (2, 3):
            raise ValueError(
                f"cnn takes images of shape (H, W) or (C, H, W), got samples of shape {shape}"
            )
        self.shape = (1, *shape) if len(shape) == 2 else tuple(shape)
        layers: list[torch.nn.Module] = []
        fan_in = self.shape[0]
        for i, width in enumerate(channels):
            layers += [
                torch.nn.Conv2d(fan_in, width, 5, padding=2 if i == 0 else 0),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            ]
            fan_in = width
        self.features = torch.nn.Sequential(*layers)
        sizes = [_flat_size(self.features, self.shape), *hidden]
        dense: list[torch.nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            dense += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        dense.append(torch.nn.Linear(sizes[-1], outputs))
        self.classifier = torch.nn.Sequential(*dense)
        self.squeeze = outputs == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(
            self.features(x.reshape(x.shape[0], *self.shape)).reshape(x.shape[0], -1)
        )
        return out.squeeze(-1) if self.squeeze else out
