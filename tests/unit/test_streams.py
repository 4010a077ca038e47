"""Named message streams with exchanges in flight (comm/neighbor.py) on the in-memory twin
(comm/memory.py), composable optimizers (algorithms/base.py, optim.py), and push-sum's overlap of
communication and computation (algorithms/push_sum.py) against an independent numpy implementation."""

import numpy as np
import pytest
from toy_algorithms import MISORDERED, TWO_STREAMS

from mpidecent.comm.memory import MemoryNetwork, PeerFailed
from mpidecent.comm.messages import Stopwatch
from mpidecent.comm.neighbor import Neighbors, StreamError, mixing_rows
from mpidecent.compression import build_compressor
from mpidecent.rng import RandomKey, generator
from mpidecent.runner.simulate import Simulation
from mpidecent.topology import build_graph, column_stochastic_uniform, metropolis_hastings
from mpidecent.topology.schedule import Schedule, one_peer_exponential

N = 8
QSGD = {"levels": 16, "bucket": 64}


def _x0(seed: int, d: int, n: int = N) -> np.ndarray:
    return np.stack([generator(seed, rank, 0, "test").standard_normal(d) for rank in range(n)])


def _network(graph, weights=None):
    schedule = graph if isinstance(graph, Schedule) else Schedule.static(graph)
    weights = weights if weights is not None else tuple(column_stochastic_uniform(g) for g in schedule.graphs)
    network = MemoryNetwork(schedule)
    return network, [Neighbors(network.transport(r), mixing_rows(schedule.graphs, weights, r)) for r in range(N)]


def _codec(name="qsgd", dim=256):
    return build_compressor(name, dim, np.float64, QSGD if name == "qsgd" else {})


# ---- names: identity and randomness ---------------------------------------------------------------------


def test_two_streams_of_one_step_draw_different_randomness_and_cannot_be_confused():
    """Two compressed streams send the same vector in the same step: the first keeps the key every run
    has always had, the second draws its own dither, and each receiver decodes each stream with its
    own key (what arrives on 'direction' is the sender's 'direction' message)."""
    graph = build_graph("chord_ring", N, None, {"chords": 3, "seed": 1})
    network, neighbors = _network(graph)
    v = _x0(3, 256)
    streams = [[nb.stream(name, _codec(), 0, r, Stopwatch()) for name in ("model", "direction")]
               for r, nb in enumerate(neighbors)]
    network.run([nb.seal for nb in neighbors])

    def node(rank):
        model, direction = streams[rank]
        a, b = model.start(4, v[rank]), direction.start(4, v[rank])  # both in flight at once
        own = (a.own(np.zeros(256)).copy(), b.own(np.zeros(256)).copy())
        b.wait(), a.wait()  # completed in the other order
        return own, a.decode().copy(), b.decode().copy()

    results = network.run([lambda r=r: node(r) for r in range(N)])
    codec = _codec()
    for rank, ((own_a, own_b), got_a, got_b) in enumerate(results):
        assert not np.array_equal(own_a, own_b)  # same input, different dither
        legacy = codec.decode(codec.encode(v[rank], RandomKey(0, rank, 4)).buffer, RandomKey(0, rank, 4))
        np.testing.assert_array_equal(own_a, legacy)  # the first stream's key is the key of old runs
        assert streams[rank][1].key_id != 0 and streams[rank][0].key_id == 0
        for k, sender in enumerate(graph.in_neighbors(rank)):
            np.testing.assert_array_equal(got_a[k], results[sender][0][0])
            np.testing.assert_array_equal(got_b[k], results[sender][0][1])


def test_streams_opened_in_a_different_order_on_different_ranks_are_refused_on_every_rank():
    graph = build_graph("ring", N, False, {})
    sim_error = None
    try:
        Simulation.gossip(Schedule.static(graph), (metropolis_hastings(graph),), MISORDERED, "qsgd", QSGD,
                          {}, _x0(1, 32))
    except StreamError as err:
        sim_error = str(err)
    assert sim_error is not None
    assert "rank 0 opened 'model'" in sim_error and "rank 1 opened 'direction'" in sim_error
    assert "same streams in the same order" in sim_error


