"""All-reduce SGD: the centralized reference, what a DDP user runs (``specs/baselines.md``).

x ← x − α · (1/n) Σ_i g_i with an in-place ``Allreduce`` of the flat gradient; every rank holds the
same x. Traffic is the algorithmic volume of a ring all-reduce (reduce-scatter + all-gather over chunks
of ⌈d/n⌉ entries): each rank sends 2(n−1) messages of ⌈d/n⌉ entries, i.e.
bits = 2(n−1)·⌈d/n⌉·b with b = 32 or 64 bits per entry. This is a model of the wire, reported as such:
the MPI library chooses its own all-reduce algorithm.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mpidecent.algorithms.base import LR_PARAMS, Algorithm, Context, StepStats, Stopwatch, register, step_size


@register
class AllreduceSGD(Algorithm):
    name = "allreduce_sgd"
    doc = "centralized all-reduce SGD (the data-parallel reference)"
    params = LR_PARAMS
    graph = "complete"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.x = self.objective.params
        self._x_t = torch.from_numpy(self.x)
        self._g_t = torch.from_numpy(self.objective.grads)
        n, dim = ctx.size, self.objective.dim
        entry_bits = 8 * np.dtype(ctx.dtype).itemsize
        self.messages = 2 * (n - 1)
        self.bits = self.messages * math.ceil(dim / n) * entry_bits
        self.nbytes = self.bits // 8

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x}

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        loss = self.objective.loss_grad(t)
        sw.compute()
        self.ctx.collectives.allreduce_sum(self.objective.grads)
        sw.comm()
        self._x_t.add_(self._g_t, alpha=-step_size(self.ctx.params, t) / self.ctx.size)
        sw.compute()
        return StepStats(loss, self.bits, self.nbytes, self.messages, sw.compute_s, sw.comm_s)

    def model_view(self) -> np.ndarray:
        return self.x
