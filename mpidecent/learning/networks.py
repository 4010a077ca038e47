"""The built-in torch modules (``[model] name`` → module: see ``learning/models.py``)."""

from __future__ import annotations

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
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(sizes[-1], outputs))
        self.net = torch.nn.Sequential(*layers)
        self.squeeze = outputs == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(-1) if self.squeeze else out
