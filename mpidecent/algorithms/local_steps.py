"""Local steps and an outer optimizer (the DiLoCo family) over every aggregation pattern:
``[outer]``.

The maths, the decisions and the tested properties: ``docs/algorithms/local-steps.md``.

Each rank keeps the inner model θ_i (gradients are taken here; the objective's flat buffer) and the
outer model φ_i. Round r is H = ``[outer] every`` steps, t = rH … rH + H − 1::

    every step:     θ_i ← θ_i − α_t d_i          d_i: the [algorithm]'s optimizer on g_i(θ_i)
    end of round:   Δ_i = φ_i − θ_i              the pseudo-gradient (a descent direction)
                    φ̄_i, Δ̄_i = Aggregate_r(φ, Δ)   over the algorithm's pattern (below)
                    φ_i ← OuterStep(φ̄_i, Δ̄_i)     e.g. Nesterov: m ← μ m + Δ̄; φ ← φ̄ − η (Δ̄ + μ m)
                    θ_i ← φ_i

Aggregations (``AlgorithmSpec.outer``):

- ``allreduce`` (allreduce_sgd, DiLoCo): Δ̄ = (1/n) Σ_j Δ_j, one all-reduce of Δ; φ̄ = φ (identical
  on every rank).
- ``gossip`` (dpsgd; push_sum): one message per out-edge per round carrying (φ, Δ): φ̄_i = Σ_j w_ij
  φ_j, Δ̄_i = Σ_j w_ij Δ_j over j ∈ N_in ∪ {i}. With push-sum (column-stochastic C) the rank holds φ
  as mass φ^m = w_i φ_i and a float64 weight w_i, sends (φ^m_i, w_i Δ_i, w_i) and de-biases both by
  the mixed weight w'_i = Σ_j c_ij w_j: φ̄_i = (Σ_j c_ij φ^m_j) / w'_i, Δ̄_i = (Σ_j c_ij w_j Δ_j) /
  w'_i, a weighted average; after the outer step φ^m_i = w'_i φ_i. With H = 1, inner SGD and outer
  SGD η = 1 this is push-sum of the stepped models, x ← C(w ⊙ (z − α g(z))), z = x / w, and on a
  doubly stochastic W adapt-then-combine D-PSGD, x ← W(x − α g).
- ``compressed_gossip`` (quantized_push_sum; choco_sgd): φ travels as Q(φ^m_i − φ̂_i[s]) against
  reference copies kept per slot s = r mod period (as quantized push-sum and CHOCO keep theirs) and
  is mixed with the consensus step γ, φ^m_i ← φ^m_i + γ (Σ_{j∈N_in∪{i}} w_ij φ̂_j − φ̂_i); Δ travels
  as Q(w_i Δ_i) itself (it changes every round: a copy would not converge), Δ̄_i = Σ_j w_ij Q(w_j
  Δ_j) / Σ_j w_ij w_j with the rank's own term decoded from its own bytes (mass is conserved); with
  ``[compression] error_feedback`` (required for biased operators) Q(w_i Δ_i + e_i) is sent and e_i
  ← e_i + w_i Δ_i − Q(w_i Δ_i + e_i). The push-sum weight mixes with γ as in quantized push-sum;
  Δ̄'s normaliser is its full mix Σ_j w_ij w_j.
- ``tracking`` (push_pull): Push-Pull one level up, the pseudo-gradient in the gradient's place
  (``TrackingRounds``).
- ``pairing = "random"`` (NoLoCo): the ``gossip`` aggregation over a new random pairing each round
  (``topology/schedule.py: random_pairs``; w_ij = w_ii = 1/2), and NoLoCo's outer step with its sign
  convention Δ' = θ − φ = −Δ: m ← μ m − η Δ̄ + η (φ̄ − φ), φ ← φ + m.

Delay τ (``[outer] delay``, Streaming DiLoCo's overlap): the exchange of round r starts at its end
and is applied at the end of step rH + H − 1 + τ, so it travels during τ inner steps of round r + 1;
then θ ← θ + (φ_new − θ_end), θ_end = φ_old − Δ_r: the τ steps stay on top of the new outer model,
and every inner step enters exactly one pseudo-gradient. τ = 0 is the plain round. The exchange in
flight is a function of the state (φ, w, Δ_r, e, the copies; the message's randomness keyed by r),
so it is not checkpointed: a run resumed inside the window starts it again, with the same bytes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.catalog import AlgorithmSpec
from mpidecent.algorithms.gradient_tracking import pull_weights
from mpidecent.algorithms.lr import step_size
from mpidecent.comm.messages import Traffic
from mpidecent.comm.patterns import AllReduce


class _LocalSteps(Algorithm):
    """θ, φ, the inner and the outer optimizer, the round clock; subclasses aggregate."""

    weighted = False  # φ kept as push-sum mass with a weight w

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        outer = ctx.outer or {}
        self.every, self.delay = int(outer["every"]), int(outer["delay"])
        self.outer_lr, self.outer_momentum = float(outer["lr"]), float(outer["momentum"])
        self.noloco = outer["pairing"] == "random"
        dim, dtype = self.objective.dim, ctx.dtype
        self.theta = self.objective.params  # the inner model: gradients are taken here
        self._theta_t = torch.from_numpy(self.theta)
        self._g_t = torch.from_numpy(self.objective.grads)
        self.phi = self.theta.copy()  # the outer model (push-sum: its mass φ^m = w φ)
        self.w = np.ones(1, dtype=np.float64)  # push-sum weight of φ (stays 1 unweighted)
        self.delta_weight = 1.0  # Σ_j c_ij w_j of the round being applied (Δ̄'s normaliser)
        self.phi_model = np.zeros(dim, dtype=dtype) if self.weighted else self.phi  # de-biased φ
        self._phi_model_t = torch.from_numpy(self.phi_model)
        self.delta = np.zeros(
            dim, dtype=dtype
        )  # Δ_r of the last round ended (kept to resend after a resume)
        self.mean_delta = np.zeros(dim, dtype=dtype)  # Δ̄, then scratch
        self._mean_delta_t = torch.from_numpy(self.mean_delta)
        self.kept = np.zeros(dim, dtype=dtype)  # the τ inner steps since the round's end, θ − θ_end
        self.rounds = np.zeros(1, dtype=np.int64)  # outer steps taken
        self.inner = self.add_optimizer()  # the [algorithm] keys
        if self.noloco:
            self.momentum = np.zeros(dim, dtype=dtype)  # NoLoCo's m
            self.phi_old = np.zeros(dim, dtype=dtype)
        else:
            self.outer = self.add_optimizer(
                {"optimizer": outer["optimizer"], "momentum": outer["momentum"]}, name="outer"
            )
        self.pending: Any = (
            None  # the handle of the exchange started and not applied yet (None: it blocked)
        )
        self.unbooked = Traffic()  # traffic of the exchange in flight, booked when it is applied
        self.pending_round = -1
        self.norms = np.full(2, math.nan)  # ‖Δ_i‖ and ‖Δ̄_i‖ of the last round applied (logged)

    # ---- what a subclass provides ----------------------------------------------------------------

    def _start(self, r: int) -> Any:
        """Start round r's exchange from the state (φ, w, Δ = ``self.delta``, copies, memory)."""
        raise NotImplementedError

    def _finish(self, exchange: Any, r: int) -> None:
        """Complete round r's exchange: φ (mass), w ← the mix; ``mean_delta`` ← Δ̄ (mass units)."""
        raise NotImplementedError

    def _round_traffic(self) -> Traffic:
        """Traffic not counted by a message stream (the all-reduce's model of the wire)."""
        return Traffic()

    # ---- the round -------------------------------------------------------------------------------

    def own_state(self) -> dict[str, np.ndarray]:
        state = {
            "theta": self.theta,
            "phi": self.phi,
            "delta": self.delta,
            "rounds": self.rounds,
            "round_norms": self.norms,
        }
        if self.weighted:
            state["w"] = self.w
        if self.noloco:
            state["noloco_m"] = self.momentum
        return state

    def _applied_at(self, r: int) -> int:
        """The step at whose end round r's exchange is applied."""
        return (r + 1) * self.every - 1 + self.delay

    def _in_flight_at(self, t: int) -> int:
        """The round whose exchange is in flight at the start of step t (−1: none): started at the
        end of step (r + 1)H − 1 < t and applied at the end of a step ≥ t."""
        if self.delay == 0 or t < self.every or t % self.every >= self.delay:
            return -1
        r = t // self.every - 1
        return r if self._applied_at(r) < self.ctx.steps else -1

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        r_flight = self._in_flight_at(t)
        if (
            r_flight >= 0 and self.pending_round < 0
        ):  # a resumed run: start the exchange again, same bytes
            self.pending, self.pending_round = self._start(r_flight), r_flight
        loss = self.objective.loss_grad(t)
        self.inner.descend(self._theta_t, self._g_t, step_size(self.ctx.params, t))  # θ ← θ − α d
        sent = Traffic()
        if (t + 1) % self.every == 0:  # round r ends: Δ = φ − θ
            r = (t + 1) // self.every - 1
            self._refresh_phi_model()
            np.subtract(self.phi_model, self.theta, out=self.delta)
            if self._applied_at(r) < self.ctx.steps:
                self.pending, self.pending_round = self._start(r), r
        applied = self.pending_round >= 0 and self._applied_at(self.pending_round) == t
        if applied:
            self._apply(self.pending, self.pending_round)
            self.pending, self.pending_round = None, -1
        # A round's traffic is booked in the step that applies it, whenever MPI completed the
        # exchange (inside a progress hook, at a drain, or at the wait): the counts do not depend on
        # timing.
        stats = self.stats(loss)
        self.unbooked.add(stats.bits_sent, stats.bytes_sent, stats.messages_sent)
        if applied:
            taken = self._round_traffic()
            self.unbooked.add(taken.bits, taken.bytes, taken.messages)
            sent, self.unbooked = self.unbooked, Traffic()
        stats.bits_sent, stats.bytes_sent, stats.messages_sent = (
            sent.bits,
            sent.bytes,
            sent.messages,
        )
        return stats

    def _refresh_phi_model(self) -> None:
        if self.weighted:
            np.divide(self.phi, self.w[0], out=self.phi_model)

    def _apply(self, exchange: Any, r: int) -> None:
        """The round's outer step: θ_end = φ − Δ; kept = θ − θ_end; mix; outer step; θ ← φ +
        kept."""
        np.subtract(self.phi_model, self.delta, out=self.kept)  # θ_end
        np.subtract(self.theta, self.kept, out=self.kept)  # the τ steps since (0 when τ = 0)
        if self.noloco:
            np.copyto(self.phi_old, self.phi_model)
        self._finish(exchange, r)  # φ (mass) and w mixed; mean_delta = Σ_j w_ij Δ_j (mass units)
        if self.weighted:  # Σ_j c_ij w_j Δ_j / Σ_j c_ij w_j: a weighted average of the Δ_j
            self.mean_delta /= self.delta_weight
        self._refresh_phi_model()  # φ̄
        self.norms[:] = np.linalg.norm(self.delta), np.linalg.norm(self.mean_delta)
        if self.noloco:  # m ← μ m − η Δ̄ + η (φ̄ − φ);  φ ← φ + m
            m = torch.from_numpy(self.momentum)
            m.mul_(self.outer_momentum).add_(self._mean_delta_t, alpha=-self.outer_lr)
            np.subtract(self.phi_model, self.phi_old, out=self.mean_delta)
            m.add_(self._mean_delta_t, alpha=self.outer_lr)
            np.add(self.phi_old, self.momentum, out=self.phi_model)
        else:  # φ ← φ̄ − η d_outer(Δ̄)
            self.outer.descend(self._phi_model_t, self._mean_delta_t, self.outer_lr)
        if self.weighted:
            np.multiply(self.phi_model, self.w[0], out=self.phi)
        np.add(self.phi_model, self.kept, out=self.theta)  # θ ← φ (+ the τ steps)
        self.rounds[0] += 1

    def drain(self) -> None:
        super().drain()
        for handle in self.pending if isinstance(self.pending, tuple) else (self.pending,):
            if handle is not None and hasattr(handle, "wait"):
                handle.wait()

    def model_view(self) -> np.ndarray:
        return self.theta

    def describe(self) -> str:
        outer = self.ctx.outer or {}
        rule = "NoLoCo pairing" if self.noloco else outer["optimizer"]
        return (
            f"{super().describe()}, local steps: every {self.every} (delay {self.delay}), outer "
            f"{rule} lr={self.outer_lr:g} momentum={self.outer_momentum:g}"
        )

    def after_restore(self) -> None:
        self._refresh_phi_model()
        self.pending, self.pending_round = None, -1
        self.unbooked = Traffic()

    def extra_metrics(self) -> dict[str, float]:
        metrics = {
            "outer_rounds": float(self.rounds[0]),
            "pseudo_gradient_norm": float(self.norms[0]),
            "mean_pseudo_gradient_norm": float(self.norms[1]),
        }
        if self.weighted:
            metrics["push_sum_weight"] = float(self.w[0])
        return metrics


