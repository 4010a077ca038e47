"""Gradient tracking over directed graphs: Push-Pull (AB), compressed Push-Pull (CPP) and
Push-DIGing.

The maths, the decisions and the tested properties: ``docs/algorithms/gradient-tracking.md``.

Each rank keeps a tracker y_i of the network's average gradient and steps along it instead of its
own gradient, which removes the bias that heterogeneous data (ζ²) causes in push-sum and D-PSGD:
with a constant step size these methods converge exactly on strongly convex problems.

Notation: R row stochastic (receiver i averages its in-neighbours; default R_ij = 1 / (d_i^in + 1)),
C column stochastic (sender j splits its mass; the topology's ``column_uniform`` weights C_ij = 1 /
(d_j^out + 1)), both on the step's graph with self-loops; g_i(x) the stochastic gradient of rank i
at x; d_i = opt(y_i) the local optimizer's direction for the tracker (sgd: d_i = y_i).

Order within one step t (every method): the gradient of the current model comes first and corrects
the tracker, y_i ← y_i + g_i(x_t) − g_i^old, so that the state at a step boundary holds the mixed
tracker of the previous step and the gradient it was corrected with (y = 0, g^old = 0 before step 0,
so y_i(0) = g_i(x_i(0)) as the papers start). Invariant at every boundary: Σ_i y_i = Σ_i g_i^old (C
is column stochastic, and compressed copies are bit-identical on every rank).
"""

from __future__ import annotations

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.dpsgd import mix_and_step
from mpidecent.algorithms.lr import step_size


class _Tracking(Algorithm):
    """The tracker y, the last gradient g^old, the per-rank tracking error, shared by every
    method."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        dim, dtype = self.objective.dim, ctx.dtype
        self.y = np.zeros(dim, dtype=dtype)  # the tracker (mixed, before this step's correction)
        self.g_old = np.zeros(dim, dtype=dtype)  # the gradient y was last corrected with
        self._y_t = torch.from_numpy(self.y)
        self.optimizer = self.add_optimizer()  # its direction d = opt(y) in place of the gradient
        self.tracking_error = float("nan")  # ‖ŷ_i − ḡ‖ at the last log point (before_log)

    def _track(self, t: int) -> float:
        """g = g_i(x_t) on step t's batch; y ← y + (g − g^old); g^old ← g. Returns the batch
        loss."""
        loss = self.objective.loss_grad(t)
        grads = self.objective.grads
        np.subtract(grads, self.g_old, out=self.g_old)  # g − g^old, then g^old ← g
        self.y += self.g_old
        np.copyto(self.g_old, grads)
        return loss

    def _direction(self) -> torch.Tensor:
        """d = opt(y): the local optimizer's step on the tracker (sgd: the tracker tensor
        itself)."""
        return self.optimizer.direction(self._y_t)

    def _tracker_estimate(self) -> np.ndarray:
        """This rank's estimate of the average gradient ḡ (the tracker, de-biased where the method
        needs it)."""
        return self.y

    def before_log(self) -> None:
        """Collective: ḡ = (1/n) Σ_i g_i^old (one all-reduce of a d-vector, at log points only),
        then this rank's tracking error ‖ŷ_i − ḡ‖."""
        mean = self.g_old.astype(np.float64)
        self.ctx.collectives.allreduce_sum(mean)
        mean /= self.ctx.size
        self.tracking_error = float(np.linalg.norm(self._tracker_estimate() - mean))

    def extra_metrics(self) -> dict[str, float]:
        return {"tracking_error": self.tracking_error}


