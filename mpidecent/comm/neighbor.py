"""The neighbour-gossip pattern on one rank: named message streams (encode → exchange → decode →
weighted mix), their exchanges in flight as handles, and their traffic counts.

``Neighbors`` is what the pattern hands an algorithm: this rank's mixing rows (one per slot of a
static or time-varying graph; step t uses slot t mod period) over a transport that moves fixed-size
byte messages to the step's out-neighbours and from its in-neighbours — MPI (``comm/graph.py``) or
in memory (``comm/memory.py``), which give bit-identical results. An algorithm opens one ``Stream``
per kind of message, by name (``Algorithm.stream``), and never touches buffers, keys, tags or
transports.

**Streams.** Every rank opens the same streams in the same order while the algorithm is built; then
``seal`` (collective) compares the names of every rank and refuses a mismatch in one line, so two
streams can never be confused. A stream's name gives it

* its own tags: exchange e of stream s carries tag s + MAX_STREAMS·e (modulo the tag limit), so a
  message can only match the receive of its own stream and exchange;
* its own random key: the first stream of an algorithm is keyed by the sender's (seed, rank, step) —
  the key of every single-stream algorithm since the first release — and any other stream adds a
  31-bit hash of its name (``stream_key``), so two streams never draw the same dither or rand-k
  indices.

**Exchanges in flight.** ``Stream.start`` encodes and starts one exchange and returns its
``Message``: the handle that waits for it (``wait``, or ``test`` to let MPI progress it while
computing) and then decodes and mixes what arrived. A stream opened with ``in_flight = k`` has k
messages, each with its own send buffer and receive rows, used in turn, so up to k exchanges can be
in flight at once — across a step boundary too; what a message received stays readable until the
stream reuses it k starts later. ``drain`` completes whatever is in flight without consuming it (the
runner asks for it before a log row, a checkpoint and the end of the run).

Wire format of a stream's message (little-endian), the same bytes to every out-neighbour::

    [ scalars: float64 each, sent exactly ][ vector 0: compressor payload ][ vector 1 ] ...

Bits per out-edge = Σ payload bits (counted from the packed buffers) + 64 per scalar; bytes per
out-edge = the message length; both are added to the stream's ``traffic`` when the exchange
completes (so a message sent at the end of one step and received in the next is counted in the step
that receives it, and a resumed run counts exactly what an uninterrupted one does). Randomness:
vector f of round r of step t is keyed by the sender's (seed, rank, s, stream) with s = t·rounds + r
for one vector per message (s·vectors + f for several), so a receiver rebuilds the sender's key.
Pure: numpy and the compression package, never mpi4py.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpidecent.comm.messages import Encoder, Stopwatch, Traffic
from mpidecent.comm.protocols import Transport
from mpidecent.compression import Compressor
from mpidecent.rng import RandomKey

SCALAR_BYTES = 8  # one exact float64 header entry
MAX_STREAMS = 64  # streams per algorithm; the tag of exchange e of stream s is s + MAX_STREAMS·e


class StreamError(RuntimeError):
    """An algorithm used its message streams wrongly (opened them differently on different ranks,
    reused a message still in flight, read a message before it arrived)."""


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
    """Row ``rank`` of each slot's mixing matrix: ``graphs`` and ``slot_weights`` ((n, n) float64
    each) are a schedule's graphs and weights, slot by slot."""
    return tuple(
        MixingRow(
            g.in_neighbors(rank),
            g.out_neighbors(rank),
            float(w[rank, rank]),
            w[rank, g.in_neighbors(rank)],
        )
        for g, w in zip(graphs, slot_weights, strict=True)
    )


def stream_key(name: str) -> int:
    """The random-key id of a stream that is not its algorithm's first: a hash of its name in [1,
    2^31)."""
    return zlib.crc32(name.encode()) % (2**31 - 1) + 1