def test_a_second_stream_of_the_same_name_or_after_sealing_is_refused():
    network, neighbors = _network(build_graph("ring", N, False, {}))
    nb = neighbors[0]
    nb.stream("model", _codec(), 0, 0, Stopwatch())
    with pytest.raises(StreamError, match="opened twice"):
        nb.stream("model", _codec(), 0, 0, Stopwatch())
    with pytest.raises(StreamError, match="identifier"):
        nb.stream("my stream", _codec(), 0, 0, Stopwatch())
    with pytest.raises(StreamError, match="in_flight must be ≥ 1"):
        nb.stream("other", _codec(), 0, 0, Stopwatch(), in_flight=0)
    nb.sealed = True
    with pytest.raises(StreamError, match="open every stream in the algorithm's __init__"):
        nb.stream("late", _codec(), 0, 0, Stopwatch())


# ---- exchanges in flight ----------------------------------------------------------------------------------


def test_a_stream_keeps_several_exchanges_in_flight_each_with_its_own_buffers():
    """in_flight = 3: three steps are sent before the first is waited; each message delivers its own
    step's bytes, the traffic is counted when an exchange completes, and a fourth start before a
    wait is refused. Reading a message before it arrived is an error, not stale data."""
    graph = build_graph("chord_ring", N, None, {"chords": 2, "seed": 4})
    network, neighbors = _network(graph)
    streams = [nb.stream("model", _codec("identity", 16), 0, r, Stopwatch(), in_flight=3)
               for r, nb in enumerate(neighbors)]
    network.run([nb.seal for nb in neighbors])
    values = {(r, t): np.full(16, 10.0 * r + t) for r in range(N) for t in range(4)}

    def node(rank):
        stream = streams[rank]
        messages = [stream.start(t, values[rank, t]) for t in range(3)]
        counted_before = stream.traffic.bits
        with pytest.raises(StreamError, match="read before it arrived"):
            messages[0].decode()
        with pytest.raises(StreamError, match="in_flight=4"):
            stream.start(3, values[rank, 3])
        got = [m.wait().decode().copy() for m in reversed(messages)][::-1]
        return counted_before, got, stream.traffic.take(), [m.step for m in stream.pending]

    results = network.run([lambda r=r: node(r) for r in range(N)])
    for rank, (counted_before, got, traffic, pending) in enumerate(results):
        assert counted_before == 0 and pending == []
        out = graph.out_degree[rank]
        assert (traffic.bits, traffic.messages) == (3 * out * 64 * 16, 3 * out)
        for t in range(3):
            np.testing.assert_array_equal(got[t], np.stack([values[int(j), t] for j in graph.in_neighbors(rank)]))
    assert network.undelivered() == []


def test_drain_completes_what_is_in_flight_without_consuming_it():
    graph = build_graph("ring", N, False, {})
    network, neighbors = _network(graph, (metropolis_hastings(graph),))
    streams = [nb.stream("model", _codec("identity", 8), 0, r, Stopwatch()) for r, nb in enumerate(neighbors)]
    network.run([nb.seal for nb in neighbors])
    messages = network.run([lambda r=r: streams[r].start(0, np.full(8, float(r))) for r in range(N)])
    assert len(network.undelivered()) == 2 * N
    network.run([nb.drain for nb in neighbors])
    assert network.undelivered() == [] and not any(m.in_flight for m in messages)
    mixed = network.run([lambda r=r: messages[r].mix(np.zeros(8))[0] for r in range(N)])
    assert mixed == [pytest.approx((((r - 1) % N) + ((r + 1) % N)) / 3) for r in range(N)]


def test_the_twin_detects_exchanges_that_do_not_match_instead_of_hanging():
    network = MemoryNetwork(Schedule.static(build_graph("ring", 4, False, {})))
    exchanges = [network.transport(r).exchange(8, 8) for r in range(4)]

    def node(rank):
        exchanges[rank].start(np.zeros(8, dtype=np.uint8), tag=1 if rank == 3 else 0)  # rank 3's tag differs
        return exchanges[rank].wait()

    with pytest.raises(PeerFailed, match="deadlock"):
        network.run([lambda r=r: node(r) for r in range(4)])


# ---- composable optimizers, resume of an algorithm with two streams --------------------------------------


def _two_streams(steps):
    graph = build_graph("torus", N, False, {})
    sim = Simulation.gossip(Schedule.static(graph), (metropolis_hastings(graph),), TWO_STREAMS, "qsgd", QSGD,
                            {"lr": 0.05, "gamma": 0.5}, _x0(7, 128), steps=steps)
    centers = _x0(8, 128)
    for rank, algo in enumerate(sim.algorithms):  # F_i(x) = ½‖x − c_i‖²: a real gradient for the optimizers
        obj = algo.objective
        obj.loss_grad = lambda t, obj=obj, c=centers[rank]: float(np.subtract(obj.params, c, out=obj.grads) @ obj.grads)
    return sim, centers