class AllReduceRounds(_LocalSteps):
    """DiLoCo (and Local SGD with outer sgd, η = 1, μ = 0): Δ̄ = (1/n) Σ_j Δ_j by one all-reduce per
    round."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.traffic = AllReduce.ring_traffic(ctx.size, self.objective.dim, ctx.dtype)

    def _start(self, r: int) -> Any:
        np.copyto(self.mean_delta, self.delta)
        self.watch.compute()
        if self.delay:  # Iallreduce: it travels during the next τ inner steps
            exchange = self.ctx.collectives.start_allreduce_sum(self.mean_delta)
        else:
            self.ctx.collectives.allreduce_sum(self.mean_delta)
            exchange = None
        self.watch.comm()
        return exchange

    def _finish(self, exchange: Any, r: int) -> None:
        if exchange is not None:
            self.watch.compute()
            exchange.wait()
            self.watch.comm()
        self.mean_delta /= self.ctx.size

    def _round_traffic(self) -> Traffic:
        return self.traffic


class GossipRounds(_LocalSteps):
    """Decentralized local steps: one exact message (φ or its mass, Δ, and the push-sum weight on
    directed graphs) per out-edge per round; Δ̄ and φ̄ mixed with the round's weights."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.mix = np.zeros(self.objective.dim, dtype=ctx.dtype)
        self.delta_mass = (
            np.zeros(self.objective.dim, dtype=ctx.dtype) if self.weighted else self.delta
        )
        self.gossip = self.stream("outer", vectors=2, scalars=1 if self.weighted else 0)

    def _start(self, r: int) -> Any:
        if (
            self.weighted
        ):  # Δ as push-sum mass, w_i Δ_i: its mix over the new weight is a weighted average
            np.multiply(self.delta, self.w[0], out=self.delta_mass)
        return self.gossip.start(
            r, (self.phi, self.delta_mass), scalars=(self.w[0],) if self.weighted else ()
        )

    def _finish(self, message: Any, r: int) -> None:
        message.wait()
        c_ii = message.self_weight
        message.mix(out=self.mix, field=0)  # φ ← w_ii φ + Σ_j w_ij φ_j
        self.phi *= c_ii
        self.phi += self.mix
        message.mix(
            out=self.mix, field=1
        )  # Δ̄ ← w_ii Δ + Σ_j w_ij Δ_j (push-sum: of the masses w_j Δ_j)
        np.multiply(self.delta_mass, c_ii, out=self.mean_delta)
        self.mean_delta += self.mix
        if self.weighted:
            self.w[0] = self.delta_weight = c_ii * self.w[0] + message.mixed_scalar(0)


