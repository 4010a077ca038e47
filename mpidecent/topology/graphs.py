"""Communication graphs as plain data: families of directed edge lists, and their job-file keys.

A ``Graph`` is only wiring. Mixing weights live in ``weights.py`` so that one graph can be used with
several weight rules, and connectivity checks live in ``validate.py``.

Conventions (shared with the results file's ``/topology/edges`` and with mixing matrices):

- Nodes are ranks ``0 .. n-1``.
- ``edges`` is an ``(E, 2)`` int32 array; row ``(src, dst)`` is the directed edge ``src → dst``
  (``src`` sends to ``dst``). Rows are unique, sorted lexicographically, and never self-loops:
  every node's own weight ``w_ii`` is implicit in the mixing matrix.
- An undirected graph (``directed=False``) lists both directions of every edge, so ``num_edges`` is
  twice the number of undirected edges.
- ``adjacency()[i, j]`` is True iff ``j → i``: row = receiver, as ``w_ij`` in a mixing matrix is the
  weight node ``i`` gives to what it receives from ``j``.

Every family builds a directed *base* edge set; with ``directed=False`` that set is symmetrised
(union with the reversed edges). The registry ``KINDS`` maps the job file's ``[topology] kind`` to a
``TopologyKind`` that declares the kind's own keys as ``Param`` s; ``build_graph`` validates a
``[topology]`` table against them and builds the graph. User-input problems raise ``JobError`` with
a one-line message naming the key; misuse from Python code (bad arrays passed to ``Graph``) raises
``ValueError``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mpidecent.errors import JobError
from mpidecent.params import REQUIRED, Param, resolve
from mpidecent.rng import generator
from mpidecent.topology.validate import is_strongly_connected

SECTION = "topology"


# --------------------------------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Graph:
    """A directed graph on nodes ``0 .. n-1`` (see the module docstring for the conventions).

    ``edges``: ``(E, 2)`` int32, read-only, rows ``(src, dst)`` unique, lexicographically sorted,
    no self-loops. ``directed=False`` promises the edge set is symmetric (checked). ``kind`` names
    the family that built it (``"ring"``, ``"file"``, ``"custom"``, ...), for reports only.

    Construct from arbitrary pairs with ``Graph.from_pairs``; the constructor itself only checks
    the invariants (it does not sort or merge).
    """

    n: int
    edges: np.ndarray
    directed: bool
    kind: str = "custom"

    def __post_init__(self) -> None:
        n = operator.index(self.n)
        if n < 1:
            raise ValueError(f"a graph needs at least 1 node, got n = {n}")
        raw = np.asarray(self.edges)
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"edges must be integers, got dtype {raw.dtype}")
        edges = raw.astype(np.int64)  # always a copy: the graph never aliases the caller's array
        if edges.size == 0:
            edges = edges.reshape(0, 2)
        if edges.ndim != 2 or edges.shape[1] != 2:
            raise ValueError(f"edges must have shape (E, 2), got {edges.shape}")
        src, dst = edges[:, 0], edges[:, 1]
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ValueError(f"edge endpoints must be in 0..{n - 1}")
        if np.any(src == dst):
            raise ValueError("edges must not contain self-loops")
        # Strictly increasing (src, dst) keys ⇔ rows unique and lexicographically sorted.
        keys = src * n + dst
        if np.any(np.diff(keys) <= 0):
            raise ValueError(
                "edges must be unique and sorted lexicographically (use Graph.from_pairs)"
            )
        if not self.directed and not _lists_reverse_edges(edges, n):
            raise ValueError("an undirected graph must list both directions of every edge")
        frozen = edges.astype(np.int32)
        frozen.flags.writeable = False
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "edges", frozen)
        object.__setattr__(self, "directed", bool(self.directed))

    @classmethod
    def from_pairs(
        cls,
        n: int,
        pairs: Iterable[Iterable[int]] | np.ndarray,
        *,
        directed: bool,
        kind: str = "custom",
    ) -> Graph:
        """Build a graph from any iterable of ``(src, dst)`` pairs.

        Duplicates are merged; out-of-range endpoints and self-loops raise ``ValueError``. With
        ``directed=False`` the pairs are symmetrised (each pair also adds its reverse).
        """
        arr = np.asarray(pairs if isinstance(pairs, np.ndarray) else list(pairs))
        if arr.size == 0:
            arr = np.zeros((0, 2), dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"pairs must be (src, dst) pairs, got an array of shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"node ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            bad = int(arr[(arr < 0) | (arr >= n)][0])
            raise ValueError(f"node {bad} is out of range for {n} nodes (nodes are 0..{n - 1})")
        loops = arr[:, 0] == arr[:, 1]
        if np.any(loops):
            raise ValueError(
                f"self-loop {int(arr[loops][0, 0])} → {int(arr[loops][0, 0])} is not allowed"
            )
        if not directed:
            arr = np.concatenate([arr, arr[:, ::-1]])
        return cls(
            n, np.unique(arr, axis=0), directed, kind
        )  # np.unique sorts rows lexicographically

    # -- basic views ------------------------------------------------------------------------------

    @property
    def num_edges(self) -> int:
        """Number of directed edges (an undirected edge counts twice)."""
        return int(self.edges.shape[0])

    @cached_property
    def out_degree(self) -> np.ndarray:
        """``(n,)`` int64: number of out-neighbours of each node (excluding itself)."""
        return _readonly(np.bincount(self.edges[:, 0], minlength=self.n).astype(np.int64))

    @cached_property
    def in_degree(self) -> np.ndarray:
        """``(n,)`` int64: number of in-neighbours of each node (excluding itself)."""
        return _readonly(np.bincount(self.edges[:, 1], minlength=self.n).astype(np.int64))

    @cached_property
    def out_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr (n+1,), indices (E,))``: out-neighbours of ``i`` are
        ``indices[indptr[i]:indptr[i+1]]``."""
        indptr = np.searchsorted(self.edges[:, 0], np.arange(self.n + 1)).astype(np.int64)
        return _readonly(indptr), _readonly(self.edges[:, 1].copy())

    @cached_property
    def in_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr (n+1,), indices (E,))``: in-neighbours of ``i`` are
        ``indices[indptr[i]:indptr[i+1]]``."""
        order = np.lexsort((self.edges[:, 0], self.edges[:, 1]))  # by dst, then src
        by_dst = self.edges[order]
        indptr = np.searchsorted(by_dst[:, 1], np.arange(self.n + 1)).astype(np.int64)
        return _readonly(indptr), _readonly(by_dst[:, 0].copy())

    def out_neighbors(self, i: int) -> np.ndarray:
        """Sorted int32 array of the nodes ``i`` sends to."""
        indptr, indices = self.out_csr
        i = self.check_node(i)
        return indices[indptr[i] : indptr[i + 1]]

    def in_neighbors(self, i: int) -> np.ndarray:
        """Sorted int32 array of the nodes ``i`` receives from."""
        indptr, indices = self.in_csr
        i = self.check_node(i)
        return indices[indptr[i] : indptr[i + 1]]

    def adjacency(self) -> np.ndarray:
        """``(n, n)`` bool with ``A[i, j]`` True iff edge ``j → i`` (row = receiver, like ``W``)."""
        a = np.zeros((self.n, self.n), dtype=bool)
        a[self.edges[:, 1], self.edges[:, 0]] = True
        return a

    def is_symmetric(self) -> bool:
        """True iff every edge's reverse is also an edge (always True when ``directed=False``)."""
        return _lists_reverse_edges(self.edges, self.n)

    def check_node(self, i: int) -> int:
        """``i`` as an int, or ``IndexError`` if it is not a node of this graph."""
        i = operator.index(i)
        if not 0 <= i < self.n:
            raise IndexError(f"node {i} is out of range for {self.n} nodes")
        return i

    # -- identity ---------------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (
            self.n == other.n
            and self.directed == other.directed
            and self.kind == other.kind
            and np.array_equal(self.edges, other.edges)
        )

    def __hash__(self) -> int:
        return hash((self.n, self.directed, self.kind, self.edges.tobytes()))

    def __repr__(self) -> str:
        return (
            f"Graph(kind={self.kind!r}, n={self.n}, directed={self.directed}, "
            f"num_edges={self.num_edges})"
        )


