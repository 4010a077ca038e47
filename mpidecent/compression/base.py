"""The compressor interface, the packed-message type and the registry.

A compressor maps a flat float vector ``v`` (shape ``(dim,)``) to a ``Packed`` message — one uint8
buffer of exactly ``ceil(bits / 8)`` bytes — and decodes such bytes back to a ``(dim,)`` vector.
Rules every operator follows (see ``docs/algorithms/compressors.md``):

* Sizes are fixed by ``dim`` and the operator's parameters, never by the data, so receivers can
  pre-post receives of ``nbytes`` bytes.
* Decoding depends only on the bytes (and the sender's ``RandomKey`` for shared-seed operators), and
  is deterministic: the same bytes decode to bit-identical values on every rank. Senders therefore
  apply ``decode(their own packed bytes)`` to their own state, never their pre-packing values.
* Randomness comes from ``key.generator(purpose)``, so a run repeats exactly and a receiver can
  rebuild a sender's generator.
* NaN/inf input raises ``NonFiniteInputError`` naming the operator instead of sending garbage.

Instances hold preallocated scratch sized by ``dim``: one instance is not safe to use from several
threads at once, and buffers returned by ``encode``/``decode`` without ``out`` are fresh arrays (or,
where documented, read-only views of the input bytes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from mpidecent.params import Param, resolve
from mpidecent.rng import RandomKey

#: Float dtypes a compressor accepts as input and produces as decoded state.
FLOAT_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True, eq=False)
class Packed:
    """One encoded message.

    ``buffer``: uint8, shape (ceil(bits / 8),) — exactly what is handed to MPI; a view into the
    caller's ``out`` when one was given to ``encode``. ``payload_bits``: bits of per-entry data
    (e.g. sign + level codes); ``header_bits``: bits of per-message side information (e.g.
    per-bucket float32 norms). Both are in bits, not bytes.
    """

    buffer: np.ndarray
    payload_bits: int
    header_bits: int

    def __post_init__(self) -> None:
        if (
            self.buffer.dtype != np.uint8
            or self.buffer.ndim != 1
            or self.buffer.shape[0] != self.nbytes
        ):
            raise ValueError(
                f"Packed buffer must be 1-D uint8 of {self.nbytes} bytes for {self.bits} bits, "
                f"got shape {self.buffer.shape} dtype {self.buffer.dtype}"
            )

    @property
    def bits(self) -> int:
        """Bits counted on the wire: payload + header."""
        return self.payload_bits + self.header_bits

    @property
    def nbytes(self) -> int:
        """Bytes in ``buffer``: ceil(bits / 8)."""
        return (self.bits + 7) // 8


class Compressor(ABC):
    """Base class of every compression operator (see the module docstring for the contract).

    Subclasses set ``name`` (the job-file ``[compression] name``), ``params`` (their other job-file
    keys), ``unbiased`` (E[decode(encode(v))] = v) and ``contractive`` (E‖C(v) − v‖² ≤ (1 − δ)‖v‖²
    for some δ ∈ (0, 1], as CHOCO-style gossip and error feedback need), implement
    ``payload_bits``/``header_bits``, ``_encode`` and ``_decode``, and are added to ``COMPRESSORS``
    with ``@register_compressor``. An operator whose properties depend on its parameters (``randk``
    with ``scaled``) sets ``unbiased``/``contractive`` per instance, leaving the class value as the
    conservative ``False``: check them on an instance, not on the class.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    unbiased: ClassVar[bool]
    #: Conservative default: an operator is not assumed contractive unless it says so.
    contractive: ClassVar[bool] = False
    #: For an operator contractive only with some parameters: the setting that makes it so (job
    #: syntax).
    contractive_when: ClassVar[str | None] = None

    def __init__(self, dim: int, dtype: DTypeLike = "float64", **params: Any) -> None:
        """``dim``: vector length (≥ 1), fixed for the instance's life; ``dtype``: the state dtype
        that ``decode`` produces (float32 or float64). ``params`` are validated as ``[compression]``
        keys (``JobError`` names a bad one); missing keys take their defaults."""
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"{self.name}: dim must be an integer ≥ 1, got {dim!r}")
        self.dim: int = int(dim)
        self.dtype: np.dtype = _float_dtype(dtype, f"{self.name}: dtype")
        #: The resolved operator parameters, defaults filled in (job-file key → value).
        self.options: dict[str, Any] = resolve("compression", self.params, params, owner=self.name)

    # -------------------------------------------------------------- sizes (exact, data-independent)
    @property
    @abstractmethod
    def payload_bits(self) -> int:
        """Bits of per-entry data in every message."""

    @property
    @abstractmethod
    def header_bits(self) -> int:
        """Bits of side information (norms, scales) in every message."""

    @property
    def bits(self) -> int:
        """Bits per message: payload + header."""
        return self.payload_bits + self.header_bits

    @property
    def nbytes(self) -> int:
        """Bytes per message buffer: ceil(bits / 8)."""
        return (self.bits + 7) // 8

    @property
    def paper_bits_per_coordinate(self) -> float:
        """The nominal bit budget per coordinate that papers plot against (e.g. b for b-bit
        quantization, 32·k/d for sparsifiers) — a label for comparing runs, NOT the wire cost, which
        is ``bits / dim`` (it also counts headers and indices). Default: ``payload_bits / dim``;
        operators whose papers use another unit override it."""
        return self.payload_bits / self.dim

    # ------------------------------------------------------------------------------ encode / decode
    def encode(self, v: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> Packed:
        """Compress ``v`` (1-D float32/float64 of length ``dim``; not modified) into ``nbytes``
        bytes.

        ``key`` is the sender's (seed, rank, step). ``out``: optional contiguous uint8 array of
        exactly ``nbytes`` to pack into (its content is unspecified if encoding raises). Raises
        ``NonFiniteInputError`` for NaN/inf input, ``ValueError`` for a wrong shape or ``out``,
        ``TypeError`` for a non-float dtype.
        """
        self._check_input(v)
        buf = self._out_buffer(out)
        self._encode(v, key, buf)
        return Packed(buf, self.payload_bits, self.header_bits)

    def decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> np.ndarray:
        """Reconstruct the vector from ``buf`` (1-D uint8 of ``nbytes``, e.g. a received buffer).

        ``key`` is the SENDER's key (shared-seed operators rebuild its generator). Returns shape
        (dim,) of ``self.dtype``, written into ``out`` when given; with ``out=None`` the result is a
        new array, or for operators that document it a read-only view of ``buf``.
        """
        if (
            not isinstance(buf, np.ndarray)
            or buf.dtype != np.uint8
            or buf.shape != (self.nbytes,)
            or not buf.flags.c_contiguous
        ):
            raise ValueError(
                f"{self.describe()}: decode expects a contiguous 1-D uint8 buffer of "
                f"{self.nbytes} bytes, got {_shape_of(buf)}"
            )
        if out is not None:
            self._check_state_array(out, "out")
        return self._decode(buf, key, out)

    @abstractmethod
    def _encode(self, v: np.ndarray, key: RandomKey, buf: np.ndarray) -> None:
        """Write the message for the validated ``v`` into ``buf`` (uint8, exactly ``nbytes``)."""

    @abstractmethod
    def _decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None) -> np.ndarray:
        """Decode the validated ``buf``; ``out`` is None or a validated (dim,) array of
        ``self.dtype``."""

    # -------------------------------------------------------------------------------- descriptions
    def describe(self) -> str:
        """Operator and parameters, e.g. ``qsgd(levels=16, bucket=64)``."""
        args = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}({args})"

    def __repr__(self) -> str:
        return f"<{self.describe()} dim={self.dim} dtype={self.dtype} bits={self.bits}>"

    # ----------------------------------------------------------------------------------- checking
    def _check_input(self, v: np.ndarray) -> None:
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{self.describe()}: expected a numpy array, got {type(v).__name__}")
        if v.shape != (self.dim,):
            raise ValueError(
                f"{self.describe()}: expected a 1-D array of length {self.dim}, got shape {v.shape}"
            )
        if v.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{self.describe()}: expected float32 or float64 input, got {v.dtype}")

    def _check_state_array(self, a: np.ndarray, what: str) -> None:
        if not isinstance(a, np.ndarray) or a.shape != (self.dim,) or a.dtype != self.dtype:
            raise ValueError(
                f"{self.describe()}: {what} must be a ({self.dim},) {self.dtype} array, "
                f"got {_shape_of(a)}"
            )

    def _out_buffer(self, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            return np.empty(self.nbytes, dtype=np.uint8)  # every byte is written by _encode
        if (
            not isinstance(out, np.ndarray)
            or out.dtype != np.uint8
            or out.shape != (self.nbytes,)
            or not out.flags.c_contiguous
            or not out.flags.writeable
        ):
            raise ValueError(
                f"{self.describe()}: out must be a writeable contiguous 1-D uint8 array of "
                f"{self.nbytes} bytes, got {_shape_of(out)}"
            )
        return out


def _shape_of(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"shape {a.shape} dtype {a.dtype}"
    return type(a).__name__


def _float_dtype(dtype: DTypeLike, what: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"{what} must be float32 or float64, got {dtype!r}") from err
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{what} must be float32 or float64, got {dt}")
    return dt


# ---------------------------------------------------------------------------------------- registry

#: Job-file ``[compression] name`` → operator class. Filled by ``@register_compressor``.
COMPRESSORS: dict[str, type[Compressor]] = {}


def register_compressor(cls: type[Compressor]) -> type[Compressor]:
    """Class decorator: add ``cls`` to ``COMPRESSORS`` under ``cls.name``."""
    if cls.name in COMPRESSORS and COMPRESSORS[cls.name] is not cls:
        raise ValueError(f"compressor name {cls.name!r} registered twice")
    COMPRESSORS[cls.name] = cls
    return cls


def unbiased_operators() -> str:
    """The operators that can be unbiased, for messages: "identity, qsgd, onebit or randk (scaled =
    true)"."""
    names = [name for name, cls in COMPRESSORS.items() if cls.unbiased]
    if "randk" in COMPRESSORS and "randk" not in names:
        names.append("randk (scaled = true)")
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def contractive_operators() -> str:
    """The operators that can be contractive, for messages: "identity, qsgd_contractive, ... or
    randk (scaled = false)"."""
    names = [
        f"{name} ({cls.contractive_when})" if cls.contractive_when else name
        for name, cls in COMPRESSORS.items()
        if cls.contractive or cls.contractive_when
    ]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)
