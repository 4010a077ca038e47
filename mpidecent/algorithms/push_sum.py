"""Push-sum SGD over directed graphs: exact (SGP) and quantized (Taheri et al., ICML 2020).

Specs: ``specs/baselines.md`` (SGP) and ``specs/quantized-push-sum.md``. W is column stochastic and is
applied by the receiver (row ``rank`` of W, which every rank knows from the shared topology), so one
message per step goes to all out-neighbours of the step. Wire format of every message (little-endian)::

    [ y_i : float64, 8 bytes ][ packed payload from the compressor ]

Bits per out-edge = compressor bits + 64 (y travels exactly).

State per rank: mass x_i, push-sum weight y_i (float64, starts at 1), de-biased model z_i = x_i / y_i
(the objective's flat parameter buffer, where gradients are taken).

Graphs may be time-varying (a periodic schedule such as one_peer_exponential): step t uses the mixing
row of slot t mod period, and the exchange tags messages with the step.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import (LR_PARAMS, Algorithm, Context, StepStats, Stopwatch, decode_messages,
                                       register, step_size)
from mpidecent.params import Param
from mpidecent.rng import RandomKey

_Y_BYTES = 8  # the exact float64 push-sum weight at the head of every message
DEBIAS = Param("debias", bool, True,
               "take gradients at and report z = x / y (false: use the raw mass x; a negative control that "
               "is biased on irregular digraphs)")


class _PushSumBase(Algorithm):
    """State, message layout, weight mixing and read-out shared by exact and quantized push-sum."""

    graph = "directed"
    weights_property = "column_stochastic"
    default_weights = "column_uniform"
    time_varying = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.debias = bool(ctx.params["debias"])
        dim, dtype = self.objective.dim, ctx.dtype
        self.z = self.objective.params  # gradients are taken here; torch's parameters view this memory
        self.x = self.z.copy()  # mass; every node starts from its initial model with y = 1
        self.y = np.ones(1, dtype=np.float64)
        self._x_t = torch.from_numpy(self.x)
        self._g_t = torch.from_numpy(self.objective.grads)
        nbr = ctx.neighborhood
        assert nbr is not None, "push-sum needs a neighbourhood"
        # Per slot: in-weights in the state dtype (for BLAS with the payloads) and in float64 (for y).
        self._in_w = [np.asarray(r.in_weights, dtype=dtype) for r in ctx.rows]
        self._in_w64 = [np.asarray(r.in_weights, dtype=np.float64) for r in ctx.rows]
        nbytes = _Y_BYTES + self.compressor.nbytes
        self.send_buf = np.zeros(nbytes, dtype=np.uint8)
        self.send_y = self.send_buf[:_Y_BYTES].view("<f8")
        self.send_payload = self.send_buf[_Y_BYTES:]
        self.exchange = nbr.exchange(nbytes, nbytes)
        max_in = max(len(r.in_neighbors) for r in ctx.rows)
        self.received = np.zeros((max_in, dim), dtype=dtype)  # decoded payloads, one row per in-neighbour
        self.mix = np.zeros(dim, dtype=dtype)
        self._mix_t = torch.from_numpy(self.mix)

    def _gradient_step(self, t: int) -> float:
        loss = self.objective.loss_grad(t)  # at z (or at x when debias is off: z holds a copy of x)
        self._x_t.add_(self._g_t, alpha=-step_size(self.ctx.params, t))
        return loss

    def _mix_weight(self, t: int, recv: np.ndarray, gamma: float) -> None:
        """y ← y + γ (Σ_{j∈N_in∪{i}} w_ij y_j − y), all in float64."""
        row = self.ctx.row(t)
        received = recv[:, :_Y_BYTES].view("<f8")[:, 0]
        mixed = row.self_weight * self.y[0] + float(self._in_w64[t % self.ctx.period] @ received)
        self.y[0] += gamma * (mixed - self.y[0])

    def _decode_received(self, t: int, recv: np.ndarray) -> np.ndarray:
        """Decode every in-neighbour's payload of step t into ``received`` rows; returns the rows used."""
        return decode_messages(self.compressor, recv, self.ctx.row(t).in_neighbors, self.ctx.seed, t,
                               self.received, offset=_Y_BYTES)

    def _refresh_model(self) -> None:
        if self.debias:
            np.divide(self.x, self.y[0], out=self.z)
        else:
            np.copyto(self.z, self.x)

    def model_view(self) -> np.ndarray:
        return self.z

    def after_restore(self) -> None:
        self._refresh_model()

    def extra_metrics(self) -> dict[str, float]:
        return {"push_sum_weight": float(self.y[0])}

    def _stats(self, t: int, loss: float, packed_bits: int, sw: Stopwatch) -> StepStats:
        out_degree = len(self.ctx.row(t).out_neighbors)
        bits_per_edge = packed_bits + 8 * _Y_BYTES
        return StepStats(loss, out_degree * bits_per_edge, out_degree * self.send_buf.nbytes, out_degree,
                         sw.compute_s, sw.comm_s, self.nonfinite)


