"""Mixing matrices for a ``Graph`` and their properties.

A mixing matrix ``W`` is ``(n, n)`` float64 with row ``i`` = receiver ``i``: ``w_ij`` is the weight
node ``i`` gives to what it receives from ``j``, nonzero only on edges ``j → i`` and the diagonal.
One gossip step is ``x ← W x`` with the nodes' values stacked as rows of ``x``.

- Column stochastic (columns sum to 1): each sender splits its mass, so ``Σ_i x_i`` is conserved;
  push-sum methods de-bias with the weight ``y ← W y``.
- Row stochastic (rows sum to 1): each receiver takes a weighted average.
- Doubly stochastic (both): the average is conserved and is the consensus value.

``WEIGHTS`` maps the job file's ``[topology] weights`` to the rule; ``build_weights`` turns a rule
that does not fit the graph into a ``JobError``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mpidecent.errors import JobError
from mpidecent.params import REQUIRED, Param
from mpidecent.topology.graphs import Graph


def column_stochastic_uniform(graph: Graph) -> np.ndarray:
    """Push-sum weights: sender ``j`` splits its mass uniformly over itself and its out-neighbours,
    ``w_ij = 1 / (d_j^out + 1)`` for ``i ∈ N_j^out ∪ {j}``, 0 elsewhere. Every column sums to 1.

    Sender ``j`` only needs its own out-degree to compute what it sends. On a regular digraph
    (directed ring, exponential graph) this ``W`` is also row stochastic; on an irregular one it is
    not, which is what push-sum's weight ``y`` corrects.
    """
    share = 1.0 / (
        graph.out_degree + 1.0
    )  # (n,): the fraction each sender j gives to each recipient
    w = np.diag(share)
    w[graph.edges[:, 1], graph.edges[:, 0]] = share[graph.edges[:, 0]]
    return w


def row_stochastic_uniform(graph: Graph) -> np.ndarray:
    """Pull weights: receiver ``i`` averages itself and its in-neighbours uniformly,
    ``w_ij = 1 / (d_i^in + 1)`` for ``j ∈ N_i^in ∪ {i}``, 0 elsewhere. Every row sums to 1.

    Receiver ``i`` only needs its own in-degree (Push-Pull's R;
    ``algorithms/gradient_tracking.py``).
    """
    share = 1.0 / (graph.in_degree + 1.0)  # (n,): the weight each receiver i gives every sender
    w = np.diag(share)
    w[graph.edges[:, 1], graph.edges[:, 0]] = share[graph.edges[:, 1]]
    return w


def perron_vector(w: np.ndarray, side: str) -> np.ndarray:
    """The Perron vector of a stochastic ``W`` (n,), positive, summing to 1: ``side = "right"``
    solves W u = u (the stationary mass of a column-stochastic W, where push-sum weights and
    Push-Pull's trackers settle, y_i → n·u_i·ḡ), ``"left"`` solves vᵀ W = vᵀ (the weights with which
    a row-stochastic W averages: its consensus value is Σ_i v_i x_i(0)). For a strongly connected
    graph with self-loops it is unique; a doubly stochastic W has 1/n on both sides."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    w = np.asarray(w, dtype=np.float64)
    matrix = w if side == "right" else w.T
    eigvals, eigvecs = np.linalg.eig(matrix)
    vector = np.real(eigvecs[:, int(np.argmin(np.abs(eigvals - 1.0)))])
    return vector / vector.sum()


