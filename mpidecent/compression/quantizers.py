"""Quantizing operators: ``identity`` (full precision) and ``qsgd`` (unbiased stochastic quantizer).

Wire formats are exact and data-independent (see ``specs/compressors.md``); all multi-byte floats on
the wire are little-endian, codes are packed MSB-first by ``packing.pack_codes``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mpidecent.compression.base import Compressor, register_compressor
from mpidecent.compression.packing import code_dtype, pack_codes, unpack_codes
from mpidecent.errors import NonFiniteInputError
from mpidecent.params import Param
from mpidecent.rng import RandomKey

_WIRE_FLOAT = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
_F32_MAX = float(np.finfo(np.float32).max)


def _nonfinite_message(op: str, v: np.ndarray, limit: str) -> str:
    """Say whether ``v`` really holds NaN/inf or is merely too large for ``limit``. Only called on the
    failure path, so the exact O(d) check costs nothing in normal runs."""
    if np.isfinite(v).all():
        return f"{op}: input values too large ({limit}; a diverging run?)"
    return f"{op}: input contains NaN or infinite values (a diverging run?)"


@register_compressor
class Identity(Compressor):
    """No compression: the vector's floats, little-endian, at precision ``precision``.

    ``precision = "state"`` (default) sends the state dtype given at construction; ``"float32"`` on a
    float64 state rounds to nearest float32 (then decodes back to float64 exactly). bits = 32·d or 64·d,
    header 0. ``decode`` with ``out=None`` returns a zero-copy read-only view of ``buf`` when the wire
    precision equals the state dtype.
    """

    name: ClassVar[str] = "identity"
    params: ClassVar[tuple[Param, ...]] = (
        Param("precision", str, "state", "float precision on the wire; 'state' = the run's dtype",
              choices=("state", "float32", "float64")),
    )
    unbiased: ClassVar[bool] = True

    def __init__(self, dim: int, dtype: np.dtype | str = "float64", **params: Any) -> None:
        super().__init__(dim, dtype, **params)
        precision = self.options["precision"]
        self.precision: str = self.dtype.name if precision == "state" else precision
        self.wire_dtype: np.dtype = _WIRE_FLOAT[self.precision]

    @property
    def payload_bits(self) -> int:
        return 8 * self.wire_dtype.itemsize * self.dim

    @property
    def header_bits(self) -> int:
        return 0

    def describe(self) -> str:
        return f"identity(precision={self.precision})"

    def _encode(self, v: np.ndarray, key: RandomKey, buf: np.ndarray) -> None:
        wire = buf.view(self.wire_dtype)
        # Overflow in a float64 → float32 cast gives inf, which the check below reports.
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(wire, v, casting="same_kind")
            # Cheap pass first: a finite sum proves every entry finite. Only if the sum is not finite
            # (NaN/inf, or huge finite values overflowing the sum) do the exact per-entry check.
            ok = bool(np.isfinite(wire.sum())) or bool(np.isfinite(wire).all())
        if not ok:
            raise NonFiniteInputError(_nonfinite_message(self.describe(), v, f"beyond the {self.precision} range"))

    def _decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None) -> np.ndarray:
        wire = buf.view(self.wire_dtype)
        if out is not None:
            np.copyto(out, wire, casting="same_kind")
            return out
        if wire.dtype == self.dtype:
            view = wire.view()
            view.flags.writeable = False  # the caller's receive buffer must not be edited through us
            return view
        return wire.astype(self.dtype)


def _levels_fit(s: int) -> str | None:
    return None if s <= _MAX_LEVELS else f"must be ≤ {_MAX_LEVELS} (15 level bits + 1 sign bit)"


_MAX_LEVELS = (1 << 15) - 1


@register_compressor
class QSGD(Compressor):
    """QSGD: unbiased stochastic quantization to ``levels`` (s) levels per bucket of ``bucket`` (B).

    Per bucket u (B consecutive entries; B = 0 means the whole vector; the last bucket may be shorter):
    r = ‖u‖₂ is computed in float64 and sent as float32 rounded UP (``r32 ≥ r``), so |u_k| ≤ r32 and no
    level exceeds s. ℓ_k = s|u_k|/r32, ξ_k = ⌊ℓ_k⌋ + [U_k < ℓ_k − ⌊ℓ_k⌋] with U_k ~ U[0, 1) (float64)
    drawn in entry order from ``key.generator("quantize")``. Decoded value: float64(r32)·sign(u_k)·ξ_k/s
    (the product r32·ξ_k is exact in float64, so there is one rounding, then the cast to the state
    dtype), computed only from the bytes. Since E[ξ_k]·r32/s = |u_k| whatever r32 is, rounding the norm
    up keeps the operator unbiased. Variance: E‖Q(u) − u‖² ≤ min(B/s², √B/s)·‖u‖².

    Format decision — **sign + level**, not signed level: each entry is one (1 + L)-bit code,
    L = ⌈log2(s+1)⌉, with the sign bit as MSB (1 = negative) and ξ_k in the low L bits. A zero level
    always carries sign 0, so each message has one canonical encoding and no −0.0 is ever decoded.
    bits = d·(1 + L) + 32·⌈d/B⌉ (payload d·(1 + L), header 32 per bucket norm).
    Buffer: [⌈d/B⌉ little-endian float32 norms][packed codes, MSB-first, zero-padded last byte], exactly
    ⌈bits/8⌉ = 4·⌈d/B⌉ + ⌈d(1+L)/8⌉ bytes. Example: d = 1024, s = 16, B = 64 → 6,144 + 512 = 6,656 bits
    = 832 bytes. s ≤ 32767 so that a code fits in 16 bits.

    Non-finite input is detected from the bucket norms (a NaN/inf entry makes its norm non-finite, as
    does a finite bucket whose norm overflows float64 or the float32 range) and raises
    ``NonFiniteInputError``. A bucket whose squared norm underflows to 0 (all |u_k| ≲ 1e-162) decodes
    to zeros.
    """

    name: ClassVar[str] = "qsgd"
    params: ClassVar[tuple[Param, ...]] = (
        Param("levels", int, 16, "quantization levels s per sign (1 + ⌈log2(s+1)⌉ bits per entry)",
              minimum=1, check=_levels_fit),
        Param("bucket", int, 64, "entries per bucket sharing one float32 norm (0 = whole vector)", minimum=0),
    )
    unbiased: ClassVar[bool] = True

    def __init__(self, dim: int, dtype: np.dtype | str = "float64", **params: Any) -> None:
        super().__init__(dim, dtype, **params)
        s: int = self.options["levels"]
        b: int = self.options["bucket"]
        d = self.dim
        self.levels: int = s
        self.bucket: int = b
        self.level_bits: int = s.bit_length()             # L = ceil(log2(s + 1))
        self.code_width: int = 1 + self.level_bits        # sign bit + L level bits
        width = d if b == 0 else min(b, d)                # scratch row length: no padding beyond d
        self.n_buckets: int = -(-d // width)              # = ceil(d / B), and 1 for B = 0
        self._norm_bytes = 4 * self.n_buckets
        cdt = code_dtype(self.code_width)

        # Scratch, allocated once (dim is fixed). The padding of the last bucket row stays zero forever:
        # only the first d entries of the flat views are ever written, and 0 stays 0 under every
        # in-place operation below, so padding never contributes to norms and is never transmitted.
        self._mag = np.zeros((self.n_buckets, width))     # float64: u, |u|, ℓ, then ℓ − ⌊ℓ⌋
        self._work = np.zeros((self.n_buckets, width))    # float64: ⌊ℓ⌋ in encode, values in decode
        self._mag_flat = self._mag.reshape(-1)
        self._work_flat = self._work.reshape(-1)
        self._sq = np.empty(self.n_buckets)               # float64 squared norms
        self._r64 = np.empty(self.n_buckets)              # float64 norms / divisors
        self._uniform = np.empty(d)                       # float64 U_k
        self._neg = np.empty(d, dtype=bool)
        self._flag = np.empty(d, dtype=bool)
        self._codes = np.empty(d, dtype=cdt)
        self._signs = np.empty(d, dtype=cdt)
        # Decode table: code (sign bit + level) → signed level as float64. Integer levels have no −0,
        # so even a non-canonical "negative zero" code decodes to +0.0.
        all_codes = np.arange(1 << self.code_width)
        level = all_codes & ((1 << self.level_bits) - 1)
        self._signed_level = np.where(all_codes >> self.level_bits, -level, level).astype(np.float64)

    @property
    def payload_bits(self) -> int:
        return self.dim * self.code_width

    @property
    def header_bits(self) -> int:
        return 32 * self.n_buckets

    # ------------------------------------------------------------------------------------- encode
    def _encode(self, v: np.ndarray, key: RandomKey, buf: np.ndarray) -> None:
        d, s = self.dim, self.levels
        mag, flat = self._mag, self._mag_flat[:d]
        np.copyto(flat, v)                                 # float32 → float64 is exact
        np.less(flat, 0.0, out=self._neg)

        # Bucket norms in float64 (einsum and sqrt raise no FP warnings). A NaN/inf entry makes its
        # bucket's norm non-finite, and so does a finite bucket whose squared norm overflows; one max
        # over the n_buckets norms catches all of these (NaN fails the comparison) and norms beyond the
        # float32 range, before the float32 cast could overflow.
        np.einsum("ij,ij->i", mag, mag, out=self._sq)
        r = np.sqrt(self._sq, out=self._r64)
        if not r.max() <= _F32_MAX:
            raise NonFiniteInputError(
                _nonfinite_message(self.describe(), v, "a bucket norm exceeds the float32 range"))
        r32 = r.astype(np.float32)
        # Round the float32 norm up so that |u_k| ≤ r32 and therefore ℓ_k ≤ s (r ≤ FLT_MAX, so this
        # never reaches inf).
        low = r32.astype(np.float64) < r
        if low.any():
            r32[low] = np.nextafter(r32[low], np.float32(np.inf))
        buf[: self._norm_bytes].view("<f4")[...] = r32

        # ℓ = (|u| / r32) · s. |u_k| ≤ r ≤ r32 (sqrt(fl(Σ u²)) ≥ sqrt(fl(u_k²)) = |u_k| in binary
        # floating point; entries whose square underflows are far below the smallest float32 r32 > 0),
        # and rounding is monotone, so |u|/r32 ≤ 1 and ℓ ≤ s. Buckets with r32 = 0 divide by 1 instead
        # (no warning; their entries are 0 or underflow-tiny, so ℓ < 1).
        divisor = self._r64
        np.copyto(divisor, r32)
        divisor[r32 == 0] = 1.0
        np.abs(mag, out=mag)
        np.divide(mag, divisor[:, None], out=mag)
        mag *= s
        np.floor(mag, out=self._work)
        mag -= self._work                                  # fractional part ℓ − ⌊ℓ⌋ ∈ [0, 1)

        key.generator("quantize").random(out=self._uniform)
        np.less(self._uniform, flat, out=self._flag)       # Bernoulli(ℓ − ⌊ℓ⌋) round-up
        codes = self._codes
        np.copyto(codes, self._work_flat[:d], casting="unsafe")
        # ξ ≤ s without a clamp: ℓ ≤ s, and ℓ = s exactly has a zero fraction, which never rounds up.
        np.add(codes, self._flag, out=codes, casting="unsafe")

        # Sign bit only for non-zero levels (canonical encoding).
        np.not_equal(codes, 0, out=self._flag)
        np.logical_and(self._flag, self._neg, out=self._flag)
        np.copyto(self._signs, self._flag, casting="unsafe")
        np.left_shift(self._signs, self.level_bits, out=self._signs)
        np.bitwise_or(codes, self._signs, out=codes)
        pack_codes(codes, self.code_width, buf[self._norm_bytes:], check=False)  # codes < 2**width

    # ------------------------------------------------------------------------------------- decode
    def _decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None) -> np.ndarray:
        d = self.dim
        r = self._r64
        np.copyto(r, buf[: self._norm_bytes].view("<f4"))
        codes = unpack_codes(buf[self._norm_bytes:], self.code_width, d, out=self._codes)
        vals, flat = self._work, self._work_flat[:d]
        # code → signed level ±ξ in one gather: branch-free (``np.negative(where=sign)`` on random
        # signs is ~15x slower). mode="clip" skips the buffered bounds check; codes < 2**width anyway.
        np.take(self._signed_level, codes, out=flat, mode="clip")
        vals *= r[:, None]                                 # r32·ξ: exact in float64 (24 + 15 bits)
        vals /= self.levels                                # the only rounding before the dtype cast
        if out is None:
            return flat.astype(self.dtype)
        np.copyto(out, flat, casting="same_kind")
        return out
