"""All-reduce SGD: the centralized reference, what a DDP user runs
(``docs/algorithms/baselines.md``).

x ← x − α · (1/n) Σ_i g_i with an in-place ``Allreduce`` of the flat gradient; every rank holds the
same x. With a local optimizer (``optim.py``) every rank steps along its direction d of that mean,
the same on every rank. Traffic is the all-reduce pattern's model of the wire
(``AllReduce.ring_traffic``: a ring all-reduce of the flat gradient), reported as such: the MPI
library chooses its own algorithm.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.lr import step_size
from mpidecent.comm.patterns import AllReduce


class AllreduceSGD(Algorithm):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.x = self.objective.params
        self._x_t = torch.from_numpy(self.x)
        self._g_t = torch.from_numpy(self.objective.grads)
        self.optimizer = self.add_optimizer()
        self.traffic = AllReduce.ring_traffic(ctx.size, self.objective.dim, ctx.dtype)

    def own_state(self) -> dict[str, np.ndarray]:
        return {"x": self.x}

    def step(self, t: int) -> StepStats:
        sw = self.watch.restart()
        loss = self.objective.loss_grad(t)
        sw.compute()
        self.ctx.collectives.allreduce_sum(self.objective.grads)
        sw.comm()
        # x ← x − α d(ḡ), ḡ = Σ_i g_i / n (sgd: the 1/n folded into the step size, as ever)
        self.optimizer.descend(
            self._x_t, self._g_t, step_size(self.ctx.params, t), divisor=self.ctx.size
        )
        sw.compute()
        sent = self.traffic
        return StepStats(loss, sent.bits, sent.bytes, sent.messages, sw.compute_s, sw.comm_s)

    def model_view(self) -> np.ndarray:
        return self.x