def _lists_reverse_edges(edges: np.ndarray, n: int) -> bool:
    """True iff lexicographically sorted, unique ``edges`` contain the reverse of every row."""
    e = edges.astype(np.int64)
    return bool(np.array_equal(e[:, 0] * n + e[:, 1], np.sort(e[:, 1] * n + e[:, 0])))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# --------------------------------------------------------------------------------------------------
# Builders (the Python API; each raises JobError naming the [topology] key on bad input)
# --------------------------------------------------------------------------------------------------


def _check_nodes(kind: str, n: int, minimum: int = 1) -> int:
    n = operator.index(n)
    if n < 1:
        raise JobError(f"[{SECTION}] the number of nodes must be ≥ 1, got {n}")
    if n < minimum:
        raise JobError(f"[{SECTION}] kind = {kind!r} needs at least {minimum} nodes, got n = {n}")
    return n


def _from_base(kind: str, n: int, src: np.ndarray, dst: np.ndarray, directed: bool) -> Graph:
    """Graph from a base edge set given as index arrays; self-loops (from wrap-around on tiny
    graphs, e.g. a torus with one column) are dropped and duplicates merged."""
    keep = src != dst
    return Graph.from_pairs(
        n, np.stack([src[keep], dst[keep]], axis=1), directed=directed, kind=kind
    )


