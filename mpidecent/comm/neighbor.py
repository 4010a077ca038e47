"""The neighbour-gossip pattern on one rank: encode → exchange → decode → weighted mix, with traffic counts.

``Neighbors`` is what the pattern hands an algorithm: this rank's mixing rows (one per slot of a
static or time-varying graph; step t uses slot t mod period) over a transport that moves fixed-size
byte messages to the step's out-neighbours and from its in-neighbours — MPI (``comm/graph.py``) or
in memory (``comm/memory.py``), which give bit-identical results. An algorithm opens one
``GossipChannel`` per message stream and never touches buffers, keys or transports itself.

Wire format of a channel's message (little-endian), the same bytes to every out-neighbour::

    [ scalars: float64 each, sent exactly ][ vector 0: compressor payload ][ vector 1 ] ...

Bits per out-edge = Σ payload bits (counted from the packed buffers) + 64 per scalar; bytes per
out-edge = the message length. Randomness: vector f of round r of step t is keyed by the sender's
(seed, rank, s) with s = t·rounds + r for one vector per message (s·vectors + f for several), so a
receiver rebuilds the sender's key. Pure: numpy and the compression package, never mpi4py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpidecent.comm.messages import Encoder, Stopwatch, Traffic
from mpidecent.comm.protocols import Transport
from mpidecent.compression import Compressor
from mpidecent.rng import RandomKey

SCALAR_BYTES = 8  # one exact float64 header entry


@dataclass(frozen=True)
class MixingRow:
    """Row ``rank`` of the mixing matrix W of one slot of the schedule (row = receiver).

    ``in_neighbors`` in the order the exchange delivers their messages; ``in_weights`` (float64) the
    weights w_ij given to them; ``self_weight`` = w_ii; ``out_neighbors`` this rank's receivers.
    """

    in_neighbors: np.ndarray
    out_neighbors: np.ndarray
    self_weight: float
    in_weights: np.ndarray


def mixing_rows(graphs, slot_weights, rank: int) -> tuple[MixingRow, ...]:
    """Row ``rank`` of each slot's mixing matrix: ``graphs`` and ``slot_weights`` ((n, n) float64 each)
    are a schedule's graphs and weights, slot by slot."""
    return tuple(MixingRow(g.in_neighbors(rank), g.out_neighbors(rank), float(w[rank, rank]),
                           w[rank, g.in_neighbors(rank)]) for g, w in zip(graphs, slot_weights))


class Neighbors:
    """This rank's neighbourhood: mixing rows per slot over a transport (see the module docstring)."""

    def __init__(self, transport: Transport, rows: tuple[MixingRow, ...]) -> None:
        self.transport = transport
        self.rows = rows

    @property
    def period(self) -> int:
        return len(self.rows)

    def row(self, step: int) -> MixingRow:
        return self.rows[step % len(self.rows)]

    def channel(self, compressor: Compressor, seed: int, rank: int, watch: Stopwatch, vectors: int = 1,
                scalars: int = 0, rounds: int = 1) -> GossipChannel:
        """A message stream of ``vectors`` compressed vectors and ``scalars`` exact float64 numbers per
        message, ``rounds`` exchanges per step; every rank opens its channels in the same order."""
        return GossipChannel(self, compressor, seed, rank, watch, vectors, scalars, rounds)