class Neighbors:
    """This rank's neighbourhood: mixing rows per slot over a transport, and the streams opened on
    it (see the module docstring)."""

    def __init__(self, transport: Transport, rows: tuple[MixingRow, ...]) -> None:
        self.transport = transport
        self.rows = rows
        self.streams: dict[str, Stream] = {}
        self.sealed = False

    @property
    def period(self) -> int:
        return len(self.rows)

    def row(self, step: int) -> MixingRow:
        return self.rows[step % len(self.rows)]

    def stream(
        self,
        name: str,
        compressor: Compressor,
        seed: int,
        rank: int,
        watch: Stopwatch,
        vectors: int = 1,
        scalars: int = 0,
        rounds: int = 1,
        in_flight: int = 1,
        error_feedback: bool = False,
    ) -> Stream:
        """Open the message stream ``name``: ``vectors`` compressed vectors and ``scalars`` exact
        float64 numbers per message, ``rounds`` exchanges per step (keys t·rounds + r), up to
        ``in_flight`` exchanges in flight at once. Every rank opens the same streams in the same
        order, before ``seal``."""
        if self.sealed:
            raise StreamError(
                f"stream {name!r} opened after the algorithm was built: open every stream in the "
                "algorithm's __init__"
            )
        if not isinstance(name, str) or not name.isidentifier():
            raise StreamError(
                f"a stream's name must be an identifier such as 'model', got {name!r}"
            )
        if name in self.streams:
            raise StreamError(f"stream {name!r} opened twice")
        if len(self.streams) == MAX_STREAMS:
            raise StreamError(f"more than {MAX_STREAMS} streams")
        for count, what in ((vectors, "vectors"), (rounds, "rounds"), (in_flight, "in_flight")):
            if int(count) < 1:
                raise StreamError(f"stream {name!r}: {what} must be ≥ 1, got {count}")
        key = 0 if not self.streams else stream_key(name)
        clash = next((s.name for s in self.streams.values() if s.key_id == key), None)
        if clash is not None:
            raise StreamError(
                f"streams {clash!r} and {name!r} hash to the same random key: rename one"
            )
        stream = Stream(
            self,
            name,
            len(self.streams),
            key,
            compressor,
            seed,
            rank,
            watch,
            int(vectors),
            int(scalars),
            int(rounds),
            int(in_flight),
            error_feedback,
        )
        self.streams[name] = stream
        return stream

    def seal(self) -> None:
        """Collective over every rank of the transport, once, after the algorithm opened its
        streams: ``StreamError`` (the same line on every rank) unless every rank opened the same
        streams in the same order with the same message sizes."""
        opened = tuple((s.name, s.nbytes, len(s.messages)) for s in self.streams.values())
        every = self.transport.agree(opened)
        self.sealed = True
        for other, theirs in enumerate(every):
            if theirs != every[0]:
                raise StreamError(
                    f"the ranks opened different message streams: rank 0 {_describe(every[0])}, "
                    f"rank {other} {_describe(theirs)}; every rank must open the same streams in "
                    "the same order (in the algorithm's __init__, not in a rank-dependent branch)"
                )

    def progress(self) -> None:
        """Let every exchange in flight move (``Message.test``); cheap when none is."""
        for stream in self.streams.values():
            stream.progress()

    def drain(self) -> None:
        """Complete every exchange in flight, without consuming what arrived."""
        for stream in self.streams.values():
            stream.drain()


def _describe(opened: Sequence[tuple[str, int, int]]) -> str:
    if not opened:
        return "opened none"
    return "opened " + ", ".join(
        f"{name!r} ({nbytes} bytes, in_flight={k})" for name, nbytes, k in opened
    )