def ring(n: int, directed: bool = False) -> Graph:
    """Ring: base edges ``i → (i+1) mod n``. Undirected by default (each node talks to i±1).

    ``n = 1`` gives the single node with no edges; ``n = 2`` gives ``0 ↔ 1``.
    """
    n = _check_nodes("ring", n)
    src = np.arange(n)
    return _from_base("ring", n, src, (src + 1) % n, directed)


def exponential(n: int, directed: bool = True, base: int = 2) -> Graph:
    """Exponential graph: ``i → (i + base^k) mod n`` for ``k = 0, 1, …`` while ``base^k < n``.

    With the default ``base = 2`` node ``i`` sends to ``i+1, i+2, i+4, …``: ⌈log2 n⌉ out-neighbours,
    a regular digraph with a large spectral gap. Directed by default.
    """
    n = _check_nodes("exponential", n)
    if base < 2:
        raise JobError(f"[{SECTION}] base must be ≥ 2, got {base}")
    offsets = [1]
    while offsets[-1] * base < n:
        offsets.append(offsets[-1] * base)
    offsets_arr = np.asarray(offsets if n > 1 else [], dtype=np.int64)
    src = np.repeat(np.arange(n), offsets_arr.size)
    dst = (src + np.tile(offsets_arr, n)) % n
    return _from_base("exponential", n, src, dst, directed)


def square_factors(n: int) -> tuple[int, int]:
    """The most square factorisation ``rows × cols = n`` with ``rows ≤ cols`` (``n`` prime → ``1 ×
    n``)."""
    candidates = np.arange(1, math.isqrt(n) + 1)
    rows = int(candidates[n % candidates == 0].max())
    return rows, n // rows


