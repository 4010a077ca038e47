"""1-bit gradient coding with stragglers (Li & Skoglund, 2024) and the uncoded baseline;
master/worker.

Algorithm: ``docs/algorithms/gradient-coding.md``. Rank 0 is the master, ranks 1..n the workers; the
data set is cut into n partitions D_1..D_n and g_j = ∇F_j(θ)/n is partition j's share of the
gradient of f = (1/n) Σ_j F_j (+ ℓ2, which the master adds). Per iteration t::

    master: send θ_t to every worker (tag t)
    worker i (unless it straggles): c_i = Σ_j B_ij g_j;  b_i = Q(c_i)
             (onebit: R = ‖c_i‖∞ + d sign bits); send the packed b_i to the master (tag t)
    master: receives pre-posted per expected worker; Waitany until the finished set F decodes
            ĝ = Σ_{i∈F} a_{F,i} decode(b_i);   θ_{t+1} = θ_t − η_t (ĝ + λ θ_t)

(with a local optimizer, ``optim.py``: the master steps along its direction d(ĝ + λ θ_t)).

E[ĝ | F] = g for linear decoding of unbiased messages. Late messages (the ``delay`` model) are
drained by the master in later steps and at shutdown. ``bits_sent`` counts the uplink (worker →
master), the quantity the paper budgets; the master's model broadcast is logged per rank as
``downlink_bits``. The messages travel on the master/worker pattern's streams (``comm/uplink.py``),
which also apply error feedback to the workers' updates when the job asks for it (``[compression]
error_feedback``: EF-SGD, for biased operators such as ``sign`` and ``topk``). The straggler set of
every step is recorded and written to ``/events/stragglers`` (steps × workers).

Between log points the ranks do not synchronise (a slow worker never holds the master back): stop
signals and divergence are agreed at log and checkpoint boundaries (``status_every_step = False``),
where the master also broadcasts θ so that every rank reports the same model.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.lr import step_size
from mpidecent.coding.stragglers import StragglerModel
from mpidecent.comm.uplink import Uplink


class _MasterWorker(Algorithm):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.workers = ctx.size - 1
        # The runner passes the job's [stragglers] (every job has one) and the catalog declares
        # a gradient code for every master/worker algorithm.
        assert ctx.stragglers is not None and ctx.spec.code is not None
        self.code_ = ctx.spec.code(ctx.params, ctx.stragglers, self.workers, ctx.seed)
        self.model = StragglerModel.from_table(ctx.stragglers, self.workers, ctx.seed)
        self.approximate = bool(ctx.params.get("approximate", False))
        self.tolerance = int(ctx.params.get("stragglers", 0))
        self.l2 = float(ctx.l2)
        self.theta = self.objective.params
        self._theta_t, self._g_t = (
            torch.from_numpy(self.theta),
            torch.from_numpy(self.objective.grads),
        )
        self.uplink = Uplink(
            ctx.need_master_worker(),
            self.compressor,
            ctx.seed,
            ctx.rank,
            self.watch,
            error_feedback=ctx.error_feedback,
        )
        self.record = np.zeros(
            (ctx.steps, self.workers), dtype=np.uint8
        )  # 1 = straggled (master's view)
        self.downlink = np.zeros(1)
        # Only the master steps: the workers hold the same state names with empty arrays.
        self.optimizer = self.add_optimizer(dim=self.objective.dim if ctx.rank == 0 else 0)
        if ctx.rank == 0:
            self.estimate = np.zeros_like(self.theta)
            self._estimate_t = torch.from_numpy(self.estimate)

    def own_state(self) -> dict[str, np.ndarray]:
        return {
            "theta": self.theta,
            "stragglers": self.record,
            "downlink_bits": self.downlink,
            **self.uplink.state(),
        }

    def model_view(self) -> np.ndarray:
        return self.theta

    def extra_metrics(self) -> dict[str, float]:
        return {"downlink_bits": float(self.downlink[0])}

    def events(self, steps_done: int) -> dict[str, np.ndarray]:
        """Rank 0's record of who straggled, steps × workers (bool)."""
        return {"stragglers": self.record[:steps_done].astype(bool)}

    def before_log(self) -> None:
        """Collective at log points: every rank takes the master's current θ."""
        self.ctx.collectives.broadcast(self.theta)

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        return self._master_step(t) if self.ctx.rank == 0 else self._worker_step(t)

    def _ready(self, expected: np.ndarray):
        if self.model.logical:  # everyone expected sends: wait for all of them (reproducible)
            return lambda finished: bool(np.all(finished[expected]))
        if self.code_.exact and not self.approximate:
            return self.code_.decodable
        needed = self.workers - self.tolerance
        return lambda finished: int(finished.sum()) >= needed

    def _master_step(self, t: int) -> StepStats:
        self.downlink[0] += self.uplink.broadcast(self.theta, t)
        expected = np.flatnonzero(~self.model.stragglers(t))
        finished = self.uplink.gather(t, expected, self._ready(expected))
        self.record[t] = ~finished
        a = self.code_.decode(finished, approximate=self.approximate)
        self.estimate.fill(0.0)
        for w, update in self.uplink.updates(finished, t):  # ĝ = Σ_{i∈F} a_{F,i} decode(b_i)
            self._estimate_t.add_(torch.from_numpy(update), alpha=float(a[w]))
        if self.l2:
            self._estimate_t.add_(self._theta_t, alpha=self.l2)
        self.optimizer.descend(self._theta_t, self._estimate_t, step_size(self.ctx.params, t))
        self.watch.compute()
        nonfinite = not bool(np.isfinite(self.theta).all())
        return StepStats(0.0, 0, 0, 0, self.watch.compute_s, self.watch.comm_s, nonfinite)

    def _worker_step(self, t: int) -> StepStats:
        sw, w = self.watch, self.ctx.rank - 1
        self.uplink.receive(self.theta, t)
        sw.comm()
        if self.model.stragglers(t)[w]:  # a logical straggler computes and sends nothing this step
            return StepStats(0.0, 0, 0, 0, sw.compute_s, sw.comm_s)
        loss = self.objective.loss_grad(t)  # Σ_j B_wj F_j / n and its gradient c_w (no ℓ2)
        packed = self.uplink.encode(self.objective.grads, t)
        sw.compute()
        delay = self.model.delay(w, t)
        if delay:
            time.sleep(delay)  # the delay model: real straggling
        self.uplink.send(t)
        sw.comm()
        return StepStats(
            loss, packed.bits, packed.nbytes, 1, sw.compute_s, sw.comm_s, self.uplink.nonfinite
        )


class GradientCoding(_MasterWorker):
    """gradient_coding: an FRC, CRC or SGC code (``catalog.gradient_code``)."""


class Uncoded(_MasterWorker):
    """uncoded: one partition per worker, the non-stragglers' messages rescaled by n/|F|."""
