"""Gradient tracking (algorithms/gradient_tracking.py) on the in-memory twin against its properties
(docs/algorithms/gradient-tracking.md): the tracking invariant, exact convergence with a constant step on
label-sorted logistic regression where push-sum stalls, compressed Push-Pull at a fraction of the bits,
Push-DIGing on a time-varying digraph, exact bits per message, and an independent numpy Push-Pull / DIGing."""

from __future__ import annotations

import numpy as np
import pytest

from mpidecent.compression import build_compressor
from mpidecent.config import load_text
from mpidecent.errors import JobError
from mpidecent.plan import plan_job
from mpidecent.runner.simulate import Simulation
from mpidecent.topology import (build_graph, column_stochastic_uniform, metropolis_hastings, perron_vector,
                                row_stochastic_uniform)
from mpidecent.topology.schedule import Schedule, one_peer_exponential

N, P, M, L2 = 8, 10, 40, 0.01  # nodes, features, samples per node, ℓ2
QSGD8 = {"levels": 127, "bucket": 64}  # 1 sign + 7 level bits per entry, a float32 norm per bucket of 64


def _label_sorted_logistic(seed: int = 0):
    """ℓ2-regularised logistic regression on label-sorted shards: nodes 0..3 hold (almost) only label 0,
    the others label 1. Returns the shards, f and f* (Newton's method, independent of the package)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((N * M, P))
    y = (rng.random(N * M) < 1 / (1 + np.exp(-a @ rng.standard_normal(P)))).astype(float)
    order = np.argsort(y, kind="stable")
    a, y = a[order], y[order]
    shards = [(a[i * M:(i + 1) * M], y[i * M:(i + 1) * M]) for i in range(N)]

    def f(theta):
        z = a @ theta
        return float(np.mean(np.logaddexp(0, z) - y * z) + 0.5 * L2 * theta @ theta)

    theta = np.zeros(P)
    for _ in range(30):
        s = 1 / (1 + np.exp(-a @ theta))
        hess = (a * (s * (1 - s))[:, None]).T @ a / len(y) + L2 * np.eye(P)
        theta -= np.linalg.solve(hess, a.T @ (s - y) / len(y) + L2 * theta)
    return shards, f, f(theta)


SHARDS, F, F_STAR = _label_sorted_logistic()


def _gradient(theta, shard):
    a, y = shard
    return a.T @ (1 / (1 + np.exp(-(a @ theta))) - y) / len(y) + L2 * theta


def _chord_ring():
    return build_graph("chord_ring", N, None, {"chords": 4, "seed": 0})  # the quickstart's irregular digraph


def _simulation(name, graph, alpha, compressor="identity", comp_params=None, weights=column_stochastic_uniform,
                **params):
    """``name`` on the twin with full-batch gradients of each node's shard (F_i of the logistic problem)."""
    schedule = graph if isinstance(graph, Schedule) else Schedule.static(graph)
    slot_weights = tuple(weights(g) for g in schedule.graphs)
    sim = Simulation.gossip(schedule, slot_weights, name, compressor, comp_params or {}, {"lr": alpha, **params},
                            np.zeros((N, P)))
    for rank, algo in enumerate(sim.algorithms):
        objective = algo.objective

        def loss_grad(t, objective=objective, shard=SHARDS[rank]):
            objective.grads[:] = _gradient(objective.params, shard)
            return 0.0
        objective.loss_grad = loss_grad
    return sim


def _suboptimality(sim) -> float:
    """max over nodes of f(x_i) − f*."""
    return max(F(model) - F_STAR for model in sim.models())


# ---- property 1: Σ_i y_i = Σ_i g_i at every step ---------------------------------------------------------


@pytest.mark.parametrize("name, graph, compressor, normalize", [
    ("push_pull", "chord_ring", "identity", False), ("push_pull", "chord_ring", "qsgd", False),
    ("push_pull", "one_peer", "qsgd", False), ("push_pull", "chord_ring", "qsgd", True),
    ("push_diging", "one_peer", "identity", False)])
