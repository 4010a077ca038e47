"""Compressed gossip with Q rounds per gradient step; Q = 1 is CHOCO-SGD.

Spec: ``specs/multi-gossip.md`` (Hashemi et al., "On the Benefits of Multiple Gossip Steps in
Communication-Constrained Decentralized Optimization"; CHOCO-SGD: Koloskova et al.). Undirected graph,
W symmetric doubly stochastic, C a contractive compressor. State at node i: model x_i, public copy z_i
(bit-identical at i and its neighbours, because everyone applies the same decoded bytes) and
s_i = Σ_{j∈N_i∪{i}} w_ij z_j, kept incrementally so no per-neighbour copy is stored. z_i = s_i = 0 at
the start. Per gradient iteration t::

    x_i ← x_i − η ∇F_i(x_i)
    repeat Q times (round r):
        c_i = C(x_i − z_i)                     # packed once; decoded from its bytes by everyone
        send c_i to the neighbours; receive c_j
        z_i ← z_i + c_i;   s_i ← s_i + Σ_{j∈N_i∪{i}} w_ij c_j;   x_i ← x_i + γ (s_i − z_i)

Randomness of round r of iteration t is keyed by step t·Q + r. Wire: one packed c_i per neighbour per
round (true bits counted). The paper's own unit, iterations × Q × bits-per-coordinate, is logged per
rank as ``paper_bits`` (cumulative) so its plots can be compared.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import (LR_PARAMS, Algorithm, Context, StepStats, Stopwatch, decode_messages,
                                       register, step_size)
from mpidecent.params import Param
from mpidecent.rng import RandomKey

GAMMA = Param("gamma", float, 0.1, "consensus step size γ of each gossip round", minimum=0.0,
              exclusive_minimum=True, maximum=1.0)


@register
class MultiGossip(Algorithm):
    name = "multi_gossip"
    doc = "gradient step then Q compressed gossip rounds (Hashemi et al.); Q = 1 is CHOCO-SGD"
    params = (*LR_PARAMS, GAMMA,
              Param("gossip_rounds", int, 1, "Q: compressed gossip rounds per gradient step", minimum=1))
    graph = "undirected"
    weights_property = "doubly_stochastic"
    default_weights = "metropolis"
    compressors = None
    needs_contractive = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.rounds = int(ctx.params.get("gossip_rounds", 1))
        self.gamma = float(ctx.params["gamma"])
        dim, dtype = self.objective.dim, ctx.dtype
        row = ctx.row(0)
        self.x = self.objective.params  # the model: gradients are taken at x
        self.z = np.zeros(dim, dtype=dtype)  # public copy of x
        self.s = np.zeros(dim, dtype=dtype)  # Σ_j w_ij z_j over N_i ∪ {i}
        self.degree = len(row.out_neighbors)
        self.in_weights = np.asarray(row.in_weights, dtype=dtype)
        self.send_buf = np.zeros(self.compressor.nbytes, dtype=np.uint8)
        self.exchange = ctx.neighborhood.exchange(self.compressor.nbytes, self.compressor.nbytes)
        self.received = np.zeros((len(row.in_neighbors), dim), dtype=dtype)
        self.delta = np.zeros(dim, dtype=dtype)  # scratch: x − z, then the decoded own message
        self.mix = np.zeros(dim, dtype=dtype)
        self.paper_bits = np.zeros(1)  # cumulative iterations × Q × nominal bits per coordinate
        self._x_t, self._g_t = torch.from_numpy(self.x), torch.from_numpy(self.objective.grads)
        self._s_t, self._z_t = torch.from_numpy(self.s), torch.from_numpy(self.z)
        self._delta_t, self._mix_t = torch.from_numpy(self.delta), torch.from_numpy(self.mix)

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "z": self.z, "s": self.s, "paper_bits": self.paper_bits}

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        row = self.ctx.row(t)
        loss = self.objective.loss_grad(t)
        self._x_t.add_(self._g_t, alpha=-step_size(self.ctx.params, t))
        bits = 0
        for r in range(self.rounds):  # loop over gossip rounds, each one vectorised
            key_step = t * self.rounds + r
            key = RandomKey(self.ctx.seed, self.ctx.rank, key_step)
            np.subtract(self.x, self.z, out=self.delta)
            packed = self.encode_or_flag(self.delta, key, self.send_buf)
            bits += packed.bits
            sw.compute()
            self.exchange.start(self.send_buf, key_step)
            sw.comm()
            self.compressor.decode(self.send_buf, key, out=self.delta)  # c_i, from its own bytes
            self._z_t.add_(self._delta_t)
            self._s_t.add_(self._delta_t, alpha=row.self_weight)
            sw.compute()
            recv = self.exchange.wait()
            sw.comm()
            received = decode_messages(self.compressor, recv, row.in_neighbors, self.ctx.seed, key_step,
                                       self.received)
            np.dot(self.in_weights, received, out=self.mix)
            self._s_t.add_(self._mix_t)
            # x ← x + γ (s − z), with mix as scratch for s − z
            torch.sub(self._s_t, self._z_t, out=self._mix_t)
            self._x_t.add_(self._mix_t, alpha=self.gamma)
        sw.compute()
        self.paper_bits[0] += self.rounds * self.compressor.paper_bits_per_coordinate
        return StepStats(loss, self.degree * bits, self.degree * self.rounds * self.send_buf.nbytes,
                         self.degree * self.rounds, sw.compute_s, sw.comm_s, self.nonfinite)

    def model_view(self) -> np.ndarray:
        return self.x

    def extra_metrics(self) -> dict[str, float]:
        return {"paper_bits": float(self.paper_bits[0])}


@register
class ChocoSGD(MultiGossip):
    """CHOCO-SGD (Koloskova et al.): multi_gossip with exactly one gossip round per gradient step."""

    name = "choco_sgd"
    doc = "CHOCO-SGD: gradient step then one compressed gossip round (multi_gossip with Q = 1)"
    params = (*LR_PARAMS, GAMMA)
