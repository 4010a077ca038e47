"""The neighbour-gossip algorithms' maths in one process, on n simulated nodes (runner/simulate.py,
bit-identical to an MPI run: tests/mpi/test_memory_twin.py), and the message stream they share
(comm/neighbor.py)."""

import threading

import numpy as np
import pytest

from mpidecent.comm.memory import MemoryNetwork
from mpidecent.comm.messages import Stopwatch
from mpidecent.comm.neighbor import Neighbors, mixing_rows
from mpidecent.compression import build_compressor
from mpidecent.config import load_text
from mpidecent.plan import plan_job
from mpidecent.rng import generator
from mpidecent.runner.simulate import Simulation
from mpidecent.topology import build_graph, column_stochastic_uniform, metropolis_hastings
from mpidecent.topology.schedule import Schedule, one_peer_exponential

N = 8
D = 1024
QSGD = {"levels": 16, "bucket": 64}


def _x0(seed: int, d: int = D, n: int = N) -> np.ndarray:
    return np.stack([generator(seed, rank, 0, "test").standard_normal(d) for rank in range(n)])


# ---- the message stream -------------------------------------------------------------------------------


def _channels(graph, compressor, vectors=1, scalars=0, rounds=1, dim=16):
    network = MemoryNetwork(Schedule.static(graph))
    weights = column_stochastic_uniform(graph)
    channels = []
    for rank in range(graph.n):
        neighbors = Neighbors(network.transport(rank), mixing_rows([graph], (weights,), rank))
        codec = build_compressor(compressor, dim, np.float64, QSGD if compressor == "qsgd" else {})
        channels.append(neighbors.stream("model", codec, 0, rank, Stopwatch(), vectors=vectors, scalars=scalars,
                                         rounds=rounds))
    return network, weights, channels


def test_a_channel_delivers_each_in_neighbours_vectors_and_scalars_and_counts_the_wire():
    """[scalars][vector 0][vector 1] per message: the receiver decodes every in-neighbour's fields in its
    row's order, Σ_j w_ij is applied with the receiver's weights, and bits = out-degree × (Σ payload
    bits + 64 per scalar), bytes = out-degree × message length."""
    graph = build_graph("chord_ring", N, None, {"chords": 3, "seed": 1})
    network, weights, channels = _channels(graph, "identity", vectors=2, scalars=1)
    xs, ms = _x0(1, 16), _x0(2, 16)

    def node(rank):
        stream = channels[rank]
        ch = stream.start(0, (xs[rank], ms[rank]), scalars=(float(rank) + 0.5,)).wait()
        mixed = np.zeros(16)
        return ch.decode(0).copy(), ch.decode(1).copy(), ch.received_scalars(0).copy(), ch.mixed_scalar(0), \
            ch.mix(out=mixed, field=1).copy(), stream.traffic.take()

    for rank, (x_rows, m_rows, scalars, mixed_scalar, mixed_m, traffic) in enumerate(network.run(
            [lambda r=r: node(r) for r in range(N)])):
        senders = graph.in_neighbors(rank)
        np.testing.assert_array_equal(x_rows, xs[senders])
        np.testing.assert_array_equal(m_rows, ms[senders])
        np.testing.assert_array_equal(scalars, senders + 0.5)
        assert mixed_scalar == pytest.approx(weights[rank, senders] @ (senders + 0.5), rel=1e-15)
        np.testing.assert_allclose(mixed_m, weights[rank, senders] @ ms[senders], rtol=1e-14)
        out = graph.out_degree[rank]
        assert (traffic.bits, traffic.bytes, traffic.messages) == (out * (2 * 64 * 16 + 64), out * (8 + 2 * 128), out)


def test_rounds_and_fields_draw_their_own_randomness():
    """Round r of step t is keyed by t·rounds + r: two rounds of one step quantize the same vector
    differently, and a receiver decodes exactly what the sender decodes of its own message."""
    graph = build_graph("ring", N, False, {})
    network, _, channels = _channels(graph, "qsgd", rounds=2, dim=256)
    v = _x0(3, 256)

    def node(rank):
        stream, own = channels[rank], []
        for r in range(2):
            ch = stream.start(5, v[rank], round=r)
            own.append(ch.own(out=np.zeros(256)).copy())
            ch.wait()
            received = ch.decode().copy()
        return own, received

    results = network.run([lambda r=r: node(r) for r in range(N)])
    for rank, (own, received) in enumerate(results):
        assert not np.array_equal(own[0], own[1])
        for k, sender in enumerate(graph.in_neighbors(rank)):
            np.testing.assert_array_equal(received[k], results[sender][0][1])


