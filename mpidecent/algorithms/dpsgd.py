"""D-PSGD: decentralized parallel SGD on an undirected graph (``specs/baselines.md``).

Combine-then-adapt with the gradient at the pre-mix point::

    g_i = ∇F_i(x_i; ξ_i);   x_i ← Σ_{j∈N_i∪{i}} w_ij x_j − α g_i

W is symmetric and doubly stochastic (Metropolis–Hastings by default). Each rank sends x_i at full
precision (the identity compressor) to every neighbour. Because x_i is packed before the gradient is
computed, the exchange is in flight while the gradient is being computed.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import LR_PARAMS, Algorithm, Context, StepStats, Stopwatch, register, step_size
from mpidecent.rng import RandomKey


@register
class DPSGD(Algorithm):
    name = "dpsgd"
    doc = "decentralized parallel SGD (D-PSGD) over an undirected graph, full-precision exchange"
    params = LR_PARAMS
    graph = "undirected"
    weights_property = "doubly_stochastic"
    default_weights = "metropolis"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.x = self.objective.params  # the model itself: gradients are taken at x
        nbr = ctx.neighborhood
        assert nbr is not None, "dpsgd needs a neighbourhood"
        self.degree = len(nbr.out_neighbors)
        self.in_neighbors = nbr.in_neighbors
        self.self_weight = float(ctx.self_weight)
        self.in_weights = np.asarray(ctx.in_weights, dtype=ctx.dtype)
        self.send_buf = np.zeros(self.compressor.nbytes, dtype=np.uint8)
        self.exchange = nbr.exchange(self.compressor.nbytes, self.compressor.nbytes)
        self.received = np.zeros((len(self.in_neighbors), self.objective.dim), dtype=ctx.dtype)
        self.mix = np.zeros(self.objective.dim, dtype=ctx.dtype)
        self._x_t = torch.from_numpy(self.x)
        self._mix_t = torch.from_numpy(self.mix)
        self._g_t = torch.from_numpy(self.objective.grads)

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x}

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        packed = self.encode_or_flag(self.x, RandomKey(self.ctx.seed, self.ctx.rank, t), self.send_buf)
        sw.compute()
        self.exchange.start(self.send_buf)
        sw.comm()
        loss = self.objective.loss_grad(t)  # overlaps with the exchange of x
        sw.compute()
        recv = self.exchange.wait()
        sw.comm()
        for k, sender in enumerate(self.in_neighbors):
            self.compressor.decode(recv[k], RandomKey(self.ctx.seed, int(sender), t), out=self.received[k])
        np.dot(self.in_weights, self.received, out=self.mix)
        self._mix_t.add_(self._g_t, alpha=-step_size(self.ctx.params, t))
        self._x_t.mul_(self.self_weight).add_(self._mix_t)
        sw.compute()
        return StepStats(loss, self.degree * packed.bits, self.degree * self.send_buf.nbytes, self.degree,
                         sw.compute_s, sw.comm_s, self.nonfinite)

    def model_view(self) -> np.ndarray:
        return self.x