def test_an_algorithm_holds_two_optimizers_with_their_own_names_and_resumes_bit_exactly():
    """inner (adam) and outer (nesterov) keep separate arrays under their own names; a run stopped after
    7 steps, restored into fresh nodes from its state and continued, ends bit-identical to 14 steps in one
    go — the two streams, the reference copies and both optimizers are all in the state."""
    whole, centers = _two_streams(14)
    whole.run(14)
    names = list(whole.algorithms[0].state())
    assert names == ["x", "anchor", "copies", "mixed", "inner_m", "inner_v", "inner_steps", "outer_m", "outer_steps"]
    assert int(whole.algorithms[0].state()["inner_steps"][0]) == 14
    assert int(whole.algorithms[0].state()["outer_steps"][0]) == 14 // 3
    first, _ = _two_streams(14)
    first.run(7)
    saved = [{k: v.copy() for k, v in a.state().items()} for a in first.algorithms]
    second, _ = _two_streams(14)
    for algo, state in zip(second.algorithms, saved):
        for k, array in algo.state().items():
            np.copyto(array, state[k])
        algo.after_restore()
    second.run(range(7, 14))
    for a, b in zip(whole.algorithms, second.algorithms):
        for k, array in a.state().items():
            np.testing.assert_array_equal(array, b.state()[k], err_msg=k)
    # and the run did something: the nodes moved towards the average of the centres, not apart
    spread = np.linalg.norm(whole.models() - centers.mean(axis=0), axis=1).max()
    assert spread < np.linalg.norm(_x0(7, 128) - centers.mean(axis=0), axis=1).max()


def test_a_second_optimizer_under_a_taken_name_is_refused():
    sim, _ = _two_streams(3)
    with pytest.raises(ValueError, match="second optimizer named 'inner'"):
        sim.algorithms[0].add_optimizer({"optimizer": "sgd"}, name="inner")


# ---- progress while computing ----------------------------------------------------------------------------


def test_progress_hooks_poke_after_every_layer_and_every_gradient_and_change_no_number():
    """[run] progress = "hooks": the objective calls the poke after each leaf module's forward pass and
    when each parameter's gradient is computed, and the loss and gradient are bit-identical to a model
    without hooks (the hooks only observe)."""
    from mpidecent.config import load_text
    from mpidecent.plan import plan_job
    from mpidecent.runner.build import build_node

    job = load_text("[data]\nname = \"digits\"\nbatch_size = 16\n[model]\nname = \"mlp\"\nhidden = [8, 8]\n"
                    "[algorithm]\nname = \"dpsgd\"\n[topology]\nkind = \"ring\"\n")
    plan = plan_job(job, 2)
    hooked, plain = build_node(plan, 0, 2).objective, build_node(plan, 0, 2).objective
    pokes = []
    hooked.on_progress(lambda: pokes.append(len(pokes)))
    module = hooked.flat.module
    leaves = sum(1 for m in module.modules() if next(m.children(), None) is None)
    for step in range(3):
        assert hooked.loss_grad(step) == plain.loss_grad(step)
        np.testing.assert_array_equal(hooked.grads, plain.grads)
    assert leaves == 5 and len(pokes) == 3 * (leaves + len(list(module.parameters())))


# ---- push-sum with overlap against numpy ----------------------------------------------------------------


def _push_sum_sim(name, overlap, compressor="identity", graph=None, steps=30, gamma=1.0, lr=0.1):
    graph = graph or build_graph("chord_ring", N, None, {"chords": 3, "seed": 2})
    schedule = graph if isinstance(graph, Schedule) else Schedule.static(graph)
    weights = tuple(column_stochastic_uniform(g) for g in schedule.graphs)
    params = {"lr": lr, "overlap": overlap} | ({"gamma": gamma} if name == "quantized_push_sum" else {})
    x0, centers = _x0(11, 64), _x0(12, 64)
    sim = Simulation.gossip(schedule, weights, name, compressor, QSGD if compressor == "qsgd" else {}, params, x0,
                            steps=steps)
    for rank, algo in enumerate(sim.algorithms):  # F_i(z) = ½‖z − c_i‖², gradient at the de-biased z
        obj = algo.objective
        obj.loss_grad = lambda t, obj=obj, c=centers[rank]: float(np.subtract(obj.params, c, out=obj.grads) @ obj.grads)
    return sim, schedule, weights, x0, centers


