"""Asynchronous gossip without MPI: the staleness formula and scaling (spec property 1), the simulator's
batched loop against the one-event-at-a-time reference, the shared logical clock, version-vector
bookkeeping, delta semantics, job validation and ``mpidecent simulate-gossip``."""

import math

import numpy as np
import pytest

from mpidecent.cli import main
from mpidecent.config import load_jobs, load_text
from mpidecent.errors import JobError
from mpidecent.gossip.clock import RankClock, gossip_schedule, peer_of, round_schedule
from mpidecent.gossip.rounds import DeltaRound
from mpidecent.gossip.simulator import SimSetup, simulate
from mpidecent.gossip.versions import (expected_staleness, gossip_rate, harmonic, inconsistencies, merge_versions,
                                       staleness_stats, version_rate)
from mpidecent.plan import plan_job


def _sim(n: int, rate: float, mode: str = "pull", horizon: float = 1000.0, **kw):
    return simulate(SimSetup(n=n, rate=rate, round_shift=0.5, round_rate=2.0, horizon=horizon, warmup=0.05 * horizon,
                             sample_times=np.linspace(0, horizon, 11), seed=kw.pop("seed", 0), mode=mode, **kw))


@pytest.mark.parametrize("mode", ["pull", "push", "exchange"])
@pytest.mark.parametrize("n", [8, 16])
@pytest.mark.parametrize("policy", ["constant", "log_n"])
def test_mean_staleness_matches_the_formula_within_5_percent(n, policy, mode):
    rate = gossip_rate(2.0 if policy == "constant" else 1.0, policy, n)
    result = _sim(n, rate, mode)
    # (λ_e/λ)·H_{n−1} with λ_e = 1; the one-sided pull spreads at the same rate as push (f = 1), an
    # exchange at twice it (f = ½).
    formula = {"pull": 1.0, "push": 1.0, "exchange": 0.5}[mode] * harmonic(n - 1) / rate
    assert result.formula == pytest.approx(formula)
    assert abs(result.mean_staleness / formula - 1) <= 0.05, (result.mean_staleness, formula)
    assert result.inconsistencies == 0


def test_spec_reference_values():
    """The spec's table (push, λ_e = 1): 1.29, 1.66, 1.25, 1.20."""
    assert [round(expected_staleness(n, r, 1.0), 2) for n, r in ((8, 2), (16, 2), (8, math.log(8)),
                                                                 (16, math.log(16)))] == [1.30, 1.66, 1.25, 1.20]
    assert version_rate(0.5, 2.0) == 1.0


def test_staleness_grows_with_n_at_fixed_rate_and_not_at_log_n():
    sizes = (8, 32, 128)
    fixed = [_sim(n, 2.0, horizon=300.0).mean_staleness for n in sizes]
    scaled = [_sim(n, math.log(n), horizon=300.0).mean_staleness for n in sizes]
    assert fixed[0] < fixed[1] < fixed[2] and fixed[2] > 1.8 * fixed[0], fixed
    assert max(scaled) <= 1.05 * scaled[0] and scaled[2] <= scaled[0], scaled  # bounded (H_{n−1}/ln n ↓ 1)


@pytest.mark.parametrize("mode", ["pull", "push", "exchange"])
def test_batched_loop_equals_one_event_at_a_time(mode):
    setup = dict(n=120, rate=2.0, mode=mode, horizon=60.0, sources=40, seed=4)
    a = _sim(**setup)
    b = simulate(a.setup, batched=False)
    np.testing.assert_array_equal(a.rank_mean, b.rank_mean)
    np.testing.assert_array_equal(a.rank_max, b.rank_max)
    np.testing.assert_array_equal(a.global_mean, b.global_mean)
    assert a.mean_staleness == pytest.approx(b.mean_staleness, rel=1e-12)


def test_tracking_a_subset_of_sources_estimates_the_same_mean():
    full, subset = _sim(256, 2.0, horizon=200.0, sources=256), _sim(256, 2.0, horizon=200.0, sources=32)
    assert subset.sources.size == 32 and abs(subset.mean_staleness / full.mean_staleness - 1) < 0.05


def test_the_clock_is_the_same_stepwise_and_vectorised():
    candidates = np.array([1, 4, 6])
    clock = RankClock(seed=9, rank=2, n=8, rate=3.0, round_shift=0.5, round_rate=2.0, candidates=candidates)
    times, peers = gossip_schedule(clock, 400.0)  # more than one block of 1024
    assert times.size > 1024
    t, stepwise = 0.0, []
    for k in range(times.size):
        gap, peer = clock.gossip(k)
        t += gap
        stepwise.append((t, peer))
    assert np.array_equal(times, [s[0] for s in stepwise]) and np.array_equal(peers, [s[1] for s in stepwise])
    assert set(peers.tolist()) == {1, 4, 6}
    ends = round_schedule(clock, 50.0)
    assert np.array_equal(ends, np.cumsum([clock.round_length(r) for r in range(ends.size)]))
    uniform = peer_of(np.linspace(0, 0.9999, 1000), 3, 8, None)
    assert set(uniform.tolist()) == {0, 1, 2, 4, 5, 6, 7}
    silent = RankClock(0, 0, 1, 2.0, 0.5, 2.0)
    assert silent.gossip(0)[0] == math.inf