def pull_weights(ctx: Context) -> tuple[tuple[float, ...], tuple[np.ndarray, ...]]:
    """R's row ``rank`` per slot: (self weights R_ii, in-weights R_ij in the row's order, in the
    state dtype). ``pull_weights = "row_uniform"``: 1 / (d_i^in + 1) everywhere in the row;
    ``"topology"``: the ``[topology]`` weights themselves (row stochastic, checked when the job is
    planned)."""
    rows = ctx.need_neighbors().rows
    if ctx.params["pull_weights"] == "topology":
        return tuple(r.self_weight for r in rows), tuple(
            np.asarray(r.in_weights, dtype=ctx.dtype) for r in rows
        )
    shares = [1.0 / (len(r.in_neighbors) + 1.0) for r in rows]
    return tuple(shares), tuple(
        np.full(len(r.in_neighbors), s, dtype=ctx.dtype) for r, s in zip(rows, shares, strict=True)
    )


class PushPull(_Tracking):
    """Push-Pull / AB (Pu, Shi, Xu, Nedić 2021; Xin & Khan 2018), exact or compressed (CPP, Song et
    al. 2021).

    Exact (``[compression] name = "identity"``), per step t::

        g = g_i(x_i);  y_i ← y_i + g − g^old;  g^old ← g;  d = opt(y_i)
        send x_i (stream "model", started before the gradient) and y_i (stream "tracker")
        x_i ← Σ_{j∈N_in∪{i}} R_ij x_j − α d          # pull models (AB: mix, then step)
        y_i ← Σ_{j∈N_in∪{i}} C_ij y_j                 # push trackers

    Compressed Push-Pull (an unbiased operator Q, consensus step γ ∈ (0, 1]), with public reference
    copies x̂, ŷ kept per slot of the schedule as in quantized push-sum (the sender's own, and a
    bit-identical replica of each in-neighbour's)::

        q^x_i = Q(x_i − x̂_i)  (sent before the gradient);  g, y_i, d as above;  q^y_i = Q(y_i − ŷ_i)
        x̂_j += q^x_j, ŷ_j += q^y_j  for j ∈ N_in ∪ {i}
        x_i ← x_i + γ (Σ_{j∈N_in∪{i}} R_ij x̂_j − x̂_i) − α d
        y_i ← y_i + γ (Σ_{j∈N_in∪{i}} C_ij ŷ_j − ŷ_i)

    Decision (CPP, arXiv 2106.07243 Algorithm 1): its reference update H ← (1 − a)H + a·X̂ is used
    with a = 1 (x̂ ← x̂ + q), the form quantized push-sum and CHOCO share; the two vectors travel as
    two streams with independent randomness, so the model's message leaves before the gradient is
    computed and travels while it is (two messages per out-edge per step; the bits are the two
    payloads). Decision (optimizers): the local optimizer acts on the tracker, d = opt(y_i), not on
    the gradient.

    ``normalize_tracker = true`` (an extension, off by default): y_i tends to n·u_i·ḡ, u the right
    Perron vector of C, so on an irregular digraph node i steps with α·n·u_i (0.18α to 2.16α on the
    quickstart's chord ring). With it the tracker message also carries a push-sum weight v_i
    (float64, v_i(0) = 1, v_i ← Σ_j C_ij v_j, or v_i ← v_i + γ(Σ_j C_ij v_j − v_i) compressed), v_i
    → n·u_i, and the step is d = opt(y_i / v_i): every node steps along ≈ ḡ. At a fixed point y_i /
    v_i = ḡ and consensus of x forces ḡ = 0, so convergence stays exact; Σ_i y_i = Σ_i g_i is
    unchanged.
    """

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.gamma = float(ctx.params["gamma"])
        self.compressed = self.compressor.name != "identity"
        dim, dtype = self.objective.dim, ctx.dtype
        self.x = self.objective.params  # the model: gradients are taken at x
        self._x_t = torch.from_numpy(self.x)
        self.normalize = bool(ctx.params["normalize_tracker"])
        self.model = self.stream("model")
        self.tracker = self.stream("tracker", scalars=1 if self.normalize else 0)  # [v_i][y_i]
        self.v = np.ones(1, dtype=np.float64)  # the tracker's push-sum weight (normalize_tracker)
        self.normalized = np.zeros(dim, dtype=dtype) if self.normalize else self.y  # y / v
        self._normalized_t = torch.from_numpy(self.normalized)
        self.pull_self, self.pull_in = pull_weights(ctx)
        self.mix = np.zeros(
            dim, dtype=dtype
        )  # Σ_j R_ij x_j, then Σ_j C_ij y_j (or the copies' mixes)
        self._mix_t = torch.from_numpy(self.mix)
        if self.compressed:
            period = ctx.need_neighbors().period
            max_in = max(len(r.in_neighbors) for r in ctx.need_neighbors().rows)
            # x̂_i, ŷ_i per slot (identical to every receiver's replica) and x̂_j, ŷ_j per slot and
            # in-neighbour.
            self.ref_x_out = np.zeros((period, dim), dtype=dtype)
            self.ref_x_in = np.zeros((period, max_in, dim), dtype=dtype)
            self.ref_y_out = np.zeros((period, dim), dtype=dtype)
            self.ref_y_in = np.zeros((period, max_in, dim), dtype=dtype)
            self.delta = np.zeros(dim, dtype=dtype)  # v − v̂, a decoded message, then a copies' mix
            self._delta_t = torch.from_numpy(self.delta)

    def own_state(self) -> dict[str, np.ndarray]:
        state = {"x": self.x, "y": self.y, "g_old": self.g_old} | (
            {"v": self.v} if self.normalize else {}
        )
        if self.compressed:
            state |= {
                "ref_x_out": self.ref_x_out,
                "ref_x_in": self.ref_x_in,
                "ref_y_out": self.ref_y_out,
                "ref_y_in": self.ref_y_in,
            }
        return state

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        loss = self._compressed_step(t) if self.compressed else self._exact_step(t)
        return self.stats(loss)

    def _scalars(self) -> tuple[float, ...]:
        return (self.v[0],) if self.normalize else ()

    def _direction(self) -> torch.Tensor:
        """d = opt(y) (normalize_tracker: opt(y / v))."""
        if self.normalize:
            np.divide(self.y, self.v[0], out=self.normalized)
        return self.optimizer.direction(self._normalized_t)

    def _mix_weight(self, message, gamma: float) -> None:
        """v ← v + γ (Σ_{j∈N_in∪{i}} C_ij v_j − v), in float64 (normalize_tracker)."""
        if self.normalize:
            mixed = message.self_weight * self.v[0] + message.mixed_scalar(0)
            self.v[0] += gamma * (mixed - self.v[0])

    def _exact_step(self, t: int) -> float:
        models = self.model.start(t, self.x)
        loss = self._track(t)  # while x_i travels
        trackers = self.tracker.start(t, self.y, scalars=self._scalars())
        direction = self._direction()
        slot = t % self.ctx.need_neighbors().period
        models.wait().mix(out=self.mix, weights=self.pull_in[slot])
        mix_and_step(
            self._x_t, self._mix_t, direction, self.pull_self[slot], step_size(self.ctx.params, t)
        )  # x ← R_ii x + (Σ_j R_ij x_j − α d)
        trackers.wait().mix(out=self.mix)
        self.y *= trackers.self_weight  # y ← C_ii y + Σ_j C_ij y_j
        self.y += self.mix
        self._mix_weight(trackers, 1.0)
        return loss

    def _compressed_step(self, t: int) -> float:
        slot = t % self.ctx.need_neighbors().period
        models = self.model.start(t, np.subtract(self.x, self.ref_x_out[slot], out=self.delta))
        loss = self._track(t)  # while q^x travels
        trackers = self.tracker.start(
            t, np.subtract(self.y, self.ref_y_out[slot], out=self.delta), scalars=self._scalars()
        )
        direction = self._direction()
        self._consensus(
            models,
            self.ref_x_out[slot],
            self.ref_x_in[slot],
            self._x_t,
            self.pull_self[slot],
            self.pull_in[slot],
        )
        self._x_t.add_(direction, alpha=-step_size(self.ctx.params, t))
        self._consensus(
            trackers,
            self.ref_y_out[slot],
            self.ref_y_in[slot],
            self._y_t,
            trackers.self_weight,
            None,
        )
        self._mix_weight(trackers, self.gamma)
        return loss

    def _consensus(
        self,
        message,
        ref_out: np.ndarray,
        ref_in: np.ndarray,
        v_t: torch.Tensor,
        self_weight: float,
        weights: np.ndarray | None,
    ) -> None:
        """Copies += the message's decoded bytes (own and in-neighbours'), then
        v ← v + γ (Σ_{j∈N_in} w_ij v̂_j − (1 − w_ii) v̂_i)."""
        ref_out += message.own(out=self.delta)
        message.wait()
        senders = len(message.row.in_neighbors)
        for k in range(senders):  # one decoded message at a time, straight into its copy
            ref_in[k] += message.decode_one(k, out=self.delta)
        message.weighted_sum(ref_in[:senders], out=self.delta, weights=weights)
        self._delta_t.add_(torch.from_numpy(ref_out), alpha=self_weight - 1.0)
        v_t.add_(self._delta_t, alpha=self.gamma)

    def model_view(self) -> np.ndarray:
        return self.x

    def _tracker_estimate(self) -> np.ndarray:
        return self.y / self.v[0] if self.normalize else self.y

    def extra_metrics(self) -> dict[str, float]:
        return {
            **super().extra_metrics(),
            **({"push_sum_weight": float(self.v[0])} if self.normalize else {}),
        }