class Stream:
    """One named message stream of one rank (see the module docstring). ``start`` returns the
    ``Message`` of the exchange; ``traffic`` accumulates what completed exchanges sent;
    ``nonfinite`` is set (for good) when a vector held NaN/inf and the zero message was sent
    instead."""

    def __init__(
        self,
        neighbors: Neighbors,
        name: str,
        index: int,
        key_id: int,
        compressor: Compressor,
        seed: int,
        rank: int,
        watch: Stopwatch,
        vectors: int,
        scalars: int,
        rounds: int,
        in_flight: int,
        error_feedback: bool,
    ) -> None:
        self.neighbors = neighbors
        self.name, self.index, self.key_id = name, index, key_id
        self.compressor = compressor
        self.encoder = Encoder(compressor, error_feedback)
        self.seed, self.rank, self.watch = seed, rank, watch
        self.vectors, self.scalars, self.rounds = vectors, scalars, rounds
        self.header_nbytes = SCALAR_BYTES * scalars
        self.nbytes = self.header_nbytes + vectors * compressor.nbytes
        dtype = compressor.dtype
        # Per slot: in-weights in the state dtype (with the decoded payloads) and in float64 (the
        # scalars).
        self.in_weights = [np.asarray(r.in_weights, dtype=dtype) for r in neighbors.rows]
        self.in_weights64 = [np.asarray(r.in_weights, dtype=np.float64) for r in neighbors.rows]
        self.max_in = max(len(r.in_neighbors) for r in neighbors.rows)
        self.traffic = Traffic()
        self.messages = tuple(Message(self) for _ in range(in_flight))
        self._next = 0  # the message the next start uses
        self._started = 0  # exchanges started so far: numbers this stream's tags
        self._tags = neighbors.transport.tag_limit // MAX_STREAMS
        self._scratch: np.ndarray | None = None  # decode scratch (dim,), on first need

    @property
    def nonfinite(self) -> bool:
        return self.encoder.nonfinite

    @property
    def memory(self) -> np.ndarray | None:
        """The error-feedback residual (dim,), or None without error feedback."""
        return self.encoder.memory

    def key(self, rank: int, key_step: int, field: int) -> RandomKey:
        step = key_step if self.vectors == 1 else key_step * self.vectors + field
        return RandomKey(self.seed, int(rank), step, self.key_id)

    def start(
        self,
        step: int,
        vectors: np.ndarray | Sequence[np.ndarray],
        scalars: Sequence[float] = (),
        round: int = 0,
    ) -> Message:
        """Encode ``vectors`` ((dim,) each, not modified; they may be reused at once) and
        ``scalars`` into the message of round ``round`` of ``step`` and start its exchange; returns
        the message's handle."""
        message = self.messages[self._next]
        if message.in_flight:
            raise StreamError(
                f"stream {self.name!r}: {len(self.messages)} exchange(s) in flight already; open "
                f"it with in_flight={len(self.messages) + 1} or wait for one first"
            )
        self._next = (self._next + 1) % len(self.messages)
        tag = self.index + MAX_STREAMS * (self._started % self._tags)
        self._started += 1
        message._start(step, round, vectors, scalars, tag)
        return message

    @property
    def pending(self) -> list[Message]:
        """The messages whose exchange is in flight (started, not yet complete), oldest first."""
        ordered = self.messages[self._next :] + self.messages[: self._next]
        return [m for m in ordered if m.in_flight]

    def progress(self) -> None:
        for message in self.messages:
            if message.in_flight:
                message.test()

    def drain(self) -> None:
        for message in self.pending:
            message.wait()

    def scratch(self) -> np.ndarray:
        if self._scratch is None:
            self._scratch = np.zeros(self.compressor.dim, dtype=self.compressor.dtype)
        return self._scratch