def test_the_trackers_sum_to_the_sum_of_the_latest_gradients_at_every_step(name, graph, compressor, normalize):
    g = _chord_ring() if graph == "chord_ring" else one_peer_exponential(N)
    sim = _simulation(name, g, 0.5, compressor, {"levels": 8, "bucket": 64} if compressor == "qsgd" else None,
                      **({"normalize_tracker": True} if normalize else {}))
    for t in range(60):
        sim.step(t)
        trackers = sum(a.y for a in sim.algorithms)
        gradients = sum(a.g_old for a in sim.algorithms)
        assert np.abs(trackers - gradients).max() <= 1e-12 * np.abs(gradients).max()
    if compressor == "qsgd":  # the replicas a receiver keeps are its senders' own copies, bit for bit
        for algo in sim.algorithms:
            for slot in range(algo.ctx.neighbors.period):
                for k, sender in enumerate(algo.ctx.neighbors.row(slot).in_neighbors):
                    other = sim.algorithms[sender]
                    np.testing.assert_array_equal(algo.ref_x_in[slot][k], other.ref_x_out[slot])
                    np.testing.assert_array_equal(algo.ref_y_in[slot][k], other.ref_y_out[slot])


# ---- properties 2-4: exact convergence with a constant step on heterogeneous data --------------------------


def test_push_pull_converges_exactly_where_push_sum_stalls():
    exact = _simulation("push_pull", _chord_ring(), 1.0)
    exact.run(400)
    push_sum = _simulation("push_sum", _chord_ring(), 1.0)
    push_sum.run(400)
    assert _suboptimality(exact) <= 1e-10
    assert _suboptimality(push_sum) >= 1e-4  # the ζ² floor of a constant step on label-sorted shards


def test_a_normalized_tracker_still_converges_exactly_and_its_weight_finds_the_perron_vector():
    graph = _chord_ring()
    sim = _simulation("push_pull", graph, 0.5, "qsgd", QSGD8, normalize_tracker=True, gamma=0.9)
    sim.run(400)
    assert _suboptimality(sim) <= 1e-8
    weights = np.array([a.v[0] for a in sim.algorithms])  # v_i → n·u_i, u: C's right Perron vector
    np.testing.assert_allclose(weights, N * perron_vector(column_stochastic_uniform(graph), "right"), rtol=1e-9)


def test_compressed_push_pull_converges_exactly_with_a_third_of_the_bits():
    exact = _simulation("push_pull", _chord_ring(), 1.0)
    cpp = _simulation("push_pull", _chord_ring(), 1.0, "qsgd", QSGD8)
    bits_exact = sum(s.bits_sent for step in exact.run(400) for s in step)
    bits_cpp = sum(s.bits_sent for step in cpp.run(400) for s in step)
    assert _suboptimality(cpp) <= 1e-8
    assert bits_cpp <= bits_exact / 3


def test_push_diging_converges_exactly_on_the_time_varying_one_peer_digraph():
    sim = _simulation("push_diging", one_peer_exponential(N), 1.0)
    sim.run(400)
    assert _suboptimality(sim) <= 1e-10
    np.testing.assert_allclose(sum(a.w[0] for a in sim.algorithms), N, rtol=1e-13)


# ---- property 5: bits per message ----------------------------------------------------------------------


@pytest.mark.parametrize("name, compressor, normalize", [
    ("push_pull", "identity", False), ("push_pull", "qsgd", False), ("push_pull", "qsgd", True),
    ("push_diging", "identity", False)])
def test_bits_per_step_follow_the_formula(name, compressor, normalize):
    comp_params = QSGD8 if compressor == "qsgd" else {}
    sim = _simulation(name, _chord_ring(), 0.5, compressor, comp_params,
                      **({"normalize_tracker": True} if normalize else {}))
    payload = build_compressor(compressor, P, np.dtype("float64"), comp_params).bits
    # two vectors, + a float64 push-sum weight (Push-DIGing's w, a normalized tracker's v)
    per_edge = 2 * payload + (64 if name == "push_diging" or normalize else 0)
    messages = 1 if name == "push_diging" else 2  # Push-Pull: streams "model" and "tracker"
    degrees = _chord_ring().out_degree
    for t in range(3):
        stats = sim.step(t)
        assert [s.bits_sent for s in stats] == [int(d) * per_edge for d in degrees]
        assert [s.messages_sent for s in stats] == [int(d) * messages for d in degrees]


# ---- property 6 and the directed case: an independent numpy implementation --------------------------------


