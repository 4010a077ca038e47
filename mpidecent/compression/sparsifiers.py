"""Sparsifying operators: ``topk`` and ``randk`` send k of the d coordinates as float32, zero the
rest.

k = max(1, round(f·d)) for the job key ``fraction`` f ∈ (0, 1] (Python's ``round``: half to even, so
f·d = 2.5 gives k = 2). Both wire formats start with the k kept values as little-endian float32 in
ascending index order (float64 inputs are rounded to nearest float32; values beyond the float32
range raise ``NonFiniteInputError``); decoding writes them at their indices and zeros everywhere
else.

* ``topk`` — the k largest |v_i|, indices sent (an index list or a bitmap, whichever is smaller for
  (k, d); see ``TopK``).
* ``randk`` — k indices drawn from the SENDER's ``key.generator("sparsify")``; receivers regenerate
  them from the sender's key, so they are not sent.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from mpidecent.compression import kernels
from mpidecent.compression.base import Compressor, register_compressor
from mpidecent.compression.packing import MAX_WIDTH, pack_codes, unpack_codes
from mpidecent.compression.quantizers import _nonfinite_message
from mpidecent.errors import NonFiniteInputError
from mpidecent.params import Param
from mpidecent.rng import RandomKey

_FRACTION = Param(
    "fraction",
    float,
    0.1,
    "fraction f of the coordinates sent: k = max(1, round(f·d))",
    minimum=0.0,
    exclusive_minimum=True,
    maximum=1.0,
)


def kept_count(fraction: float, dim: int) -> int:
    """k = max(1, round(f·d)) (≤ d since f ≤ 1)."""
    return max(1, min(dim, round(fraction * dim)))


# ------------------------------------------------------------------------------- index packing


def _pack_indices(idx: np.ndarray, width: int, out: np.ndarray) -> None:
    """Pack sorted indices (k,) as ``width``-bit codes, MSB-first (``pack_codes``' layout), into
    ``out`` (uint8, ⌈k·width/8⌉ bytes). ``pack_codes`` handles width ≤ 16 (d ≤ 65,536); wider
    indices go through a (k, 64) bit matrix of their big-endian uint64 bytes, keeping the low
    ``width`` columns — the same bit stream ``pack_codes`` would produce for those widths."""
    if width == 0:
        return  # d = 1: the only index is 0, nothing to send
    if width <= MAX_WIDTH:
        pack_codes(idx, width, out, check=False)  # indices < d ≤ 2**width by construction
        return
    k = idx.shape[0]
    bits = np.unpackbits(idx.astype(">u8").view(np.uint8)).reshape(k, 64)[:, 64 - width :]
    out[...] = np.packbits(bits.reshape(-1))


def _unpack_indices(buf: np.ndarray, width: int, count: int, out: np.ndarray) -> np.ndarray:
    """Inverse of ``_pack_indices``: ``count`` indices of ``width`` bits from ``buf``, written into
    ``out`` (intp, (count,)) and returned."""
    if width == 0:
        out.fill(0)
    elif width <= MAX_WIDTH:
        np.copyto(out, unpack_codes(buf, width, count), casting="unsafe")
    else:
        bits = np.unpackbits(buf, count=count * width).reshape(count, width)
        wide = np.zeros((count, 64), dtype=np.uint8)
        wide[:, 64 - width :] = bits
        np.copyto(out, np.packbits(wide.reshape(-1)).view(">u8"), casting="unsafe")
    return out


# ----------------------------------------------------------------------------------- shared base


class _Sparsifier(Compressor):
    """k float32 values at sorted indices. Subclasses choose the indices and say how receivers learn
    them; values occupy bytes [0, 4k) of the buffer, little-endian, in ascending index order."""

    def __init__(self, dim: int, dtype: DTypeLike = "float64", **params: Any) -> None:
        super().__init__(dim, dtype, **params)
        self.fraction: float = self.options["fraction"]
        #: k, the number of coordinates sent.
        self.k: int = kept_count(self.fraction, self.dim)
        self._values_bytes = 4 * self.k
        # k = d: every index, in order (no selection, no draw). Read-only: handed out by
        # ``indices``.
        self._all = np.arange(self.dim)
        self._all.flags.writeable = False

    @property
    def paper_bits_per_coordinate(self) -> float:
        """32·k/d: the papers count the float32 values only (not the index cost)."""
        return 32.0 * self.k / self.dim

    def _write_values(
        self, v: np.ndarray, idx: np.ndarray, buf: np.ndarray, scale: float = 1.0
    ) -> None:
        """buf[0:4k] ← float32(scale·v[idx]); raise ``NonFiniteInputError`` if any is not finite."""
        picked = v if idx is self._all else v[idx]  # (k,) gather, input dtype (k = d: no gather)
        if scale != 1.0:
            picked = np.multiply(picked, scale, dtype=np.float64)  # float64 even for float32 input
        wire = buf[: self._values_bytes].view("<f4")
        # A float64 beyond the float32 range becomes inf in the cast, which the check below reports.
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(wire, picked, casting="same_kind")
            # A finite sum proves every value finite; only otherwise look at each value.
            ok = bool(np.isfinite(wire.sum())) or bool(np.isfinite(wire).all())
        if not ok:
            raise NonFiniteInputError(
                _nonfinite_message(self.describe(), v, "a sent value exceeds the float32 range")
            )

    def _place(self, buf: np.ndarray, idx: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """out ← zeros with the k values of ``buf`` at ``idx`` (state dtype; float32 → float64
        exact)."""
        values = buf[: self._values_bytes].view("<f4")
        if idx is self._all:  # k = d: a plain copy, no scatter
            if out is None:
                return values.astype(self.dtype)
            np.copyto(out, values, casting="same_kind")
            return out
        if out is None:
            out = np.zeros(self.dim, dtype=self.dtype)
        else:
            out.fill(0.0)
        out[idx] = values
        return out


# ------------------------------------------------------------------------------------------ top-k

_SAMPLE = 1 << 14  # entries in the strided sample that sets the candidate threshold
_SAMPLED_DIM = 1 << 16  # shorter vectors select among all entries


def _threshold(sample: np.ndarray, k: int, d: int) -> float:
    """From the sorted strided sample of |v|: a value a little below the k-th largest of the d
    entries (about 1.5k of them at or above it)."""
    rank = max(0, sample.shape[0] - int(np.ceil(1.5 * k / d * sample.shape[0])) - 8)
    return sample[rank]


def _select(values: np.ndarray, k: int) -> np.ndarray:
    """Ascending positions of the k largest of ``values`` (m ≥ k finite float64); among equal values
    at the cut the lowest positions win."""
    m = values.shape[0]
    cut = np.partition(values, m - k)[m - k]  # the k-th largest value
    chosen = values > cut
    ties = np.flatnonzero(values == cut)[
        : k - int(np.count_nonzero(chosen))
    ]  # lowest indices first
    chosen[ties] = True
    return np.flatnonzero(chosen)  # ascending


def top_k_indices(magnitudes: np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the k largest of ``magnitudes`` ((d,) finite float64, 1 ≤ k < d); among
    equal values at the cut the lowest indices win, so the choice is canonical.

    Long vectors first keep the candidates at or above a threshold estimated from a strided sample
    of 16,384 entries (set a little below the k-th largest, for about 1.5k candidates), then select
    among them; the result is exact whenever at least k entries pass (else it selects among all of
    them): the k-th largest value is then itself at or above the threshold. Cost: a few passes over
    memory instead of a full ``argpartition`` and a sort of the k indices. (The kernel path,
    ``TopK._kernel_indices``, keeps the same candidates in one pass over the input and gives the
    same indices.)
    """
    d = magnitudes.shape[0]
    candidates = None
    if d >= _SAMPLED_DIM:
        threshold = _threshold(np.sort(magnitudes[:: d // _SAMPLE]), k, d)
        passing = np.flatnonzero(magnitudes >= threshold)
        if passing.shape[0] >= k:
            candidates = passing
    if candidates is None:
        return _select(magnitudes, k)
    return candidates[_select(magnitudes[candidates], k)]


@register_compressor
class TopK(_Sparsifier):
    """Top-k: keep the k entries of largest |v_i|, zero the rest. Deterministic (``key`` is unused).

    Contractive: ‖C(v) − v‖² = Σ_{i not kept} v_i² ≤ (1 − k/d)‖v‖² (the dropped entries are the d −
    k smallest), plus the float32 rounding of the kept values for float64 input. Ties in |v_i| at
    the cut go to the lowest indices (``top_k_indices``), so the message is canonical.

    Wire: [k float32 values, ascending index order][indices], indices encoded as the cheaper of
    * ``"list"``: each index in L = ⌈log2 d⌉ bits (L = 0 for d = 1), ascending, packed MSB-first
      like ``pack_codes`` (also for L > 16): k·L bits;
    * ``"bitmap"``: d bits, bit i = 1 iff i is kept (``pack_codes`` width 1);
    chosen from (k, d) only (``index_encoding``; the list when k·L < d, the bitmap on a tie), so
    sizes stay data-independent. bits = 32k + min(k·L, d), all payload (header 0); bytes = 4k +
    ⌈min(k·L, d)/8⌉.

    NaN/inf input: when max |v_i| is not finite the selection falls back to ``argpartition``, which
    orders NaN (and ±inf, via |v|) above every finite value, so a non-finite entry is always among
    the kept values, which are checked.
    """

    name: ClassVar[str] = "topk"
    params: ClassVar[tuple[Param, ...]] = (_FRACTION,)
    unbiased: ClassVar[bool] = False
    contractive: ClassVar[bool] = True

    def __init__(
        self, dim: int, dtype: DTypeLike = "float64", fast: bool | None = None, **params: Any
    ) -> None:
        super().__init__(dim, dtype, **params)
        d, k = self.dim, self.k
        #: The numba kernels (``kernels.py``) for the candidate pass, the index list and decoding;
        #: None (the numpy code here) for fast=False, short vectors or without numba. Both give the
        #: same bytes.
        self.kernels = kernels.choose(fast, d) if d >= _SAMPLED_DIM and k < d else None
        #: L = ⌈log2 d⌉ bits per index in the list encoding.
        self.index_width: int = (d - 1).bit_length()
        #: ``"list"`` or ``"bitmap"``: how indices travel, fixed by (k, d).
        self.index_encoding: str = "list" if k * self.index_width < d else "bitmap"
        #: Bits spent on indices: min(k·L, d).
        self.index_bits: int = min(k * self.index_width, d)
        self._abs = np.empty(d)  # float64 |v_i| (pages untouched unless the reference runs)
        self._mask = np.empty(d, dtype=np.uint8)  # bitmap, both ways
        self._idx = np.empty(k, dtype=np.intp)  # decoded index list
        if self.kernels is not None:
            # The candidates (≈ 1.5k expected; more than fit → the reference path) and 72 places of
            # room.
            room = max(2 * k, k + 4096) + 72
            self._cand_index = np.empty(room, dtype=np.intp)
            self._cand_value = np.empty(room)

    @property
    def payload_bits(self) -> int:
        return 32 * self.k + self.index_bits

    @property
    def header_bits(self) -> int:
        return 0

    def describe(self) -> str:
        return f"topk(fraction={self.fraction:g}, k={self.k}, index_encoding={self.index_encoding})"

    def _encode(self, v: np.ndarray, key: RandomKey, buf: np.ndarray) -> None:
        d, k = self.dim, self.k
        idx = None
        if k == d:
            idx = self._all
        elif self.kernels is not None:
            idx = self._kernel_indices(v)
        if idx is None:
            np.abs(v, out=self._abs)
            if np.isfinite(self._abs.max()):  # max propagates NaN
                idx = top_k_indices(self._abs, k)
            else:
                # non-finite input: the k largest with NaN sorting last, so _write_values reports it
                idx = np.argpartition(self._abs, d - k)[d - k :]
                idx.sort()
        self._write_values(v, idx, buf)
        tail = buf[self._values_bytes :]
        if (
            self.index_encoding == "list"
            and self.kernels is not None
            and 0 < self.index_width <= 56
        ):
            self.kernels["pack_indices"](idx, self.index_width, tail)
        elif self.index_encoding == "list":
            _pack_indices(idx, self.index_width, tail)
        else:
            self._mask.fill(0)
            self._mask[idx] = 1  # sorted idx: a cache-friendly scatter
            pack_codes(self._mask, 1, tail, check=False)

    def _kernel_indices(self, v: np.ndarray) -> np.ndarray | None:
        """``top_k_indices(|v|, k)`` without the float64 |v| array: the same sample and threshold,
        the candidates from one kernel pass over v, the same selection among them. None (the caller
        then runs the reference) for non-finite input, or when fewer than k or more than fit pass
        the threshold."""
        assert self.kernels is not None  # called only where the kernels loaded
        d, k = self.dim, self.k
        v = np.ascontiguousarray(v)
        sample = np.abs(v[:: d // _SAMPLE]).astype(np.float64)  # |float32| → float64 is exact
        sample.sort()
        n = self.kernels["topk_candidates"](
            v, float(_threshold(sample, k, d)), self._cand_index, self._cand_value
        )
        if not k <= n <= self._cand_index.shape[0] - 72:
            return None
        return self._cand_index[:n][_select(self._cand_value[:n], k)]

    def _decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None) -> np.ndarray:
        d, k = self.dim, self.k
        tail = buf[self._values_bytes :]
        if k == d:
            idx = self._all  # every index: nothing to read
        elif (
            self.index_encoding == "list"
            and self.kernels is not None
            and 0 < self.index_width <= 56
        ):
            if out is None:
                out = np.empty(d, dtype=self.dtype)
            if not self.kernels["topk_decode"](
                tail, self.index_width, buf[: self._values_bytes].view("<f4"), out
            ):
                raise ValueError(
                    f"{self.describe()}: corrupt message (index list not strictly increasing "
                    f"in [0, {d}))"
                )
            return out
        elif self.index_encoding == "list":
            idx = _unpack_indices(tail, self.index_width, k, self._idx)
            # Cheap O(k) sanity check: a canonical list is strictly increasing and below d.
            if idx[-1] >= d or (k > 1 and not bool(np.all(idx[1:] > idx[:-1]))):
                raise ValueError(
                    f"{self.describe()}: corrupt message (index list not strictly increasing "
                    f"in [0, {d}))"
                )
        else:
            bits = unpack_codes(tail, 1, d, out=self._mask)
            idx = np.flatnonzero(bits)  # ascending, matching the value order
            if idx.shape[0] != k:
                raise ValueError(
                    f"{self.describe()}: corrupt message (bitmap has {idx.shape[0]} bits set, "
                    f"expected {k})"
                )
        return self._place(buf, idx, out)


# ------------------------------------------------------------------------------------------ rand-k


@register_compressor
class RandK(_Sparsifier):
    """Rand-k: send k coordinates chosen uniformly at random (k distinct indices, sorted), shared
    seed.

    Indices come from the SENDER's ``key.generator("sparsify")`` (see ``indices``); the receiver
    rebuilds them from the sender's key, so only the values travel: bits = 32k (payload; header 0),
    bytes = 4k. Every coordinate is kept with probability k/d.

    * ``scaled = false`` (gossip): C(v) = v on the kept set, 0 elsewhere. Biased, contractive:
      E‖C(v) − v‖² = (1 − k/d)‖v‖² (plus float32 rounding of the values for float64 input).
    * ``scaled = true``: values × d/k (applied by the sender in float64 before the float32 cast).
      Unbiased, not contractive (E‖C(v) − v‖² = (d/k − 1)‖v‖²).
    ``unbiased`` and ``contractive`` are therefore set per instance (the class values are
    ``False``).

    Since only k entries are read, non-finite input is caught by one extra pass: a sum over v
    (finite sum ⇒ every entry finite; otherwise an exact per-entry check). A NaN in an unsent
    coordinate thus raises too — the run is diverging either way, and with error feedback it would
    be sent later.
    """

    name: ClassVar[str] = "randk"
    params: ClassVar[tuple[Param, ...]] = (
        _FRACTION,
        Param(
            "scaled",
            bool,
            False,
            "multiply the sent values by d/k (unbiased) instead of sending them "
            "as they are (biased, contractive; for gossip)",
        ),
    )
    unbiased: ClassVar[bool] = False
    contractive: ClassVar[bool] = False
    contractive_when: ClassVar[str | None] = "scaled = false"

    def __init__(self, dim: int, dtype: DTypeLike = "float64", **params: Any) -> None:
        super().__init__(dim, dtype, **params)
        self.scaled: bool = self.options["scaled"]
        # Per-instance properties shadow the conservative class values (which the operator lists
        # read on the class); mypy's ClassVar rule forbids the shadow this design relies on.
        self.unbiased = self.scaled  # type: ignore[misc]
        self.contractive = not self.scaled  # type: ignore[misc]
        self._scale: float = self.dim / self.k if self.scaled else 1.0
        self._mask = np.empty(self.dim, dtype=bool)  # kept indices (index draws)
        self._free = np.empty(self.dim, dtype=bool)  # not-kept indices (Bernoulli draws)
        self._uniform = np.empty(self.dim, dtype=np.float32)
        # One-entry cache: a sender decoding its own message (error feedback, reference copies)
        # would otherwise regenerate the same indices right after encoding.
        self._cached_key: RandomKey | None = None
        self._cached_idx: np.ndarray = self._all

    @property
    def payload_bits(self) -> int:
        return 32 * self.k

    @property
    def header_bits(self) -> int:
        return 0

    def describe(self) -> str:
        scaled = "true" if self.scaled else "false"
        return f"randk(fraction={self.fraction:g}, scaled={scaled}, k={self.k})"

    def indices(self, key: RandomKey) -> np.ndarray:
        """The k sorted distinct indices (intp, (k,), read-only) that ``key``'s sender keeps.

        A uniformly random k-subset drawn from ``key.generator("sparsify")``. The rule depends only
        on (k, d), so sender and receivers agree; it is part of the wire format (changing it breaks
        decoding between versions). With m = min(k, d − k):

        * k = d: every index, no draw;
        * 20·m ≤ d: ``choice(d, m, replace=False, shuffle=False)`` (Floyd's algorithm or a partial
          shuffle, cheap for small m) gives the k kept indices (sorted) or, for k > d/2, the d − k
          dropped ones (removed from a mask);
        * otherwise (m > d/20, where ``choice``'s partial shuffle, a cache-missing random swap per
          index, costs more than one O(d) pass): see ``_bernoulli_subset``.
        """
        d, k = self.dim, self.k
        if k == d:
            return self._all
        if key == self._cached_key:
            return self._cached_idx
        gen = key.generator("sparsify")
        m = min(k, d - k)
        if 20 * m <= d:
            picked = gen.choice(d, m, replace=False, shuffle=False)
            if m == k:
                picked.sort()
                idx = picked
            else:
                self._mask.fill(True)
                self._mask[picked] = False
                idx = np.flatnonzero(self._mask)  # ascending
        else:
            idx = self._bernoulli_subset(gen)
        idx.flags.writeable = False
        self._cached_key, self._cached_idx = key, idx
        return idx

    def _bernoulli_subset(self, gen: np.random.Generator) -> np.ndarray:
        """A uniform k-subset in O(d) vectorised work: keep i when U_i < k/d (U_i float32 uniforms,
        in index order), giving n ≈ k indices; then drop n − k of them (n > k) or add k − n of the
        others (n < k), chosen with ``choice(..., replace=False, shuffle=False)`` among the kept /
        not-kept indices in ascending order. Why uniform: the Bernoulli set's law is invariant under
        permutations of [0, d), the corrections pick uniformly, so the final k-subset's law is too —
        and the only such law on k-subsets is the uniform one."""
        d, k = self.dim, self.k
        mask = self._mask
        gen.random(out=self._uniform, dtype=np.float32)
        np.less(self._uniform, np.float32(k / d), out=mask)  # (any threshold works; see above)
        n = int(np.count_nonzero(mask))
        if n > k:
            kept = np.flatnonzero(mask)
            mask[kept[gen.choice(n, n - k, replace=False, shuffle=False)]] = False
        elif n < k:
            free = np.flatnonzero(np.logical_not(mask, out=self._free))
            mask[free[gen.choice(d - n, k - n, replace=False, shuffle=False)]] = True
        return np.flatnonzero(mask)  # ascending

    def _encode(self, v: np.ndarray, key: RandomKey, buf: np.ndarray) -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            ok = bool(np.isfinite(np.add.reduce(v))) or bool(np.isfinite(v).all())
        if not ok:
            raise NonFiniteInputError(
                f"{self.describe()}: input contains NaN or infinite values (a diverging run?)"
            )
        self._write_values(v, self.indices(key), buf, self._scale)

    def _decode(self, buf: np.ndarray, key: RandomKey, out: np.ndarray | None) -> np.ndarray:
        return self._place(buf, self.indices(key), out)
