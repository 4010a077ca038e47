"""Torch models whose parameters (and gradients) are views into one flat buffer.

``FlatParameters`` rebinds every parameter of a module to a slice of one contiguous numpy array (and
every ``.grad`` to a slice of a second one), shared with torch through ``torch.from_numpy``.
Sending, compressing or averaging the model is then an operation on one flat vector with no copy,
and a backward pass accumulates straight into the flat gradient buffer. ``build_flat_model`` builds
the job's model (``learning/models.py``) on such buffers and initialises it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import DTypeLike

from mpidecent import plugins
from mpidecent.errors import JobError
from mpidecent.learning.models import MODELS, factory_arguments
from mpidecent.rng import generator


class FlatParameters:
    """Flat, contiguous storage for a module's parameters and gradients.

    ``values`` and ``grads`` are 1-D numpy arrays of length ``dim`` and the module's dtype; the
    module's parameters are views of ``values`` (in ``module.parameters()`` order) and their
    ``.grad`` are views of ``grads``. Call ``zero_grad()`` (one memset) before each backward pass.
    """

    def __init__(self, module: torch.nn.Module, dtype: DTypeLike):
        self.module = module.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
        params = list(self.module.parameters())
        sizes = [p.numel() for p in params]
        self.dim = int(sum(sizes))
        self.values = np.zeros(self.dim, dtype=dtype)
        self.grads = np.zeros(self.dim, dtype=dtype)
        values_t = torch.from_numpy(self.values)
        grads_t = torch.from_numpy(self.grads)
        offset = 0
        for p, size in zip(
            params, sizes, strict=True
        ):  # one-time rebinding at set-up, not a hot path
            values_t[offset : offset + size].copy_(p.data.reshape(-1))
            p.data = values_t[offset : offset + size].view_as(p)
            p.grad = grads_t[offset : offset + size].view_as(p)
            offset += size
        # Non-trainable buffers (e.g. BatchNorm running statistics) are kept local to the node: not
        # communicated, checkpointed by name. Numpy views of the module's own tensors (updated in
        # place).
        self.buffers: dict[str, np.ndarray] = {
            name: buf.detach().numpy() for name, buf in self.module.named_buffers()
        }

    def zero_grad(self) -> None:
        self.grads.fill(0.0)


def _init_seed(seed: int, node: int) -> int:
    return int(np.random.SeedSequence([seed, node, 0, 3]).generate_state(1)[0])


def build_module(
    values: Mapping[str, Any],
    input_shape: tuple[int, ...],
    classes: int,
    base_dir: str | None = None,
) -> torch.nn.Module:
    """The job's model as a torch module: a built-in, or an import path's factory called with the
    [model] keys plus ``input_shape`` and ``classes`` (JobError naming ``[model] name`` if it
    fails)."""
    name = values["name"]
    if not plugins.is_import_path(name):
        try:
            return MODELS[name].build(tuple(input_shape), classes, dict(values))
        except (ValueError, RuntimeError) as err:  # e.g. images too small for the convolutions
            text = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise JobError(
                f"[model] name = {name!r} cannot take samples of shape {tuple(input_shape)} "
                f"({text if isinstance(err, ValueError) else f'{type(err).__name__}: {text}'})"
            ) from None
    factory = plugins.load(name, "[model] name", base_dir)
    module = plugins.call(
        factory,
        "[model] name",
        name,
        factory_arguments(values),
        {"input_shape": tuple(input_shape), "classes": classes},
    )
    if not isinstance(module, torch.nn.Module):
        raise JobError(
            f"[model] name = {name!r} returned a {type(module).__name__}, not a torch.nn.Module"
        )
    if not any(p.requires_grad for p in module.parameters()):
        raise JobError(f"[model] name = {name!r} returned a module without trainable parameters")
    return module


def build_flat_model(
    values: Mapping[str, Any],
    input_shape: tuple[int, ...],
    classes: int,
    dtype: np.dtype,
    seed: int,
    node: int = 0,
    base_dir: str | None = None,
) -> FlatParameters:
    """Build the model on flat buffers and initialise it from (seed, node) — node 0's draw on every
    node when ``init_identical``, so identical initial models need no communication."""
    source = 0 if values["init_identical"] else node
    torch.manual_seed(_init_seed(seed, source))  # layer default initialisation, reproducible
    flat = FlatParameters(build_module(values, input_shape, classes, base_dir), dtype)
    init = values["init"]
    if init == "auto":
        kind = MODELS.get(values["name"])
        init = "zeros" if kind is not None and kind.convex else "torch"
    if init == "zeros":
        flat.values.fill(0.0)
    elif init == "normal":
        flat.values[:] = (
            generator(seed, source, 0, "init").standard_normal(flat.dim) * values["init_scale"]
        )
    return flat
