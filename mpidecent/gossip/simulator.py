"""Discrete-event simulator of asynchronous gossip with version vectors (pure, single process).

The same system as the MPI engine in logical-clock mode, for n up to 10,000 users: user i completes
update rounds at the times of its "round" stream and gossips at the times and with the peers of its
"gossip" stream (``gossip/clock.py``: the very events rank i of the MPI engine sees), and every
gossip merges version vectors with ``merge_versions`` (``gossip/versions.py``, shared with the
engine). Models are not simulated: staleness depends only on the event order.

Modes: ``pull`` (i reads j: V_i ← max(V_i, V_j), what the engine does), ``push`` (i writes to j:
V_j ← max(V_j, V_i), the reference formula's model) and ``exchange`` (both merge).

Scale: the events of all users are generated per user and block (vectorised), sorted once, then
processed in one loop whose body is O(m) numpy work, where m ≤ n is the number of *tracked* sources
(columns of the version table). All users are statistically identical, so tracking m evenly spaced
sources estimates the same mean staleness as tracking all n, at n·m instead of n² memory; round
completions of untracked users change nothing tracked and are not simulated. The time average E[S] =
(1/(T − T₀)) ∫_{T₀}^T (mean over (user, tracked source) pairs, user ≠ source, of S) dt is exact (the
running total of S is updated at every event), not sampled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mpidecent.gossip.clock import RankClock, gossip_schedule, round_schedule
from mpidecent.gossip.versions import (
    expected_staleness,
    inconsistencies,
    merge_versions,
    staleness_stats,
    version_rate,
)

MODES = ("pull", "push", "exchange")
DEFAULT_SOURCES = 256  # tracked sources when n is larger (memory n × m int64)


@dataclass(frozen=True)
class SimSetup:
    """One simulation. ``rate`` λ (gossips per unit time per user, after the rate policy);
    ``round_shift`` c and ``round_rate`` μ (rounds of length c + Exp(μ)); ``horizon`` T and
    ``warmup`` T₀ in logical time units; ``sample_times`` (L,) when the per-user series are sampled;
    ``candidates`` per-user peers (None: every other user); ``sources`` users tracked (None: min(n,
    256))."""

    n: int
    rate: float
    round_shift: float
    round_rate: float
    horizon: float
    warmup: float
    sample_times: np.ndarray
    seed: int = 0
    mode: str = "pull"
    sources: int | None = None
    candidates: tuple[np.ndarray, ...] | None = None


@dataclass
class SimResult:
    """What a simulation measured; staleness in versions (update rounds)."""

    setup: SimSetup
    sources: np.ndarray  # (m,) int64 tracked source users
    sample_times: np.ndarray  # (L,)
    rank_mean: np.ndarray  # (L, n) per user: mean over tracked sources ≠ itself of S at the user
    rank_max: np.ndarray  # (L, n) per user: max of the same
    global_mean: np.ndarray  # (L,) mean over all (user, source) pairs at the sample time
    mean_staleness: float  # exact time average over [warmup, horizon]
    max_staleness: float  # max over the samples
    formula: float  # f · (λ_e/λ) · H_{n−1} of the mode
    version_rate: float  # λ_e
    updates: np.ndarray  # (n,) rounds each user completed by the horizon
    gossips: np.ndarray  # (n,) gossips each user initiated
    events: int  # events processed (gossips + rounds of tracked sources)
    inconsistencies: int  # entries V[u, s] > N_s seen at the samples (must be 0)
    wall_s: float

    @property
    def ratio(self) -> float:
        return self.mean_staleness / self.formula


def tracked_sources(n: int, count: int | None) -> np.ndarray:
    """``count`` evenly spaced users (all when count is None and n ≤ DEFAULT_SOURCES)."""
    m = min(n, DEFAULT_SOURCES if count is None else int(count))
    return np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))


def _events(
    setup: SimSetup, sources: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every event by time: (times, code, peer) with code ≥ 0 the initiating user of a gossip and
    code < 0 the round of tracked column −code − 1; plus per-user gossip and round counts."""
    n = setup.n
    times, codes, peers = [], [], []
    gossips = np.zeros(n, dtype=np.int64)
    updates = np.zeros(n, dtype=np.int64)
    column = {int(s): c for c, s in enumerate(sources)}
    for i in range(n):
        cands = None if setup.candidates is None else setup.candidates[i]
        clock = RankClock(setup.seed, i, n, setup.rate, setup.round_shift, setup.round_rate, cands)
        t, p = gossip_schedule(clock, setup.horizon)
        gossips[i] = t.size
        times.append(t)
        codes.append(np.full(t.size, i, dtype=np.int64))
        peers.append(p)
        if i in column:
            ends = round_schedule(clock, setup.horizon)
            updates[i] = ends.size
            times.append(ends)
            codes.append(np.full(ends.size, -column[i] - 1, dtype=np.int64))
            peers.append(np.full(ends.size, -1, dtype=np.int64))
    all_t = np.concatenate(times)
    order = np.argsort(all_t, kind="stable")
    return (
        all_t[order],
        np.concatenate(codes)[order],
        np.concatenate(peers)[order],
        gossips,
        updates,
    )


