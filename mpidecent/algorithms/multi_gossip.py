"""Compressed gossip with Q rounds per gradient step; Q = 1 is CHOCO-SGD.

Algorithm: ``docs/algorithms/multi-gossip.md`` (Hashemi et al., "On the Benefits of Multiple Gossip
Steps in Communication-Constrained Decentralized Optimization"; CHOCO-SGD: Koloskova et al.).
Undirected graph, W symmetric doubly stochastic, C a contractive compressor. State at node i: model
x_i, public copy z_i (bit-identical at i and its neighbours, because everyone applies the same
decoded bytes) and s_i = Σ_{j∈N_i∪{i}} w_ij z_j, kept incrementally so no per-neighbour copy is
stored (the neighbours' c_j are decoded and added into s_i one at a time: ``Message.accumulate``,
one scratch vector). z_i = s_i = 0 at the start. Per gradient iteration t::

    x_i ← x_i − η ∇F_i(x_i)
    repeat Q times (round r):
        c_i = C(x_i − z_i)                     # packed once; decoded from its bytes by everyone
        send c_i to the neighbours; receive c_j
        z_i ← z_i + c_i;   s_i ← s_i + Σ_{j∈N_i∪{i}} w_ij c_j;   x_i ← x_i + γ (s_i − z_i)

Round r of iteration t is the stream's round r (randomness keyed by step t·Q + r). Wire: one packed
c_i per neighbour per round (true bits counted). The paper's own unit, iterations × Q ×
bits-per-coordinate, is logged per rank as ``paper_bits`` (cumulative) so its plots can be compared.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.lr import step_size


class MultiGossip(Algorithm):
    """multi_gossip, and choco_sgd (declared without gossip_rounds: Q = 1)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.rounds = int(ctx.params.get("gossip_rounds", 1))
        self.gamma = float(ctx.params["gamma"])
        dim, dtype = self.objective.dim, ctx.dtype
        self.x = self.objective.params  # the model: gradients are taken at x
        self.z = np.zeros(dim, dtype=dtype)  # public copy of x
        self.s = np.zeros(dim, dtype=dtype)  # Σ_j w_ij z_j over N_i ∪ {i}
        self.gossip = self.stream("model", rounds=self.rounds)
        # Scratch, one vector: x − z, the decoded own message, each decoded in-neighbour message, s
        # − z.
        self.delta = np.zeros(dim, dtype=dtype)
        self.paper_bits = np.zeros(1)  # cumulative iterations × Q × nominal bits per coordinate
        self._x_t, self._g_t = torch.from_numpy(self.x), torch.from_numpy(self.objective.grads)
        self._s_t, self._z_t = torch.from_numpy(self.s), torch.from_numpy(self.z)
        self._delta_t = torch.from_numpy(self.delta)
        self.optimizer = self.add_optimizer()  # its direction d in place of ∇F_i

    def own_state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "z": self.z, "s": self.s, "paper_bits": self.paper_bits}

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        loss = self.objective.loss_grad(t)
        self.optimizer.descend(self._x_t, self._g_t, step_size(self.ctx.params, t))
        for r in range(self.rounds):  # loop over gossip rounds, each one vectorised
            message = self.gossip.start(t, np.subtract(self.x, self.z, out=self.delta), round=r)
            message.own(out=self.delta)  # c_i, from its own bytes
            self._z_t.add_(self._delta_t)
            self._s_t.add_(self._delta_t, alpha=message.self_weight)
            # s += Σ_j w_ij c_j, decoding one neighbour's message at a time into the scratch
            message.wait().accumulate(self.s, scratch=self.delta)
            # x ← x + γ (s − z), with the scratch holding s − z
            torch.sub(self._s_t, self._z_t, out=self._delta_t)
            self._x_t.add_(self._delta_t, alpha=self.gamma)
        self.paper_bits[0] += self.rounds * self.compressor.paper_bits_per_coordinate
        return self.stats(loss)

    def model_view(self) -> np.ndarray:
        return self.x

    def extra_metrics(self) -> dict[str, float]:
        return {"paper_bits": float(self.paper_bits[0])}