class Message:
    """One exchange of a stream: its own send buffer and receive rows (a stream has ``in_flight`` of
    them, used in turn). Per exchange (every rank, the same steps and rounds)::

        stream.start(t, vectors, scalars, round) → message
                                           encode, start the exchange
        message.own(out, field)            optional: the own message as the receivers decode it
        message.test()                     optional, while computing: let MPI move it
        message.wait()                     the in-neighbours' messages have arrived
        message.mix(out, field) / accumulate(out, field)
                                           out ← / out += Σ_j w_ij (their vectors), this rank's row
        message.decode_one(k, out, field)  the k-th in-neighbour's vector (e.g. into a copy)
        message.decode(field)              their vectors one row each (for callers that need rows)
        message.received_scalars(i) / mixed_scalar(i)

    Decode-and-accumulate: ``mix`` and ``accumulate`` decode one in-neighbour's message at a time
    into one scratch vector and add it, weighted, into ``out`` (in the row's order: out = fl(fl(w_1
    x_1) + fl(w_2 x_2)) ...), so no (in-degree, dim) block of decoded vectors exists unless
    ``decode`` is called (allocated then, lazily). The scratch is the caller's (``scratch=``) or the
    stream's own, allocated on first need (``mix`` needs none at in-degree ≤ 1).

    Marks on the algorithm's ``watch``: encoding and decoding are compute, starting and waiting for
    the exchange are communication.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        header, size = stream.header_nbytes, stream.compressor.nbytes
        self.send_buf = np.zeros(stream.nbytes, dtype=np.uint8)
        self._header = self.send_buf[:header].view("<f8")
        self._payloads = [
            self.send_buf[header + f * size : header + (f + 1) * size]
            for f in range(stream.vectors)
        ]
        self._offsets = [header + f * size for f in range(stream.vectors)]
        self.exchange = stream.neighbors.transport.exchange(stream.nbytes, stream.nbytes)
        self.step = self.round = -1
        self.in_flight = False
        self._slot = 0
        self._key_step = 0
        self._bits = 0
        self._recv: np.ndarray | None = None
        self._received: np.ndarray | None = (
            None  # decoded rows (vectors, max in-degree, dim), by ``decode``
        )

    def _start(
        self,
        step: int,
        round: int,
        vectors: np.ndarray | Sequence[np.ndarray],
        scalars: Sequence[float],
        tag: int,
    ) -> None:
        stream = self.stream
        if isinstance(vectors, np.ndarray):
            vectors = (vectors,)
        self.step, self.round = step, round
        self._slot = step % stream.neighbors.period
        self._key_step = step * stream.rounds + round
        self._bits = sum(
            stream.encoder.encode(v, self._key(stream.rank, f), payload).bits
            for f, (v, payload) in enumerate(zip(vectors, self._payloads, strict=True))
        )
        if stream.scalars:
            self._header[:] = scalars
        self._recv = None
        stream.watch.compute()
        self.exchange.start(self.send_buf, step, tag)
        self.in_flight = True
        stream.watch.comm()

    def _key(self, rank: int, field: int) -> RandomKey:
        return self.stream.key(rank, self._key_step, field)

    def _arrived(self, rows: np.ndarray) -> None:
        """The exchange completed: keep the received rows and count what this rank sent."""
        self._recv = rows
        self.in_flight = False
        out_degree = len(self.row.out_neighbors)
        self.stream.traffic.add(
            out_degree * (self._bits + 8 * SCALAR_BYTES * self.stream.scalars),
            out_degree * self.stream.nbytes,
            out_degree,
        )

    def test(self) -> bool:
        """Let the transport move the exchange (MPI progresses a large message only inside MPI
        calls); True once it is complete. Never blocks; cheap to call often while computing."""
        if self.in_flight and self.exchange.test():
            self._arrived(self.exchange.wait())
        return not self.in_flight

    def wait(self) -> Message:
        """Complete the exchange (a no-op once complete): the in-neighbours' messages are in.
        Returns self."""
        if self.in_flight:
            watch = self.stream.watch
            watch.compute()
            self._arrived(self.exchange.wait())
            watch.comm()
        return self

    @property
    def row(self) -> MixingRow:
        """The mixing row of this exchange's step."""
        return self.stream.neighbors.rows[self._slot]

    @property
    def self_weight(self) -> float:
        return self.row.self_weight

    def own(self, out: np.ndarray, field: int = 0) -> np.ndarray:
        """Vector ``field`` of this rank's message decoded from its bytes, exactly as its receivers
        see it (apply this to the sender's own copies, never the pre-packing values)."""
        return self.stream.compressor.decode(
            self._payloads[field], self._key(self.stream.rank, field), out=out
        )

    def _rows(self) -> np.ndarray:
        if self._recv is None:
            raise StreamError(
                f"stream {self.stream.name!r}: the message of step {self.step} was read before it "
                "arrived: wait() first"
            )
        return self._recv

    @property
    def received(self) -> np.ndarray:
        """Every in-neighbour's decoded vectors, (vectors, max in-degree, dim); allocated on first
        use."""
        if self._received is None:
            stream = self.stream
            self._received = np.zeros(
                (stream.vectors, stream.max_in, stream.compressor.dim),
                dtype=stream.compressor.dtype,
            )
        return self._received

    def decode_one(self, k: int, out: np.ndarray, field: int = 0) -> np.ndarray:
        """Vector ``field`` of the k-th in-neighbour's message (the row's order) decoded into
        ``out`` (dim,)."""
        compressor = self.stream.compressor
        start = self._offsets[field]
        return compressor.decode(
            self._rows()[k, start : start + compressor.nbytes],
            self._key(self.row.in_neighbors[k], field),
            out=out,
        )

    def decode(self, field: int = 0) -> np.ndarray:
        """Vector ``field`` of every in-neighbour's message, (in-degree, dim) in the row's order: a
        loop over messages, each decode vectorised. Allocates ``received`` on first use: ``mix``,
        ``accumulate`` and ``decode_one`` need no per-neighbour rows."""
        rows = self.received[field]
        senders = len(self.row.in_neighbors)
        for k in range(senders):
            self.decode_one(k, rows[k], field)
        return rows[:senders]

    def _weights(self, weights: np.ndarray | None) -> np.ndarray:
        """The in-weights to apply: the pattern's row (w_ij) or the caller's own weights for the
        same in-neighbours in the row's order (e.g. Push-Pull's row-stochastic R next to the
        column-stochastic C of the topology)."""
        if weights is None:
            return self.stream.in_weights[self._slot]
        if len(weights) != len(self.row.in_neighbors):
            raise ValueError(
                f"{len(weights)} weights for {len(self.row.in_neighbors)} in-neighbours"
            )
        return weights

    def weighted_sum(
        self, rows: np.ndarray, out: np.ndarray, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """Σ_j w_ij rows[j] over this rank's in-neighbours of this exchange's step (rows (in-degree,
        dim) in the row's order) into ``out``, e.g. an algorithm's own copies of its in-neighbours'
        vectors; ``weights`` (in-degree,) replaces the row's w_ij."""
        return np.dot(self._weights(weights), rows, out=out)

    def mix(
        self,
        out: np.ndarray,
        field: int = 0,
        scratch: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """out ← Σ_j w_ij x_j over the in-neighbours' decoded vector ``field`` (the own term w_ii
        x_i excluded), decoded and added one message at a time; ``scratch`` (dim,), distinct from
        ``out``, is used from the second in-neighbour on (default: the stream's own); ``weights``
        (in-degree,), in the row's order and the vectors' dtype, replaces the row's w_ij."""
        weights = self._weights(weights)
        if len(weights) == 0:
            out.fill(0)
            return out
        self.decode_one(0, out, field)
        np.multiply(out, weights[0], out=out)
        self._add_weighted(out, field, scratch, first=1, weights=weights)
        return out

    def accumulate(
        self,
        out: np.ndarray,
        field: int = 0,
        scratch: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """out += Σ_j w_ij x_j over the in-neighbours' decoded vector ``field``, one message at a
        time: out ← fl(out + fl(w_1 x_1)), then w_2 x_2, ... (``scratch`` (dim,), distinct from
        ``out``; default: the stream's own; ``weights`` as in ``mix``)."""
        return self._add_weighted(out, field, scratch, first=0, weights=self._weights(weights))

    def _add_weighted(
        self,
        out: np.ndarray,
        field: int,
        scratch: np.ndarray | None,
        first: int,
        weights: np.ndarray,
    ) -> np.ndarray:
        if first >= len(weights):
            return out
        scratch = self.stream.scratch() if scratch is None else scratch
        if np.may_share_memory(scratch, out):
            raise ValueError("the decode scratch must not overlap the output")
        for k in range(first, len(weights)):
            decoded = self.decode_one(k, scratch, field)
            np.multiply(decoded, weights[k], out=decoded)
            np.add(out, decoded, out=out)
        return out

    def received_scalars(self, index: int = 0) -> np.ndarray:
        """Scalar ``index`` of every in-neighbour's message, (in-degree,) float64."""
        return self._rows()[:, : self.stream.header_nbytes].view("<f8")[:, index]

    def mixed_scalar(self, index: int = 0) -> float:
        """Σ_j w_ij s_j over the in-neighbours' scalar ``index``, in float64."""
        return float(self.stream.in_weights64[self._slot] @ self.received_scalars(index))
