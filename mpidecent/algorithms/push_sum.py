"""Push-sum SGD over directed graphs: exact (SGP) and quantized (Taheri et al., ICML 2020), each
with an optional overlap of communication and computation (``[algorithm] overlap = true``).

The maths: ``docs/algorithms/push-sum.md``. W is column stochastic and is applied by the receiver
(row ``rank`` of W, which every rank knows from the shared topology), so one message per step goes
to all out-neighbours of the step: the exact push-sum weight y_i as a float64 scalar, then the
compressed vector (the stream ``model`` with one scalar and one vector, so bits per out-edge =
compressor bits + 64).

State per rank: mass x_i, push-sum weight y_i (float64, starts at 1), de-biased model z_i = x_i /
y_i (the objective's flat parameter buffer, where gradients are taken).

Graphs may be time-varying (a periodic schedule such as one_peer_exponential): step t uses the
mixing row of slot t mod period.

Overlap: the message of step t carries x_t (or x_t − x̂_i), which is known before the gradient
g(z_t) is computed, so its exchange is started at the end of step t − 1 and stays in flight, across
the step boundary, while step t computes its gradient. The message in flight is a function of the
state (x_t, y_t, x̂) and of the key (seed, rank, t): it is not checkpointed; a run that resumes at
step t (or the first step of a run) starts it at the beginning of step t, and the bytes are the
same.
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


class _PushSumBase(Algorithm):
    """State, weight mixing, read-out and the overlap schedule shared by exact and quantized
    push-sum."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.debias = bool(ctx.params["debias"])
        self.overlap = bool(ctx.params.get("overlap", False))
        self.z = (
            self.objective.params
        )  # gradients are taken here; torch's parameters view this memory
        self.x = self.z.copy()  # mass; every node starts from its initial model with y = 1
        self.y = np.ones(1, dtype=np.float64)
        self._x_t = torch.from_numpy(self.x)
        self._g_t = torch.from_numpy(self.objective.grads)
        self.optimizer = self.add_optimizer()  # its direction d in place of g
        self.gossip = self.stream(
            "model", vectors=1, scalars=1
        )  # message: [y_i][compressed vector]
        self.pending: Message | None = None  # overlap: the exchange of the next step, in flight

    def _gradient_step(self, t: int) -> float:
        loss = self.objective.loss_grad(t)  # at z (or at x when debias is off: z holds a copy of x)
        self.optimizer.descend(self._x_t, self._g_t, step_size(self.ctx.params, t))  # x ← x − α d
        return loss

    def _mix_weight(self, message: Message, gamma: float) -> None:
        """y ← y + γ (Σ_{j∈N_in∪{i}} w_ij y_j − y), all in float64."""
        mixed = message.self_weight * self.y[0] + message.mixed_scalar(0)
        self.y[0] += gamma * (mixed - self.y[0])

    def _refresh_model(self) -> None:
        if self.debias:
            np.divide(self.x, self.y[0], out=self.z)
        else:
            np.copyto(self.z, self.x)

    def _send(self, t: int) -> Message:
        """Start the exchange of step t's message (built from the state at the start of step t)."""
        raise NotImplementedError

    def _overlapped_message(self, t: int) -> Message:
        """Overlap: step t's message, started at the end of step t − 1 (or now, at the first step of
        a run or of a resumed one)."""
        message = self.pending if self.pending is not None else self._send(t)
        self.pending = None
        return message

    def _send_ahead(self, t: int) -> None:
        """Overlap: start step t + 1's exchange now, to run while it computes its gradient (not
        after the last step of the run)."""
        if t + 1 < self.ctx.steps:
            self.pending = self._send(t + 1)

    def model_view(self) -> np.ndarray:
        return self.z

    def after_restore(self) -> None:
        self._refresh_model()

    def extra_metrics(self) -> dict[str, float]:
        return {"push_sum_weight": float(self.y[0])}