class PushDIGing(_Tracking):
    """Push-DIGing (Nedić, Olshevsky, Shi 2017): push-sum SGD whose step follows a push-sum tracker,
    column-stochastic C only, static or time-varying graphs. Per step t::

        g = g_i(z_i);  y_i ← y_i + g − g^old;  g^old ← g;  d = opt(y_i)
        u_i ← u_i − α d
        send (u_i, y_i, w_i) (one message: two vectors and the float64 weight w_i)
        u_i ← Σ_{j∈N_in∪{i}} C_ij u_j,  y_i ← Σ_j C_ij y_j,  w_i ← Σ_j C_ij w_j
        z_i = u_i / w_i

    which is the paper's u(k+1) = C(u(k) − α y(k)), v(k+1) = C v(k), x = u / v,
    y(k+1) = C y(k) + ∇f(x(k+1)) − ∇f(x(k)). The tracker's estimate of ḡ is y_i / w_i.
    """

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.z = self.objective.params  # the de-biased model: gradients are taken here
        self.u = self.z.copy()  # the mass; every node starts from its initial model with w = 1
        self.w = np.ones(1, dtype=np.float64)
        self._u_t = torch.from_numpy(self.u)
        self.mix = np.zeros(self.objective.dim, dtype=ctx.dtype)
        self.push = self.stream("push", vectors=2, scalars=1)  # [w_i][u_i][y_i]

    def own_state(self) -> dict[str, np.ndarray]:
        return {"u": self.u, "y": self.y, "w": self.w, "g_old": self.g_old}

    def step(self, t: int) -> StepStats:
        self.watch.restart()
        loss = self._track(t)
        self._u_t.add_(self._direction(), alpha=-step_size(self.ctx.params, t))
        message = self.push.start(t, (self.u, self.y), scalars=(self.w[0],)).wait()
        for field, v in enumerate((self.u, self.y)):  # v ← C_ii v + Σ_j C_ij v_j
            message.mix(out=self.mix, field=field)
            v *= message.self_weight
            v += self.mix
        self.w[0] = message.self_weight * self.w[0] + message.mixed_scalar(0)
        self.after_restore()
        return self.stats(loss)

    def after_restore(self) -> None:
        np.divide(self.u, self.w[0], out=self.z)

    def _tracker_estimate(self) -> np.ndarray:
        return self.y / self.w[0]

    def model_view(self) -> np.ndarray:
        return self.z

    def extra_metrics(self) -> dict[str, float]:
        return {**super().extra_metrics(), "push_sum_weight": float(self.w[0])}