def _numpy_push_pull(r, c, alpha, steps):
    """Push-Pull (AB) on the whole network: X_{t+1} = R X_t − α Y_t; Y_{t+1} = C Y_t + G(X_{t+1}) − G(X_t),
    Y_0 = G(X_0). With R = C = W doubly stochastic this is DIGing (gradient-tracking D-PSGD)."""
    x = np.zeros((N, P))
    grads = np.stack([_gradient(x[i], SHARDS[i]) for i in range(N)])
    y = grads.copy()
    for _ in range(steps):
        x = r @ x - alpha * y
        new = np.stack([_gradient(x[i], SHARDS[i]) for i in range(N)])
        y = c @ y + new - grads
        grads = new
    return x


@pytest.mark.parametrize("case", ["directed_row_and_column_uniform", "undirected_doubly_stochastic"])
def test_push_pull_is_the_numpy_update(case):
    steps, alpha = 40, 0.5
    if case == "undirected_doubly_stochastic":  # R = C = W: DIGing
        graph = build_graph("torus", N, None, {})
        w = metropolis_hastings(graph)
        sim = _simulation("push_pull", graph, alpha, weights=metropolis_hastings, pull_weights="topology")
        expected = _numpy_push_pull(w, w, alpha, steps)
    else:
        graph = _chord_ring()
        sim = _simulation("push_pull", graph, alpha)
        expected = _numpy_push_pull(row_stochastic_uniform(graph), column_stochastic_uniform(graph), alpha, steps)
    sim.run(steps)
    np.testing.assert_allclose(sim.models(), expected, rtol=0, atol=1e-12)


def test_the_perron_vectors_of_the_pull_and_push_weights():
    graph = _chord_ring()
    r, c = row_stochastic_uniform(graph), column_stochastic_uniform(graph)
    np.testing.assert_allclose(r.sum(axis=1), 1, rtol=1e-15)
    left, right = perron_vector(r, "left"), perron_vector(c, "right")
    np.testing.assert_allclose(left @ r, left, atol=1e-14)
    np.testing.assert_allclose(c @ right, right, atol=1e-14)
    assert left.min() > 0 and right.min() > 0 and right.max() / right.min() > 1.2  # irregular: skewed
    w = metropolis_hastings(build_graph("torus", N, None, {}))
    np.testing.assert_allclose(perron_vector(w, "left"), np.full(N, 1 / N), atol=1e-14)


# ---- invalid combinations: one line naming the key -------------------------------------------------------

BASE = """
[run]
steps = 10
[topology]
kind = "chord_ring"
chords = 2
[algorithm]
name = "push_pull"
lr = 0.1
[data]
name = "synthetic_logistic"
samples = 200
features = 5
[model]
name = "logistic"
l2 = 0.01
"""


@pytest.mark.parametrize("overrides, expected", [
    (["compression.name=topk", "compression.fraction=0.5"],
     "is biased; push_pull needs an unbiased operator (identity, qsgd"),
    (["compression.name=randk", "compression.fraction=0.5"], "randk (scaled = true)"),
    (["algorithm.gamma=0.5"], "[algorithm] gamma = 0.5 is the consensus step of compressed Push-Pull"),
    (["algorithm.pull_weights=topology"], "[algorithm] pull_weights = \"topology\" needs row-stochastic"),
    (["topology.kind=star", "topology.directed=true"], "is not strongly connected"),
    (["algorithm.name=push_diging", "compression.name=qsgd"], "is not supported by push_diging"),
])
def test_invalid_combinations_are_refused_in_one_line(overrides, expected):
    with pytest.raises(JobError) as err:
        plan_job(load_text(BASE, overrides=overrides), 8)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_pull_weights_from_an_undirected_metropolis_topology_are_accepted():
    plan = plan_job(load_text(BASE, overrides=["algorithm.pull_weights=topology", "topology.directed=false",
                                               "topology.weights=metropolis"]), 8)
    sim = Simulation.of_plan(plan)
    sim.run(3)
    assert all(np.isfinite(a.model_view()).all() for a in sim.algorithms)


def test_the_divergence_hint_of_exact_gradient_tracking_names_the_step_size_not_gamma():
    from mpidecent.algorithms.catalog import divergence_hint

    for name in ("push_pull", "push_diging"):
        hint = divergence_hint(load_text(BASE, overrides=[f"algorithm.name={name}"]))
        assert hint.startswith("lower [algorithm] lr (now 0.1)") and "n·u_i" in hint and "gamma" not in hint
    compressed = divergence_hint(load_text(BASE, overrides=["compression.name=qsgd", "compression.levels=4"]))
    assert compressed.startswith("unbiased compressor") and "γ ≤ 0.5" in compressed