def test_version_bookkeeping():
    mine, theirs = np.array([3, 0, 5]), np.array([1, 4, 6])
    assert merge_versions(mine, theirs) == 5 and mine.tolist() == [3, 4, 6]
    counts = np.array([3, 7, 6])
    mean, high = staleness_stats(counts, mine, 0)  # peers 1 and 2: S = 3 and 0
    assert mean == 1.5 and high == 3.0
    rows = np.array([[3, 4, 6], [0, 7, 2]])
    means, highs = staleness_stats(counts, rows, np.array([0, 1]))
    assert means.tolist() == [1.5, 3.5] and highs.tolist() == [3.0, 4.0]
    assert inconsistencies(counts, rows) == 0 and inconsistencies(counts, np.array([4, 7, 6])) == 1


def test_a_model_arriving_mid_round_is_kept_by_the_delta():
    """Delta semantics (spec property 4) with a crafted arrival, one process."""
    x, w = np.array([0.0, 2.0]), np.zeros(2)
    rounds = DeltaRound(x, w)
    rounds.begin()
    w -= [1.0, 1.0]  # half of the round's SGD progress
    rounds.mix(np.array([4.0, 6.0]))  # a peer's model arrives mid-round
    np.testing.assert_array_equal(rounds.current(np.zeros(2)), [1.0, 3.0])
    w -= [1.0, 1.0]
    rounds.finish()
    np.testing.assert_array_equal(x, [0.0, 2.0])  # ½(x + x_peer) + (x_after − x_before) = [2, 4] − [2, 2]
    np.testing.assert_array_equal(rounds.current(np.zeros(2)), x)  # between rounds: x itself


GOSSIP = """
[run]
steps = 40
log_every = 10
[algorithm]
name = "async_gossip"
"""


@pytest.mark.parametrize("override, message", [
    ("algorithm.gossip_rate=0", "[algorithm] gossip_rate must be > 0, got 0"),
    ("algorithm.gossip_rate=-1.5", "[algorithm] gossip_rate must be > 0, got -1.5"),
    ("algorithm.round_rate=0", "[algorithm] round_rate must be > 0, got 0"),
    ("algorithm.rate_policy=sqrt", "[algorithm] rate_policy must be one of 'constant', 'log_n'; got 'sqrt'"),
    ("algorithm.slow_ranks=[1, 1]", "[algorithm] slow_ranks lists a rank twice, got [1, 1]"),
    ("algorithm.slow_ranks=[9]", "[algorithm] slow_ranks lists rank 9 but only 8 ranks were started"),
    ("algorithm.local_steps=0", "[algorithm] local_steps must be ≥ 1, got 0"),
])
def test_bad_input_names_the_key_in_one_line(override, message):
    with pytest.raises(JobError) as info:
        plan_job(load_text(GOSSIP, overrides=[override]), 8)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_gossip_defaults_to_the_complete_graph_and_refuses_a_disconnected_one():
    job = load_text(GOSSIP)
    assert job.topology["kind"] == "complete" and plan_job(job, 4).n == 4
    with pytest.raises(JobError, match="not strongly connected"):
        plan_job(load_text(GOSSIP, overrides=["topology.kind=star", "topology.directed=true"]), 4)


def test_simulate_gossip_writes_the_results_layout_and_prints_the_table(tmp_path, capsys):
    from mpidecent.io.layout import FORMAT_VERSION
    from mpidecent.io.reader import read_run

    job = tmp_path / "sim.toml"
    job.write_text(GOSSIP + "gossip_rate = 1.0\n")
    code = main(["simulate-gossip", str(job), "-n", "8,16", "--policy", "constant,log_n", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0 and "mean staleness vs n" in out and "sim-n16-log_n" in out
    path = tmp_path / "o" / "sim-n16-log_n.h5"
    run = read_run(str(path))
    assert not run.partial and run.n == 16 and list(run.steps) == [0, 10, 20, 30, 40]
    assert run.rank("staleness_mean").shape == (5, 16) and run.algorithm == "async_gossip"
    assert run.attrs["format_version"] == FORMAT_VERSION and run.attrs["kind"] == "simulation"
    assert run.attrs["gossip_rate_per_user"] == pytest.approx(math.log(16))
    assert run.attrs["mean_staleness"] > 0 and run.attrs["inconsistencies"] == 0
    assert run.events["updates"].shape == (16,) and run.glob("logical_time")[-1] == pytest.approx(40.0)
    # An existing file is refused (one line, status 2) unless --force; bad flags name themselves.
    assert main(["simulate-gossip", str(job), "-n", "8", "--out", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["simulate-gossip", str(job), "-n", "1"]) == 2
    assert "at least 2 users" in capsys.readouterr().err
    assert main(["simulate-gossip", str(job), "--set", "algorithm.gossip_rate=0", "-n", "8"]) == 2
    assert "mpidecent: error: [algorithm] gossip_rate must be > 0, got 0\n" == capsys.readouterr().err


def test_shipped_simulator_sweeps_cover_8_to_1024():
    for name, policy in (("async_sim_const", "constant"), ("async_sim_logn", "log_n")):
        from pathlib import Path

        jobs = load_jobs(Path(__file__).resolve().parents[2] / "jobs" / f"{name}.toml")
        assert [j.topology["n"] for j in jobs] == [8, 16, 32, 64, 128, 256, 512, 1024]
        assert {j.algorithm["rate_policy"] for j in jobs} == {policy}
