"""Push-sum SGD over directed graphs: exact (SGP) and quantized (Taheri et al., ICML 2020).

Specs: ``specs/baselines.md`` (SGP) and ``specs/quantized-push-sum.md``. W is column stochastic and is
applied by the receiver (row ``rank`` of W, which every rank knows from the shared topology), so one
message goes to all out-neighbours. Wire format of every message (little-endian)::

    [ y_i : float64, 8 bytes ][ packed payload from the compressor ]

Bits per out-edge = compressor bits + 64 (y travels exactly).

State per rank: mass x_i, push-sum weight y_i (float64, starts at 1), de-biased model z_i = x_i / y_i
(the objective's flat parameter buffer, where gradients are taken). Quantized push-sum also keeps its
public reference copy x̂_i and a replica x̂_j of every in-neighbour's reference copy; sender and
receivers update them from the same bytes, so the replicas stay bit-identical.
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import LR_PARAMS, Algorithm, Context, StepStats, Stopwatch, register, step_size
from mpidecent.params import Param
from mpidecent.rng import RandomKey

_Y_BYTES = 8  # the exact float64 push-sum weight at the head of every message
DEBIAS = Param("debias", bool, True,
               "take gradients at and report z = x / y (false: use the raw mass x; a negative control that "
               "is biased on irregular digraphs)")


class _PushSumBase(Algorithm):
    """State, message layout and read-out shared by exact and quantized push-sum."""

    graph = "directed"
    weights_property = "column_stochastic"
    default_weights = "column_uniform"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.debias = bool(ctx.params["debias"])
        dim, dtype = self.objective.dim, ctx.dtype
        self.z = self.objective.params  # gradients are taken here; torch's parameters view this memory
        self.x = self.z.copy()  # mass; every node starts from the same initial model with y = 1
        self.y = np.ones(1, dtype=np.float64)
        self._x_t = torch.from_numpy(self.x)
        self._g_t = torch.from_numpy(self.objective.grads)
        nbr = ctx.neighborhood
        assert nbr is not None, "push-sum needs a neighbourhood"
        self.out_degree = len(nbr.out_neighbors)
        self.in_neighbors = nbr.in_neighbors
        self.self_weight = float(ctx.self_weight)
        self.in_weights = np.asarray(ctx.in_weights, dtype=dtype)  # matches the state dtype for BLAS
        self.in_weights_y = np.asarray(ctx.in_weights, dtype=np.float64)
        nbytes = _Y_BYTES + self.compressor.nbytes
        self.send_buf = np.zeros(nbytes, dtype=np.uint8)
        self.send_y = self.send_buf[:_Y_BYTES].view("<f8")
        self.send_payload = self.send_buf[_Y_BYTES:]
        self.exchange = nbr.exchange(nbytes, nbytes)
        self.received = np.zeros((len(self.in_neighbors), dim), dtype=dtype)  # decoded payloads, one row each
        self.mix = np.zeros(dim, dtype=dtype)

    def _gradient_step(self, t: int) -> float:
        loss = self.objective.loss_grad(t)  # at z (or at x when debias is off: z holds a copy of x)
        self._x_t.add_(self._g_t, alpha=-step_size(self.ctx.params, t))
        return loss

    def _received_weights(self, recv: np.ndarray) -> np.ndarray:
        return recv[:, :_Y_BYTES].view("<f8")[:, 0]

    def _mix_weight(self, recv: np.ndarray, gamma: float) -> None:
        """y ← y + γ (Σ_{j∈N_in∪{i}} w_ij y_j − y), all in float64."""
        mixed = self.self_weight * self.y[0] + float(self.in_weights_y @ self._received_weights(recv))
        self.y[0] += gamma * (mixed - self.y[0])

    def _refresh_model(self) -> None:
        if self.debias:
            np.divide(self.x, self.y[0], out=self.z)
        else:
            np.copyto(self.z, self.x)

    def model_view(self) -> np.ndarray:
        return self.z

    def extra_metrics(self) -> dict[str, float]:
        return {"push_sum_weight": float(self.y[0])}

    def _stats(self, loss: float, packed_bits: int, sw: Stopwatch) -> StepStats:
        bits_per_edge = packed_bits + 8 * _Y_BYTES
        return StepStats(loss, self.out_degree * bits_per_edge, self.out_degree * self.send_buf.nbytes,
                         self.out_degree, sw.compute_s, sw.comm_s, self.nonfinite)


@register
class PushSum(_PushSumBase):
    """Exact push-sum SGD (Stochastic Gradient Push), the baseline of the push-sum family.

    Per step: g = ∇F_i(z_i); x_i ← x_i − α g; send (x_i, y_i) to out-neighbours;
    x_i ← Σ_{j∈N_in∪{i}} w_ij x_j, y_i ← Σ_j w_ij y_j; z_i = x_i / y_i. The payload is x_i at the wire
    precision of the identity compressor (the state dtype by default, so Σ_i x_i is conserved exactly
    up to rounding).
    """

    name = "push_sum"
    doc = "exact push-sum SGD (SGP) over a directed graph"
    params = (*LR_PARAMS, DEBIAS)

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y}

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        loss = self._gradient_step(t)
        key = RandomKey(self.ctx.seed, self.ctx.rank, t)
        self.send_y[0] = self.y[0]
        packed = self.encode_or_flag(self.x, key, self.send_payload)
        sw.compute()
        self.exchange.start(self.send_buf)
        recv = self.exchange.wait()
        sw.comm()
        for k, sender in enumerate(self.in_neighbors):  # loop over messages; each decode is vectorised
            self.compressor.decode(recv[k, _Y_BYTES:], RandomKey(self.ctx.seed, int(sender), t),
                                   out=self.received[k])
        np.dot(self.in_weights, self.received, out=self.mix)
        self.x *= self.self_weight
        self.x += self.mix
        self._mix_weight(recv, 1.0)
        self._refresh_model()
        sw.compute()
        return self._stats(loss, packed.bits, sw)


@register
class QuantizedPushSum(_PushSumBase):
    """Quantized push-sum SGD (Taheri, Mokhtari, Hassani, Pedarsani, ICML 2020).

    Per step, with Q the compressor and γ the consensus step::

        g = ∇F_i(z_i);  x_i ← x_i − α g
        q_i = Q(x_i − x̂_i)                        # packed once; everyone decodes the same bytes
        send (q_i, y_i) to out-neighbours; receive (q_j, y_j) from in-neighbours
        x̂_j ← x̂_j + q_j  for j ∈ N_in ∪ {i}
        x_i ← x_i + γ (Σ_j w_ij x̂_j − x̂_i);  y_i ← y_i + γ (Σ_j w_ij y_j − y_i);  z_i = x_i / y_i

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
        self.ref_self = np.zeros(dim, dtype=dtype)  # x̂_i, identical to every out-neighbour's replica
        self.ref_in = np.zeros((len(self.in_neighbors), dim), dtype=dtype)  # x̂_j, one row per in-neighbour
        self.delta = np.zeros(dim, dtype=dtype)  # scratch: x − x̂, then the decoded own message
        self._mix_t = torch.from_numpy(self.mix)
        self._ref_self_t = torch.from_numpy(self.ref_self)

    def state(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y, "ref_self": self.ref_self, "ref_in": self.ref_in}

    def step(self, t: int) -> StepStats:
        sw = Stopwatch()
        loss = self._gradient_step(t)
        if self.reference:
            np.subtract(self.x, self.ref_self, out=self.delta)
            message = self.delta
        else:
            message = self.x
        self.send_y[0] = self.y[0]
        packed = self.encode_or_flag(message, RandomKey(self.ctx.seed, self.ctx.rank, t), self.send_payload)
        sw.compute()
        self.exchange.start(self.send_buf)
        sw.comm()
        # Apply our own message from its bytes while the neighbours' messages are in flight.
        own = self.compressor.decode(self.send_payload, RandomKey(self.ctx.seed, self.ctx.rank, t), out=self.delta)
        self._update_copy(self.ref_self, own)
        sw.compute()
        recv = self.exchange.wait()
        sw.comm()
        for k, sender in enumerate(self.in_neighbors):
            q = self.compressor.decode(recv[k, _Y_BYTES:], RandomKey(self.ctx.seed, int(sender), t),
                                       out=self.received[k])
            self._update_copy(self.ref_in[k], q)
        np.dot(self.in_weights, self.ref_in, out=self.mix)
        # x += γ (w_ii x̂_i + Σ_j w_ij x̂_j − x̂_i)
        self._mix_t.add_(self._ref_self_t, alpha=self.self_weight - 1.0)
        self._x_t.add_(self._mix_t, alpha=self.gamma)
        self._mix_weight(recv, self.gamma)
        self._refresh_model()
        sw.compute()
        return self._stats(loss, packed.bits, sw)

    def _update_copy(self, copy: np.ndarray, q: np.ndarray) -> None:
        if self.reference:
            copy += q
        else:
            np.copyto(copy, q)
