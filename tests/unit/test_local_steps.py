"""Local steps and outer optimizers ([outer], algorithms/local_steps.py) on the in-memory twin: the spec's
properties 2, 3, 5 and 6 (property 1, against all-reduce SGD, needs MPI: tests/mpi/test_local_steps.py;
property 4, resume inside a round and inside the exchange's window: the catalog cases diloco,
dpsgd_local_steps, noloco, choco_local_steps, push_sum_local_steps and qps_local_steps in
tests/mpi/test_checkpoint.py, and the twin's bit-identity to MPI in tests/mpi/test_memory_twin.py), and the
one-line errors of invalid combinations."""

from __future__ import annotations

import numpy as np
import pytest

from mpidecent.algorithms import ALGORITHMS
from mpidecent.algorithms.local_steps import GossipRounds, PushSumCompressedGossipRounds, local_steps_class
from mpidecent.comm.memory import MemoryNetwork
from mpidecent.compression import build_compressor
from mpidecent.config import load_text
from mpidecent.errors import JobError
from mpidecent.learning.problems import NullObjective
from mpidecent.plan import plan_job
from mpidecent.runner.build import context
from mpidecent.runner.simulate import Simulation
from mpidecent.topology import build_graph, metropolis_hastings
from mpidecent.topology.schedule import Schedule, random_pairs

N = 8
BASE = """
[run]
steps = 30
seed = 3
[topology]
kind = "chord_ring"
chords = 2
[algorithm]
name = "push_sum"
lr = 0.2
[data]
name = "synthetic_logistic"
samples = 400
features = 6
partition = "sorted"
batch_size = 16
[model]
name = "logistic"
l2 = 0.01
"""
# H = 1 with outer SGD, η = 1, μ = 0: the round is one gradient step and one mix
PER_STEP = ["outer.every=1", "outer.optimizer=sgd", "outer.lr=1", "outer.momentum=0"]


def _simulate(overrides, steps=30, text=BASE):
    sim = Simulation.of_plan(plan_job(load_text(text, overrides=overrides), N))
    trajectory = []
    for t in range(steps):
        stats = sim.step(t)
        trajectory.append((sim.models(), stats))
    return sim, trajectory


# ---- property 2: H = 1 is the per-step algorithm's "gradient step, then mix" form ---------------------


def _gradients(sim, models, t):
    """g_i(models[i]) on step t's batch, from the twin's own objectives (their state restored)."""
    grads = []
    for i, node in enumerate(sim.nodes):
        saved = node.objective.params.copy()
        node.objective.params[:] = models[i]
        node.objective.loss_grad(t)
        grads.append(node.objective.grads.copy())
        node.objective.params[:] = saved
    return np.stack(grads)


def test_one_inner_step_per_round_over_push_sum_is_push_sum_of_the_stepped_models():
    """Push-sum mixes Δ as mass (w_i Δ_i, a weighted average once de-biased), so the round is "step the
    de-biased model, then push-sum its mass": x ← C(y ⊙ (z − α g(z))), y ← C y, z = x / y, every step to
    rounding; an independent numpy run with the twin's minibatch gradients."""
    from mpidecent.topology import column_stochastic_uniform

    sim = Simulation.of_plan(plan_job(load_text(BASE, overrides=PER_STEP), N))
    c = column_stochastic_uniform(build_graph("chord_ring", N, True, {"chords": 2}))
    z, y = sim.models(), np.ones(N)
    for t in range(20):
        x = c @ (y[:, None] * (z - 0.2 * _gradients(sim, z, t)))
        y = c @ y
        z = x / y[:, None]
        sim.step(t)
        np.testing.assert_allclose(sim.models(), z, rtol=0, atol=1e-12, err_msg=f"step {t}")
    assert np.abs(z - sim.nodes[0].objective.params).max() < 1  # sanity: same scale
    assert np.ptp(y) > 1  # an irregular digraph: the weights differ, so the weighting matters


def test_one_inner_step_per_round_over_dpsgd_is_adapt_then_combine_dpsgd():
    """On the undirected chord ring with Metropolis weights W: x ← W(x − α g), an independent numpy run
    with the same minibatch gradients (taken from the twin's own objectives at the same points)."""
    overrides = ["algorithm.name=dpsgd", "topology.directed=false", *PER_STEP]
    sim = Simulation.of_plan(plan_job(load_text(BASE, overrides=overrides), N))
    w = metropolis_hastings(build_graph("chord_ring", N, False, {"chords": 2}))
    x = sim.models()
    for t in range(20):
        x = w @ (x - 0.2 * _gradients(sim, x, t))
        sim.step(t)
        np.testing.assert_allclose(sim.models(), x, rtol=0, atol=1e-12, err_msg=f"step {t}")


