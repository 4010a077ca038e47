"""D-PSGD: decentralized parallel SGD on an undirected graph (``docs/algorithms/baselines.md``).

Combine-then-adapt with the gradient at the pre-mix point::

    g_i = ∇F_i(x_i; ξ_i);   x_i ← Σ_{j∈N_i∪{i}} w_ij x_j − α g_i

(with a local optimizer, ``optim.py``: its direction d_i in place of g_i).

W is symmetric and doubly stochastic (Metropolis–Hastings by default). Each rank sends x_i at full
precision (the identity compressor) to every neighbour. Because x_i is sent before the gradient is
computed, the exchange is in flight while the gradient is being computed.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.lr import step_size


def mix_and_step(
    x_t: torch.Tensor, mix_t: torch.Tensor, direction_t: torch.Tensor, self_weight: float, lr: float
) -> None:
    """x ← w_ii x + (Σ_j w_ij x_j − α d), with ``mix_t`` holding Σ_j w_ij x_j on entry.

    One operation order shared by D-PSGD and the momentum methods, so that DMSGD with β = 0 is
    bit-identical to D-PSGD (its direction d is then exactly the gradient)."""
    mix_t.add_(direction_t, alpha=-lr)
    x_t.mul_(self_weight).add_(mix_t)


class DPSGD(Algorithm):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.x = self.objective.params  # the model itself: gradients are taken at x
        self.gossip = self.stream("model")
        self.mix = np.zeros(self.objective.dim, dtype=ctx.dtype)
        self._x_t = torch.from_numpy(self.x)
        self._mix_t = torch.from_numpy(self.mix)
        self._g_t = torch.from_numpy(self.objective.grads)
        self.optimizer = self.add_optimizer()

    def own_state(self) -> dict[str, np.ndarray]:
        return {"x": self.x}

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        message = self.gossip.start(t, self.x)
        loss = self.objective.loss_grad(t)  # overlaps with the exchange of x
        message.wait().mix(out=self.mix)
        mix_and_step(
            self._x_t,
            self._mix_t,
            self.optimizer.direction(self._g_t),
            message.self_weight,
            step_size(self.ctx.params, t),
        )
        return self.stats(loss)

    def model_view(self) -> np.ndarray:
        return self.x
