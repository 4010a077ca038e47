"""1-bit gradient coding with stragglers (Li & Skoglund, 2024) and the uncoded baseline; master/worker.

Spec: ``specs/gradient-coding.md``. Rank 0 is the master, ranks 1..n the workers; the data set is cut
into n partitions D_1..D_n and g_j = ∇F_j(θ)/n is partition j's share of the gradient of
f = (1/n) Σ_j F_j (+ ℓ2, which the master adds). Per iteration t::

    master: send θ_t to every worker (tag t)
    worker i (unless it straggles): c_i = Σ_j B_ij g_j;  b_i = Q(c_i)   (onebit: R = ‖c_i‖∞ + d sign bits)
             send the packed b_i to the master (tag t)
    master: receives pre-posted per expected worker; Waitany until the finished set F decodes
            ĝ = Σ_{i∈F} a_{F,i} decode(b_i);   θ_{t+1} = θ_t − η_t (ĝ + λ θ_t)

E[ĝ | F] = g for linear decoding of unbiased messages. Late messages (the ``delay`` model) are drained
by the master in later steps and at shutdown. ``bits_sent`` counts the uplink (worker → master), the
quantity the paper budgets; the master's model broadcast is logged per rank as ``downlink_bits``.
The straggler set of every step is recorded and written to ``/events/stragglers`` (steps × workers).

Between log points the ranks do not synchronise (a slow worker never holds the master back): stop
signals and divergence are agreed at log and checkpoint boundaries (``status_every_step = False``), where
the master also broadcasts θ so that every rank reports the same model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mpidecent.algorithms.base import (LR_PARAMS, Algorithm, Context, DataLayout, StepStats, Stopwatch, register,
                                       step_size)
from mpidecent.coding.codes import GradientCode, crc, frc, sgc, uncoded
from mpidecent.coding.stragglers import StragglerModel
from mpidecent.params import Param
from mpidecent.rng import RandomKey


def straggle_probability(table: Mapping[str, Any], tolerance: int, workers: int) -> float:
    """p of SGC's scale 1/(d(1 − p)): the chance that a worker is among the stragglers of a step."""
    if table["model"] == "bernoulli":
        return float(table["p"])
    if table["model"] == "fixed":
        return table["count"] / workers
    if table["model"] == "delay":
        return tolerance / workers
    return 0.0


def straggler_model(table: Mapping[str, Any], workers: int, seed: int) -> StragglerModel:
    return StragglerModel(table["model"], workers, seed, count=table["count"], p=table["p"],
                          shift_s=table["delay_shift_s"], mean_s=table["delay_mean_s"])