def test_one_inner_step_per_round_over_push_pull_is_push_pull():
    """Push-Pull one level up with H = 1, inner SGD, outer SGD η = 1: exact Push-Pull (AB) with step α,
    X ← R X − α Y, Y ← C Y + G(X_new) − G(X), Y_0 = G(X_0): the tracker y⁺ is α Y; numpy, every step."""
    from mpidecent.topology import column_stochastic_uniform, row_stochastic_uniform

    sim = Simulation.of_plan(plan_job(load_text(BASE, overrides=["algorithm.name=push_pull", *PER_STEP]), N))
    graph = build_graph("chord_ring", N, True, {"chords": 2})
    r, c = row_stochastic_uniform(graph), column_stochastic_uniform(graph)
    x = sim.models()
    g = _gradients(sim, x, 0)
    y = g.copy()
    for t in range(20):
        x_new = r @ x - 0.2 * y
        sim.step(t)
        np.testing.assert_allclose(sim.models(), x_new, rtol=0, atol=1e-12, err_msg=f"step {t}")
        g_new = _gradients(sim, x_new, t + 1)
        y = c @ y + g_new - g
        x, g = x_new, g_new


# ---- property 3: bits per round = one aggregation message; per step = that / H ---------------------------


@pytest.mark.parametrize("overrides, vector_bits, weight_bits", [
    (["outer.every=3"], 2 * 7 * 64, 64),  # push-sum: (φ^m, Δ) in float64, d = 7, and the weight
    (["outer.every=3", "outer.delay=2"], 2 * 7 * 64, 64),
    (["outer.every=4", "algorithm.name=quantized_push_sum", "compression.name=qsgd", "compression.levels=8"],
     None, 64),
    (["outer.every=2", "algorithm.name=dpsgd", "topology.directed=false"], 2 * 7 * 64, 0),
])
def test_a_round_sends_one_message_per_out_edge(overrides, vector_bits, weight_bits):
    plan = plan_job(load_text(BASE, overrides=overrides), N)
    every, delay = plan.job.outer["every"], plan.job.outer["delay"]
    if vector_bits is None:
        vector_bits = 2 * build_compressor("qsgd", 7, np.dtype("float64"), plan.job.compression).bits
    sim = Simulation.of_plan(plan)
    steps = 6 * every
    stats = sim.run(steps)
    degrees = [len(plan.schedule.graphs[0].out_neighbors(i)) for i in range(N)]
    per_round = [d * (vector_bits + weight_bits) for d in degrees]
    applied = [(r + 1) * every - 1 + delay for r in range(6) if (r + 1) * every - 1 + delay < steps]
    for rank, node_stats in enumerate(stats):
        bits = [s.bits_sent for s in node_stats]
        assert [t for t, b in enumerate(bits) if b] == applied  # booked in the step that applies the round
        assert set(b for b in bits if b) == {per_round[rank]}
        assert sum(bits) / steps == per_round[rank] * len(applied) / steps  # per step: the round's bits / H
        assert sum(s.messages_sent for s in node_stats) == len(applied) * degrees[rank]


# ---- property 5: NoLoCo's pairs ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [8, 7])
def test_random_pairs_are_a_matching_every_slot_computed_alike_everywhere(n):
    schedule = random_pairs(n, 50, seed=4)
    again = random_pairs(n, 50, seed=4)  # what another rank computes from (seed, round) alone
    partners = set()
    for graph, other in zip(schedule.graphs, again.graphs):
        assert np.array_equal(graph.edges, other.edges)
        degree = np.array([len(graph.out_neighbors(i)) for i in range(n)])
        assert degree.max() == 1 and (degree == 0).sum() == n % 2  # n odd: exactly one rank sits out
        for i in range(n):
            for j in graph.out_neighbors(i):
                assert i in graph.out_neighbors(j)  # i's partner has i as its partner
                partners.add((i, int(j)))
    assert len(partners) == n * (n - 1)  # over 50 rounds every pair has met
    assert not np.array_equal(random_pairs(n, 1, seed=5).graphs[0].edges, schedule.graphs[0].edges)