def _apply_batch(
    known: np.ndarray,
    row_sum: np.ndarray,
    counts: np.ndarray,
    sources: np.ndarray,
    codes: np.ndarray,
    writers: np.ndarray,
    readers: np.ndarray,
    times: np.ndarray,
    both: bool,
    total: int,
    area: float,
    t_prev: float,
) -> tuple[int, float, float]:
    """Apply a batch of B events that commute (see ``simulate``) at once, O(B·m) numpy: each
    gossip's writer vector becomes max(own, reader's), as ``merge_versions`` does one at a time, and
    each round of a tracked source adds 1 to its own entry. The staleness total and its time
    integral are updated event by event from the per-event changes."""
    n = known.shape[0]
    gossip = codes >= 0
    deltas = np.full(
        codes.size, n - 1, dtype=np.int64
    )  # a round adds 1 to S at the n − 1 other users
    if gossip.any():
        w, r = writers[gossip], readers[gossip]
        merged = np.maximum(known[w], known[r])  # (G, m)
        sums = merged.sum(axis=1, dtype=np.int64)
        gains = sums - row_sum[w]
        known[w] = merged
        row_sum[w] = sums
        if both:
            gains += sums - row_sum[r]
            known[r] = merged
            row_sum[r] = sums
        deltas[gossip] = -gains
    if not gossip.all():
        cols = -codes[~gossip] - 1  # each source at most once per batch
        owners = sources[cols]
        known[owners, cols] += 1
        row_sum[owners] += 1
        counts[cols] += 1
    clipped = np.maximum(times, t_prev)  # t_prev ≥ warmup: nothing before the warm-up is integrated
    steps = np.cumsum(deltas)
    previous = np.empty_like(clipped)
    previous[0] = t_prev
    previous[1:] = clipped[:-1]
    before = np.empty_like(steps)  # the total just before each event
    before[0] = 0
    before[1:] = steps[:-1]
    area += float(np.dot(total + before, clipped - previous))
    return total + int(steps[-1]), area, float(clipped[-1])


BATCH_FROM = (
    64  # users from which batching pays (small n: batches are short, one event at a time is faster)
)