def metropolis_hastings(graph: Graph) -> np.ndarray:
    """Metropolis–Hastings weights for an undirected graph: ``w_ij = 1 / (1 + max(deg_i, deg_j))``
    on edges, ``w_ii = 1 − Σ_{j≠i} w_ij``. Symmetric and doubly stochastic with a positive diagonal.

    On a ``d``-regular graph every weight is ``1 / (d + 1)``: ring 1/3, 2-D torus (both sides ≥ 3)
    1/5, complete 1/n — the papers' uniform weights (``docs/algorithms/multi-gossip.md``).
    Raises ``ValueError`` if the edge set is not symmetric.
    """
    if not graph.is_symmetric():
        raise ValueError("metropolis_hastings needs an undirected graph")
    deg = graph.out_degree  # == in_degree on a symmetric edge set
    src, dst = graph.edges[:, 0], graph.edges[:, 1]
    w = np.zeros((graph.n, graph.n))
    w[dst, src] = 1.0 / (1.0 + np.maximum(deg[src], deg[dst]))
    w[np.diag_indices(graph.n)] = 1.0 - w.sum(axis=1)
    return w


WEIGHTS: dict[str, Callable[[Graph], np.ndarray]] = {
    "column_uniform": column_stochastic_uniform,
    "metropolis": metropolis_hastings,
}


WEIGHTS_PARAM = Param(
    "weights", str, REQUIRED, "the mixing-weight rule", choices=tuple(sorted(WEIGHTS))
)


def build_weights(name: str, graph: Graph) -> np.ndarray:
    """``WEIGHTS[name](graph)``, with ``JobError`` naming ``[topology] weights`` when ``name`` is
    unknown (did-you-mean) or the rule does not fit the graph."""
    name = WEIGHTS_PARAM.coerce("topology", name)
    try:
        return WEIGHTS[name](graph)
    except ValueError:
        raise JobError(
            f"[topology] weights = {name!r} needs an undirected graph, but this {graph.kind} "
            f"graph is directed; set directed = false or use weights = 'column_uniform'"
        ) from None


def _stochastic_along(w: np.ndarray, axis: int, tol: float) -> bool:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        return False
    return bool(np.all(w >= -tol) and np.all(np.abs(w.sum(axis=axis) - 1.0) <= tol))


def is_column_stochastic(w: np.ndarray, tol: float = 1e-12) -> bool:
    """Square, entries ≥ −tol, and every column sums to 1 within ``tol``."""
    return _stochastic_along(w, 0, tol)


def is_row_stochastic(w: np.ndarray, tol: float = 1e-12) -> bool:
    """Square, entries ≥ −tol, and every row sums to 1 within ``tol``."""
    return _stochastic_along(w, 1, tol)


def is_doubly_stochastic(w: np.ndarray, tol: float = 1e-12) -> bool:
    """Both row and column stochastic within ``tol``."""
    return is_row_stochastic(w, tol) and is_column_stochastic(w, tol)


def is_symmetric(w: np.ndarray, tol: float = 1e-12) -> bool:
    """Square and ``|w_ij − w_ji| ≤ tol`` everywhere."""
    w = np.asarray(w)
    return w.ndim == 2 and w.shape[0] == w.shape[1] and bool(np.all(np.abs(w - w.T) <= tol))


def spectral_gap(w: np.ndarray) -> float:
    """``1 − |λ_2|``, where ``|λ_2|`` is the second-largest eigenvalue modulus of ``W``.

    What it means: for a stochastic ``W`` the largest modulus is 1 (the consensus direction), and
    the disagreement ``x(t) − x̄`` of repeated gossip ``x ← W x`` shrinks roughly like ``|λ_2|^t =
    (1 − gap)^t``, so about ``1 / gap`` rounds reduce it by a factor e. A gap of 0 means no
    consensus (disconnected, or periodic like a directed ring with zero self-weight); 1 means one
    round suffices (complete graph with uniform weights). Works for non-symmetric
    (column-stochastic) ``W`` via ``numpy.linalg.eigvals``; symmetric ``W`` uses ``eigvalsh``. ``n =
    1`` gives 1.0.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.shape[0] == 1:
        return 1.0
    eig = np.linalg.eigvalsh(w) if is_symmetric(w) else np.linalg.eigvals(w)
    moduli = np.sort(np.abs(eig))[::-1]
    return float(1.0 - moduli[1])