def test_mix_and_accumulate_decode_one_message_at_a_time_without_per_neighbour_rows():
    """mix: out ← Σ_j w_ij decode(q_j); accumulate: out += the same, in the row's order, through one
    scratch vector (no (in-degree, dim) block); the decoded values are the ones decode() gives."""
    graph = build_graph("chord_ring", N, None, {"chords": 3, "seed": 1})
    network, weights, channels = _channels(graph, "qsgd", dim=256)
    v = _x0(4, 256)

    def node(rank):
        ch = channels[rank].start(3, v[rank]).wait()
        start = np.full(256, 0.25)
        mixed = ch.mix(out=np.zeros(256)).copy()
        accumulated = ch.accumulate(start.copy(), scratch=np.zeros(256))
        allocated = ch._received is not None
        with pytest.raises(ValueError, match="scratch"):
            ch.accumulate(start, scratch=start[::-1])
        return mixed, accumulated, allocated, ch.decode().copy()

    for rank, (mixed, accumulated, allocated, rows) in enumerate(network.run([lambda r=r: node(r) for r in range(N)])):
        w = weights[rank, graph.in_neighbors(rank)]
        assert not allocated  # only decode() allocates the per-neighbour rows
        expected = np.zeros(256)
        for k in range(len(w)):  # the documented order: one weighted message after the other
            expected = expected + w[k] * rows[k] if k else w[k] * rows[k]
        np.testing.assert_array_equal(mixed, expected)
        running = np.full(256, 0.25)
        for k in range(len(w)):
            running = running + w[k] * rows[k]
        np.testing.assert_array_equal(accumulated, running)


def test_a_failing_node_does_not_leave_the_others_waiting():
    network = MemoryNetwork(Schedule.static(build_graph("ring", 4, False, {})))
    exchanges = [network.transport(r).exchange(8, 8) for r in range(4)]

    def node(rank):
        if rank == 2:
            raise ValueError("rank 2 failed")
        exchanges[rank].start(np.zeros(8, dtype=np.uint8))
        return exchanges[rank].wait()

    with pytest.raises(ValueError, match="rank 2 failed"):
        network.run([lambda r=r: node(r) for r in range(4)])
    assert threading.active_count() < 8  # every node thread ended


# ---- quantized push-sum (docs/algorithms/push-sum.md) --------------------------------------------