def simulate(setup: SimSetup, batched: bool | None = None) -> SimResult:
    """Run one simulation (module docstring). ``batched``: apply runs of commuting events at once
    (default for n ≥ BATCH_FROM); False processes every event alone (the reference it is tested
    against)."""
    start = time.perf_counter()
    batched = setup.n >= BATCH_FROM if batched is None else batched
    if setup.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {setup.mode!r}")
    n = setup.n
    sources = tracked_sources(n, setup.sources)
    m = sources.size
    t_all, codes, peers, gossips, updates = _events(setup, sources)
    own_col = np.full(n, -1, dtype=np.int64)
    own_col[sources] = np.arange(m)
    known = np.zeros(
        (n, m), dtype=np.int32
    )  # V[u, c]: newest version of source c that user u knows (int32:
    # half the memory traffic; versions stay far below 2^31)
    row_sum = np.zeros(n, dtype=np.int64)
    counts = np.zeros(m, dtype=np.int64)  # N_c: rounds source c has completed
    total = 0  # Σ over pairs (u, c), u ≠ source c, of N_c − V[u, c]
    pairs = m * (n - 1)
    samples = np.asarray(setup.sample_times, dtype=np.float64)
    rank_mean = np.full((samples.size, n), np.nan)
    rank_max = np.full((samples.size, n), np.nan)
    global_mean = np.full(samples.size, np.nan)
    bad = 0
    next_sample, area, t_prev = 0, 0.0, setup.warmup
    mode = setup.mode

    def sample(k: int) -> None:
        nonlocal bad
        rank_mean[k], rank_max[k] = staleness_stats(counts, known, own_col)
        global_mean[k] = total / pairs if pairs else np.nan
        bad += inconsistencies(counts, known)

    t_list, c_list = t_all.tolist(), codes.tolist()
    if mode == "pull":
        writer, reader = codes, peers  # i merges the vector of the peer it reads
    else:
        writer, reader = (
            peers,
            codes,
        )  # push (and exchange, which merges both ways): the peer merges
    w_list, r_list = writer.tolist(), reader.tolist()
    both = mode == "exchange"
    src_list = sources.tolist()
    i, count = 0, len(t_list)
    sample_at = [*samples.tolist(), float("inf")]
    while i < count:
        t = t_list[i]
        while sample_at[next_sample] <= t:
            sample(next_sample)
            next_sample += 1
        if not batched:
            if t > t_prev:
                area += total * (t - t_prev)
                t_prev = t
            code = c_list[i]
            if code < 0:  # a tracked source completes a round: V_s[s] += 1
                c = -code - 1
                counts[c] += 1
                known[src_list[c], c] += 1
                row_sum[src_list[c]] += 1
                total += n - 1
            else:
                a, b = w_list[i], r_list[i]
                gain = merge_versions(known[a], known[b], row_sum[a])
                row_sum[a] += gain
                total -= gain
                if both:
                    gain = merge_versions(known[b], known[a], row_sum[b])
                    row_sum[b] += gain
                    total -= gain
            i += 1
            continue
        # A batch of consecutive events that commute with reading every vector first: none reads or
        # writes a vector an earlier event of the batch wrote (a round writes its source's), and
        # none crosses a sample time.
        j, written, limit = i, set(), sample_at[next_sample]
        while j < count and t_list[j] < limit:
            code = c_list[j]
            if code < 0:
                owner = src_list[-code - 1]
                if owner in written:
                    break
                written.add(owner)
            else:
                a, b = w_list[j], r_list[j]
                if a in written or b in written:
                    break
                written.add(a)
                if both:
                    written.add(b)
            j += 1
        total, area, t_prev = _apply_batch(
            known,
            row_sum,
            counts,
            sources,
            codes[i:j],
            writer[i:j],
            reader[i:j],
            t_all[i:j],
            both,
            total,
            area,
            t_prev,
        )
        i = j
    while next_sample < samples.size:
        sample(next_sample)
        next_sample += 1
    if setup.horizon > t_prev:
        area += total * (setup.horizon - t_prev)
    span = setup.horizon - setup.warmup
    lam_e = version_rate(setup.round_shift, setup.round_rate)
    mean = area / (span * pairs) if span > 0 and pairs else float("nan")
    return SimResult(
        setup=setup,
        sources=sources,
        sample_times=samples,
        rank_mean=rank_mean,
        rank_max=rank_max,
        global_mean=global_mean,
        mean_staleness=mean,
        max_staleness=float(np.nanmax(rank_max)) if np.isfinite(rank_max).any() else float("nan"),
        formula=expected_staleness(n, setup.rate, lam_e, mode),
        version_rate=lam_e,
        updates=updates,
        gossips=gossips,
        events=int(t_all.size),
        inconsistencies=bad,
        wall_s=time.perf_counter() - start,
    )
