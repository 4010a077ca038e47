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

from mpidecent.algorithms.base import (LR_PARAMS, Algorithm, Context, StepStats, Stopwatch, decode_messages,
                                       register, step_size)
from mpidecent.rng import RandomKey


def mix_and_step(x_t: torch.Tensor, mix_t: torch.Tensor, direction_t: torch.Tensor, self_weight: float,
                 lr: float) -> None:
    """x ← w_ii x + (Σ_j w_ij x_j − α d), with ``mix_t`` holding Σ_j w_ij x_j on entry.

    One operation order shared by D-PSGD and the momentum methods, so that DMSGD with β = 0 is
    bit-identical to D-PSGD (its direction d is then exactly the gradient)."""
    mix_t.add_(direction_t, alpha=-lr)
    x_t.mul_(self_weight).add_(mix_t)


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
        row = ctx.row(0)
        self.degree = len(row.out_neighbors)
        self.in_weights = np.asarray(row.in_weights, dtype=ctx.dtype)
        self.send_buf = np.zeros(self.compressor.nbytes, dtype=np.uint8)
        self.exchange = ctx.neighborhood.exchange(self.compressor.nbytes, self.compressor.nbytes)
        self.received = np.zeros((len(row.in_neighbors), self.objective.dim), dtype=ctx.dtype)
        self.mix = np.zeros(self.objective.dim, dtype=ctx.dtype)
        self._x_t = torch.from_numpy(self.x)
        self._mix_t = torch.from_numpy(self.mix)
        self._g_t = torch.from_numpy(self.objective.grads)

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x}

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        row = self.ctx.row(t)
        packed = self.encode_or_flag(self.x, RandomKey(self.ctx.seed, self.ctx.rank, t), self.send_buf)
        sw.compute()
        self.exchange.start(self.send_buf, t)
        sw.comm()
        loss = self.objective.loss_grad(t)  # overlaps with the exchange of x
        sw.compute()
        recv = self.exchange.wait()
        sw.comm()
        received = decode_messages(self.compressor, recv, row.in_neighbors, self.ctx.seed, t, self.received)
        np.dot(self.in_weights, received, out=self.mix)
        mix_and_step(self._x_t, self._mix_t, self._g_t, row.self_weight, step_size(self.ctx.params, t))
        sw.compute()
        return StepStats(loss, self.degree * packed.bits, self.degree * self.send_buf.nbytes, self.degree,
                         sw.compute_s, sw.comm_s, self.nonfinite)

    def model_view(self) -> np.ndarray:
        return self.x