class _MasterWorker(Algorithm):
    graph = "master"
    compressors = ("onebit", "identity")
    status_every_step = False

    @classmethod
    def code(cls, params: Mapping[str, Any], stragglers: Mapping[str, Any], workers: int, seed: int) -> GradientCode:
        raise NotImplementedError

    @classmethod
    def data_layout(cls, job: Any, world_size: int, rank: int) -> DataLayout:
        """Worker w (rank w + 1) trains on the partitions it holds, weighted B_wj / n, and evaluates
        partition w (so each partition counts once); the master holds no data."""
        workers = world_size - 1
        if rank == 0:
            return DataLayout(workers, (), None, regularize=False)
        w = rank - 1
        code = cls.code(job.algorithm, job.stragglers, workers, job.run["seed"])
        return DataLayout(workers, tuple((int(j), float(code.B[w, j]) / workers) for j in code.partitions(w)), w,
                          regularize=False)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.workers = ctx.size - 1
        self.code_ = self.code(ctx.params, ctx.stragglers, self.workers, ctx.seed)
        self.model = straggler_model(ctx.stragglers, self.workers, ctx.seed)
        self.approximate = bool(ctx.params.get("approximate", False))
        self.tolerance = int(ctx.params.get("stragglers", 0))
        self.l2 = float(ctx.l2)
        self.theta = self.objective.params
        self._theta_t, self._g_t = torch.from_numpy(self.theta), torch.from_numpy(self.objective.grads)
        self.down = np.zeros(self.theta.nbytes, dtype=np.uint8)  # θ at full precision
        self.up = np.zeros(self.compressor.nbytes, dtype=np.uint8)
        self.channel = ctx.master_worker
        self.record = np.zeros((ctx.steps, self.workers), dtype=np.uint8)  # 1 = straggled (master's view)
        self.downlink = np.zeros(1)
        if ctx.rank == 0:
            self.estimate = np.zeros_like(self.theta)
            self.decoded = np.zeros_like(self.theta)
            self._estimate_t = torch.from_numpy(self.estimate)

    def state(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta, "stragglers": self.record, "downlink_bits": self.downlink}

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
        return self._master_step(t) if self.ctx.rank == 0 else self._worker_step(t)

    def _ready(self, expected: np.ndarray):
        if self.model.logical:  # everyone expected sends: wait for all of them (reproducible)
            return lambda finished: bool(np.all(finished[expected]))
        if self.code_.exact and not self.approximate:
            return self.code_.decodable
        needed = self.workers - self.tolerance
        return lambda finished: int(finished.sum()) >= needed

    def _master_step(self, t: int) -> StepStats:
        sw = Stopwatch()
        self.down.view(self.theta.dtype)[:] = self.theta
        self.channel.broadcast(self.down, t)
        self.downlink[0] += 8 * self.down.nbytes * self.workers
        expected = np.flatnonzero(~self.model.stragglers(t))
        self.channel.post(t, expected)
        sw.comm()
        finished, rows = self.channel.wait_until(t, self._ready(expected))
        sw.comm()
        self.record[t] = ~finished
        a = self.code_.decode(finished, approximate=self.approximate)
        self.estimate.fill(0.0)
        for w in np.flatnonzero(finished):  # a loop over ≤ n messages; each decode is vectorised
            self.compressor.decode(rows[w], RandomKey(self.ctx.seed, int(w) + 1, t), out=self.decoded)
            self._estimate_t.add_(torch.from_numpy(self.decoded), alpha=float(a[w]))
        if self.l2:
            self._estimate_t.add_(self._theta_t, alpha=self.l2)
        self._theta_t.add_(self._estimate_t, alpha=-step_size(self.ctx.params, t))
        sw.compute()
        nonfinite = not bool(np.isfinite(self.theta).all())
        return StepStats(0.0, 0, 0, 0, sw.compute_s, sw.comm_s, nonfinite)

    def _worker_step(self, t: int) -> StepStats:
        sw = Stopwatch()
        w = self.ctx.rank - 1
        self.channel.receive(self.down, t)
        self.theta[:] = self.down.view(self.theta.dtype)
        sw.comm()
        if self.model.stragglers(t)[w]:  # a logical straggler computes and sends nothing this step
            return StepStats(0.0, 0, 0, 0, sw.compute_s, sw.comm_s)
        loss = self.objective.loss_grad(t)  # Σ_j B_wj F_j / n and its gradient c_w (no ℓ2)
        self.channel.complete_send()  # the previous update may still be in flight from self.up
        packed = self.encode_or_flag(self.objective.grads, RandomKey(self.ctx.seed, self.ctx.rank, t), self.up)
        sw.compute()
        delay = self.model.delay(w, t)
        if delay:
            time.sleep(delay)  # the delay model: real straggling
        self.channel.send(self.up, t)
        sw.comm()
        return StepStats(loss, packed.bits, self.up.nbytes, 1, sw.compute_s, sw.comm_s, self.nonfinite)


@register
class GradientCoding(_MasterWorker):
    name = "gradient_coding"
    doc = "gradient coding with stragglers, master/worker (Li & Skoglund 2024); 1-bit or full-precision messages"
    params = (
        *LR_PARAMS,
        Param("code", str, "frc", "frc (fractional repetition), crc (cyclic repetition), sgc (stochastic)",
              choices=("frc", "crc", "sgc")),
        Param("stragglers", int, 1, "s: stragglers an exact code (frc, crc) tolerates; with the delay model "
              "the master waits for n − s workers", minimum=0),
        Param("replication", int, 2, "sgc: workers holding each partition", minimum=1),
        Param("approximate", bool, False,
              "allow more stragglers than the code tolerates (rescaled partial decoding instead of an error)"),
    )

    @classmethod
    def code(cls, params: Mapping[str, Any], stragglers: Mapping[str, Any], workers: int, seed: int) -> GradientCode:
        kind = params["code"]
        if kind == "frc":
            return frc(workers, params["stragglers"])
        if kind == "crc":
            return crc(workers, params["stragglers"], seed)
        return sgc(workers, params["replication"], straggle_probability(stragglers, params["stragglers"], workers))


@register
class Uncoded(_MasterWorker):
    name = "uncoded"
    doc = "uncoded master/worker SGD: one partition per worker, the non-stragglers' messages rescaled by n/|F|"
    params = (*LR_PARAMS,
              Param("stragglers", int, 0, "with the delay model the master waits for n − s workers", minimum=0))

    @classmethod
    def code(cls, params: Mapping[str, Any], stragglers: Mapping[str, Any], workers: int, seed: int) -> GradientCode:
        return uncoded(workers)
