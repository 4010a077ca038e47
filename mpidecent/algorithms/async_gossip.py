"""Asynchronous randomized gossip with version vectors and staleness, on one-sided MPI windows.

Algorithm: ``docs/algorithms/async-gossip.md`` (Mitra & Ulukus 2024). Each rank publishes its
model x_i, its version vector V_i and its round counter in one ``Win.Allocate`` window
(``comm/window.py``) and runs two interleaved processes without any barrier between log points:

    update:  rounds of K local SGD steps on a working copy w (``gossip/rounds.py``); when a round
             completes, x ← x_mixed + (w − x_before), V_i[i] += 1, republish (exclusive lock, own
             window)
    mixing:  at the gossip times of the rank's seeded Exp(λ) clock, read a random peer j (shared
             lock, Get, Unlock), x ← ½(x + x_j), V_i ← max(V_i, V_j) (``gossip/versions.py``),
             republish

One runner step is one local SGD step: ``[run] steps`` is every rank's SGD budget (``steps / K``
rounds), so the gradient work equals a synchronous algorithm's at the same ``steps``.

Time (``clock``). ``logical``: round r lasts c + Exp(μ) logical units, its K SGD steps split it
evenly, and the gossips with times up to the end of a step are done right after that step (those of
the last step before the round completes) — each rank's event order is reproducible from (seed,
rank) and equals the simulator's user i (``gossip/clock.py``); what a read returns still depends on
the peers' real progress. ``wall``: gossip times are Exp(λ) seconds since the start, checked after
every SGD step and during a slow rank's sleep, at most one overdue gossip per check (the memoryless
clock restarts rather than queueing gossips missed while busy).

Stopping. Every rank runs its own SGD budget; ``deadline_s`` > 0 adds a shared wall-clock deadline
after which ranks stop working (their remaining runner steps are no-ops). The runner only meets the
ranks at log and checkpoint boundaries (``status_every_step = False``); a log point waits for every
rank to reach that step, so with slow ranks log rarely (``log_every = steps``) or use a deadline.
The window belongs to the one-sided pattern (``comm/patterns.py``), which frees it collectively at
the end of the run; every lock is released inside the call that took it.

Metrics (per rank, at log points): ``staleness_mean`` / ``staleness_max`` — mean and max over the
samples since the previous log point of S_j^i = N_j^j − V_i[j] over peers j ≠ i, sampled after every
``sample_every`` rounds by reading every rank's round counter; ``updates`` (rounds completed),
``gossips``, ``get_bytes`` / ``put_bytes`` (Get traffic pulled, bytes published into the own
window), ``lock_wait_s``, ``logical_time``, ``arrive_s`` (seconds from the start until this rank
finished its last step before the log point: a slow rank arrives late, the others do not wait for it
in between) and ``version_violations`` (a peer whose counter went backwards, V_i[j] > N_j^j, or a
non-monotone V_i at a sample: must stay 0). ``bytes_sent`` counts the Get traffic this rank pulled
(what crossed the network for it), ``bits_sent`` = 8 × that, ``messages_sent`` the Gets. /events at
the end: ``version_vectors`` (n, n), row i = V_i, and ``staleness_samples`` (n, S, 4): each rank's
samples (wall s, logical time, mean, max), NaN-padded.

Checkpoints: ``state()`` holds the model, working copy, round start, version vector, every counter
and the logical clock's position (the random state: counter-based draws); a resumed run continues
each rank's event sequence exactly, but not bit for bit the models, which depend on the real
interleaving of reads (in either clock mode).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from mpidecent.algorithms.base import Algorithm, Context, StepStats
from mpidecent.algorithms.lr import step_size
from mpidecent.comm.messages import Stopwatch
from mpidecent.gossip.clock import RankClock
from mpidecent.gossip.rounds import DeltaRound
from mpidecent.gossip.versions import gossip_rate, inconsistencies, merge_versions, staleness_stats

# Indices into the int64 counters of state().
(
    _STEPS,
    _IN_ROUND,
    _ROUND,
    _GOSSIP_K,
    _GOSSIPS,
    _UPDATES,
    _SAMPLES,
    _STORED,
    _STRIDE,
    _VIOLATIONS,
    _STOPPED,
) = range(11)
# Indices into the float64 times/accumulators of state().
(
    _ROUND_START,
    _ROUND_LEN,
    _NEXT_GOSSIP,
    _ELAPSED,
    _LAST_LOSS,
    _LOCK_S,
    _ARRIVE,
    _SUM_MEAN,
    _INTERVAL_N,
    _INTERVAL_MAX,
    _GET_BYTES,
    _PUT_BYTES,
    _NOW,
) = range(13)
SAMPLE_ROWS = (
    4096  # stored staleness samples per rank; beyond, every other one is dropped (stride doubles)
)


class AsyncGossip(Algorithm):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        p, n, rank = ctx.params, ctx.size, ctx.rank
        self.n, self.rank = n, rank
        self.K = int(p["local_steps"])
        self.logical = p["clock"] == "logical"
        self.deadline_s = float(p["deadline_s"])
        self.sample_every = int(p["sample_every"])
        self.rate = gossip_rate(p["gossip_rate"], p["rate_policy"], n)
        slow = rank in p["slow_ranks"]
        self.slow = slow
        self.clock = RankClock(
            ctx.seed,
            rank,
            n,
            self.rate,
            p["round_shift"],
            p["round_rate"],
            ctx.peers,
            p["slow_delay_shift_s"] if slow else 0.0,
            p["slow_delay_mean_s"] if slow else 0.0,
        )
        self.w = self.objective.params  # SGD runs here (gradients are taken at w)
        self.x = self.w.copy()  # the published, mixed model
        self.round = DeltaRound(self.x, self.w)
        self.versions = np.zeros(n, dtype=np.int64)
        self.counters = np.zeros(11, dtype=np.int64)
        self.counters[_STRIDE] = 1
        self.times = np.zeros(13, dtype=np.float64)
        self.times[_LAST_LOSS] = math.nan
        self.last_seen = np.zeros(n, dtype=np.int64)  # newest N_j^j read from each peer (monotone)
        self.prev_versions = np.zeros(n, dtype=np.int64)  # V_i at the previous sample (monotone)
        self.rounds_seen = np.zeros(n, dtype=np.int64)  # the counters read at the previous sample
        self.samples = np.full((SAMPLE_ROWS, 4), np.nan)
        self._counts = np.zeros(n, dtype=np.int64)
        self._view = np.zeros_like(self.x)
        self._w_t, self._g_t = torch.from_numpy(self.w), torch.from_numpy(self.objective.grads)
        self.optimizer = self.add_optimizer(p)  # the local SGD steps' direction
        self._start: float | None = None
        self._gap_peer = self.clock.gossip(0)
        self.times[_NEXT_GOSSIP] = self._gap_peer[0]
        self._logged = self._metrics(0.0, 0.0)
        self.window = ctx.need_window()
        self._publish()
        ctx.collectives.barrier()  # no rank reads a window before its owner has published it

    # ---- state -----------------------------------------------------------------------------------

    def own_state(self) -> dict[str, np.ndarray]:
        return {
            "x": self.x,
            "w": self.w,
            "x_before": self.round.before,
            "versions": self.versions,
            "counters": self.counters,
            "times": self.times,
            "last_seen": self.last_seen,
            "prev_versions": self.prev_versions,
            "rounds_seen": self.rounds_seen,
            "samples": self.samples,
        }

    def after_restore(self) -> None:
        """Resume: the clock continues from its counters; republish, then wait until every rank
        has."""
        self.round.active = bool(self.counters[_IN_ROUND])
        self._gap_peer = self.clock.gossip(int(self.counters[_GOSSIP_K]))
        self.window.get_bytes, self.window.put_bytes = (
            int(self.times[_GET_BYTES]),
            int(self.times[_PUT_BYTES]),
        )
        self.window.lock_wait_s = float(self.times[_LOCK_S])
        self._start = None
        self._publish()
        self.ctx.collectives.barrier()

    # ---- the step --------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        assert self._start is not None  # step() sets it before anything in the step reads the clock
        return time.perf_counter() - self._start

    def step(self, t: int) -> StepStats:
        c, times = self.counters, self.times
        if self._start is None:
            self._start = time.perf_counter() - times[_ELAPSED]
        if c[_STOPPED] or (self.deadline_s and self._elapsed() >= self.deadline_s):
            c[_STOPPED] = 1  # the shared deadline passed: the remaining runner steps do nothing
            return StepStats(float(times[_LAST_LOSS]) if c[_STEPS] else 0.0, 0, 0, 0, 0.0, 0.0)
        sw = self.watch.restart()
        gets, got = self.window.gets, self.window.get_bytes
        if c[_IN_ROUND] == 0:  # a round starts: x_before ← x, w ← x
            self.round.begin()
            times[_ROUND_LEN] = self.clock.round_length(int(c[_ROUND]))
        loss = self.objective.loss_grad(int(c[_STEPS]))
        self.optimizer.descend(self._w_t, self._g_t, step_size(self.ctx.params, int(c[_STEPS])))
        c[_STEPS] += 1
        c[_IN_ROUND] += 1
        times[_LAST_LOSS] = loss
        sw.compute()
        last = c[_IN_ROUND] == self.K
        if self.logical:
            until = times[_ROUND_START] + (
                times[_ROUND_LEN] if last else times[_ROUND_LEN] * c[_IN_ROUND] / self.K
            )
            times[_NOW] = until
        else:
            until = times[_NOW] = self._elapsed()
        self._gossip_until(until, sw)
        if last:
            self._complete_round(sw)
        now = time.perf_counter()
        times[_ELAPSED] = times[_ARRIVE] = now - self._start
        times[_GET_BYTES], times[_PUT_BYTES] = self.window.get_bytes, self.window.put_bytes
        times[_LOCK_S] = self.window.lock_wait_s
        pulled = self.window.get_bytes - got
        return StepStats(loss, 8 * pulled, pulled, self.window.gets - gets, sw.compute_s, sw.comm_s)

    def _gossip_until(self, until: float, sw: Stopwatch) -> None:
        """Logical clock: every gossip with time ≤ ``until``; wall clock: at most one overdue
        gossip."""
        c, times = self.counters, self.times
        while times[_NEXT_GOSSIP] <= until:
            self._pull(self._gap_peer[1], sw)
            c[_GOSSIP_K] += 1
            self._gap_peer = self.clock.gossip(int(c[_GOSSIP_K]))
            if self.logical:
                times[_NEXT_GOSSIP] += self._gap_peer[0]
            else:
                times[_NEXT_GOSSIP] = max(times[_NEXT_GOSSIP], until) + self._gap_peer[0]

    def pull(self, peer: int) -> None:
        """One pull-and-average with ``peer`` now (what a due gossip does; public for tests)."""
        self._pull(peer, Stopwatch())

    def _pull(self, peer: int, sw: Stopwatch) -> None:
        sw.compute()
        self.window.read(peer)
        sw.comm()
        theirs = self.window.peer_versions
        own = int(theirs[peer])
        if own < self.last_seen[peer] or self.versions[peer] > own:
            self.counters[_VIOLATIONS] += (
                1  # the peer's counter went backwards, or we know more than it did
            )
        self.last_seen[peer] = own
        self.round.mix(self.window.peer_model)
        merge_versions(self.versions, theirs)
        self.counters[_GOSSIPS] += 1
        sw.compute()
        self._publish()
        sw.comm()

    def _publish(self) -> None:
        c = self.counters
        self.window.publish(
            self.x, self.versions, int(c[_UPDATES]), int(c[_STEPS]), float(self.times[_NOW])
        )

    def _complete_round(self, sw: Stopwatch) -> None:
        c, times = self.counters, self.times
        self.round.finish()  # x ← x_mixed + (w − x_before)
        c[_UPDATES] += 1
        self.versions[self.rank] = c[_UPDATES]
        sw.compute()
        self._publish()
        if c[_UPDATES] % self.sample_every == 0:
            self._sample()
        sw.comm()
        finished = int(c[_ROUND])
        c[_ROUND] += 1
        c[_IN_ROUND] = 0
        times[_ROUND_START] += times[_ROUND_LEN]
        if self.slow:
            self._sleep(self.clock.slow_delay(finished), sw)
            sw.compute()  # a slow rank's extra time counts as compute

    def _sleep(self, seconds: float, sw: Stopwatch) -> None:
        """A slow rank's delay; in wall-clock mode its gossips keep their times during the sleep."""
        end = time.perf_counter() + seconds
        if self.deadline_s:
            assert self._start is not None  # set by step(), which is sleeping
            end = min(end, self._start + self.deadline_s)
        while True:
            left = end - time.perf_counter()
            if left <= 0:
                return
            if self.logical:
                time.sleep(left)
                return
            time.sleep(max(0.0, min(left, self.times[_NEXT_GOSSIP] - self._elapsed())))
            if time.perf_counter() < end:
                self.times[_NOW] = self._elapsed()
                self._gossip_until(self.times[_NOW], sw)

    def _sample(self) -> None:
        """Staleness of every peer's information at this rank, from the counters the peers
        published."""
        c = self.counters
        counts = self.window.read_rounds(self._counts)
        counts[self.rank] = self.versions[self.rank]
        mean, high = staleness_stats(counts, self.versions, self.rank)
        bad = inconsistencies(counts, self.versions)
        bad += int(np.count_nonzero(self.versions < self.prev_versions))
        bad += int(np.count_nonzero(counts < self.rounds_seen))
        c[_VIOLATIONS] += bad
        np.copyto(self.prev_versions, self.versions)
        np.copyto(self.rounds_seen, counts)
        times = self.times
        if math.isfinite(mean):
            times[_SUM_MEAN] += mean
            times[_INTERVAL_N] += 1
            times[_INTERVAL_MAX] = max(times[_INTERVAL_MAX], high)
        if c[_SAMPLES] % c[_STRIDE] == 0:
            if c[_STORED] == SAMPLE_ROWS:  # full: keep every other sample, store half as often
                kept = self.samples[::2].copy()
                self.samples.fill(np.nan)
                self.samples[: kept.shape[0]] = kept
                c[_STORED] = kept.shape[0]
                c[_STRIDE] *= 2
            if c[_SAMPLES] % c[_STRIDE] == 0:
                self.samples[c[_STORED]] = (self._elapsed(), times[_NOW], mean, high)
                c[_STORED] += 1
        c[_SAMPLES] += 1

    # ---- reporting -------------------------------------------------------------------------------

    def model_view(self) -> np.ndarray:
        """x + (w − x_before) inside a round (the partial round included), x between rounds."""
        if self.round.active:
            return self.round.current(self._view)
        np.copyto(self._view, self.x)
        return self._view

    def _metrics(self, mean: float, high: float) -> dict[str, float]:
        c, times, win = self.counters, self.times, getattr(self, "window", None)
        return {
            "staleness_mean": mean,
            "staleness_max": high,
            "updates": float(c[_UPDATES]),
            "gossips": float(c[_GOSSIPS]),
            "get_bytes": float(win.get_bytes if win else 0),
            "put_bytes": float(win.put_bytes if win else 0),
            "lock_wait_s": float(win.lock_wait_s if win else 0.0),
            "logical_time": float(times[_NOW]),
            "arrive_s": float(times[_ARRIVE]),
            "version_violations": float(c[_VIOLATIONS]),
        }

    def before_log(self) -> None:
        """At a log point (every rank): the staleness of the interval since the previous one."""
        times = self.times
        if times[_INTERVAL_N]:
            mean, high = times[_SUM_MEAN] / times[_INTERVAL_N], times[_INTERVAL_MAX]
        else:
            # no sample in the interval: 0 before the first round (nothing is stale yet), else
            # unknown
            mean = high = 0.0 if self.counters[_SAMPLES] == 0 else math.nan
        times[_SUM_MEAN] = times[_INTERVAL_N] = times[_INTERVAL_MAX] = 0.0
        self._logged = self._metrics(float(mean), float(high))

    def extra_metrics(self) -> dict[str, float]:
        return dict(self._logged)

    def events(self, steps_done: int) -> dict[str, np.ndarray]:
        """Collective: every rank's final version vector and staleness samples (identical on all
        ranks)."""
        n, rank = self.n, self.rank
        table = np.zeros((n, n), dtype=np.int64)
        table[rank] = self.versions
        self.ctx.collectives.allreduce_sum(table)
        stored = np.zeros(n, dtype=np.int64)
        stored[rank] = self.counters[_STORED]
        self.ctx.collectives.allreduce_sum(stored)
        rows = max(int(stored.max()), 1)
        samples = np.zeros((n, rows, 4))
        mine = self.samples[: self.counters[_STORED]]
        samples[rank, : mine.shape[0]] = (
            mine  # each entry has one owner: the sum copies it (NaN included)
        )
        self.ctx.collectives.allreduce_sum(samples)
        for r in range(n):
            samples[r, stored[r] :] = np.nan
        return {"version_vectors": table, "staleness_samples": samples}
