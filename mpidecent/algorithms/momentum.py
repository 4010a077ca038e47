"""Momentum-accelerated consensus SGD: DMSGD (shared momentum) and the local-momentum baseline.

Spec: ``specs/momentum-consensus.md`` (Balu et al., "Decentralized Deep Learning using
Momentum-Accelerated Consensus", ICASSP 2021). Undirected graph, Π symmetric doubly stochastic.

DMSGD (the spec's reading, kept in ``shared_momentum_update`` so a variant can be added beside it):
every agent sends both x_j and m_j (the values before this step's update) to its neighbours — twice
D-PSGD's traffic, full precision — and::

    g_j = ∇F_j(x_j; ξ_j)
    m_j ← β Σ_{l∈N_j∪{j}} π_jl m_l + g_j
    x_j ← Σ_{l∈N_j∪{j}} π_jl x_l − α m_j

Local momentum (CDMSGD-style baseline): only x is mixed, the momentum stays local:
m_j ← β m_j + g_j;  x_j ← Σ π_jl x_l − α m_j. With β = 0 both are D-PSGD, bit for bit.
Wire format of a DMSGD message: [x payload][m payload], each from the identity compressor.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import (LR_PARAMS, Algorithm, Context, StepStats, Stopwatch, decode_messages,
                                       register, step_size)
from mpidecent.algorithms.dpsgd import mix_and_step
from mpidecent.params import Param
from mpidecent.rng import RandomKey

BETA = Param("beta", float, 0.9, "momentum coefficient β", minimum=0.0, maximum=1.0)


def shared_momentum_update(m_t: torch.Tensor, mixed_m_t: torch.Tensor, g_t: torch.Tensor, beta: float) -> None:
    """m ← β (Σ_l π_jl m_l) + g, with ``mixed_m_t`` holding Σ_{l∈N_j∪{j}} π_jl m_l (the spec's reading)."""
    torch.add(g_t, mixed_m_t, alpha=beta, out=m_t)


class _MomentumBase(Algorithm):
    graph = "undirected"
    weights_property = "doubly_stochastic"
    default_weights = "metropolis"
    params = (*LR_PARAMS, BETA)
    messages_per_neighbor = 1  # payloads per message: x (and m for DMSGD)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.beta = float(ctx.params["beta"])
        dim, dtype = self.objective.dim, ctx.dtype
        row = ctx.row(0)
        self.x = self.objective.params
        self.m = np.zeros(dim, dtype=dtype)
        self.degree = len(row.out_neighbors)
        self.in_weights = np.asarray(row.in_weights, dtype=dtype)
        nbytes = self.messages_per_neighbor * self.compressor.nbytes
        self.send_buf = np.zeros(nbytes, dtype=np.uint8)
        self.exchange = ctx.neighborhood.exchange(nbytes, nbytes)
        self.received = np.zeros((len(row.in_neighbors), dim), dtype=dtype)
        self.mix = np.zeros(dim, dtype=dtype)
        self._x_t, self._m_t = torch.from_numpy(self.x), torch.from_numpy(self.m)
        self._g_t, self._mix_t = torch.from_numpy(self.objective.grads), torch.from_numpy(self.mix)

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "m": self.m}

    def model_view(self) -> np.ndarray:
        return self.x

    def _pack(self, t: int) -> int:
        """Encode this step's payloads into ``send_buf``; returns the bits of one message."""
        raise NotImplementedError

    def _update(self, t: int, recv: np.ndarray) -> None:
        raise NotImplementedError

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        bits = self._pack(t)
        sw.compute()
        self.exchange.start(self.send_buf, t)
        sw.comm()
        loss = self.objective.loss_grad(t)  # overlaps with the exchange
        sw.compute()
        recv = self.exchange.wait()
        sw.comm()
        self._update(t, recv)
        sw.compute()
        return StepStats(loss, self.degree * bits, self.degree * self.send_buf.nbytes, self.degree,
                         sw.compute_s, sw.comm_s, self.nonfinite)

    def _mix_x(self, t: int, recv: np.ndarray) -> None:
        """mix ← Σ_{l∈N_j} π_jl x_l from the x payloads at the head of each message."""
        received = decode_messages(self.compressor, recv, self.ctx.row(t).in_neighbors, self.ctx.seed, t,
                                   self.received)
        np.dot(self.in_weights, received, out=self.mix)


@register
class DMSGD(_MomentumBase):
    name = "dmsgd"
    doc = "momentum-accelerated consensus SGD: neighbours share parameters and momentum (Balu et al. 2021)"
    messages_per_neighbor = 2

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.mixed_m = np.zeros_like(self.m)
        self._mixed_m_t = torch.from_numpy(self.mixed_m)
        self.received_m = np.zeros_like(self.received)

    def _pack(self, t: int) -> int:
        key, nb = RandomKey(self.ctx.seed, self.ctx.rank, t), self.compressor.nbytes
        bits = self.encode_or_flag(self.x, key, self.send_buf[:nb]).bits
        return bits + self.encode_or_flag(self.m, key, self.send_buf[nb:]).bits

    def _update(self, t: int, recv: np.ndarray) -> None:
        row = self.ctx.row(t)
        received_m = decode_messages(self.compressor, recv, row.in_neighbors, self.ctx.seed, t, self.received_m,
                                     offset=self.compressor.nbytes)
        np.dot(self.in_weights, received_m, out=self.mixed_m)
        self._mixed_m_t.add_(self._m_t, alpha=row.self_weight)
        shared_momentum_update(self._m_t, self._mixed_m_t, self._g_t, self.beta)
        self._mix_x(t, recv)
        mix_and_step(self._x_t, self._mix_t, self._m_t, row.self_weight, step_size(self.ctx.params, t))


@register
class LocalMomentum(_MomentumBase):
    name = "local_momentum"
    doc = "decentralized SGD with heavy-ball momentum kept local, only models mixed (CDMSGD-style baseline)"

    def _pack(self, t: int) -> int:
        return self.encode_or_flag(self.x, RandomKey(self.ctx.seed, self.ctx.rank, t), self.send_buf).bits

    def _update(self, t: int, recv: np.ndarray) -> None:
        self._m_t.mul_(self.beta).add_(self._g_t)  # m ← β m + g
        self._mix_x(t, recv)
        mix_and_step(self._x_t, self._mix_t, self._m_t, self.ctx.row(t).self_weight, step_size(self.ctx.params, t))
