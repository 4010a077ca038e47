"""What every message stream shares: an encoder that never drops out of an exchange, the traffic a
step sent (bits, bytes, messages) and the seconds it spent computing and communicating.

Pure (numpy and the compression package; never mpi4py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mpidecent.compression import Compressor, ErrorFeedback, Packed
from mpidecent.errors import NonFiniteInputError
from mpidecent.rng import RandomKey


@dataclass
class Traffic:
    """What one rank sent: ``bits`` counted from the packed buffers (payload + headers) per
    out-edge, ``bytes`` handed to MPI, ``messages`` point-to-point messages."""

    bits: int = 0
    bytes: int = 0
    messages: int = 0

    def add(self, bits: int, nbytes: int, messages: int) -> None:
        self.bits += bits
        self.bytes += nbytes
        self.messages += messages

    def take(self) -> Traffic:
        """The counts so far, and start counting from zero again."""
        taken = Traffic(self.bits, self.bytes, self.messages)
        self.bits = self.bytes = self.messages = 0
        return taken


class Stopwatch:
    """Splits one step's wall-clock time on this rank into compute and communication seconds: each
    mark (``compute()`` or ``comm()``) books the time since the previous mark."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> Stopwatch:
        self.compute_s = 0.0
        self.comm_s = 0.0
        self._t = time.perf_counter()
        return self

    def compute(self) -> None:
        now = time.perf_counter()
        self.compute_s += now - self._t
        self._t = now

    def comm(self) -> None:
        now = time.perf_counter()
        self.comm_s += now - self._t
        self._t = now


class Encoder:
    """Encodes one sender-side stream with the job's compressor (and, when asked, error feedback).

    A vector holding NaN/inf is not sent: the encoder flags ``nonfinite`` (sticky) and sends the
    all-zero message instead, because a rank must never drop out of an exchange its neighbours wait
    on; the runner's status reduction then stops every rank together with a clear message.
    ``memory``: the error-feedback residual e (dim,), or None without error feedback."""

    def __init__(self, compressor: Compressor, error_feedback: bool = False) -> None:
        self.compressor = compressor
        self.feedback = ErrorFeedback(compressor) if error_feedback else None
        self.nonfinite = False
        self._zeros: np.ndarray | None = None

    @property
    def memory(self) -> np.ndarray | None:
        return self.feedback.memory if self.feedback is not None else None

    def encode(self, v: np.ndarray, key: RandomKey, out: np.ndarray) -> Packed:
        """Pack ``v`` (dim,) into ``out`` (the compressor's nbytes, uint8); see the class
        docstring."""
        try:
            if self.feedback is not None:
                return self.feedback.encode(v, key, out)
            return self.compressor.encode(v, key, out)
        except NonFiniteInputError:
            self.nonfinite = True
            if self._zeros is None:
                self._zeros = np.zeros_like(v)
            return self.compressor.encode(self._zeros, key, out)
