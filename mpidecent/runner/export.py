"""The trained model, saved next to the results file as a torch ``state_dict``.

At the end of a completed run (``[run] save_model``): ``average`` (default) writes the
network-average model to ``<results without .h5>.model.pt``; ``all`` also writes each node's own
model to ``<stem>.node<rank>.model.pt``; ``none`` writes nothing. The average model's parameters are
the mean of the nodes' reported models; its floating-point buffers (e.g. batch-norm running
statistics, which each node keeps for itself during training) are the nodes' mean too, integer
buffers (batch counters) rank 0's. Load it into the same module with
``net.load_state_dict(torch.load(path, weights_only=True))``.

Which ranks call: ``save_models`` on every rank (collective: two reductions); rank 0 writes the
average. Each file is written to a temporary name and renamed, so a crash never leaves half a model.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mpidecent.comm.protocols import Collectives
from mpidecent.learning.flat import FlatParameters

SAVE_CHOICES = ("average", "all", "none")


def model_path(results_path: str, rank: int | None = None) -> str:
    """``runs/x.h5`` → ``runs/x.model.pt`` (``runs/x.node3.model.pt`` for rank 3's own model)."""
    stem = results_path[:-3] if results_path.endswith(".h5") else results_path
    return f"{stem}.model.pt" if rank is None else f"{stem}.node{rank}.model.pt"


def state_dict(
    flat: FlatParameters, values: np.ndarray, buffers: dict[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """The module's ``state_dict`` with its parameters taken from the flat vector ``values`` and its
    buffers from ``buffers`` (copies: the module itself is untouched)."""
    dtype = torch.from_numpy(flat.values).dtype
    offsets, offset = {}, 0
    for name, parameter in flat.module.named_parameters():
        offsets[name] = (offset, parameter.shape)
        offset += parameter.numel()
    out = {}
    for name, tensor in flat.module.state_dict().items():
        if name in offsets:
            start, shape = offsets[name]
            out[name] = torch.tensor(
                values[start : start + int(np.prod(shape, dtype=np.int64))], dtype=dtype
            ).reshape(shape)
        else:
            out[name] = (
                torch.as_tensor(np.array(buffers[name])).to(tensor.dtype).reshape(tensor.shape)
            )
    return out


def _save(tensors: dict[str, torch.Tensor], path: str) -> None:
    tmp = f"{path}.tmp"
    torch.save(tensors, tmp)
    os.replace(tmp, path)


def save_models(
    results_path: str,
    flat: FlatParameters,
    model: np.ndarray,
    collectives: Collectives,
    rank: int,
    mode: str,
) -> list[str]:
    """Collective: write the models ``mode`` asks for (see the module docstring); returns the paths
    written (the average model's on every rank, each node's own on its rank)."""
    if mode == "none":
        return []
    size = collectives.size
    mean = np.asarray(model, dtype=np.float64).copy()
    collectives.allreduce_sum(mean)
    mean /= size
    floats = {
        name: np.asarray(b, dtype=np.float64).copy()
        for name, b in flat.buffers.items()
        if np.issubdtype(b.dtype, np.floating)
    }
    if floats:
        packed = np.concatenate([a.reshape(-1) for a in floats.values()])
        collectives.allreduce_sum(packed)
        offset = 0
        for array in floats.values():
            array.reshape(-1)[:] = packed[offset : offset + array.size] / size
            offset += array.size
    written = [model_path(results_path)]
    if rank == 0:
        _save(state_dict(flat, mean, {**flat.buffers, **floats}), written[0])
    if mode == "all":
        own = model_path(results_path, rank)
        _save(state_dict(flat, np.asarray(model, dtype=np.float64), flat.buffers), own)
        written.append(own)
    return written
