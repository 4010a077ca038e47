"""Algorithms that exist only for the tests of the stream and optimizer machinery (``comm/neighbor.py``,
``algorithms/base.py``): declarations outside the catalog, run on the in-memory twin and under mpirun.

``TwoStreams`` is a complete algorithm with two compressed streams per step and two optimizers, written
in this one file with no exchange code: CHOCO-style compressed gossip (reference copies ẑ and mixed
copies s, as in ``multi_gossip.py``) of the model x on the stream ``model`` and of the inner optimizer's
direction d on the stream ``direction``, and every ``H`` steps an outer optimizer step on the
pseudo-gradient of the round. Per step t::

    g = ∇F_i(x);  d = inner(g)                                (inner: adam, state inner_m, inner_v, inner_steps)
    c_x = C(x − ẑ_x), c_d = C(d − ẑ_d)                        (two streams, both in flight at once)
    ẑ ← ẑ + c;  s ← s + Σ_{j∈N_i∪{i}} w_ij c_j                 (per stream)
    x ← x + γ (s_x − ẑ_x) − α s_d                             (descend along the mixed direction)
    every H steps: x ← a − outer(a − x);  a ← x                (outer: nesterov, state outer_m, outer_steps)

``Misordered`` opens its two streams in a rank-dependent order: a programming error that ``seal``
must refuse on every rank.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.catalog import AlgorithmSpec
from mpidecent.algorithms.lr import LR_PARAMS
from mpidecent.comm.patterns import NeighborGossip
from mpidecent.params import Param

OUTER_EVERY = 3


class TwoStreams(Algorithm):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        dim, dtype = self.objective.dim, ctx.dtype
        self.gamma = float(ctx.params["gamma"])
        self.x = self.objective.params
        self.anchor = self.x.copy()  # a: the model at the start of the outer round
        self.copies = np.zeros((2, dim), dtype=dtype)  # ẑ_x, ẑ_d
        self.mixed = np.zeros((2, dim), dtype=dtype)  # s_x, s_d
        self.delta = np.zeros((2, dim), dtype=dtype)  # scratch: x − ẑ_x, d − ẑ_d, then decoded messages
        self.scratch = np.zeros(dim, dtype=dtype)
        self.inner = self.add_optimizer({"optimizer": "adam"}, name="inner")
        self.outer = self.add_optimizer({"optimizer": "nesterov", "momentum": 0.5}, name="outer")
        self.model = self.stream("model")
        self.direction = self.stream("direction")
        self._x_t, self._g_t = torch.from_numpy(self.x), torch.from_numpy(self.objective.grads)

    def own_state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "anchor": self.anchor, "copies": self.copies, "mixed": self.mixed}

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        loss = self.objective.loss_grad(t)
        d = self.inner.direction(self._g_t).numpy()
        messages = [stream.start(t, np.subtract(v, self.copies[k], out=self.delta[k]))
                    for k, (stream, v) in enumerate(((self.model, self.x), (self.direction, d)))]
        for k, message in enumerate(messages):
            own = message.own(out=self.delta[k])
            self.copies[k] += own
            self.mixed[k] += message.self_weight * own
        for k, message in enumerate(messages):
            message.wait().accumulate(self.mixed[k], scratch=self.scratch)
        self.x += self.gamma * (self.mixed[0] - self.copies[0])
        self.x -= float(self.ctx.params["lr"]) * self.mixed[1]
        if (t + 1) % OUTER_EVERY == 0:
            pseudo = torch.from_numpy(self.anchor - self.x)
            self._x_t.copy_(torch.from_numpy(self.anchor))
            self.outer.descend(self._x_t, pseudo, 1.0)
            np.copyto(self.anchor, self.x)
        return self.stats(loss)

    def model_view(self) -> np.ndarray:
        return self.x


class Misordered(Algorithm):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        names = ("model", "direction") if ctx.rank % 2 == 0 else ("direction", "model")
        for name in names:
            self.stream(name)
        self.x = self.objective.params

    def own_state(self) -> dict[str, np.ndarray]:
        return {"x": self.x}

    def step(self, t: int) -> StepStats:
        raise AssertionError("never reached: seal refuses the streams")

    def model_view(self) -> np.ndarray:
        return self.x


_UNDIRECTED = NeighborGossip(directed=False, weights="doubly_stochastic")
_GAMMA = Param("gamma", float, 0.5, "consensus step size")
# ``implementation`` is resolved under mpidecent.algorithms; these load through ``_Toy.load`` instead.


class _Toy(AlgorithmSpec):
    def load(self) -> type:
        return {"two_streams": TwoStreams, "misordered": Misordered}[self.name]


TWO_STREAMS = _Toy("two_streams", "test: two compressed streams, two optimizers", _UNDIRECTED, "",
                   (*LR_PARAMS, _GAMMA), compressors=None)
MISORDERED = _Toy("misordered", "test: streams opened in a rank-dependent order", _UNDIRECTED, "",
                  LR_PARAMS, compressors=None)