def _numpy_push_sum(schedule, weights, x0, centers, steps, lr, overlap):
    """The updates written out on the whole network: X (n, d), Y (n,), P = W (row = receiver).
    overlap: X_{t+1} = P X_t − α G(Z_t); otherwise X_{t+1} = P (X_t − α G(Z_t)); Y_{t+1} = P Y_t."""
    x, y = x0.copy(), np.ones(len(x0))
    for t in range(steps):
        p = weights[t % len(weights)]
        g = x / y[:, None] - centers
        x = p @ x - lr * g if overlap else p @ (x - lr * g)
        y = p @ y
    return x, y


@pytest.mark.parametrize("overlap", [True, False])
def test_push_sum_with_and_without_overlap_is_the_numpy_update_and_conserves_mass(overlap):
    steps, lr = 30, 0.1
    sim, schedule, weights, x0, centers = _push_sum_sim("push_sum", overlap, steps=steps, lr=lr)
    mass = x0.sum(axis=0)
    for t in range(steps):
        z = sim.models()
        sim.step(t)
        mass -= lr * (z - centers).sum(axis=0)  # Σ x changes only by the gradient steps
        np.testing.assert_allclose(sum(a.x for a in sim.algorithms), mass, rtol=0, atol=1e-12)
        assert sum(float(a.y[0]) for a in sim.algorithms) == pytest.approx(N, abs=1e-12)
    x, y = _numpy_push_sum(schedule, weights, x0, centers, steps, lr, overlap)
    np.testing.assert_allclose(np.stack([a.x for a in sim.algorithms]), x, rtol=0, atol=1e-12)
    np.testing.assert_allclose([a.y[0] for a in sim.algorithms], y, rtol=0, atol=1e-14)
    other, *_ = _push_sum_sim("push_sum", not overlap, steps=steps, lr=lr)
    other.run(steps)
    assert np.abs(other.models() - sim.models()).max() > 1e-6  # the two updates really differ
    # a run of the full length leaves nothing in flight; the message of the next step is sent ahead
    assert sim.network.undelivered() == []


def test_overlapped_push_sum_sends_the_next_step_ahead_and_drains():
    sim, *_ = _push_sum_sim("push_sum", True, steps=30)
    sim.run(5)
    assert all(a.pending is not None for a in sim.algorithms) and sim.network.undelivered()
    sim.drain()
    assert sim.network.undelivered() == [] and all(not a.pending.in_flight for a in sim.algorithms)
    sim.run(range(5, 30))
    assert all(a.pending is None for a in sim.algorithms)  # nothing sent after the last step


def test_quantized_push_sum_with_overlap_is_push_sum_with_overlap_for_the_identity_operator():
    """With Q = identity and γ = 1 the reference copies equal the sent vectors exactly, so the
    overlapped quantized update is X_{t+1} = P X_t − α G(Z_t) too."""
    steps, lr = 30, 0.1
    sim, schedule, weights, x0, centers = _push_sum_sim("quantized_push_sum", True, steps=steps, lr=lr)
    sim.run(steps)
    x, _ = _numpy_push_sum(schedule, weights, x0, centers, steps, lr, overlap=True)
    np.testing.assert_allclose(np.stack([a.x for a in sim.algorithms]), x, rtol=0, atol=1e-11)


@pytest.mark.parametrize("graph", ["chord_ring", "one_peer"])
def test_overlapped_quantized_push_sum_conserves_mass_and_reaches_the_exact_average(graph):
    """Pure gossip (α = 0) with QSGD: z_i → x̄(0) with reference copies kept bit-identical across ranks,
    Σx and Σy conserved at every step (static and time-varying graphs)."""
    g = build_graph("chord_ring", N, None, {"chords": N // 2, "seed": 0}) if graph == "chord_ring" \
        else one_peer_exponential(N)
    sim, schedule, _, x0, _ = _push_sum_sim("quantized_push_sum", True, "qsgd", graph=g, steps=400, lr=0.0)
    total, target = x0.sum(axis=0), x0.mean(axis=0)
    for t in range(400):
        sim.step(t)
        assert np.abs(sum(a.x for a in sim.algorithms) - total).max() <= 1e-12 * np.abs(total).max()
        assert abs(sum(float(a.y[0]) for a in sim.algorithms) - N) <= 1e-12 * N
    assert np.max(np.linalg.norm(sim.models() - target, axis=1)) / np.linalg.norm(target) <= 1e-10
    for algo in sim.algorithms:
        for slot in range(schedule.period):
            for k, sender in enumerate(algo.ctx.neighbors.row(slot).in_neighbors):
                np.testing.assert_array_equal(algo.ref_in[slot][k], sim.algorithms[sender].ref_out[slot])
