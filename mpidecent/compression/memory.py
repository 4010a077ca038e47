"""Error feedback (memory): compress v + e and carry what was not sent into the next message.

    e ← 0;   message_t = C(v_t + e);   e ← (v_t + e) − decode(message_t)

so Σ_t decode(message_t) + e_T = Σ_t v_t (up to float rounding): nothing is lost, only delayed. With
a contractive C (``sign``, ``topk``, unscaled ``randk``, ``qsgd_contractive``) the memory stays
bounded and biased operators become usable for SGD and gossip.
"""

from __future__ import annotations

import numpy as np

from mpidecent.compression.base import Compressor, Packed
from mpidecent.rng import RandomKey


class ErrorFeedback:
    """Error-feedback wrapper around one ``Compressor`` for ONE message stream.

    The memory e is the residual of this stream's previous messages, so one instance belongs to one
    sender-side stream (e.g. "my model updates to all neighbours" or "my gradient"); two streams
    compressed with the same operator need two instances. Receivers decode with the plain
    compressor.

    ``memory``: e, shape (dim,), the compressor's state dtype, starts at 0; it is the array itself
    (checkpoint it, restore with ``np.copyto(ef.memory, saved)``). The residual uses the DECODED
    bytes of the message (exactly what receivers reconstruct), never the pre-packing floats, so
    sender and receivers agree. ``v + e`` and ``(v + e) − decoded`` are computed in the state dtype.
    """

    def __init__(self, compressor: Compressor) -> None:
        self.compressor: Compressor = compressor
        dim, dtype = compressor.dim, compressor.dtype
        #: e: what has been fed in but not yet sent, shape (dim,), state dtype.
        self.memory: np.ndarray = np.zeros(dim, dtype=dtype)
        self._w = np.empty(dim, dtype=dtype)  # v + e
        self._decoded = np.empty(dim, dtype=dtype)  # decode(own message)
        self._decoded_view = self._decoded.view()
        self._decoded_view.flags.writeable = False

    @property
    def dim(self) -> int:
        return self.compressor.dim

    @property
    def nbytes(self) -> int:
        """Bytes per message (the wrapped compressor's: error feedback sends nothing extra)."""
        return self.compressor.nbytes

    @property
    def decoded(self) -> np.ndarray:
        """decode(last message) as receivers see it: read-only (dim,) view of the state dtype, valid
        until the next ``encode`` — apply this to the sender's own state instead of decoding
        again."""
        return self._decoded_view

    def describe(self) -> str:
        return f"error_feedback({self.compressor.describe()})"

    def __repr__(self) -> str:
        return f"<{self.describe()} dim={self.dim} dtype={self.compressor.dtype}>"

    def encode(self, v: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> Packed:
        """Send C(v + e) and update e ← (v + e) − decode(message).

        ``v``: 1-D float32/float64 of length ``dim`` (not modified); ``key``, ``out``: as in
        ``Compressor.encode``. If encoding raises (e.g. ``NonFiniteInputError``), ``memory`` is left
        unchanged.
        """
        self.compressor._check_input(v)  # before the add, for the operator's clear message
        w = self._w
        np.add(v, self.memory, out=w, casting="same_kind")
        packed = self.compressor.encode(w, key, out)
        self.compressor.decode(packed.buffer, key, out=self._decoded)
        np.subtract(w, self._decoded, out=self.memory)
        return packed

    def reset(self) -> None:
        """e ← 0 (e.g. when the stream restarts)."""
        self.memory.fill(0.0)