class PushSum(_PushSumBase):
    """Exact push-sum SGD (Stochastic Gradient Push), the baseline of the push-sum family.

    Per step: g = ∇F_i(z_i); x_i ← x_i − α g; send (x_i, y_i) to out-neighbours; x_i ←
    Σ_{j∈N_in∪{i}} w_ij x_j, y_i ← Σ_j w_ij y_j; z_i = x_i / y_i. The payload is x_i at the wire
    precision of the identity compressor (the state dtype by default, so Σ_i x_i is conserved
    exactly up to rounding).

    ``overlap = true`` (SGP's overlap, one step of delay between sending and using the gradient)::

        X_{t+1} = P X_t − α G(Z_t),   Y_{t+1} = P Y_t,   Z_{t+1} = X_{t+1} / Y_{t+1}

    per rank: x_i ← w_ii x_i + (Σ_j w_ij x_j − α d_i) with d_i the optimizer's direction for g(z_i),
    the exchange of (x_t, y_t) in flight while g(z_t) is computed. Σ_i x_i changes only by −α Σ_i
    d_i and Σ_i y_i = n, as without overlap.
    """

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.mix = np.zeros(
            self.objective.dim, dtype=ctx.dtype
        )  # Σ_j w_ij x_j, decoded one message at a time
        self._mix_t = torch.from_numpy(self.mix)

    def own_state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y}

    def _send(self, t: int) -> Message:
        return self.gossip.start(t, self.x, scalars=(self.y[0],))

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        if self.overlap:
            message = self._overlapped_message(t)
            loss = self.objective.loss_grad(t)  # while (x_t, y_t) travel
            message.wait().mix(out=self.mix)
            mix_and_step(
                self._x_t,
                self._mix_t,
                self.optimizer.direction(self._g_t),
                message.self_weight,
                step_size(self.ctx.params, t),
            )  # x ← w_ii x + (Σ_j w_ij x_j − α d)
        else:
            loss = self._gradient_step(t)
            message = self._send(t).wait()
            message.mix(out=self.mix)
            self.x *= message.self_weight
            self.x += self.mix
        self._mix_weight(message, 1.0)
        self._refresh_model()
        if self.overlap:
            self._send_ahead(t)
        return self.stats(loss)