@register
class PushSum(_PushSumBase):
    """Exact push-sum SGD (Stochastic Gradient Push), the baseline of the push-sum family.

    Per step: g = ∇F_i(z_i); x_i ← x_i − α g; send (x_i, y_i) to out-neighbours;
    x_i ← Σ_{j∈N_in∪{i}} w_ij x_j, y_i ← Σ_j w_ij y_j; z_i = x_i / y_i. The payload is x_i at the wire
    precision of the identity compressor (the state dtype by default, so Σ_i x_i is conserved exactly
    up to rounding).
    """

    name = "push_sum"
    doc = "exact push-sum SGD (SGP) over a directed, possibly time-varying graph"
    params = (*LR_PARAMS, DEBIAS)

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y}

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        loss = self._gradient_step(t)
        self.send_y[0] = self.y[0]
        packed = self.encode_or_flag(self.x, RandomKey(self.ctx.seed, self.ctx.rank, t), self.send_payload)
        sw.compute()
        self.exchange.start(self.send_buf, t)
        recv = self.exchange.wait()
        sw.comm()
        received = self._decode_received(t, recv)
        np.dot(self._in_w[t % self.ctx.period], received, out=self.mix)
        self.x *= self.ctx.row(t).self_weight
        self.x += self.mix
        self._mix_weight(t, recv, 1.0)
        self._refresh_model()
        sw.compute()
        return self._stats(t, loss, packed.bits, sw)


@register
class QuantizedPushSum(_PushSumBase):
    """Quantized push-sum SGD (Taheri, Mokhtari, Hassani, Pedarsani, ICML 2020).

    Per step t, with Q the compressor, γ the consensus step and s = t mod period the slot::

        g = ∇F_i(z_i);  x_i ← x_i − α g
        q_i = Q(x_i − x̂_i[s])                      # packed once; everyone decodes the same bytes
        send (q_i, y_i) to the step's out-neighbours; receive (q_j, y_j) from its in-neighbours
        x̂_i[s] ← x̂_i[s] + q_i;  x̂_j[s] ← x̂_j[s] + q_j
        x_i ← x_i + γ (Σ_j w_ij x̂_j[s] − (1 − w_ii) x̂_i[s]);  y_i ← y_i + γ (Σ_j w_ij y_j − (1 − w_ii) y_i)
        z_i = x_i / y_i

    On a static graph (one slot) this is exactly the paper's update, x_i += γ(Σ_{j∈N_in∪{i}} w_ij x̂_j − x̂_i).
    Decision (time-varying graphs): the public copy is kept per slot — every receiver of slot s sees
    exactly the messages that built x̂_i[s] — so sender and receivers stay bit-identical even though a
    pair only talks every few steps; mass stays conserved because the mass i gives away,
    (1 − w_ii) x̂_i[s] = Σ_k w_ki x̂_i[s], is what its receivers add.
    ``reference = false`` is the negative control of spec property 2: send Q(x_i) itself and replace
    (not accumulate) the copies, x̂_j = Q(x_j); the quantization noise then never vanishes.
    Decision (spec): γ ∈ (0, 1] is exposed; W and (1 − γ)I + γW share the Perron vector, so z still
    converges to the exact average, and γ < 1 stabilises coarse quantizers.
    """

    name = "quantized_push_sum"
    doc = "quantized push-sum SGD with reference copies (Taheri et al. 2020) over a directed graph"
    params = (
        *LR_PARAMS,
        Param("gamma", float, 1.0, "consensus step size γ ∈ (0, 1]", minimum=0.0, exclusive_minimum=True,
              maximum=1.0),
        Param("reference", bool, True,
              "quantize x − x̂ against reference copies (false: send Q(x) directly, a negative control)"),
        DEBIAS,
    )
    compressors = None

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.gamma = float(ctx.params["gamma"])
        self.reference = bool(ctx.params["reference"])
        dim, dtype = self.objective.dim, ctx.dtype
        # x̂_i per slot, identical to every receiver's replica of it; x̂_j per slot and in-neighbour.
        self.ref_out = np.zeros((ctx.period, dim), dtype=dtype)
        self.ref_in = np.zeros((ctx.period, self.received.shape[0], dim), dtype=dtype)
        self.delta = np.zeros(dim, dtype=dtype)  # scratch: x − x̂, then the decoded own message

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y, "ref_out": self.ref_out, "ref_in": self.ref_in}

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        slot, key = t % self.ctx.period, RandomKey(self.ctx.seed, self.ctx.rank, t)
        ref_out, ref_in = self.ref_out[slot], self.ref_in[slot]
        loss = self._gradient_step(t)
        if self.reference:
            np.subtract(self.x, ref_out, out=self.delta)
            message = self.delta
        else:
            message = self.x
        self.send_y[0] = self.y[0]
        packed = self.encode_or_flag(message, key, self.send_payload)
        sw.compute()
        self.exchange.start(self.send_buf, t)
        sw.comm()
        # Apply our own message from its bytes while the neighbours' messages are in flight.
        self._update_copy(ref_out, self.compressor.decode(self.send_payload, key, out=self.delta))
        sw.compute()
        recv = self.exchange.wait()
        sw.comm()
        received = self._decode_received(t, recv)
        senders = len(received)
        self._update_copy(ref_in[:senders], received)
        np.dot(self._in_w[slot], ref_in[:senders], out=self.mix)
        # x += γ (Σ_j w_ij x̂_j − (1 − w_ii) x̂_i)
        self._mix_t.add_(torch.from_numpy(ref_out), alpha=self.ctx.row(t).self_weight - 1.0)
        self._x_t.add_(self._mix_t, alpha=self.gamma)
        self._mix_weight(t, recv, self.gamma)
        self._refresh_model()
        sw.compute()
        return self._stats(t, loss, packed.bits, sw)

    def _update_copy(self, copy: np.ndarray, q: np.ndarray) -> None:
        if self.reference:
            copy += q
        else:
            np.copyto(copy, q)