def test_noloco_pairs_average_and_take_the_noloco_step():
    """One round (H = 2, η = 0.7, μ = 0.5): every rank's φ ← φ + m with m = −η Δ̄ + η (φ̄ − φ), where φ̄, Δ̄
    are its pair's means (the rank left out of an odd count keeps its own)."""
    text = BASE.replace('[topology]\nkind = "chord_ring"\nchords = 2\n', "")
    overrides = ["algorithm.name=dpsgd", "outer.every=2", "outer.pairing=random", "outer.lr=0.7",
                 "outer.momentum=0.5", "run.steps=2"]
    plan = plan_job(load_text(text, overrides=overrides), N)
    sim = Simulation.of_plan(plan)
    phi0 = sim.models()
    sim.step(0)
    sim.step(1)
    delta = np.stack([a.delta for a in sim.algorithms])
    pairs = plan.schedule.graphs[0]
    for i, a in enumerate(sim.algorithms):
        group = [i, *pairs.out_neighbors(i)]
        expect = phi0[i] - 0.7 * delta[group].mean(axis=0) + 0.7 * (phi0[group].mean(axis=0) - phi0[i])
        np.testing.assert_allclose(a.theta, expect, rtol=0, atol=1e-14)


# ---- property 6: outer Nesterov converges to a quadratic's optimum -----------------------------------------


class _Quadratic(NullObjective):
    """F_i(θ) = ½‖θ − c_i‖²: the network optimum is the mean of the c_i."""

    def __init__(self, center: np.ndarray) -> None:
        super().__init__(center.size, center.dtype)
        self.center = center

    def loss_grad(self, step: int) -> float:
        np.subtract(self.params, self.center, out=self.grads)
        return 0.5 * float(self.grads @ self.grads)


class _ThreadAllReduce:
    """An all-reduce across the twin's node threads (each node one thread of ``MemoryNetwork.run``): the sum
    in rank order, identical on every node."""

    def __init__(self, size: int, rank: int, shared: dict) -> None:
        self.size, self.rank, self.shared = size, rank, shared

    def allreduce_sum(self, array: np.ndarray) -> None:
        slots, barrier = self.shared["slots"], self.shared["barrier"]
        slots[self.rank] = array.copy()
        barrier.wait()
        total = np.sum(np.stack(slots), axis=0)
        barrier.wait()
        array[:] = total


@pytest.mark.parametrize("algorithm, outer", [
    ("allreduce_sgd", {"every": 5, "delay": 0}),  # DiLoCo
    ("dpsgd", {"every": 5, "delay": 0}),
    ("dpsgd", {"every": 5, "delay": 2}),
    ("push_sum", {"every": 4, "delay": 1}),
])
def test_outer_nesterov_converges_to_the_optimum_of_a_quadratic(algorithm, outer):
    import threading

    from mpidecent.comm.patterns import Connection
    from mpidecent.topology import column_stochastic_uniform

    spec = ALGORITHMS[algorithm]
    rng = np.random.default_rng(7)
    # All-reduce: heterogeneous centres, optimum their mean (equal curvature: local steps add no drift).
    # Gossip: constant-step gossip keeps a heterogeneity bias (as D-PSGD does), so one centre and different
    # starting points: the nodes must agree and reach it.
    centers = rng.normal(size=(N, 3)) * 3 if spec.name == "allreduce_sgd" else np.tile(rng.normal(size=3) * 3, (N, 1))
    starts = rng.normal(size=(N, 3)) * 3
    if spec.name == "allreduce_sgd":  # DiLoCo's replicas start from one model and stay identical
        starts[:] = starts[0]
    directed = spec.name == "push_sum"
    graph = build_graph("ring", N, directed, {})
    weights = (column_stochastic_uniform(graph) if directed else metropolis_hastings(graph),)
    outer = {"optimizer": "nesterov", "lr": 0.7, "momentum": 0.5, "pairing": "graph", **outer}
    steps = 800
    network = MemoryNetwork(Schedule.static(graph))
    shared = {"slots": [None] * N, "barrier": threading.Barrier(N)}
    algorithms = []
    for rank in range(N):
        codec = build_compressor("identity", 3, np.dtype("float64"), {})
        params = {p.name: p.default for p in spec.params} | {"lr": 0.1}
        neighbors = (Connection() if spec.name == "allreduce_sgd" else
                     Simulation._neighbors(spec, network, weights, rank))
        objective = _Quadratic(centers[rank])
        objective.params[:] = starts[rank]
        ctx = context(spec, neighbors, rank, N, 0, params, objective, codec,
                      _ThreadAllReduce(N, rank, shared), steps=steps, outer=outer)
        algorithms.append(local_steps_class(spec)(ctx))
    if spec.name == "allreduce_sgd":
        network.run([lambda a=a: [a.step(t) for t in range(steps)] for a in algorithms])
        models = np.stack([a.model_view() for a in algorithms])
    else:
        sim = Simulation(network, algorithms)
        sim.run(steps)
        models = sim.models()
    assert int(algorithms[0].rounds[0]) == (steps - outer["delay"]) // outer["every"]
    np.testing.assert_allclose(models, np.broadcast_to(centers.mean(axis=0), models.shape), rtol=0, atol=1e-10)