def torus(n: int, rows: int = 0, cols: int = 0, directed: bool = False) -> Graph:
    """2-D torus of ``rows × cols = n`` nodes; node ``(r, c)`` has id ``r·cols + c``.

    Base edges go right ``(r, c) → (r, c+1)`` and down ``(r, c) → (r+1, c)``, wrapping around. A
    dimension of 1 adds no edges along it and a dimension of 2 reaches the same neighbour both ways
    (merged), so a 2 × 4 torus has degree 3 and a 1 × n torus is a ring. ``rows = cols = 0`` picks
    the most square factorisation (a prime ``n`` has none with two dimensions ≥ 2: ``JobError``; ask
    for the ring with ``rows = 1``); giving one of them derives the other. Undirected by default
    (degree 4 when both dimensions are ≥ 3).
    """
    n = _check_nodes("torus", n)
    if rows == 0 and cols == 0:
        rows, cols = square_factors(n)
        if rows == 1 and n > 1:
            near = [m for m in (n - 1, n + 1) if m >= 4 and square_factors(m)[0] > 1]
            raise JobError(
                f"[{SECTION}] kind = 'torus' on n = {n} nodes: {n} is prime, so the only shape is "
                f"1 × {n} (a ring); start {' or '.join(map(str, near)) or 'a non-prime number of'} "
                f'ranks, use kind = "ring", or set rows = 1 to accept the ring'
            )
    elif rows == 0 or cols == 0:
        given, value = ("cols", cols) if rows == 0 else ("rows", rows)
        if n % value:
            raise JobError(
                f"[{SECTION}] {given} = {value} does not divide the number of nodes ({n}); "
                f"set {given} to a divisor of {n} or leave rows and cols at 0"
            )
        rows, cols = (n // cols, cols) if rows == 0 else (rows, n // rows)
    if rows * cols != n:
        raise JobError(
            f"[{SECTION}] rows × cols = {rows} × {cols} = {rows * cols} must equal the number "
            f"of nodes ({n})"
        )
    r, c = np.divmod(np.arange(n), cols)
    right = r * cols + (c + 1) % cols
    down = ((r + 1) % rows) * cols + c
    src = np.concatenate([np.arange(n), np.arange(n)])
    return _from_base("torus", n, src, np.concatenate([right, down]), directed)


def complete(n: int, directed: bool = False) -> Graph:
    """Complete graph: every ordered pair ``i → j``, ``i ≠ j`` (symmetric either way)."""
    n = _check_nodes("complete", n)
    src, dst = np.nonzero(~np.eye(n, dtype=bool))  # row-major order = lexicographic
    return Graph(n, np.stack([src, dst], axis=1), directed, "complete")


def disconnected(n: int, directed: bool = False) -> Graph:
    """n nodes and no edges (W = I): every node trains alone — the no-communication baseline."""
    _check_nodes("disconnected", n)
    return Graph(n, np.zeros((0, 2), dtype=np.int64), directed, "disconnected")


def _check_node_id(key: str, value: int, n: int) -> None:
    if not 0 <= value < n:
        raise JobError(
            f"[{SECTION}] {key} = {value} is out of range for {n} nodes (nodes are 0..{n - 1})"
        )


def star(n: int, hub: int = 0, directed: bool = False) -> Graph:
    """Star: base edges ``hub → j`` for every other node ``j``. Undirected by default.

    Directed, only the hub has out-edges, so the graph is not strongly connected (n ≥ 2).
    """
    n = _check_nodes("star", n)
    _check_node_id("hub", hub, n)
    leaves = np.delete(np.arange(n), hub)
    return _from_base("star", n, np.full(leaves.size, hub), leaves, directed)


def erdos_renyi(
    n: int, p: float, seed: int = 0, directed: bool = True, max_tries: int = 1000
) -> Graph:
    """Erdős–Rényi graph conditioned on connectivity.

    Each ordered pair ``i ≠ j`` (directed) or unordered pair (undirected) is present independently
    with probability ``p``. Attempt ``a = 0, 1, …`` draws from ``generator(seed, 0, a, "graph")``,
    and the first strongly connected (directed) / connected (undirected) draw is returned, so a
    given ``(n, p, seed)`` always gives the same graph. After ``max_tries`` failures: ``JobError``.
    """
    n = _check_nodes("erdos_renyi", n)
    if not 0.0 < p <= 1.0:
        raise JobError(f"[{SECTION}] p must be in (0, 1], got {p}")
    # Directed: every off-diagonal entry is an edge draw. Undirected: the upper triangle is, and
    # from_pairs adds the reverse edges.
    draw_mask = ~np.eye(n, dtype=bool) if directed else np.triu(np.ones((n, n), dtype=bool), k=1)
    for attempt in range(max_tries):
        present = (generator(seed, 0, attempt, "graph").random((n, n)) < p) & draw_mask
        # present[src, dst]. A node without out- or in-edges rules the draw out before any BFS.
        linked = present | present.T if not directed else present
        if n > 1 and not (linked.any(axis=0).all() and linked.any(axis=1).all()):
            continue
        src, dst = np.nonzero(present)
        graph = Graph.from_pairs(
            n, np.stack([src, dst], axis=1), directed=directed, kind="erdos_renyi"
        )
        if is_strongly_connected(graph):
            return graph
    what = "strongly connected" if directed else "connected"
    raise JobError(
        f"[{SECTION}] p = {p} is too small: no {what} graph in {max_tries} tries for n = {n} "
        f"nodes; raise p"
    )


CHORDS_DEFAULT = -1  # sentinel for chord_ring's `chords`: n // 2 random chords


def chord_ring(
    n: int, chords: int | list[Any] = CHORDS_DEFAULT, seed: int = 0, directed: bool = True
) -> Graph:
    """Directed ring ``i → i+1`` plus extra chords: an irregular, strongly connected digraph.

    ``chords`` is either a count ``m ≥ 0`` of random chords ``i → j`` with ``j ∉ {i, i+1 mod n}``,
    drawn without replacement from ``generator(seed, 0, 0, "graph")`` (``-1``, the default, means
    ``n // 2``; with ``0 < m < n`` out-degrees always differ), or an explicit list of ``[src, dst]``
    pairs (duplicates, and chords that repeat a ring edge, are merged). Needs ``n ≥ 3``: smaller
    rings have no room for a chord. Directed by default (that is the point: push-sum de-biasing is
    only exercised on irregular digraphs).
    """
    n = _check_nodes("chord_ring", n, minimum=3)
    src = np.arange(n)
    ring_edges = np.stack([src, (src + 1) % n], axis=1)
    if _chords_check(chords):
        raise JobError(f"[{SECTION}] chords {_CHORDS_PROBLEM}, got {chords!r}")
    if isinstance(chords, int):
        m = n // 2 if chords == CHORDS_DEFAULT else chords
        # Candidates: all ordered pairs except self-loops and ring edges, in lexicographic order.
        cand_src, cand_dst = np.nonzero(~np.eye(n, dtype=bool))
        cand = np.stack([cand_src, cand_dst], axis=1)
        cand = cand[cand[:, 1] != (cand[:, 0] + 1) % n]
        if m > len(cand):
            raise JobError(
                f"[{SECTION}] chords = {m} is more than the {len(cand)} possible chords for "
                f"n = {n} nodes (pairs i → j with j ≠ i, i+1); use at most {len(cand)}"
            )
        pick = generator(seed, 0, 0, "graph").choice(len(cand), size=m, replace=False)
        extra = cand[np.sort(pick)]
    else:
        extra = np.asarray(
            [_chord_pair(k, pair, n) for k, pair in enumerate(chords)], dtype=np.int64
        ).reshape(-1, 2)
    return Graph.from_pairs(
        n, np.concatenate([ring_edges, extra]), directed=directed, kind="chord_ring"
    )


_CHORDS_PROBLEM = "must be an integer ≥ 0 (-1 for n // 2) or a list of [src, dst] pairs"


def _chords_check(value: Any) -> str | None:
    """A count must be ≥ -1; a list's entries are checked one by one when building (that needs
    n)."""
    if isinstance(value, bool):
        return _CHORDS_PROBLEM
    if isinstance(value, int):
        return None if value >= CHORDS_DEFAULT else _CHORDS_PROBLEM
    return None if isinstance(value, (list, tuple)) else _CHORDS_PROBLEM


def _is_int_pair(pair: Any) -> bool:
    return (
        isinstance(pair, (list, tuple))
        and len(pair) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
    )


def _chord_pair(k: int, pair: Any, n: int) -> tuple[int, int]:
    where = f"[{SECTION}] chords[{k}] = {pair!r}"
    if not _is_int_pair(pair):
        raise JobError(f"{where} must be a pair of node ids [src, dst]")
    src, dst = pair
    for node in (src, dst):
        if not 0 <= node < n:
            raise JobError(
                f"{where}: node {node} is out of range for {n} nodes (nodes are 0..{n - 1})"
            )
    if src == dst:
        raise JobError(f"{where} is a self-loop; a chord must join two different nodes")
    return src, dst


def from_file(
    n: int, path: str | Path, directed: bool = False, base_dir: str | Path | None = None
) -> Graph:
    """Graph read from an edge-list file: one edge ``src dst`` (0-based ints) per line.

    ``#`` starts a comment; blank lines are ignored; an edge listed twice is an error (undirected:
    ``0 1`` and ``1 0`` are the same edge). Undirected by default (the file's edges are symmetrised,
    so listing one direction is enough). A relative ``path`` is taken relative to ``base_dir`` when
    given (e.g. the job file's folder), else the working directory. Errors name the file (as written
    in the job) and the line.
    """
    n = _check_nodes("file", n)
    shown = str(path)
    full = Path(path)
    if base_dir is not None and not full.is_absolute():
        full = Path(base_dir) / full
    try:
        text = full.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"[{SECTION}] path: no such file {shown!r}") from None
    except IsADirectoryError:
        raise JobError(
            f"[{SECTION}] path: {shown!r} is a directory, not an edge-list file"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise JobError(f"[{SECTION}] path: cannot read {shown!r}: {err}") from None
    pairs: list[tuple[int, int]] = []
    seen: dict[tuple[int, int], int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"[{SECTION}] file {shown} line {lineno}"
        try:
            if len(fields) != 2:
                raise ValueError
            src, dst = int(fields[0]), int(fields[1])
        except ValueError:
            raise JobError(
                f"{where}: expected two node ids 'src dst', got {line.strip()!r}"
            ) from None
        for node in (src, dst):
            if not 0 <= node < n:
                raise JobError(
                    f"{where}: node {node} is out of range for {n} ranks (nodes are 0..{n - 1}); "
                    f"start more ranks or fix the file"
                )
        if src == dst:
            raise JobError(
                f"{where}: self-loop {src} → {dst} is not allowed (a node's own weight is implicit)"
            )
        key = (src, dst) if directed else (min(src, dst), max(src, dst))
        if key in seen:
            same = "" if directed else " (undirected: src dst and dst src are the same edge)"
            raise JobError(
                f"{where}: duplicate edge {src} {dst}, already listed on line {seen[key]}{same}; "
                "list each edge once"
            )
        seen[key] = lineno
        pairs.append((src, dst))
    return Graph.from_pairs(
        n, np.asarray(pairs, dtype=np.int64).reshape(-1, 2), directed=directed, kind="file"
    )


# --------------------------------------------------------------------------------------------------
# Registry: [topology] kind → keys and builder
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopologyKind:
    """One value of ``[topology] kind``: its own keys (``params``, without the common keys
    kind / n / directed / weights), the ``directed`` default, and a builder taking the resolved keys
    as keyword arguments: ``builder(n, directed=..., **params)``."""

    name: str
    params: tuple[Param, ...]
    default_directed: bool
    doc: str
    builder: Callable[..., Graph]

    def build(self, n: int, directed: bool, params: Mapping[str, Any]) -> Graph:
        """Build the graph from already-resolved keys (see ``build_graph`` for a raw TOML table)."""
        return self.builder(n, directed=directed, **params)

    def describe(self) -> str:
        """Multi-line job-file reference for this kind."""
        lines = [
            f"{self.name} (directed default {'true' if self.default_directed else 'false'}): "
            f"{self.doc}"
        ]
        lines += [f"  {p.describe()}" for p in self.params]
        return "\n".join(lines)


_SEED = Param("seed", int, 0, "seed of the random graph (same seed, same graph)", minimum=0)

KINDS: dict[str, TopologyKind] = {
    k.name: k
    for k in (
        TopologyKind("ring", (), False, "ring i → i+1 mod n (undirected: i ↔ i±1)", ring),
        TopologyKind(
            "exponential",
            (
                Param(
                    "base",
                    int,
                    2,
                    "node i sends to i + base^k mod n for every base^k < n",
                    minimum=2,
                ),
            ),
            True,
            "exponential graph i → i + 1, 2, 4, … mod n",
            exponential,
        ),
        TopologyKind(
            "torus",
            (
                Param("rows", int, 0, "rows of the torus (0: choose from n)", minimum=0),
                Param(
                    "cols",
                    int,
                    0,
                    "columns of the torus (0: choose from n); rows × cols must equal n",
                    minimum=0,
                ),
            ),
            False,
            "2-D torus with wrap-around; rows = cols = 0 picks the most square rows ≤ cols (a "
            "prime n is an error: set rows = 1 for a 1 × n ring)",
            torus,
        ),
        TopologyKind("complete", (), False, "every node talks to every other", complete),
        TopologyKind(
            "disconnected",
            (),
            False,
            "no edges (W = I): every node trains alone; the no-communication baseline, accepted by "
            "every algorithm despite not being connected",
            disconnected,
        ),
        TopologyKind(
            "star",
            (Param("hub", int, 0, "the centre node", minimum=0),),
            False,
            "hub ↔ every other node (directed: hub → others only)",
            star,
        ),
        TopologyKind(
            "erdos_renyi",
            (
                Param(
                    "p",
                    float,
                    REQUIRED,
                    "probability of each edge",
                    minimum=0.0,
                    maximum=1.0,
                    exclusive_minimum=True,
                ),
                _SEED,
                Param(
                    "max_tries",
                    int,
                    1000,
                    "draws to try before giving up on connectivity",
                    minimum=1,
                ),
            ),
            True,
            "random graph, redrawn until strongly connected (undirected: connected)",
            erdos_renyi,
        ),
        TopologyKind(
            "chord_ring",
            (
                Param(
                    "chords",
                    (int, list),
                    CHORDS_DEFAULT,
                    "number of random chords i → j (j ≠ i, i+1; -1 means n // 2) or a list of "
                    "[src, dst] pairs",
                    check=_chords_check,
                ),
                _SEED,
            ),
            True,
            "directed ring plus chords: an irregular strongly connected digraph (n ≥ 3)",
            chord_ring,
        ),
        TopologyKind(
            "file",
            (
                Param(
                    "path",
                    str,
                    REQUIRED,
                    "edge-list file: one 'src dst' per line (0-based), # comments",
                ),
            ),
            False,
            "edges read from a file (undirected: symmetrised)",
            from_file,
        ),
    )
}


# The `kind` key itself, declared like every other key so that an unknown kind gets the house
# message: "[topology] kind must be one of 'chord_ring', ...; got 'torsu' (did you mean 'torus'?)".
KIND_PARAM = Param("kind", str, REQUIRED, "the graph family", choices=tuple(sorted(KINDS)))


def get_kind(kind: str) -> TopologyKind:
    """The registry entry for ``kind``, or ``JobError`` listing the valid kinds with a
    did-you-mean."""
    return KINDS[KIND_PARAM.coerce(SECTION, kind)]


def build_graph(
    kind: str,
    n: int,
    directed: bool | None,
    table: Mapping[str, Any],
    base_dir: str | Path | None = None,
) -> Graph:
    """Validate a ``[topology]`` table for ``kind`` and build the graph on ``n`` nodes.

    ``directed=None`` uses the kind's default. Every key of ``table`` must belong to ``kind`` (the
    keys every kind has are resolved by ``topology/section.py``, which passes the rest).
    ``base_dir`` resolves a relative ``path`` of the ``file`` kind (pass the job file's folder).
    Raises ``JobError``.
    """
    spec = get_kind(kind)
    params = resolve(SECTION, spec.params, table, owner=spec.name)
    if spec.name == "file" and base_dir is not None:
        params = {**params, "base_dir": base_dir}
    return spec.build(n, spec.default_directed if directed is None else directed, params)
