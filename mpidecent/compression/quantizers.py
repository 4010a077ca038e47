"""Quantizing operators — every coordinate is sent, at reduced precision:

* ``identity`` (full precision), ``qsgd`` (unbiased stochastic quantizer) and ``qsgd_contractive``
  (qsgd with s = 2^b levels, shrunk by τ: biased, contractive);
* the one-bit family ``sign`` (scaled sign, biased, contractive) and ``onebit`` (stochastic 1-bit,
  unbiased). They live here rather than with the sparsifiers because they quantize every coordinate
  (one float32 scale + d sign bits, sharing ``_SignBits``'s wire format and decoder); the
  sparsifiers send a subset of coordinates at full float32 precision.

Wire formats are exact and data-independent (see ``docs/algorithms/compressors.md``); all
multi-byte floats on the wire are little-endian, codes are packed MSB-first by
``packing.pack_codes``.

``qsgd``, ``qsgd_contractive``, ``sign`` and ``onebit`` have two implementations that give the same
bytes: fused single-pass kernels (``kernels.py``, numba; used when available) and the numpy code
here, kept as the plain reference (``fast=False``, or ``MPIDECENT_KERNELS=reference``), which also
serves vectors shorter than ``kernels.MIN_DIM``. Their dither is the counter-based 30-bit stream of
``kernels.py``: entry k is rounded up when u_k < frac·2^30.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from mpidecent.compression import kernels
from mpidecent.compression.base import Compressor, register_compressor
from mpidecent.compression.kernels import F32_MAX, TWO30, dither_words, lane_sums
from mpidecent.compression.packing import code_dtype, pack_codes, unpack_codes
from mpidecent.errors import NonFiniteInputError
from mpidecent.params import Param
from mpidecent.rng import RandomKey

_WIRE_FLOAT: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}


def _nonfinite_message(op: str, v: np.ndarray, limit: str) -> str:
    """Say whether ``v`` really holds NaN/inf or is merely too large for ``limit``. Only called on
    the failure path, so the exact O(d) check costs nothing in normal runs."""
    if np.isfinite(v).all():
        return f"{op}: input values too large ({limit}; a diverging run?)"
    return f"{op}: input contains NaN or infinite values (a diverging run?)"


@register_compressor
class Identity(Compressor):
    """No compression: the vector's floats, little-endian, at precision ``precision``.

    ``precision = "state"`` (default) sends the state dtype given at construction; ``"float32"`` on
    a float64 state rounds to nearest float32 (then decodes back to float64 exactly). bits = 32·d or
    64·d, header 0. ``decode`` with ``out=None`` returns a zero-copy read-only view of ``buf`` when
    the wire precision equals the state dtype.
    """

    name: ClassVar[str] = "identity"
    params: ClassVar[tuple[Param, ...]] = (
        Param(
            "precision",
            str,
            "state",
            "float precision on the wire; 'state' = the run's dtype",
            choices=("state", "float32", "float64"),
        ),
    )
    unbiased: ClassVar[bool] = True
    contractive: ClassVar[bool] = True  # δ = 1 (up to float32 rounding with precision = float32)

    def __init__(self, dim: int, dtype: DTypeLike = "float64", **params: Any) -> None:
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
            # Cheap pass first: a finite sum proves every entry finite. Only if the sum is not
            # finite (NaN/inf, or huge finite values overflowing the sum) do the exact per-entry
            # check.
            ok = bool(np.isfinite(wire.sum())) or bool(np.isfinite(wire).all())
        if not ok:
            raise NonFiniteInputError(
                _nonfinite_message(self.describe(), v, f"beyond the {self.precision} range")
            )

    def _decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None) -> np.ndarray:
        wire = buf.view(self.wire_dtype)
        if out is not None:
            np.copyto(out, wire, casting="same_kind")
            return out
        if wire.dtype == self.dtype:
            view = wire.view()
            view.flags.writeable = (
                False  # the caller's receive buffer must not be edited through us
            )
            return view
        return wire.astype(self.dtype)


def _levels_fit(s: int) -> str | None:
    return None if s <= _MAX_LEVELS else f"must be ≤ {_MAX_LEVELS} (15 level bits + 1 sign bit)"


_MAX_LEVELS = (1 << 15) - 1


# [compression] bucket default; a larger bucket than the model is capped to d (the runner notes it
# when set).
DEFAULT_BUCKET = 64


@register_compressor
class QSGD(Compressor):
    """QSGD: unbiased stochastic quantization to ``levels`` (s) levels per bucket of ``bucket`` (B).

    Per bucket u (B consecutive entries; B = 0 means the whole vector; the last bucket may be
    shorter): r = ‖u‖₂ is computed in float64 (Σu² in the eight-lane order of ``kernels.lane_sums``)
    and sent as float32 rounded UP (``r32 ≥ r``), so |u_k| ≤ r32. ℓ_k = min(|u_k|·(s/r32), s) in
    float64 (a product with the bucket's factor, not a division per entry; the min catches a
    rounding above s), ξ_k = ⌊ℓ_k⌋ + [u_k < (ℓ_k − ⌊ℓ_k⌋)·2^30] with u_k the k-th 30-bit dither
    integer of ``key.word("quantize")`` (``kernels.py``; P(round up) is within 2^-30 of the
    fraction). Decoded value: float64(±ξ_k)·(float64(r32)/s), then the cast to the state dtype,
    computed only from the bytes. Since E[ξ_k]·r32/s = |u_k| whatever r32 is, rounding the norm up
    keeps the operator unbiased. Variance: E‖Q(u) − u‖² ≤ min(B/s², √B/s)·‖u‖².

    Format decision — **sign + level**, not signed level: each entry is one (1 + L)-bit code, L =
    ⌈log2(s+1)⌉, with the sign bit as MSB (1 = negative) and ξ_k in the low L bits. A zero level
    always carries sign 0, so each message has one canonical encoding and no −0.0 is ever decoded.
    bits = d·(1 + L) + 32·⌈d/B⌉ (payload d·(1 + L), header 32 per bucket norm). Buffer: [⌈d/B⌉
    little-endian float32 norms][packed codes, MSB-first, zero-padded last byte], exactly ⌈bits/8⌉ =
    4·⌈d/B⌉ + ⌈d(1+L)/8⌉ bytes. Example: d = 1024, s = 16, B = 64 → 6,144 + 512 = 6,656 bits = 832
    bytes. s ≤ 32767 so that a code fits in 16 bits.

    Non-finite input is detected from the bucket norms (a NaN/inf entry makes its norm non-finite,
    as does a finite bucket whose norm overflows float64 or the float32 range) and raises
    ``NonFiniteInputError``. A bucket whose squared norm underflows to 0 (all |u_k| ≲ 1e-162)
    decodes to zeros.
    """

    name: ClassVar[str] = "qsgd"
    params: ClassVar[tuple[Param, ...]] = (
        Param(
            "levels",
            int,
            16,
            "quantization levels s per sign (1 + ⌈log2(s+1)⌉ bits per entry)",
            minimum=1,
            check=_levels_fit,
        ),
        Param(
            "bucket",
            int,
            DEFAULT_BUCKET,
            "entries per bucket sharing one float32 norm (0 = whole vector; "
            "larger than the model: one bucket of the whole model, noted at the start of a run)",
            minimum=0,
        ),
    )
    unbiased: ClassVar[bool] = True
    # Not guaranteed: unbiased with E‖Q(v) − v‖² ≤ ω²‖v‖² contracts only when ω² < 1, and ω² can be
    # ≥ 1 (e.g. B = 64, s = 1 gives ω² = 8). qsgd_contractive is the contractive variant.
    contractive: ClassVar[bool] = False

    def __init__(
        self, dim: int, dtype: DTypeLike = "float64", fast: bool | None = None, **params: Any
    ) -> None:
        super().__init__(dim, dtype, **params)
        #: The fused kernels (``kernels.py``): for dim ≥ kernels.MIN_DIM (fast=None) or always
        #: (fast=True) when numba is there; else (or fast=False) None, and the numpy reference
        #: runs. Both give the same bytes.
        self.kernels = kernels.choose(fast, self.dim)
        s: int = self._levels_option()
        b: int = self.options["bucket"]
        d = self.dim
        self.levels: int = s
        self.bucket: int = b
        #: Decoded values are divided by ``tau`` (1 for qsgd; > 1 for ``qsgd_contractive``).
        self.tau: float = 1.0
        self.level_bits: int = s.bit_length()  # L = ceil(log2(s + 1))
        self.code_width: int = 1 + self.level_bits  # sign bit + L level bits
        width = d if b == 0 else min(b, d)  # scratch row length: no padding beyond d
        self.n_buckets: int = -(-d // width)  # = ceil(d / B), and 1 for B = 0
        self._norm_bytes = 4 * self.n_buckets
        cdt = code_dtype(self.code_width)

        # Scratch, allocated once (dim is fixed): per bucket for both paths, per bucket row for the
        # kernels.
        self._sq = np.empty(self.n_buckets)  # float64 squared norms
        self._r64 = np.empty(self.n_buckets)  # float64 norms / factors / scales
        self._r32 = np.empty(
            self.n_buckets, dtype=np.float32
        )  # aligned copy of the wire norms (kernels)
        # kernel scratch: the dither of one block of buckets (≥ one bucket; ~2,048 entries, 8 KiB,
        # in L1)
        self._words = np.empty(max(width, 2048) // 2 + 2, dtype=np.uint64)
        self._bucket_codes = np.empty(width, dtype=np.uint16)  # kernel scratch: one bucket's codes
        self._row = width  # entries per bucket row
        if self.kernels is None:
            # The reference's d-sized scratch (~35 bytes per entry; not allocated for the kernels).
            # The padding of the last bucket row stays zero forever: only the first d entries of the
            # flat views are ever written, and 0 stays 0 under every in-place operation below, so
            # padding never contributes to norms and is never transmitted.
            self._mag = np.zeros((self.n_buckets, width))  # float64: u, |u|, ℓ, then ℓ − ⌊ℓ⌋
            self._work = np.zeros(
                (self.n_buckets, width)
            )  # float64: ⌊ℓ⌋ in encode, values in decode
            self._mag_flat = self._mag.reshape(-1)
            self._work_flat = self._work.reshape(-1)
            self._uniform = np.empty(d)  # float64 u_k
            self._neg = np.empty(d, dtype=bool)
            self._flag = np.empty(d, dtype=bool)
            self._codes = np.empty(d, dtype=cdt)
            self._signs = np.empty(d, dtype=cdt)
        # Decode table: code (sign bit + level) → signed level as float64. Integer levels have no
        # −0, so even a non-canonical "negative zero" code decodes to +0.0.
        all_codes = np.arange(1 << self.code_width)
        level = all_codes & ((1 << self.level_bits) - 1)
        self._signed_level = np.where(all_codes >> self.level_bits, -level, level).astype(
            np.float64
        )

    def _levels_option(self) -> int:
        """s from the resolved job-file keys (a subclass may derive it from other keys)."""
        return self.options["levels"]

    @property
    def payload_bits(self) -> int:
        return self.dim * self.code_width

    @property
    def header_bits(self) -> int:
        return 32 * self.n_buckets

    # ------------------------------------------------------------------------------------- encode
    def _encode(self, v: np.ndarray, key: RandomKey, buf: np.ndarray) -> None:
        if self.kernels is not None:
            if not self.kernels["qsgd_encode"](
                np.ascontiguousarray(v),
                self.levels,
                self._row,
                self.level_bits,
                np.uint64(key.word("quantize")),
                self._r32,
                buf[self._norm_bytes :],
                self._words,
                self._bucket_codes,
            ):
                raise NonFiniteInputError(
                    _nonfinite_message(
                        self.describe(), v, "a bucket norm exceeds the float32 range"
                    )
                )
            buf[: self._norm_bytes].view("<f4")[...] = self._r32
            return
        d, s = self.dim, self.levels
        mag, flat = self._mag, self._mag_flat[:d]
        np.copyto(flat, v)  # float32 → float64 is exact
        np.less(flat, 0.0, out=self._neg)

        # Bucket norms in float64 (einsum and sqrt raise no FP warnings). A NaN/inf entry makes its
        # bucket's norm non-finite, and so does a finite bucket whose squared norm overflows; one
        # max over the n_buckets norms catches all of these (NaN fails the comparison) and norms
        # beyond the float32 range, before the float32 cast could overflow. Σu² per bucket in the
        # kernel's eight-lane order (kernels.lane_sums): the same norms to the bit.
        with np.errstate(over="ignore", invalid="ignore"):  # overflow → inf norm, reported below
            np.copyto(self._sq, lane_sums(mag * mag))
        r = np.sqrt(self._sq, out=self._r64)
        if not r.max() <= F32_MAX:
            raise NonFiniteInputError(
                _nonfinite_message(self.describe(), v, "a bucket norm exceeds the float32 range")
            )
        r32 = r.astype(np.float32)
        # Round the float32 norm up so that |u_k| ≤ r32 and therefore ℓ_k ≤ s (r ≤ FLT_MAX, so this
        # never reaches inf).
        low = r32.astype(np.float64) < r
        if low.any():
            r32[low] = np.nextafter(r32[low], np.float32(np.inf))
        buf[: self._norm_bytes].view("<f4")[...] = r32

        # ℓ = min(|u| · (s / r32), s). |u_k| ≤ r ≤ r32 (sqrt(fl(Σ u²)) ≥ sqrt(fl(u_k²)) = |u_k| in
        # binary floating point; entries whose square underflows are far below the smallest float32
        # r32 > 0), so ℓ ≤ s up to the rounding of the product, which the min removes. Buckets with
        # r32 = 0 use the factor s / 1 (their entries are 0 or underflow-tiny, so ℓ < 1).
        factor = self._r64
        np.copyto(factor, r32)
        factor[r32 == 0] = 1.0
        np.divide(s, factor, out=factor)  # s / r32 per bucket
        np.abs(mag, out=mag)
        mag *= factor[:, None]
        np.minimum(mag, s, out=mag)  # |u| ≤ r32, but the rounded product may exceed s
        np.floor(mag, out=self._work)
        mag -= self._work  # fractional part ℓ − ⌊ℓ⌋ ∈ [0, 1)

        np.copyto(self._uniform, dither_words(key.word("quantize"), d))
        flat *= TWO30  # exact: a power of two
        np.less(self._uniform, flat, out=self._flag)  # Bernoulli(ℓ − ⌊ℓ⌋) round-up
        codes = self._codes
        np.copyto(codes, self._work_flat[:d], casting="unsafe")
        # ξ ≤ s: ℓ ≤ s, and ℓ = s exactly has a zero fraction, which never rounds up.
        np.add(codes, self._flag, out=codes, casting="unsafe")

        # Sign bit only for non-zero levels (canonical encoding).
        np.not_equal(codes, 0, out=self._flag)
        np.logical_and(self._flag, self._neg, out=self._flag)
        np.copyto(self._signs, self._flag, casting="unsafe")
        np.left_shift(self._signs, self.level_bits, out=self._signs)
        np.bitwise_or(codes, self._signs, out=codes)
        pack_codes(codes, self.code_width, buf[self._norm_bytes :], check=False)  # codes < 2**width

    # ------------------------------------------------------------------------------------- decode
    def _decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None) -> np.ndarray:
        d = self.dim
        r = self._r64
        np.copyto(
            r, buf[: self._norm_bytes].view("<f4")
        )  # (a copy: a received row may be unaligned)
        r /= self.levels  # r32 / s per bucket
        if self.kernels is not None:
            if out is None:
                out = np.empty(d, dtype=self.dtype)
            self.kernels["qsgd_decode"](
                buf[self._norm_bytes :],
                r,
                self._row,
                self.level_bits,
                self._signed_level,
                float(self.tau),
                out,
            )
            return out
        codes = unpack_codes(buf[self._norm_bytes :], self.code_width, d, out=self._codes)
        vals, flat = self._work, self._work_flat[:d]
        # code → signed level ±ξ in one gather: branch-free (``np.negative(where=sign)`` on random
        # signs is ~15x slower). mode="clip" skips the buffered bounds check; codes < 2**width
        # anyway.
        np.take(self._signed_level, codes, out=flat, mode="clip")
        vals *= r[:, None]
        if self.tau != 1.0:
            vals /= self.tau  # qsgd_contractive: (r32·ξ/s)/τ, two roundings
        if out is None:
            return flat.astype(self.dtype)
        np.copyto(out, flat, casting="same_kind")
        return out


# ------------------------------------------------------------------------------- qsgd_contractive

_MAX_QUANT_BITS = 14


def _quant_bits_fit(b: int) -> str | None:
    if b <= _MAX_QUANT_BITS:
        return None
    return f"must be ≤ {_MAX_QUANT_BITS} (s = 2^b levels take b + 1 level bits + 1 sign bit ≤ 16)"


@register_compressor
class QSGDContractive(QSGD):
    """qsgd with s = 2^``bits`` levels, decoded values divided by τ: biased but contractive.

    τ = 1 + ω² with ω² = min(B/s², √B/s), B = the bucket length (``bucket``, or d when ``bucket`` =
    0 or ≥ d); one τ for all buckets (a shorter last bucket has a smaller ω², for which the same τ
    is still enough), so τ is known to both sides and nothing extra is sent. Since E‖Q(u) − u‖² ≤
    ω²‖u‖² and E[Q(u)] = u: E‖Q(v)/τ − v‖² ≤ (ω²/τ² + (1 − 1/τ)²)‖v‖² = (1 − 1/τ)‖v‖² — contractive
    with δ = 1/τ (CHOCO-gossip's operator).

    Wire format: exactly qsgd's (sign + level codes of 1 + (b + 1) bits, one float32 norm per
    bucket): bits = d·(b + 2) + 32·⌈d/B⌉. Decoded value: (float64(±ξ)·(float64(r32)/s))/τ in
    float64, then the cast to the state dtype. ``paper_bits_per_coordinate`` is b (the papers'
    "b-bit" unit), not b + 2.
    """

    name: ClassVar[str] = "qsgd_contractive"
    params: ClassVar[tuple[Param, ...]] = (
        Param(
            "bits",
            int,
            2,
            "b: s = 2^b quantization levels per sign (b + 2 wire bits per entry)",
            minimum=1,
            check=_quant_bits_fit,
        ),
        Param(
            "bucket",
            int,
            0,
            "entries per bucket sharing one float32 norm (0 = whole vector)",
            minimum=0,
        ),
    )
    unbiased: ClassVar[bool] = False
    contractive: ClassVar[bool] = True

    def __init__(self, dim: int, dtype: DTypeLike = "float64", **params: Any) -> None:
        super().__init__(dim, dtype, **params)
        #: b, the ``bits`` key (not ``self.bits``, the wire bits per message).
        self.quant_bits: int = self.options["bits"]
        length = self.dim if self.bucket == 0 else min(self.bucket, self.dim)
        s = self.levels
        self.tau = 1.0 + min(length / s**2, math.sqrt(length) / s)

    def _levels_option(self) -> int:
        return 1 << self.options["bits"]

    @property
    def paper_bits_per_coordinate(self) -> float:
        return float(self.quant_bits)


# ------------------------------------------------------------------------------- one-bit operators


def _f32_round_up(x: float) -> np.float32:
    """The smallest float32 ≥ ``x`` (0 ≤ x ≤ FLT_MAX), so that a bound sent as float32 still
    bounds."""
    x32 = np.float32(x)
    if float(x32) < x:
        x32 = np.nextafter(x32, np.float32(np.inf))
    return x32


class _SignBits(Compressor):
    """Shared wire format and decoder of the one-bit operators (``sign``, ``onebit``).

    Buffer: [scale a: little-endian float32][d sign bits, 1 = negative, MSB-first as ``pack_codes``
    width 1, last byte zero-padded] — exactly 4 + ⌈d/8⌉ bytes; bits = 32 (header) + d (payload).
    Decoded entry k: a if bit k is 0, else −a (computed as 0.0 − a, which is +0.0, not −0.0, for a =
    0), in the state dtype (exact: a is a float32). A zero scale is always sent with all-zero bits
    (one canonical encoding). Subclasses compute a and fill ``self._neg`` (bool, (d,)) in
    ``_encode``, then call ``_write``.
    """

    def __init__(
        self, dim: int, dtype: DTypeLike = "float64", fast: bool | None = None, **params: Any
    ) -> None:
        super().__init__(dim, dtype, **params)
        self.kernels = kernels.choose(fast, self.dim)  # see QSGD
        d = self.dim
        if self.kernels is None:  # the reference's scratch (the kernels need none)
            self._abs = np.empty(d)  # float64 |v_k|, then scratch
            self._neg = np.empty(d, dtype=bool)  # sign bits to send
            self._bits = np.empty(d, dtype=np.uint8)  # unpacked bits in decode

    @property
    def payload_bits(self) -> int:
        return self.dim

    @property
    def header_bits(self) -> int:
        return 32

    def _write(self, buf: np.ndarray, scale: np.float32) -> None:
        buf[:4].view("<f4")[0] = scale
        if scale == 0:
            self._neg.fill(False)
        pack_codes(self._neg.view(np.uint8), 1, buf[4:], check=False)  # bool → 0/1 bytes, no copy

    def _decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None) -> np.ndarray:
        a = float(buf[:4].view("<f4")[0])
        if self.kernels is not None:
            if out is None:
                out = np.empty(self.dim, dtype=self.dtype)
            self.kernels["signbits_decode"](buf[4:], a, out)
            return out
        bits = unpack_codes(buf[4:], 1, self.dim, out=self._bits)
        table = np.array([a, 0.0 - a], dtype=self.dtype)
        if out is None:
            out = np.empty(self.dim, dtype=self.dtype)
        # bit → ±a in one gather; mode="clip" skips the bounds check (bits are 0 or 1).
        np.take(table, bits, out=out, mode="clip")
        return out


@register_compressor
class Sign(_SignBits):
    """Scaled sign: C(v) = (‖v‖₁/d)·sign(v) with sign(0) = +1; biased, contractive (use with error
    feedback).

    sign(−0.0) = +1 too. Deterministic (``key`` is unused). Contraction:
    ‖C(v) − v‖² = ‖v‖² − ‖v‖₁²/d ≤ (1 − 1/d)‖v‖² (as ‖v‖₁ ≥ ‖v‖₂), plus d·(a − ‖v‖₁/d)² from the
    float32 rounding of the scale a. Meant to be used with error feedback (``ErrorFeedback``).

    Wire: ``_SignBits`` with a = float32(‖v‖₁/d) (‖v‖₁ summed in float64 in entry order, rounded to
    nearest): bits = d + 32. NaN/inf input (or a mean |v_k| beyond the float32 range) is caught from
    ‖v‖₁.
    """

    name: ClassVar[str] = "sign"
    unbiased: ClassVar[bool] = False
    contractive: ClassVar[bool] = True

    def _encode(self, v: np.ndarray, key: RandomKey, buf: np.ndarray) -> None:
        if self.kernels is not None:
            scale32 = self.kernels["sign_encode"](np.ascontiguousarray(v), buf[4:])
            if scale32 < 0:
                raise NonFiniteInputError(
                    _nonfinite_message(
                        self.describe(), v, "the mean |v_k| exceeds the float32 range"
                    )
                )
            buf[:4].view("<f4")[0] = scale32
            return
        np.abs(v, out=self._abs)  # float32 → float64 is exact
        with np.errstate(over="ignore"):  # huge float64 input: inf, reported below
            scale = float(np.cumsum(self._abs)[-1]) / self.dim  # in entry order, as the kernel sums
        if not scale <= F32_MAX:  # NaN fails the comparison too
            raise NonFiniteInputError(
                _nonfinite_message(self.describe(), v, "the mean |v_k| exceeds the float32 range")
            )
        np.less(v, 0.0, out=self._neg)  # −0.0 < 0 is False: sign(±0) = +1
        self._write(buf, np.float32(scale))


@register_compressor
class OneBit(_SignBits):
    """Stochastic 1-bit quantizer (unbiased; gradient coding's Q1).

    R = ‖v‖_∞, sent as the smallest float32 ≥ R (so |v_k| ≤ R32 and p_k stays in [0, 1]). Q1(v)_k =
    +R32 with probability p_k = (1 + v_k/R32)/2, else −R32: the sign bit is [u_k ≥ p_k·2^30] with
    u_k the k-th 30-bit dither integer of ``key.word("quantize")`` (``kernels.py``) and p_k computed
    as (v_k·(1/R32) + 1)/2 in float64 (a product, not a division per entry). E[Q1(v)_k] = R32(2p_k −
    1) = v_k for any R32 ≥ |v_k|, so rounding R up keeps it unbiased; E‖Q1(v) − v‖² = Σ_k (R32² −
    v_k²). R32 = 0 (zero vector) → all zeros, no division, no draws.

    Wire: ``_SignBits`` with a = R32: bits = d + 32. NaN/inf input (or R beyond the float32 range)
    is caught from R.
    """

    name: ClassVar[str] = "onebit"
    unbiased: ClassVar[bool] = True
    contractive: ClassVar[bool] = False  # E‖Q1(v) − v‖² can reach (d − 1)‖v‖²

    def __init__(
        self, dim: int, dtype: DTypeLike = "float64", fast: bool | None = None, **params: Any
    ) -> None:
        super().__init__(dim, dtype, fast=fast, **params)
        if self.kernels is None:
            self._uniform = np.empty(self.dim)  # float64 dither integers u_k
        self._words = np.empty(
            1026, dtype=np.uint64
        )  # kernel scratch: the dither of 2,048 entries (8 KiB)

    def _encode(self, v: np.ndarray, key: RandomKey, buf: np.ndarray) -> None:
        if self.kernels is not None:
            r32 = self.kernels["onebit_encode"](
                np.ascontiguousarray(v), np.uint64(key.word("quantize")), buf[4:], self._words
            )
            if r32 < 0:
                raise NonFiniteInputError(
                    _nonfinite_message(self.describe(), v, "max |v_k| exceeds the float32 range")
                )
            buf[:4].view("<f4")[0] = r32
            return
        np.abs(v, out=self._abs)
        r = float(self._abs.max())  # max propagates NaN
        if not r <= F32_MAX:
            raise NonFiniteInputError(
                _nonfinite_message(self.describe(), v, "max |v_k| exceeds the float32 range")
            )
        r32 = _f32_round_up(r)
        if r32 > 0:
            p = self._abs  # reuse: p_k = (v_k·(1/R32) + 1)/2 ≈ (1 + v_k/R32)/2
            np.multiply(
                v, 1.0 / float(r32), out=p, dtype=np.float64
            )  # float32 input multiplies in float64
            p += 1.0
            p *= 0.5
            np.copyto(self._uniform, dither_words(key.word("quantize"), self.dim))
            p *= TWO30  # exact: a power of two
            np.greater_equal(self._uniform, p, out=self._neg)  # P(positive) = P(u < p·2^30) ≈ p
        self._write(buf, r32)