class QuantizedPushSum(_PushSumBase):
    """Quantized push-sum SGD (Taheri, Mokhtari, Hassani, Pedarsani, ICML 2020).

    Per step t, with Q the compressor, γ the consensus step and s = t mod period the slot::

        g = ∇F_i(z_i);  x_i ← x_i − α g
        q_i = Q(x_i − x̂_i[s])                      # packed once; everyone decodes the same bytes
        send (q_i, y_i) to the step's out-neighbours; receive (q_j, y_j) from its in-neighbours
        x̂_i[s] ← x̂_i[s] + q_i;  x̂_j[s] ← x̂_j[s] + q_j
        x_i ← x_i + γ (Σ_j w_ij x̂_j[s] − (1 − w_ii) x̂_i[s])
        y_i ← y_i + γ (Σ_j w_ij y_j − (1 − w_ii) y_i)
        z_i = x_i / y_i

    On a static graph (one slot) this is exactly the paper's update, x_i += γ(Σ_{j∈N_in∪{i}} w_ij
    x̂_j − x̂_i). Decision (time-varying graphs): the public copy is kept per slot — every receiver
    of slot s sees exactly the messages that built x̂_i[s] — so sender and receivers stay
    bit-identical even though a pair only talks every few steps; mass stays conserved because the
    mass i gives away, (1 − w_ii) x̂_i[s] = Σ_k w_ki x̂_i[s], is what its receivers add. ``reference
    = false`` is the negative control of spec property 2: send Q(x_i) itself and replace (not
    accumulate) the copies, x̂_j = Q(x_j); the quantization noise then never vanishes. Decision
    (spec): γ ∈ (0, 1] is exposed; W and (1 − γ)I + γW share the Perron vector, so z still converges
    to the exact average, and γ < 1 stabilises coarse quantizers.

    ``overlap = true``: the reference copies allow it. The message of step t is q_i = Q(x_t −
    x̂_i[s]), built before the gradient step, and every copy — the sender's x̂_i[s] and the
    receivers' x̂_j[s] — is updated with the same decoded bytes when the message is used, in step t,
    so the copies stay bit-identical and the state at a step boundary holds no copy of a message
    still in flight::

        q_i = Q(x_i − x̂_i[s])  (sent at the end of step t − 1, in flight while g = ∇F_i(z_i) is
                               computed)
        x̂_i[s] ← x̂_i[s] + q_i;  x̂_j[s] ← x̂_j[s] + q_j
        x_i ← x_i + γ (Σ_j w_ij x̂_j[s] − (1 − w_ii) x̂_i[s]) − α d_i;  y_i as above;  z_i = x_i / y_i

    Σ_i x_i still changes only by −α Σ_i d_i (W is column stochastic).
    """

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.gamma = float(ctx.params["gamma"])
        self.reference = bool(ctx.params["reference"])
        dim, dtype, period = self.objective.dim, ctx.dtype, ctx.need_neighbors().period
        max_in = max(len(r.in_neighbors) for r in ctx.need_neighbors().rows)
        # x̂_i per slot, identical to every receiver's replica of it; x̂_j per slot and
        # in-neighbour.
        self.ref_out = np.zeros((period, dim), dtype=dtype)
        self.ref_in = np.zeros((period, max_in, dim), dtype=dtype)
        # Scratch, one vector: x − x̂, the decoded own message, each in-neighbour's decoded message
        # in turn (added into its copy: no (in-degree, dim) block of decoded messages), then the
        # mix.
        self.delta = np.zeros(dim, dtype=dtype)
        self._delta_t = torch.from_numpy(self.delta)

    def own_state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y, "ref_out": self.ref_out, "ref_in": self.ref_in}

    def _send(self, t: int) -> Message:
        ref_out = self.ref_out[t % self.ctx.need_neighbors().period]
        message = np.subtract(self.x, ref_out, out=self.delta) if self.reference else self.x
        return self.gossip.start(t, message, scalars=(self.y[0],))

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        slot = t % self.ctx.need_neighbors().period
        ref_out, ref_in = self.ref_out[slot], self.ref_in[slot]
        if self.overlap:
            message = self._overlapped_message(t)
            loss = self.objective.loss_grad(t)  # while q_i and y_i travel
            self._update_copy(ref_out, message.own(out=self.delta))
            message.wait()
        else:
            loss = self._gradient_step(t)
            message = self._send(t)
            # Apply our own message from its bytes while the neighbours' messages are in flight.
            self._update_copy(ref_out, message.own(out=self.delta))
            message.wait()
        senders = len(message.row.in_neighbors)
        for k in range(senders):  # one decoded message at a time, straight into its copy
            self._update_copy(ref_in[k], message.decode_one(k, out=self.delta))
        message.weighted_sum(ref_in[:senders], out=self.delta)  # the mix Σ_j w_ij x̂_j
        # x += γ (Σ_j w_ij x̂_j − (1 − w_ii) x̂_i)
        self._delta_t.add_(torch.from_numpy(ref_out), alpha=message.self_weight - 1.0)
        self._x_t.add_(self._delta_t, alpha=self.gamma)
        if self.overlap:  # the gradient of z_t, taken while the message travelled: x −= α d
            self._x_t.add_(
                self.optimizer.direction(self._g_t), alpha=-step_size(self.ctx.params, t)
            )
        self._mix_weight(message, self.gamma)
        self._refresh_model()
        if self.overlap:
            self._send_ahead(t)
        return self.stats(loss)

    def _update_copy(self, copy: np.ndarray, q: np.ndarray) -> None:
        if self.reference:
            copy += q
        else:
            np.copyto(copy, q)
