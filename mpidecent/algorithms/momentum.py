"""Momentum-accelerated consensus SGD: DMSGD (shared momentum) and the local-momentum baseline.

Algorithm: ``docs/algorithms/momentum.md`` (Balu et al., "Decentralized Deep Learning using
Momentum-Accelerated Consensus", ICASSP 2021). Undirected graph, Π symmetric doubly stochastic.

DMSGD (our reading of the paper, kept in ``shared_momentum_update`` so a variant can be added):
every agent sends both x_j and m_j (the values before this step's update) to its neighbours — twice
D-PSGD's traffic, full precision, one message with two vectors — and::

    g_j = ∇F_j(x_j; ξ_j)
    m_j ← β Σ_{l∈N_j∪{j}} π_jl m_l + g_j
    x_j ← Σ_{l∈N_j∪{j}} π_jl x_l − α m_j

Local momentum (CDMSGD-style baseline): only x is mixed, the momentum stays local:
m_j ← β m_j + g_j;  x_j ← Σ π_jl x_l − α m_j. With β = 0 both are D-PSGD, bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.dpsgd import mix_and_step
from mpidecent.algorithms.lr import step_size

if TYPE_CHECKING:
    from mpidecent.comm.neighbor import Message


def shared_momentum_update(
    m_t: torch.Tensor, mixed_m_t: torch.Tensor, g_t: torch.Tensor, beta: float
) -> None:
    """m ← β (Σ_l π_jl m_l) + g, with ``mixed_m_t`` holding Σ_{l∈N_j∪{j}} π_jl m_l (the spec's
    reading)."""
    torch.add(g_t, mixed_m_t, alpha=beta, out=m_t)


class _MomentumBase(Algorithm):
    shared = False  # DMSGD: the momentum travels with the model

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.beta = float(ctx.params["beta"])
        dim, dtype = self.objective.dim, ctx.dtype
        self.x = self.objective.params
        self.m = np.zeros(dim, dtype=dtype)
        self.gossip = self.stream(
            "model", vectors=2 if self.shared else 1
        )  # message: [x] or [x][m]
        self.mix = np.zeros(dim, dtype=dtype)
        self._x_t, self._m_t = torch.from_numpy(self.x), torch.from_numpy(self.m)
        self._g_t, self._mix_t = torch.from_numpy(self.objective.grads), torch.from_numpy(self.mix)

    def own_state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "m": self.m}

    def model_view(self) -> np.ndarray:
        return self.x

    def _momentum(self, message: Message) -> None:
        """m ← the algorithm's momentum update, from the received ``message``."""
        raise NotImplementedError

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        message = self.gossip.start(t, (self.x, self.m) if self.shared else self.x)
        loss = self.objective.loss_grad(t)  # overlaps with the exchange
        message.wait()
        self._momentum(message)
        message.mix(out=self.mix)  # Σ_{l∈N_j} π_jl x_l
        mix_and_step(
            self._x_t, self._mix_t, self._m_t, message.self_weight, step_size(self.ctx.params, t)
        )
        return self.stats(loss)


class DMSGD(_MomentumBase):
    shared = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.mixed_m = np.zeros_like(self.m)
        self._mixed_m_t = torch.from_numpy(self.mixed_m)

    def _momentum(self, message: Message) -> None:
        message.mix(out=self.mixed_m, field=1)
        self._mixed_m_t.add_(self._m_t, alpha=message.self_weight)
        shared_momentum_update(self._m_t, self._mixed_m_t, self._g_t, self.beta)


class LocalMomentum(_MomentumBase):
    def _momentum(self, message: Message) -> None:
        self._m_t.mul_(self.beta).add_(self._g_t)  # m ← β m + g