class GossipChannel:
    """One message stream of one rank. Per exchange (every rank, the same steps and rounds)::

        send(t, vectors, scalars, round)   encode into the send buffer, start the exchange
        own(field)                         optional: the own message as the receivers decode it
        wait()                             the in-neighbours' messages have arrived
        mix(out, field) / accumulate(out, field)
                                           out ← / out += Σ_j w_ij (their vectors) for this rank's row
        decode_one(k, out, field)          the k-th in-neighbour's vector (e.g. into the sender's copy)
        decode(field)                      their vectors one row each (only for callers that need rows)
        received_scalars(i) / mixed_scalar(i)

    Decode-and-accumulate: ``mix`` and ``accumulate`` decode one in-neighbour's message at a time into one
    scratch vector and add it, weighted, into ``out`` (in the row's order: out = fl(fl(w_1 x_1) + fl(w_2 x_2))
    ...), so no (in-degree, dim) block of decoded vectors exists unless ``decode`` is called (allocated
    then, lazily). The scratch is the caller's (``scratch=``) or the channel's own, allocated on first
    need (``mix`` needs none at in-degree ≤ 1).

    Marks on the algorithm's ``watch``: encoding and decoding are compute, the exchange is
    communication. ``traffic`` accumulates what was sent; ``nonfinite`` is set (for good) when a vector
    held NaN/inf and the zero message was sent instead.
    """

    def __init__(self, neighbors: Neighbors, compressor: Compressor, seed: int, rank: int, watch: Stopwatch,
                 vectors: int, scalars: int, rounds: int) -> None:
        self.neighbors = neighbors
        self.compressor = compressor
        self.encoder = Encoder(compressor)
        self.seed, self.rank, self.watch = seed, rank, watch
        self.vectors, self.scalars, self.rounds = int(vectors), int(scalars), int(rounds)
        header = SCALAR_BYTES * self.scalars
        size = compressor.nbytes
        self.nbytes = header + self.vectors * size
        self.send_buf = np.zeros(self.nbytes, dtype=np.uint8)
        self._header = self.send_buf[:header].view("<f8")
        self._payloads = [self.send_buf[header + f * size:header + (f + 1) * size] for f in range(self.vectors)]
        self._offsets = [header + f * size for f in range(self.vectors)]
        self.exchange = neighbors.transport.exchange(self.nbytes, self.nbytes)
        rows, dtype = neighbors.rows, compressor.dtype
        self._max_in = max(len(r.in_neighbors) for r in rows)
        # Decoded in-neighbour vectors, (vectors, max in-degree, dim): only allocated by ``decode``.
        self._received: np.ndarray | None = None
        self._scratch: np.ndarray | None = None  # the channel's own decode scratch (dim,), on first need
        # Per slot: in-weights in the state dtype (with the decoded payloads) and in float64 (the scalars).
        self._in_w = [np.asarray(r.in_weights, dtype=dtype) for r in rows]
        self._in_w64 = [np.asarray(r.in_weights, dtype=np.float64) for r in rows]
        self.traffic = Traffic()
        self._slot = 0
        self._key_step = 0
        self._recv: np.ndarray | None = None

    @property
    def nonfinite(self) -> bool:
        return self.encoder.nonfinite

    @property
    def row(self) -> MixingRow:
        """The mixing row of the current exchange's step."""
        return self.neighbors.rows[self._slot]

    @property
    def self_weight(self) -> float:
        return self.row.self_weight

    def _key(self, rank: int, field: int) -> RandomKey:
        step = self._key_step if self.vectors == 1 else self._key_step * self.vectors + field
        return RandomKey(self.seed, int(rank), step)

    def send(self, step: int, vectors: np.ndarray | Sequence[np.ndarray], scalars: Sequence[float] = (),
             round: int = 0) -> None:
        """Encode ``vectors`` ((dim,) each, not modified) and ``scalars`` into the message of round
        ``round`` of ``step`` and start the exchange; the vectors may be reused at once."""
        if isinstance(vectors, np.ndarray):
            vectors = (vectors,)
        self._slot = step % self.neighbors.period
        self._key_step = step * self.rounds + round
        bits = sum(self.encoder.encode(v, self._key(self.rank, f), payload).bits
                   for f, (v, payload) in enumerate(zip(vectors, self._payloads, strict=True)))
        if self.scalars:
            self._header[:] = scalars
        out_degree = len(self.row.out_neighbors)
        self.traffic.add(out_degree * (bits + 8 * SCALAR_BYTES * self.scalars), out_degree * self.nbytes,
                         out_degree)
        self.watch.compute()
        self.exchange.start(self.send_buf, step, tag=self._key_step)
        self.watch.comm()

    def own(self, out: np.ndarray, field: int = 0) -> np.ndarray:
        """Vector ``field`` of this rank's last message decoded from its bytes, exactly as its receivers
        see it (apply this to the sender's own copies, never the pre-packing values)."""
        return self.compressor.decode(self._payloads[field], self._key(self.rank, field), out=out)

    def wait(self) -> None:
        """Complete the exchange: the in-neighbours' messages of this round are in."""
        self.watch.compute()
        self._recv = self.exchange.wait()
        self.watch.comm()

    @property
    def received(self) -> np.ndarray:
        """Every in-neighbour's decoded vectors, (vectors, max in-degree, dim); allocated on first use."""
        if self._received is None:
            self._received = np.zeros((self.vectors, self._max_in, self.compressor.dim), dtype=self.compressor.dtype)
        return self._received

    def decode_one(self, k: int, out: np.ndarray, field: int = 0) -> np.ndarray:
        """Vector ``field`` of the k-th in-neighbour's message (the row's order) decoded into ``out`` (dim,)."""
        start = self._offsets[field]
        return self.compressor.decode(self._recv[k, start:start + self.compressor.nbytes],
                                      self._key(self.row.in_neighbors[k], field), out=out)

    def decode(self, field: int = 0) -> np.ndarray:
        """Vector ``field`` of every in-neighbour's message, (in-degree, dim) in the row's order: a loop
        over messages, each decode vectorised. Allocates ``received`` on first use: ``mix``,
        ``accumulate`` and ``decode_one`` need no per-neighbour rows."""
        rows = self.received[field]
        senders = len(self.row.in_neighbors)
        for k in range(senders):
            self.decode_one(k, rows[k], field)
        return rows[:senders]

    def weighted_sum(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Σ_j w_ij rows[j] over this rank's in-neighbours (rows (in-degree, dim) in the row's order) into
        ``out``, e.g. an algorithm's own copies of its in-neighbours' vectors."""
        return np.dot(self._in_w[self._slot], rows, out=out)

    def mix(self, out: np.ndarray, field: int = 0, scratch: np.ndarray | None = None) -> np.ndarray:
        """out ← Σ_j w_ij x_j over the in-neighbours' decoded vector ``field`` (the own term w_ii x_i
        excluded), decoded and added one message at a time; ``scratch`` (dim,), distinct from ``out``, is
        used from the second in-neighbour on (default: the channel's own)."""
        weights = self._in_w[self._slot]
        if len(weights) == 0:
            out.fill(0)
            return out
        self.decode_one(0, out, field)
        np.multiply(out, weights[0], out=out)
        self._add_weighted(out, field, scratch, first=1)
        return out

    def accumulate(self, out: np.ndarray, field: int = 0, scratch: np.ndarray | None = None) -> np.ndarray:
        """out += Σ_j w_ij x_j over the in-neighbours' decoded vector ``field``, one message at a time:
        out ← fl(out + fl(w_1 x_1)), then w_2 x_2, ... (``scratch`` (dim,), distinct from ``out``; default:
        the channel's own)."""
        return self._add_weighted(out, field, scratch, first=0)

    def _add_weighted(self, out: np.ndarray, field: int, scratch: np.ndarray | None, first: int) -> np.ndarray:
        weights = self._in_w[self._slot]
        if first >= len(weights):
            return out
        if scratch is None:
            if self._scratch is None:
                self._scratch = np.zeros(self.compressor.dim, dtype=self.compressor.dtype)
            scratch = self._scratch
        if np.may_share_memory(scratch, out):
            raise ValueError("the decode scratch must not overlap the output")
        for k in range(first, len(weights)):
            decoded = self.decode_one(k, scratch, field)
            np.multiply(decoded, weights[k], out=decoded)
            np.add(out, decoded, out=out)
        return out

    def received_scalars(self, index: int = 0) -> np.ndarray:
        """Scalar ``index`` of every in-neighbour's message, (in-degree,) float64."""
        return self._recv[:, :SCALAR_BYTES * self.scalars].view("<f8")[:, index]

    def mixed_scalar(self, index: int = 0) -> float:
        """Σ_j w_ij s_j over the in-neighbours' scalar ``index``, in float64."""
        return float(self._in_w64[self._slot] @ self.received_scalars(index))