def _push_sum_consensus(reference: bool, iterations: int = 400):
    """Pure quantized push-sum gossip from x_i(0) ~ N(0, I) on an irregular digraph: the relative
    distance to the initial average after each iteration, and the invariant errors."""
    graph = build_graph("chord_ring", N, None, {"chords": N // 2, "seed": 0})
    x0 = _x0(0)
    sim = Simulation.gossip(Schedule.static(graph), (column_stochastic_uniform(graph),), "quantized_push_sum",
                            "qsgd", QSGD, {"gamma": 1.0, "reference": reference, "lr": 0.0}, x0)
    total0, target = x0.sum(axis=0), x0.mean(axis=0)
    distances, mass_errors, weight_errors, stats = [], [], [], []
    for t in range(iterations):
        stats.append(sim.step(t))
        mass_errors.append(np.linalg.norm(sum(a.x for a in sim.algorithms) - total0) / np.linalg.norm(total0))
        weight_errors.append(abs(sum(float(a.y[0]) for a in sim.algorithms) - N))
        distances.append(np.max(np.linalg.norm(sim.models() - target, axis=1)) / np.linalg.norm(target))
    return sim, np.array(distances), np.array(mass_errors), np.array(weight_errors), stats


def test_quantized_push_sum_reaches_the_exact_average_with_reference_copies():
    """Property 1: z_i → x̄(0) to 1e-10 within 400 iterations; Σx and Σy conserved every iteration; the
    replicas every in-neighbour keeps of a node's reference copy are bit-identical to it."""
    sim, distances, mass_errors, weight_errors, _ = _push_sum_consensus(reference=True)
    assert distances[-1] <= 1e-10, distances[::50]
    assert mass_errors.max() <= 1e-12
    assert weight_errors.max() <= 1e-12 * N
    # The graph is irregular, so the push-sum weights really move away from 1 (de-biasing is exercised).
    assert max(abs(a.y[0] - 1.0) for a in sim.algorithms) > 1e-3
    for rank, algo in enumerate(sim.algorithms):
        for k, sender in enumerate(algo.ctx.neighbors.row(0).in_neighbors):
            np.testing.assert_array_equal(algo.ref_in[0][k], sim.algorithms[sender].ref_out[0])
        assert algo.gossip.messages[0]._received is None  # decoded one message at a time into the copies


def test_without_reference_copies_the_noise_never_vanishes():
    """Property 2 (negative control): sending Q(x) itself never gets below 1e-3."""
    _, distances, _, _, _ = _push_sum_consensus(reference=False)
    assert distances[-100:].min() > 1e-3


def test_push_sum_bits_per_message_follow_the_formula():
    """Property 3: 6,656 payload + header bits + 64 bits of y per message, counted per out-edge."""
    sim, _, _, _, stats = _push_sum_consensus(reference=True, iterations=3)
    bits_per_message = 1024 * (1 + 5) + 32 * (1024 // 64) + 64
    assert bits_per_message == 6656 + 64
    graph = sim.network.schedule.graphs[0]
    for rank, algo in enumerate(sim.algorithms):
        out = graph.out_degree[rank]
        assert algo.gossip.nbytes == bits_per_message // 8
        assert all((s[rank].bits_sent, s[rank].bytes_sent, s[rank].messages_sent)
                   == (out * bits_per_message, out * 840, out) for s in stats)
    assert sum(s.bits_sent for s in stats[0]) == graph.num_edges * bits_per_message


def test_time_varying_one_peer_schedule():
    """One peer per step, i + 2^(t mod K): exact push-sum averages exactly in one period (n a power of
    two); quantized push-sum (per-slot reference copies) reaches the exact average to 1e-10 with Σx
    conserved every step."""
    schedule = one_peer_exponential(N)
    weights = tuple(column_stochastic_uniform(g) for g in schedule.graphs)
    x0 = _x0(1)
    target = x0.mean(axis=0)
    exact = Simulation.gossip(schedule, weights, "push_sum", "identity", {}, {"lr": 0.0}, x0)
    for t in range(schedule.period):
        assert all(s.messages_sent == 1 for s in exact.step(t))
    np.testing.assert_allclose(exact.models(), np.broadcast_to(target, (N, D)), rtol=0, atol=1e-13)
    quantized = Simulation.gossip(schedule, weights, "quantized_push_sum", "qsgd", QSGD, {"lr": 0.0}, x0)
    drift = 0.0
    for t in range(300):
        quantized.step(t)
        total = sum(a.x for a in quantized.algorithms)
        drift = max(drift, np.linalg.norm(total - x0.sum(axis=0)) / np.linalg.norm(x0.sum(axis=0)))
    distance = np.max(np.linalg.norm(quantized.models() - target, axis=1)) / np.linalg.norm(target)
    assert distance <= 1e-10 and drift <= 1e-12, (distance, drift)
    assert quantized.algorithms[0].ref_out.shape[0] == schedule.period  # one public copy per slot


# ---- multi-gossip / CHOCO-SGD (docs/algorithms/multi-gossip.md) ----------------------------------


def _torus_gossip(compressor, comp_params, params, seed=0, d=300):
    graph = build_graph("torus", N, None, {})
    weights = metropolis_hastings(graph)
    x0 = _x0(seed, d)
    sim = Simulation.gossip(Schedule.static(graph), (weights,), "multi_gossip", compressor, comp_params,
                            {"lr": 0.0, **params}, x0)
    return sim, x0, weights


def test_gossip_rounds_preserve_the_mean_and_keep_s_consistent():
    """Property 1: Σ_i x_i is unchanged by every gossip round (1e-12 relative); s_i = Σ_j w_ij z_j."""
    for rounds in (1, 3):
        sim, x0, weights = _torus_gossip("topk", {"fraction": 0.25}, {"gamma": 0.3, "gossip_rounds": rounds})
        total0 = x0.sum(axis=0)
        drift = 0.0
        for t in range(20):
            sim.step(t)
            total = sum(a.x for a in sim.algorithms)
            drift = max(drift, np.linalg.norm(total - total0) / np.linalg.norm(total0))
        assert drift <= 1e-12, (rounds, drift)
        public = np.stack([a.z for a in sim.algorithms])
        for rank, algo in enumerate(sim.algorithms):
            np.testing.assert_allclose(algo.s, weights[rank] @ public, rtol=1e-12, atol=1e-12)


def test_identity_gossip_is_plain_averaging_and_many_rounds_reach_consensus():
    """Property 2: with C = identity and γ = 1 one round is x ← W x; large Q approaches the average."""
    sim, x0, weights = _torus_gossip("identity", {}, {"gamma": 1.0, "gossip_rounds": 1})
    sim.step(0)
    np.testing.assert_allclose(sim.models(), weights @ x0, rtol=1e-13, atol=1e-13)
    sim, x0, _ = _torus_gossip("identity", {}, {"gamma": 1.0, "gossip_rounds": 200})
    sim.step(0)
    mean = x0.mean(axis=0)
    assert np.max(np.abs(sim.models() - mean)) <= 1e-8 * np.max(np.abs(mean))


# ---- DMSGD and local momentum (docs/algorithms/momentum.md) --------------------------------------

MOMENTUM_JOB = """
[run]
steps = 30
seed = 2
[topology]
kind = "ring"
[algorithm]
name = "dmsgd"
lr = 0.2
beta = 0.0
[data]
name = "synthetic_logistic"
samples = 800
features = 20
partition = "sorted"
batch_size = 16
[model]
name = "logistic"
l2 = 0.01
"""


def _simulation(text: str, overrides=(), n: int = N) -> Simulation:
    return Simulation.of_plan(plan_job(load_text(text, overrides=list(overrides)), n))


def test_dmsgd_with_zero_beta_is_bit_identical_to_dpsgd():
    """Property 1 (and the same for local momentum)."""
    sims = {name: _simulation(MOMENTUM_JOB, [f"algorithm.name={name}"]) for name in ("dmsgd", "local_momentum",
                                                                                     "dpsgd")}
    for t in range(30):
        for sim in sims.values():
            sim.step(t)
        reference = sims["dpsgd"].models()
        np.testing.assert_array_equal(sims["dmsgd"].models(), reference)
        np.testing.assert_array_equal(sims["local_momentum"].models(), reference)
    assert np.any(sims["dpsgd"].models() != 0)


def test_mean_dynamics_show_momentum_is_shared_and_mixed():
    """Property 2: with doubly stochastic Π, m̄_{k+1} = β m̄_k + ḡ_k and x̄_{k+1} = x̄_k − α m̄_{k+1}
    to 1e-12 relative at every step."""
    sim = _simulation(MOMENTUM_JOB, ["algorithm.beta=0.9"])

    def mean(name):
        return np.mean([getattr(a, name).astype(np.float64) for a in sim.algorithms], axis=0)

    worst = 0.0
    for t in range(30):
        m_bar, x_bar = mean("m"), mean("x")
        sim.step(t)
        g_bar = np.mean([a.objective.grads for a in sim.algorithms], axis=0)
        m_next, x_next = mean("m"), mean("x")
        expected_m = 0.9 * m_bar + g_bar
        worst = max(worst, np.linalg.norm(m_next - expected_m) / np.linalg.norm(expected_m),
                    np.linalg.norm(x_next - (x_bar - 0.2 * m_next)) / np.linalg.norm(x_next))
    assert worst <= 1e-12, worst


def test_dmsgd_sends_exactly_twice_dpsgds_bytes():
    """Property 4 (traffic): x and m, both full precision, to every neighbour."""
    dmsgd = _simulation(MOMENTUM_JOB, ["algorithm.beta=0.9"]).run(5)
    dpsgd = _simulation(MOMENTUM_JOB, ["algorithm.name=dpsgd"]).run(5)
    for mine, theirs in zip(dmsgd, dpsgd):
        assert sum(s.bytes_sent for s in mine) == 2 * sum(s.bytes_sent for s in theirs)
        assert sum(s.bits_sent for s in mine) == 2 * sum(s.bits_sent for s in theirs)
        assert sum(s.messages_sent for s in mine) == sum(s.messages_sent for s in theirs)
        assert sum(s.bits_sent for s in theirs) == 5 * 2 * 21 * 64  # ring: 2 neighbours, d = 21


def test_the_twin_refuses_other_patterns():
    with pytest.raises(ValueError, match="neighbour gossip"):
        _simulation(MOMENTUM_JOB, ["algorithm.name=allreduce_sgd", "topology.kind=complete"])


def test_the_twin_needs_no_mpi():
    """One process, no MPI: importing the twin must not initialise MPI (a process that did could not
    start mpirun itself, and would not be the single process the tests want)."""
    import subprocess
    import sys

    code = "import sys, mpidecent.runner.simulate, mpidecent.comm.memory; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
