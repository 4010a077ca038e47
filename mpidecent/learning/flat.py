"""Torch models whose parameters (and gradients) are views into one flat buffer.

``FlatParameters`` rebinds every parameter of a module to a slice of one contiguous numpy array (and
every ``.grad`` to a slice of a second one), shared with torch through ``torch.from_numpy``. Sending,
compressing or averaging the model is then an operation on one flat vector with no copy, and a
backward pass accumulates straight into the flat gradient buffer. ``build_flat_model`` builds the job's
model (``learning/models.py``) on such buffers and initialises it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mpidecent.learning.models import MODELS
from mpidecent.rng import generator


class FlatParameters:
    """Flat, contiguous storage for a module's parameters and gradients.

    ``values`` and ``grads`` are 1-D numpy arrays of length ``dim`` and the module's dtype; the module's
    parameters are views of ``values`` (in ``module.parameters()`` order) and their ``.grad`` are views of
    ``grads``. Call ``zero_grad()`` (one memset) before each backward pass.
    """

    def __init__(self, module: torch.nn.Module, dtype: np.dtype):
        self.module = module.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
        params = list(self.module.parameters())
        sizes = [p.numel() for p in params]
        self.dim = int(sum(sizes))
        self.values = np.zeros(self.dim, dtype=dtype)
        self.grads = np.zeros(self.dim, dtype=dtype)
        values_t = torch.from_numpy(self.values)
        grads_t = torch.from_numpy(self.grads)
        offset = 0
        for p, size in zip(params, sizes):  # one-time rebinding at set-up, not a hot path
            values_t[offset:offset + size].copy_(p.data.reshape(-1))
            p.data = values_t[offset:offset + size].view_as(p)
            p.grad = grads_t[offset:offset + size].view_as(p)
            offset += size

    def zero_grad(self) -> None:
        self.grads.fill(0.0)


def _init_seed(seed: int, node: int) -> int:
    return int(np.random.SeedSequence([seed, node, 0, 3]).generate_state(1)[0])


def build_flat_model(values: Mapping[str, Any], features: int, classes: int, dtype: np.dtype,
                     seed: int, node: int = 0) -> FlatParameters:
    """Build the model on flat buffers and initialise it from (seed, node) — node 0's draw on every node
    when ``init_identical``, so identical initial models need no communication."""
    kind = MODELS[values["name"]]
    source = 0 if values["init_identical"] else node
    torch.manual_seed(_init_seed(seed, source))  # layer default initialisation, reproducible
    flat = FlatParameters(kind.build(features, classes, dict(values)), dtype)
    init = values["init"]
    if init == "auto":
        init = "zeros" if kind.convex else "torch"
    if init == "zeros":
        flat.values.fill(0.0)
    elif init == "normal":
        flat.values[:] = generator(seed, source, 0, "init").standard_normal(flat.dim) * values["init_scale"]
    return flat