# ---- invalid combinations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, expected", [
    (["algorithm.name=push_diging", "outer.every=2"], "[outer] does not apply to push_diging (its rounds are not "
                                                       "implemented; push_pull with [outer] tracks"),
    (["algorithm.name=push_pull", "outer.every=2", "compression.name=qsgd"], "[compression] name: push_pull with "
                                                                             "[outer] tracks the pseudo-gradients with exact messages only"),
    (["outer.every=3", "outer.delay=3"], "[outer] delay = 3 must be smaller than every = 3"),
    (["outer.every=40"], "[outer] every = 40 is more than [run] steps = 30"),
    (["outer.every=2", "outer.pairing=random"], "[outer] pairing = \"random\" draws a new partner"),
    (["outer.every=2", "algorithm.overlap=true"], "[algorithm] overlap = true overlaps per-step exchanges"),
    (["outer.every=2", "algorithm.name=quantized_push_sum", "compression.name=topk", "compression.fraction=0.5"],
     "[compression] name = 'topk' is biased: with [outer] the pseudo-gradient"),
    (["outer.every=2", "outer.optimizer=adam"], "[outer] optimizer"),
    (["outer.evry=2"], "evry"),
])
def test_invalid_local_step_combinations_are_refused_in_one_line(overrides, expected):
    with pytest.raises(JobError) as err:
        plan_job(load_text(BASE, overrides=overrides), N)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_random_pairing_refuses_another_outer_optimizer():
    text = BASE.replace('[topology]\nkind = "chord_ring"\nchords = 2\n', "")
    with pytest.raises(JobError, match="takes NoLoCo's momentum step .* not optimizer = 'sgd'"):
        load_text(text, overrides=["outer.every=2", "outer.pairing=random", "outer.optimizer=sgd"])
    assert load_text(text, overrides=["outer.every=2", "outer.pairing=random"]).outer["optimizer"] == "heavy_ball"


def test_outer_is_refused_for_master_worker_and_one_sided_algorithms():
    for name in ("gradient_coding", "async_gossip"):
        batch = "[data]\nbatch_size = 0\n" if name == "gradient_coding" else ""
        text = f"[run]\nsteps = 10\n[algorithm]\nname = \"{name}\"\n{batch}[outer]\nevery = 2\n"
        with pytest.raises(JobError, match=r"\[outer\] does not apply to " + name):
            load_text(text)


def test_a_job_with_outer_reads_back_from_its_stored_text():
    for overrides in (["outer.every=3", "outer.delay=1"], ["outer.every=2", "outer.pairing=random"]):
        text = BASE if "outer.pairing=random" not in overrides else BASE.replace(
            '[topology]\nkind = "chord_ring"\nchords = 2\n', "")
        job = load_text(text, overrides=overrides)
        again = load_text(job.to_toml())
        assert again.outer == job.outer and again.topology == job.topology
    plain = load_text(BASE)
    assert "[outer]" not in plain.to_toml() and not plain.outer
    assert type(Simulation.of_plan(plan_job(plain, N)).algorithms[0]).__name__ == "PushSum"
    assert local_steps_class(ALGORITHMS["dpsgd"]) is GossipRounds
    assert local_steps_class(ALGORITHMS["quantized_push_sum"]) is PushSumCompressedGossipRounds