class PushSumGossipRounds(GossipRounds):
    weighted = True


class CompressedGossipRounds(_LocalSteps):
    """Decentralized local steps with compressed messages: φ against reference copies (consensus
    step γ), Δ compressed itself (with error feedback where ``[compression] error_feedback``)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.gamma = float(ctx.params["gamma"])
        dim, dtype, period = self.objective.dim, ctx.dtype, ctx.need_neighbors().period
        max_in = max(len(row.in_neighbors) for row in ctx.need_neighbors().rows)
        self.ref_out = np.zeros(
            (period, dim), dtype=dtype
        )  # φ̂_i per slot, identical to its receivers' replica
        self.ref_in = np.zeros((period, max_in, dim), dtype=dtype)  # φ̂_j per slot and in-neighbour
        self.feedback = bool(ctx.error_feedback)
        self.error = np.zeros(
            dim if self.feedback else 0, dtype=dtype
        )  # e_i: Δ's compression error
        self.to_send = np.zeros(dim, dtype=dtype)  # φ^m − φ̂_i, then scratch
        self.delta_sent = np.zeros(dim, dtype=dtype)  # Δ + e
        self.decoded = np.zeros(dim, dtype=dtype)
        self.gossip = self.stream("outer", vectors=2, scalars=1 if self.weighted else 0)

    def own_state(self) -> dict[str, np.ndarray]:
        state = super().own_state() | {"ref_out": self.ref_out, "ref_in": self.ref_in}
        if self.feedback:
            state["error"] = self.error
        return state

    def _start(self, r: int) -> Any:
        slot = r % self.ctx.need_neighbors().period
        np.subtract(self.phi, self.ref_out[slot], out=self.to_send)
        np.multiply(
            self.delta, self.w[0], out=self.delta_sent
        )  # Δ's mass w_i Δ_i (w = 1 unweighted)
        if self.feedback:
            self.delta_sent += self.error
        return self.gossip.start(
            r, (self.to_send, self.delta_sent), scalars=(self.w[0],) if self.weighted else ()
        )

    def _finish(self, message: Any, r: int) -> None:
        slot = r % self.ctx.need_neighbors().period
        ref_out, ref_in = self.ref_out[slot], self.ref_in[slot]
        message.wait()
        c_ii = message.self_weight
        ref_out += message.own(out=self.decoded, field=0)  # φ̂_i += q_i
        senders = len(message.row.in_neighbors)
        for k in range(senders):  # φ̂_j += q_j, one decoded message at a time
            ref_in[k] += message.decode_one(k, out=self.decoded, field=0)
        message.weighted_sum(ref_in[:senders], out=self.to_send)  # Σ_j w_ij φ̂_j
        self.to_send += (c_ii - 1.0) * ref_out
        self.phi += self.gamma * self.to_send  # φ ← φ + γ (Σ_{j∈N_in∪{i}} w_ij φ̂_j − φ̂_i)
        own = message.own(out=self.decoded, field=1)  # Q(w_i Δ_i + e_i), as the receivers decode it
        if (
            self.feedback
        ):  # e ← (w_i Δ_i + e) − Q(w_i Δ_i + e), from the state alone (a resent message agrees)
            np.multiply(self.delta, self.w[0], out=self.to_send)
            self.error += self.to_send
            self.error -= own
        message.mix(out=self.mean_delta, field=1)  # Δ̄ = w_ii Q(Δ_i) + Σ_j w_ij Q(Δ_j)
        self.mean_delta += c_ii * own
        if self.weighted:
            self.delta_weight = c_ii * self.w[0] + message.mixed_scalar(
                0
            )  # Δ's weights mix in full
            self.w[0] += self.gamma * (self.delta_weight - self.w[0])


class PushSumCompressedGossipRounds(CompressedGossipRounds):
    weighted = True


class TrackingRounds(_LocalSteps):
    """Decentralized local steps over Push-Pull (``push_pull`` + ``[outer]``): gradient tracking one
    level up, with the pseudo-gradient in the gradient's place. Per round r (R row stochastic, the
    pull weights; C the topology's column-stochastic weights; y the tracker of the average
    pseudo-gradient, Δ_{-1} = 0, y = 0 before the first round)::

        y⁺_i = y_i + Δ_i,r − Δ_i,r−1                     the corrected tracker (sent; y is kept)
        φ_i ← Σ_{j∈N_in∪{i}} R_ij φ_j − η d_outer(y⁺_i)   pull the outer models, step along y⁺_i
        y_i ← Σ_{j∈N_in∪{i}} C_ij y⁺_j                    push the trackers

    With H = 1, inner SGD and outer SGD η = 1 this is exact Push-Pull (AB) with step α. Exact
    messages only: φ on the stream "model", y⁺ on "tracker" (two messages per out-edge per round,
    2·b·d bits)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        dim, dtype = self.objective.dim, ctx.dtype
        self.y = np.zeros(dim, dtype=dtype)  # the tracker of the mean pseudo-gradient
        self.delta_old = np.zeros(dim, dtype=dtype)  # Δ of the round before the last applied one
        self.y_sent = np.zeros(
            dim, dtype=dtype
        )  # y⁺ (derived from the state: resent alike after a resume)
        self.mix = np.zeros(dim, dtype=dtype)
        self.pull_self, self.pull_in = pull_weights(ctx)
        self.model = self.stream("model")
        self.tracker = self.stream("tracker")

    def own_state(self) -> dict[str, np.ndarray]:
        return super().own_state() | {"y": self.y, "delta_old": self.delta_old}

    def _start(self, r: int) -> Any:
        np.subtract(self.delta, self.delta_old, out=self.y_sent)
        self.y_sent += self.y
        return self.model.start(r, self.phi), self.tracker.start(r, self.y_sent)

    def _finish(self, exchange: Any, r: int) -> None:
        models, trackers = exchange
        slot = r % self.ctx.need_neighbors().period
        models.wait().mix(out=self.mix, weights=self.pull_in[slot])  # φ ← R_ii φ + Σ_j R_ij φ_j
        self.phi *= self.pull_self[slot]
        self.phi += self.mix
        trackers.wait().mix(out=self.mix)  # y ← C_ii y⁺ + Σ_j C_ij y⁺_j
        np.copyto(self.mean_delta, self.y_sent)  # the outer step's input: the own corrected tracker
        np.multiply(self.y_sent, trackers.self_weight, out=self.y)
        self.y += self.mix
        np.copyto(self.delta_old, self.delta)


def local_steps_class(spec: AlgorithmSpec) -> type:
    """The class that runs rounds of local steps over ``spec``'s aggregation
    (``AlgorithmSpec.outer``)."""
    weighted = getattr(spec.pattern, "weights", "") == "column_stochastic"
    if spec.outer == "allreduce":
        return AllReduceRounds
    if spec.outer == "gossip":
        return PushSumGossipRounds if weighted else GossipRounds
    if spec.outer == "tracking":
        return TrackingRounds
    if spec.outer == "compressed_gossip":
        return PushSumCompressedGossipRounds if weighted else CompressedGossipRounds
    raise ValueError(f"{spec.name} has no round aggregation for [outer]")
