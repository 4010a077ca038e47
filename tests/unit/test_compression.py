"""Single-process tests of ``mpidecent.compression``: packing, identity, qsgd, qsgd_contractive, the
one-bit operators (sign, onebit), properties shared by every operator, error feedback, registry.
(top-k and rand-k specifics: ``test_sparsifiers.py``.)

Covers the properties of ``docs/algorithms/compressors.md``: exact round trips against a
straightforward reference, bit formulas, unbiasedness and variance (statistically), edge cases and
errors.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest

from mpidecent.compression import (COMPRESSORS, QSGD, Compressor, ErrorFeedback, Identity, OneBit, Packed,
                                   QSGDContractive, RandK, Sign, TopK, build_compressor, pack_codes,
                                   unpack_codes)
from mpidecent.compression.kernels import dither_words
from mpidecent.errors import JobError, NonFiniteInputError
from codec import KEY, bits_equal
from mpidecent.rng import RandomKey


# ============================================================================================ packing

def reference_pack(codes: np.ndarray, width: int) -> np.ndarray:
    """MSB-first bit string, zero-padded to whole bytes (independent of the implementation)."""
    bits = "".join(format(int(c), f"0{width}b") for c in codes)
    bits += "0" * (-len(bits) % 8)
    return np.array([int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)], dtype=np.uint8)


PACK_LENGTHS = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 333]


@pytest.mark.parametrize("width", range(1, 17))
def test_pack_unpack_all_widths(width):
    rng = np.random.default_rng(width)
    dt = np.uint8 if width <= 8 else np.uint16
    for n in PACK_LENGTHS:
        codes = rng.integers(0, 1 << width, n).astype(dt)
        codes[: min(n, 2)] = (1 << width) - 1        # extreme values at the start
        out = np.full((n * width + 7) // 8, 0xAB, dtype=np.uint8)   # garbage: every byte must be written
        pack_codes(codes, width, out)
        assert np.array_equal(out, reference_pack(codes, width)), (width, n)
        back = unpack_codes(out, width, n)
        assert back.dtype == dt and np.array_equal(back, codes), (width, n)
        # extra trailing bytes are ignored; a provided out is filled and returned
        into = np.empty(n, dtype=dt)
        assert unpack_codes(np.concatenate([out, [255, 255]]).astype(np.uint8), width, n, out=into) is into
        assert np.array_equal(into, codes)


def test_pack_long_vectors_and_other_int_dtypes():
    rng = np.random.default_rng(0)
    for width in (1, 2, 4, 6, 8, 9, 12, 16):
        codes = rng.integers(0, 1 << width, 100_003)
        out = np.empty((codes.size * width + 7) // 8, dtype=np.uint8)
        pack_codes(codes, width, out)               # int64 input
        assert np.array_equal(unpack_codes(out, width, codes.size), codes)


def test_pack_errors():
    codes = np.array([1, 2, 3], dtype=np.uint8)
    with pytest.raises(ValueError, match="width"):
        pack_codes(codes, 0, np.empty(0, np.uint8))
    with pytest.raises(ValueError, match="width"):
        pack_codes(codes, 17, np.empty(7, np.uint8))
    with pytest.raises(ValueError, match="2 bytes"):
        pack_codes(codes, 4, np.empty(3, np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 2\*\*2\)"):
        pack_codes(np.array([1, 4]), 2, np.empty(1, np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 2\*\*3\)"):
        pack_codes(np.array([-1, 4]), 3, np.empty(1, np.uint8))
    with pytest.raises(ValueError, match="at least 2 bytes"):
        unpack_codes(np.empty(1, np.uint8), 5, 3)


# ============================================================================================= Packed

def test_packed_sizes():
    p = Packed(np.zeros(3, np.uint8), payload_bits=17, header_bits=0)
    assert (p.bits, p.nbytes) == (17, 3)
    with pytest.raises(ValueError, match="3 bytes"):
        Packed(np.zeros(4, np.uint8), payload_bits=17, header_bits=0)


# =========================================================================================== identity

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_identity_lossless(dtype):
    rng = np.random.default_rng(1)
    v = rng.standard_normal(101).astype(dtype)
    v[:4] = [-0.0, np.finfo(dtype).tiny / 4, np.finfo(dtype).max, -np.finfo(dtype).max]  # -0, subnormal
    c = Identity(101, dtype)
    packed = c.encode(v, KEY)
    itemsize = np.dtype(dtype).itemsize
    assert (packed.payload_bits, packed.header_bits, packed.bits) == (8 * itemsize * 101, 0, 8 * itemsize * 101)
    assert packed.buffer.nbytes == packed.nbytes == c.nbytes == itemsize * 101
    assert packed.buffer.tobytes() == v.astype(f"<f{itemsize}").tobytes()   # little-endian floats
    assert bits_equal(c.decode(packed.buffer, KEY), v)
    assert c.describe() == f"identity(precision={dtype})"


def test_identity_decode_is_readonly_view_when_precisions_match():
    v = np.arange(5.0)
    c = Identity(5, "float64")
    buf = c.encode(v, KEY).buffer
    view = c.decode(buf, KEY)
    assert np.shares_memory(view, buf) and not view.flags.writeable
    with pytest.raises(ValueError):
        view[0] = 1.0
    assert buf.flags.writeable                                  # the caller's buffer is untouched
    out = np.empty(5)
    assert c.decode(buf, KEY, out=out) is out and np.array_equal(out, v)


def test_identity_precision_conversions():
    rng = np.random.default_rng(2)
    v = rng.standard_normal(33) * 1e3
    c = Identity(33, "float64", precision="float32")
    packed = c.encode(v, KEY)
    assert packed.bits == 32 * 33
    got = c.decode(packed.buffer, KEY)
    assert got.dtype == np.float64 and not np.shares_memory(got, packed.buffer)
    assert bits_equal(got, v.astype(np.float32).astype(np.float64))   # round to nearest float32
    # float64 wire on a float32 state: lossless, 64 bits per entry
    w = v.astype(np.float32)
    c64 = Identity(33, "float32", precision="float64")
    assert c64.bits == 64 * 33 and bits_equal(c64.decode(c64.encode(w, KEY).buffer, KEY), w)


def test_identity_nonfinite_and_huge():
    c = Identity(4, "float64")
    huge = np.full(4, 1e308)                  # sum overflows, entries are finite: accepted
    assert bits_equal(c.decode(c.encode(huge, KEY).buffer, KEY), huge)
    for bad in (np.nan, np.inf, -np.inf):
        v = np.array([1.0, bad, 2.0, 3.0])
        with pytest.raises(NonFiniteInputError, match=r"identity\(precision=float64\): input contains NaN"):
            c.encode(v, KEY)
    c32 = Identity(4, "float64", precision="float32")
    with pytest.raises(NonFiniteInputError, match=r"identity\(precision=float32\): input values too large"):
        c32.encode(np.array([1.0, 1e39, 0.0, 0.0]), KEY)


# =============================================================================================== qsgd

def qsgd_reference(v: np.ndarray, s: int, bucket: int, key: RandomKey, dtype) -> np.ndarray:
    """The spec's operator written plainly, bucket by bucket (slow; tests only)."""
    d = v.size
    b = d if bucket == 0 else bucket
    u_all = v.astype(np.float64)
    unif = dither_words(key.word("quantize"), d) / 2.0**30   # exact: the kernels' dither as uniforms
    res = np.zeros(d)
    for start in range(0, d, b):
        u = u_all[start:start + b]
        r = math.sqrt(float(np.sum(u * u)))
        r32 = np.float32(r)
        if float(r32) < r:
            r32 = np.nextafter(r32, np.float32(np.inf))
        r32 = float(r32)
        if r32 == 0.0:
            continue
        ell = np.minimum(np.abs(u) * (s / r32), s)   # = s|u|/r32, in the implementation's operation order
        xi = np.floor(ell) + (unif[start:start + b] < ell - np.floor(ell))
        res[start:start + b] = (np.sign(u) * xi) * (r32 / s)
    return (res + 0.0).astype(dtype)          # + 0.0 turns −0.0 into 0.0


def norms_of(c: QSGD, buf: np.ndarray) -> np.ndarray:
    return buf[: 4 * c.n_buckets].view("<f4").astype(np.float64)


def levels_of(c: QSGD, buf: np.ndarray) -> np.ndarray:
    codes = unpack_codes(buf[4 * c.n_buckets:], c.code_width, c.dim).astype(np.int64)
    return codes & ((1 << c.level_bits) - 1)


def bucket_ids(c: QSGD) -> np.ndarray:
    b = c.dim if c.bucket == 0 else c.bucket
    return np.arange(c.dim) // b


ROUND_TRIP_CASES = [  # (d, s, B)
    (1, 1, 0), (1, 16, 64), (7, 3, 2), (63, 16, 64), (64, 16, 64), (65, 16, 64), (100, 4, 8),
    (257, 255, 0), (1000, 7, 100), (333, 300, 32), (50, 32767, 10), (40, 2, 1),
]


@pytest.mark.parametrize("d,s,b", ROUND_TRIP_CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_qsgd_round_trip_matches_reference(d, s, b, dtype):
    rng = np.random.default_rng(d * 1000 + s)
    v = (rng.standard_normal(d) * rng.uniform(0.1, 10, d)).astype(dtype)
    if d > 10:
        v[3:7] = 0.0                                   # zeros get sign bit 0 and decode to +0.0
    v_before = v.copy()
    c = QSGD(d, dtype, levels=s, bucket=b)
    packed = c.encode(v, KEY)
    assert bits_equal(v, v_before)                    # input not modified
    got = c.decode(packed.buffer, KEY)
    assert got.dtype == np.dtype(dtype)
    assert bits_equal(got, qsgd_reference(v, s, b, KEY, dtype))
    assert not np.signbit(got[got == 0]).any()
    # a second instance (another rank) decodes the same bytes bit-identically, also into out=
    other = QSGD(d, dtype, levels=s, bucket=b)
    out = np.empty(d, dtype)
    assert other.decode(packed.buffer.copy(), KEY, out=out) is out
    assert bits_equal(out, got)
    # the norm header holds the smallest float32 ≥ the float64 bucket norm
    r = np.sqrt(np.bincount(bucket_ids(c), weights=v.astype(np.float64) ** 2))
    r32 = norms_of(c, packed.buffer)
    assert np.all(r32 >= r)
    below = np.nextafter(r32.astype(np.float32), np.float32(0)).astype(np.float64)
    assert np.all((below < r) | (r32 == 0))


def test_qsgd_encode_into_out_and_decode_input_types():
    c = QSGD(100, "float64", levels=4, bucket=16)
    v = np.random.default_rng(3).standard_normal(100)
    out = np.empty(c.nbytes, np.uint8)
    packed = c.encode(v, KEY, out=out)
    assert packed.buffer is out or np.shares_memory(packed.buffer, out)
    assert bits_equal(c.decode(out, KEY), c.decode(c.encode(v, KEY).buffer, KEY))
    # float32 input on a float64 state and float64 input on a float32 state
    v32 = v.astype(np.float32)
    assert bits_equal(c.decode(c.encode(v32, KEY).buffer, KEY), qsgd_reference(v32, 4, 16, KEY, np.float64))
    c32 = QSGD(100, "float32", levels=4, bucket=16)
    assert bits_equal(c32.decode(c32.encode(v, KEY).buffer, KEY), qsgd_reference(v, 4, 16, KEY, np.float32))


@pytest.mark.parametrize("d", [1, 7, 63, 64, 65, 1000, 1024, 4097])
def test_qsgd_bit_formula(d):
    v = np.random.default_rng(d).standard_normal(d)
    for s in (1, 2, 3, 4, 7, 16, 255):
        L = math.ceil(math.log2(s + 1))
        for b in (0, 1, 8, 64, 100):
            c = QSGD(d, "float64", levels=s, bucket=b)
            n_buckets = 1 if b == 0 else math.ceil(d / b)
            assert (c.payload_bits, c.header_bits) == (d * (1 + L), 32 * n_buckets)
            assert c.bits == d * (1 + L) + 32 * n_buckets
            assert c.nbytes == math.ceil(c.bits / 8) == 4 * n_buckets + math.ceil(d * (1 + L) / 8)
            if d <= 1024 or b == 64:                   # keep the test fast
                p = c.encode(v, KEY)
                assert (p.bits, p.payload_bits, p.header_bits) == (c.bits, c.payload_bits, c.header_bits)
                assert p.buffer.dtype == np.uint8 and p.buffer.shape == (c.nbytes,) == (p.nbytes,)


def test_qsgd_spec_example_6656_bits():
    c = QSGD(1024, "float64", levels=16, bucket=64)
    assert (c.payload_bits, c.header_bits, c.bits, c.nbytes) == (6144, 512, 6656, 832)
    assert c.encode(np.ones(1024), KEY).buffer.nbytes == 832
    assert c.describe() == "qsgd(levels=16, bucket=64)"
    assert build_compressor("qsgd", 1024, "float64", {"name": "qsgd"}).bits == 6656


def tiled_draws(v: np.ndarray, s: int, b: int, draws: int, key: RandomKey) -> np.ndarray:
    """``draws`` independent Q(v) at once: QSGD on ``draws`` copies of v with buckets that never straddle
    two copies consumes ``draws`` independent blocks of uniforms. Returns (draws, d) float64."""
    d = v.size
    bucket = d if b == 0 else b
    assert d % bucket == 0
    c = QSGD(d * draws, "float64", levels=s, bucket=bucket)
    return c.decode(c.encode(np.tile(v, draws), key).buffer, key).reshape(draws, d)


STAT_CASES = [(1, 0), (2, 8), (4, 32), (16, 8), (3, 1), (16, 0)]  # (s, B) with B | 32


@pytest.mark.parametrize("s,b", STAT_CASES)
def test_qsgd_unbiased_and_variance(s, b):
    rng = np.random.default_rng(s * 100 + b)
    v = rng.standard_normal(32) * rng.uniform(0.01, 3, 32)
    n = 10_000
    q = tiled_draws(v, s, b, n, RandomKey(5, 0, s * 100 + b))
    c = QSGD(32, "float64", levels=s, bucket=b)
    r32 = norms_of(c, c.encode(v, KEY).buffer)[bucket_ids(c)]     # each entry's bucket norm
    # unbiased: every entry's sample mean within 4 standard errors. Slack of 2**-22·r32: with r32
    # rounded up, an ℓ just below an integer rounds down with probability ~1e-8 that 10⁴ draws cannot
    # see (e.g. B = 1: every draw gives r32 = |u_k|·(1 + ~1e-8)), so the spread can be exactly zero.
    se = q.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(q.mean(axis=0) - v) <= 4 * se + 2.0**-22 * r32)
    # variance: matches the exact value Σ (r32/s)² f(1−f) and respects ω²‖u‖² = min(B/s², √B/s)‖u‖²
    err = ((q - v) ** 2).sum(axis=1)
    mean, se_err = err.mean(), err.std(ddof=1) / math.sqrt(n)
    ell = (np.abs(v) / r32) * s
    frac = ell - np.floor(ell)
    exact = np.sum((r32 / s) ** 2 * frac * (1 - frac))
    # (same invisible ~1e-8-probability events as above: each adds at most ~2**-24·r32²/s)
    assert abs(mean - exact) <= 4 * se_err + 2.0**-22 * np.sum(r32**2) / s
    width = 32 if b == 0 else b
    bound = min(width / s**2, math.sqrt(width) / s) * float(v @ v)
    assert mean <= bound + 4 * se_err
    assert exact <= bound * (1 + 1e-6)


def test_qsgd_unbiased_across_keys():
    """The same property through real per-step keys (each step draws fresh uniforms)."""
    v = np.random.default_rng(9).standard_normal(32)
    c = QSGD(32, "float64", levels=2, bucket=8)
    n = 800
    q = np.empty((n, 32))
    for t in range(n):
        key = RandomKey(1, 2, t)
        c.decode(c.encode(v, key).buffer, key, out=q[t])
    se = q.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(q.mean(axis=0) - v) <= 4 * se + 1e-12)
    assert len({row.tobytes() for row in q}) > n // 2          # steps give different draws


def test_qsgd_variance_bound_worst_case_vector():
    """A flat vector (all |u_k| equal) is where the √B/s branch of the bound is tight-ish."""
    v = np.full(64, 0.5) * np.where(np.arange(64) % 3 == 0, -1, 1)
    for s in (1, 2, 16):
        q = tiled_draws(v, s, 64, 4000, RandomKey(2, 0, s))
        err = ((q - v) ** 2).sum(axis=1)
        bound = min(64 / s**2, 8 / s) * float(v @ v)
        assert err.mean() <= bound + 4 * err.std(ddof=1) / math.sqrt(err.size)


@pytest.mark.parametrize("s", [1, 3, 7, 15, 16, 255, 32767])
def test_qsgd_levels_never_exceed_s(s, no_warnings):
    rng = np.random.default_rng(s)
    # x with float32(x) < x: without rounding the norm up, a one-hot bucket would get level s + 1,
    # which for s = 2**L − 1 would overflow into the sign bit.
    xs = rng.uniform(0.1, 10, 1000)
    x = xs[xs.astype(np.float32).astype(np.float64) < xs][0]
    onehot = np.zeros(16)
    onehot[[0, 9]] = [x, -x]
    vectors = [onehot, rng.standard_normal(16), np.full(16, -x), rng.standard_normal(16) * 1e-30]
    for b in (0, 1, 4, 8):
        c = QSGD(16, "float64", levels=s, bucket=b)
        for v in vectors:
            for step in range(5):
                key = RandomKey(0, 0, step)
                buf = c.encode(v, key).buffer
                assert levels_of(c, buf).max() <= s
                got = c.decode(buf, key)
                r32 = norms_of(c, buf)[bucket_ids(c)]
                # the guarantee behind ξ ≤ s: the sent norm is never below the true one
                assert np.all(r32 >= np.sqrt(np.bincount(bucket_ids(c), weights=v**2))[bucket_ids(c)])
                assert np.all(np.abs(got) <= r32)
                assert np.all(np.sign(got) * np.sign(v) >= 0)          # never flips a sign


def test_qsgd_one_entry_buckets_are_exact():
    """B = 1: r = |u_k|, so ℓ = s exactly (when float32 holds |u_k|) and the value comes back exactly."""
    v = np.array([0.5, -3.0, 0.0, 1024.0, -1.0 / 64])
    c = QSGD(5, "float64", levels=5, bucket=1)
    assert bits_equal(c.decode(c.encode(v, KEY).buffer, KEY), v + 0.0)


def test_qsgd_zero_and_tiny_vectors(no_warnings):
    for d, b in ((1, 0), (1, 64), (10, 3), (64, 64), (1000, 0)):
        c = QSGD(d, "float64", levels=16, bucket=b)
        buf = c.encode(np.zeros(d), KEY).buffer
        got = c.decode(buf, KEY)
        assert bits_equal(got, np.zeros(d))
        assert np.all(norms_of(c, buf) == 0) and not buf[4 * c.n_buckets:].any()
        # squares underflow to 0: no warning, zeros out, no level above s
        tiny = np.full(d, 1e-170)
        buf = c.encode(tiny, KEY).buffer
        assert levels_of(c, buf).max() <= 16 and np.all(c.decode(buf, KEY) == 0)
    # some zero buckets among non-zero ones
    v = np.concatenate([np.zeros(8), np.arange(1.0, 9.0), np.zeros(4)])
    c = QSGD(20, "float64", levels=4, bucket=8)
    got = c.decode(c.encode(v, KEY).buffer, KEY)
    assert np.all(got[:8] == 0) and np.all(got[16:] == 0) and bits_equal(got, qsgd_reference(v, 4, 8, KEY, np.float64))


def test_qsgd_d_equals_1():
    c = QSGD(1, "float32")
    assert (c.bits, c.nbytes) == (6 + 32, 5)
    for x in (2.5, -7.0, 0.0):
        v = np.array([x], np.float32)
        assert bits_equal(c.decode(c.encode(v, KEY).buffer, KEY), v + np.float32(0))


def test_qsgd_nonfinite_input(no_warnings):
    c = QSGD(100, "float64", levels=16, bucket=64)
    rng = np.random.default_rng(4)
    good = rng.standard_normal(100)
    fresh = c.decode(c.encode(good, KEY).buffer, KEY)
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, 70, 99):                                 # first bucket, last (short) bucket
            v = good.copy()
            v[where] = bad
            with pytest.raises(NonFiniteInputError,
                               match=r"^qsgd\(levels=16, bucket=64\): input contains NaN or infinite values"):
                c.encode(v, KEY)
    for huge in (np.full(100, 1e200), np.full(100, 1e38)):       # float64 overflow; beyond float32 range
        with pytest.raises(NonFiniteInputError, match=r"qsgd\(levels=16, bucket=64\): input values too large"):
            c.encode(huge, KEY)
    with pytest.raises(NonFiniteInputError, match="NaN or infinite"):
        c.encode(np.full(100, np.nan, np.float32), KEY)
    # the instance is still sound afterwards (scratch padding was not polluted)
    assert bits_equal(c.decode(c.encode(good, KEY).buffer, KEY), fresh)
    big = np.full(100, 1e36)                                      # norm 8e36 < FLT_MAX: accepted
    assert np.allclose(c.decode(c.encode(big, KEY).buffer, KEY).mean(), 1e36, rtol=0.2)


def test_wrong_shapes_dtypes_and_buffers():
    for c in (QSGD(10, "float64"), Identity(10, "float64")):
        with pytest.raises(ValueError, match="length 10"):
            c.encode(np.zeros(11), KEY)
        with pytest.raises(ValueError, match="length 10"):
            c.encode(np.zeros((2, 5)), KEY)
        with pytest.raises(TypeError, match="float32 or float64"):
            c.encode(np.zeros(10, dtype=np.int64), KEY)
        with pytest.raises(ValueError, match=f"{c.nbytes} bytes"):
            c.encode(np.zeros(10), KEY, out=np.empty(c.nbytes + 1, np.uint8))
        buf = c.encode(np.zeros(10), KEY).buffer
        with pytest.raises(ValueError, match=f"{c.nbytes} bytes"):
            c.decode(buf[:-1], KEY)
        with pytest.raises(ValueError, match="decode expects"):
            c.decode(buf.view(np.int8), KEY)
        with pytest.raises(ValueError, match="out must be"):
            c.decode(buf, KEY, out=np.empty(10, np.float32))
    with pytest.raises(ValueError, match="dim"):
        QSGD(0, "float64")
    with pytest.raises(ValueError, match="dtype"):
        QSGD(10, "float16")


def test_qsgd_determinism():
    v = np.random.default_rng(6).standard_normal(500)
    c = QSGD(500, "float64", levels=4, bucket=50)
    base = c.encode(v, RandomKey(1, 2, 3)).buffer.copy()
    assert np.array_equal(c.encode(v, RandomKey(1, 2, 3)).buffer, base)
    assert np.array_equal(QSGD(500, "float64", levels=4, bucket=50).encode(v, RandomKey(1, 2, 3)).buffer, base)
    for other in (RandomKey(1, 2, 4), RandomKey(1, 3, 3), RandomKey(2, 2, 3)):
        assert not np.array_equal(c.encode(v, other).buffer, base)


# =========================================================================================== registry

def test_registry_and_build():
    assert {"identity", "qsgd"} <= set(COMPRESSORS)
    assert all(issubclass(cls, Compressor) and COMPRESSORS[cls.name] is cls for cls in COMPRESSORS.values())
    assert QSGD.unbiased and Identity.unbiased
    c = build_compressor("qsgd", 100, "float32", {"name": "qsgd", "levels": 4, "bucket": 0})
    assert isinstance(c, QSGD) and (c.levels, c.bucket, c.dtype) == (4, 0, np.float32)
    assert c.describe() == "qsgd(levels=4, bucket=0)"
    i = build_compressor("identity", 10, np.float64, {})
    assert isinstance(i, Identity) and i.describe() == "identity(precision=float64)" and i.bits == 640


@pytest.mark.parametrize("name,table,message", [
    ("qsdg", {}, "[compression] name must be one of identity, qsgd; got 'qsdg' (did you mean 'qsgd'?)"),
    ("qsgd", {"levels": 0}, "[compression] levels must be ≥ 1, got 0"),
    ("qsgd", {"bucket": -1}, "[compression] bucket must be ≥ 0, got -1"),
    ("qsgd", {"levels": 40000}, "[compression] levels must be ≤ 32767 (15 level bits + 1 sign bit), got 40000"),
    ("qsgd", {"levels": "16"}, "[compression] levels must be an integer, got '16' (str)"),
    ("qsgd", {"level": 4}, "[compression] unknown key 'level' for qsgd (did you mean 'levels'?; "),
    ("identity", {"precision": "float16"}, "[compression] precision must be one of 'state', 'float32', "),
])
def test_build_errors_name_the_key(name, table, message):
    with pytest.raises(JobError) as err:
        build_compressor(name, 10, "float64", table)
    text = str(err.value)
    if name == "qsdg":
        # the list grows as operators are added: check its shape, and the exact text while it is short
        assert text.startswith("[compression] name must be one of ") and text.endswith(
            "got 'qsdg' (did you mean 'qsgd'?)")
        if set(COMPRESSORS) == {"identity", "qsgd"}:
            assert text == message
    else:
        assert text.startswith(message)


def test_package_is_pure():
    import os

    import mpidecent
    root = os.path.dirname(os.path.dirname(os.path.abspath(mpidecent.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    code = ("import sys, mpidecent.compression; "
            "bad = [m for m in ('mpi4py', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# =================================================================================== qsgd_contractive

def tau_of(d: int, b: int, bucket: int) -> float:
    s = 2**b
    length = d if bucket == 0 else min(bucket, d)
    return 1.0 + min(length / s**2, math.sqrt(length) / s)


def qsgd_contractive_reference(v: np.ndarray, b: int, bucket: int, key: RandomKey, dtype) -> np.ndarray:
    """qsgd with s = 2^b (the reference above, in float64), then divided by τ."""
    q = qsgd_reference(v, 2**b, bucket, key, np.float64)
    return (q / tau_of(v.size, b, bucket) + 0.0).astype(dtype)


@pytest.mark.parametrize("d,b,bucket", [(1, 1, 0), (7, 2, 0), (63, 2, 64), (65, 3, 16), (1000, 4, 100),
                                        (257, 8, 0), (50, 14, 7)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_qsgd_contractive_round_trip_matches_reference(d, b, bucket, dtype):
    rng = np.random.default_rng(d + 31 * b)
    v = (rng.standard_normal(d) * rng.uniform(0.1, 10, d)).astype(dtype)
    c = QSGDContractive(d, dtype, bits=b, bucket=bucket)
    assert (c.levels, c.quant_bits) == (2**b, b) and c.tau == pytest.approx(tau_of(d, b, bucket), rel=1e-15)
    packed = c.encode(v, KEY)
    got = c.decode(packed.buffer, KEY)
    assert bits_equal(got, qsgd_contractive_reference(v, b, bucket, KEY, dtype))
    # the wire is exactly qsgd's with s = 2^b: same bytes, qsgd decodes to τ·C(v)
    q = QSGD(d, dtype, levels=2**b, bucket=bucket)
    assert np.array_equal(q.encode(v, KEY).buffer, packed.buffer)
    assert np.allclose(q.decode(packed.buffer, KEY) / c.tau, got, rtol=1e-6, atol=0)


@pytest.mark.parametrize("d", [1, 2, 7, 8, 63, 64, 65, 1000, 1024])
def test_qsgd_contractive_bit_formula(d):
    for b in (1, 2, 3, 8, 14):
        for bucket in (0, 1, 8, 64):
            c = QSGDContractive(d, "float64", bits=b, bucket=bucket)
            n_buckets = 1 if bucket == 0 else math.ceil(d / bucket)
            assert (c.payload_bits, c.header_bits) == (d * (b + 2), 32 * n_buckets)
            assert c.nbytes == math.ceil(c.bits / 8)
            assert c.paper_bits_per_coordinate == b
    assert QSGDContractive(10, "float64").describe() == "qsgd_contractive(bits=2, bucket=0)"


@pytest.mark.parametrize("b,bucket", [(1, 0), (2, 0), (4, 8), (1, 1)])
def test_qsgd_contractive_is_contractive(b, bucket):
    """E[C(v)] = v/τ and E‖C(v) − v‖² ≤ (1 − 1/τ)‖v‖², over 10⁴ draws (tiled, buckets never straddle)."""
    rng = np.random.default_rng(b * 10 + bucket)
    d, n = 32, 10_000
    v = rng.standard_normal(d) * rng.uniform(0.01, 3, d)
    width = d if bucket == 0 else bucket
    big = QSGDContractive(d * n, "float64", bits=b, bucket=width)    # τ from B = width, as for (d, bucket)
    tau = tau_of(d, b, bucket)
    assert big.tau == pytest.approx(tau, rel=1e-15)
    key = RandomKey(4, 0, b)
    c = big.decode(big.encode(np.tile(v, n), key).buffer, key).reshape(n, d)
    se = c.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(c.mean(axis=0) - v / tau) <= 4 * se + 2.0**-22 * np.abs(v).max())
    err = ((c - v) ** 2).sum(axis=1)
    assert err.mean() <= (1 - 1 / tau) * float(v @ v) + 4 * err.std(ddof=1) / math.sqrt(n)
    assert not QSGDContractive.unbiased and QSGDContractive.contractive and not QSGD.contractive


# ========================================================================================= one-bit ops

def f32_up(x: float) -> float:
    x32 = np.float32(x)
    if float(x32) < x:
        x32 = np.nextafter(x32, np.float32(np.inf))
    return float(x32)


def sign_reference(v: np.ndarray, dtype) -> np.ndarray:
    a = float(np.float32(np.sum(np.abs(v.astype(np.float64))) / v.size))
    return (np.where(v < 0, -a, a) + 0.0).astype(dtype)


def onebit_reference(v: np.ndarray, key: RandomKey, dtype) -> np.ndarray:
    vf = v.astype(np.float64)
    r32 = f32_up(float(np.max(np.abs(vf))))
    if r32 == 0.0:
        return np.zeros(v.size, dtype)
    p = (vf * (1.0 / r32) + 1.0) / 2.0
    u = dither_words(key.word("quantize"), v.size) / 2.0**30
    return np.where(u < p, r32, -r32).astype(dtype)


def header_f32(buf: np.ndarray) -> float:
    return float(buf[:4].view("<f4")[0])


@pytest.mark.parametrize("d", [1, 2, 7, 8, 9, 63, 64, 65, 1000])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sign_round_trip_and_wire(d, dtype):
    rng = np.random.default_rng(d)
    v = (rng.standard_normal(d) * rng.uniform(0.1, 10, d)).astype(dtype)
    if d > 5:
        v[2:4] = [0.0, -0.0]                             # sign(±0) = +1
    c = Sign(d, dtype)
    buf = c.encode(v, KEY).buffer
    assert (c.payload_bits, c.header_bits, c.bits, buf.nbytes) == (d, 32, d + 32, 4 + math.ceil(d / 8))
    assert header_f32(buf) == float(np.float32(np.abs(v.astype(np.float64)).sum() / d))
    assert np.array_equal(buf[4:], np.packbits(v < 0))   # 1 = negative, MSB first, zero-padded
    got = c.decode(buf, KEY)
    assert bits_equal(got, sign_reference(v, dtype))
    if d > 5:
        assert got[2] > 0 and got[3] > 0


def test_sign_contraction_exact():
    """‖C(v) − v‖² = ‖v‖² − 2a‖v‖₁ + d·a² (a = the sent scale) ≤ (1 − 1/d)‖v‖², with equality for a
    one-hot vector and zero error for a flat one."""
    rng = np.random.default_rng(12)
    for d in (1, 2, 7, 64, 1000):
        c = Sign(d, "float64")
        onehot = np.zeros(d)
        onehot[d // 2] = -3.0
        flat = np.where(np.arange(d) % 2 == 0, 0.25, -0.25)
        for v in (rng.standard_normal(d), rng.standard_normal(d) ** 3, onehot, flat):
            buf = c.encode(v, KEY).buffer
            a = header_f32(buf)
            err = float(((c.decode(buf, KEY) - v) ** 2).sum())
            n2, n1 = float(v @ v), float(np.abs(v).sum())
            assert err == pytest.approx(n2 - 2 * a * n1 + d * a * a, rel=1e-9, abs=1e-12 * n2)
            # the float32 rounding of the scale adds exactly d·(a − ‖v‖₁/d)² to the optimum
            assert err <= (1 - 1 / d) * n2 + d * (a - n1 / d) ** 2 + 1e-12 * n2
        buf = c.encode(flat, KEY).buffer
        assert bits_equal(c.decode(buf, KEY), flat)
        err = float(((c.decode(c.encode(onehot, KEY).buffer, KEY) - onehot) ** 2).sum())
        assert err == pytest.approx((1 - 1 / d) * 9.0, rel=1e-6, abs=1e-12)
    assert Sign.contractive and not Sign.unbiased


@pytest.mark.parametrize("d", [1, 2, 7, 8, 63, 64, 65, 1000])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_onebit_round_trip_and_wire(d, dtype, no_warnings):
    rng = np.random.default_rng(d + 5)
    xs = rng.uniform(0.1, 10, 1000)
    x = xs[xs.astype(np.float32).astype(np.float64) < xs][0]    # float32(x) < x: R must round up
    v = (rng.standard_normal(d) * rng.uniform(0.1, 1, d)).astype(dtype)
    v[d // 2] = -x if dtype == "float64" else np.float32(-x)
    c = OneBit(d, dtype)
    buf = c.encode(v, KEY).buffer
    assert (c.payload_bits, c.header_bits, c.bits, buf.nbytes) == (d, 32, d + 32, 4 + math.ceil(d / 8))
    r = float(np.abs(v.astype(np.float64)).max())
    assert header_f32(buf) == f32_up(r) >= r
    got = c.decode(buf, KEY)
    assert bits_equal(got, onebit_reference(v, KEY, dtype))
    assert np.all(np.abs(got) == np.float32(header_f32(buf)))
    # an entry equal to +R is always sent as +R (p = 1), and −R as −R when R is exact in float32
    w = np.array([2.0, -2.0, 0.5] + [0.0] * (d - 3)) if d >= 3 else np.array([2.0, -2.0][:d])
    for step in range(20):
        g = c.decode(c.encode(w.astype(dtype), RandomKey(0, 0, step)).buffer, RandomKey(0, 0, step))
        assert g[0] == 2.0 and (d < 2 or g[1] == -2.0)


def test_onebit_unbiased_and_variance():
    rng = np.random.default_rng(8)
    d, n = 24, 10_000
    v = rng.standard_normal(d) * rng.uniform(0.01, 3, d)
    big = OneBit(d * n, "float64")                       # tiled copies: same R, independent uniforms
    key = RandomKey(3, 1, 4)
    q = big.decode(big.encode(np.tile(v, n), key).buffer, key).reshape(n, d)
    se = q.std(axis=0, ddof=1) / math.sqrt(n)
    r32 = f32_up(float(np.abs(v).max()))
    # Slack 2**-22·R32: the largest |v_k| sits just below the rounded-up R32, so its opposite sign has
    # probability ~1e-8 that 10⁴ draws cannot see (the spread is exactly zero there).
    assert np.all(np.abs(q.mean(axis=0) - v) <= 4 * se + 2.0**-22 * r32)
    err = ((q - v) ** 2).sum(axis=1)
    exact = float(np.sum(r32**2 - v**2))                 # Σ (R² − v_k²)
    assert abs(err.mean() - exact) <= 4 * err.std(ddof=1) / math.sqrt(n)
    assert OneBit.unbiased and not OneBit.contractive


def test_one_bit_ops_zero_tiny_and_huge(no_warnings):
    for cls in (Sign, OneBit):
        for d in (1, 9, 64):
            c = cls(d, "float64")
            buf = c.encode(np.zeros(d), KEY).buffer
            assert not buf.any() and bits_equal(c.decode(buf, KEY), np.zeros(d))
            # underflowing magnitudes: a zero scale is sent with zero sign bits, no −0.0 decoded
            tiny = np.full(d, -5e-324)
            got = c.decode(c.encode(tiny, KEY).buffer, KEY)
            assert np.all(np.abs(got) <= 1.5e-45) and not np.signbit(got[got == 0]).any()
        c = cls(4, "float64")
        with pytest.raises(NonFiniteInputError, match=re.escape(c.describe()) + ": input values too large"):
            c.encode(np.array([1e39, 0.0, -1e39, 1e39]), KEY)
        with pytest.raises(NonFiniteInputError, match=re.escape(c.describe()) + ": input values too large"):
            c.encode(np.array([1e308, 1e308, -1e308, 1e308]), KEY)       # ‖v‖₁ overflows float64
        assert np.all(np.isfinite(c.decode(c.encode(np.full(4, 1e38), KEY).buffer, KEY)))


# ============================================================ properties shared by the new operators

NEW_OPERATORS = [
    ("qsgd_contractive", {"bits": 2, "bucket": 0}),
    ("qsgd_contractive", {"bits": 5, "bucket": 16}),
    ("sign", {}),
    ("onebit", {}),
    ("topk", {"fraction": 0.1}),
    ("topk", {"fraction": 0.6}),
    ("topk", {"fraction": 1.0}),
    ("randk", {"fraction": 0.1}),
    ("randk", {"fraction": 0.7, "scaled": True}),
    ("randk", {"fraction": 1.0}),
]
RANDOMIZED = {"qsgd_contractive", "onebit", "randk"}


def expected_bits(name: str, table: dict, d: int) -> int:
    """The spec's formulas, written out independently of the implementation."""
    if name == "qsgd_contractive":
        b, bucket = table.get("bits", 2), table.get("bucket", 0)
        return d * (b + 2) + 32 * (1 if bucket == 0 else math.ceil(d / bucket))
    if name in ("sign", "onebit"):
        return d + 32
    k = max(1, round(table.get("fraction", 0.1) * d))
    if name == "randk":
        return 32 * k
    index_width = math.ceil(math.log2(d)) if d > 1 else 0
    return 32 * k + min(k * index_width, d)


@pytest.mark.parametrize("name,table", NEW_OPERATORS)
def test_new_operators_common_properties(name, table):
    for d in (1, 2, 7, 8, 63, 64, 65, 1000, 1024):
        for dtype in ("float64", "float32"):
            rng = np.random.default_rng(d)
            v = (rng.standard_normal(d) * 3).astype(dtype)
            v_before = v.copy()
            c = build_compressor(name, d, dtype, {"name": name, **table})
            assert c.bits == expected_bits(name, table, d)
            assert c.nbytes == math.ceil(c.bits / 8)
            packed = c.encode(v, KEY)
            assert bits_equal(v, v_before)
            assert packed.buffer.shape == (c.nbytes,) == (packed.nbytes,) and packed.buffer.dtype == np.uint8
            assert (packed.payload_bits, packed.header_bits) == (c.payload_bits, c.header_bits)
            got = c.decode(packed.buffer, KEY)
            assert got.dtype == np.dtype(dtype) and got.shape == (d,)
            # another rank's instance decodes the same bytes (with the sender's key) identically
            other = build_compressor(name, d, dtype, table)
            out = np.full(d, 7.0, dtype)
            assert other.decode(packed.buffer.copy(), KEY, out=out) is out and bits_equal(out, got)
            # encoding into a caller's buffer; a fresh instance repeats the bytes for the same key
            into = np.full(c.nbytes, 0xAB, np.uint8)
            c.encode(v, KEY, out=into)
            assert np.array_equal(into, packed.buffer)
            assert np.array_equal(other.encode(v, KEY).buffer, packed.buffer)
            # zero vector → zeros (no −0.0)
            z = c.decode(c.encode(np.zeros(d, dtype), KEY).buffer, KEY)
            assert bits_equal(z, np.zeros(d, dtype))
            # NaN/inf anywhere → an error naming the operator, not garbage
            for bad in (np.nan, np.inf, -np.inf):
                for where in {0, d // 2, d - 1}:
                    w = v.copy()
                    w[where] = bad
                    with pytest.raises(NonFiniteInputError,
                                       match="^" + re.escape(c.describe()) + ": input contains NaN or infinite"):
                        c.encode(w, KEY)
            assert bits_equal(c.decode(c.encode(v, KEY).buffer, KEY), got)   # scratch not polluted
    # determinism by key: randomized operators change with any part of the key, the others ignore it
    d = 1000
    v = np.random.default_rng(1).standard_normal(d)
    c = build_compressor(name, d, "float64", table)
    base = c.encode(v, RandomKey(1, 2, 3)).buffer.copy()
    for key in (RandomKey(1, 2, 4), RandomKey(1, 3, 3), RandomKey(2, 2, 3)):
        same = np.array_equal(c.encode(v, key).buffer, base)
        if name == "randk" and table["fraction"] == 1.0:
            assert same                                   # k = d: every index, nothing drawn
        else:
            assert same == (name not in RANDOMIZED), key


def test_paper_bits_per_coordinate_and_flags():
    d = 1000
    assert Identity(d, "float64").paper_bits_per_coordinate == 64
    assert Identity(d, "float64", precision="float32").paper_bits_per_coordinate == 32
    assert Identity(d, "float32").paper_bits_per_coordinate == 32
    for s, want in ((1, 2), (3, 3), (16, 6), (255, 9)):
        assert QSGD(d, "float64", levels=s).paper_bits_per_coordinate == want    # 1 + ⌈log2(s+1)⌉
    assert QSGDContractive(d, "float64", bits=3).paper_bits_per_coordinate == 3
    assert Sign(d, "float64").paper_bits_per_coordinate == 1
    assert OneBit(d, "float64").paper_bits_per_coordinate == 1
    assert TopK(d, "float64", fraction=0.05).paper_bits_per_coordinate == 32 * 50 / 1000
    assert RandK(d, "float64", fraction=0.05).paper_bits_per_coordinate == 32 * 50 / 1000
    assert RandK(7, "float64", fraction=0.3).paper_bits_per_coordinate == 32 * 2 / 7
    # contractive / unbiased: class-level where fixed, per instance for randk
    assert Identity.contractive and QSGDContractive.contractive and Sign.contractive and TopK.contractive
    assert not QSGD.contractive and not OneBit.contractive and Compressor.contractive is False
    unscaled, scaled = RandK(d, "float64"), RandK(d, "float64", scaled=True)
    assert (unscaled.contractive, unscaled.unbiased) == (True, False)
    assert (scaled.contractive, scaled.unbiased) == (False, True)
    assert RandK.contractive is False and RandK.unbiased is False      # conservative class values


# ===================================================================================== error feedback

EF_OPERATORS = [("sign", {}), ("topk", {"fraction": 0.1}), ("randk", {"fraction": 0.2}),
                ("qsgd_contractive", {"bits": 2}), ("identity", {"precision": "float32"})]
# (not onebit: it is not contractive, so its memory grows without bound — error feedback needs δ > 0)


@pytest.mark.parametrize("name,table", EF_OPERATORS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_error_feedback_memory_and_telescoping(name, table, dtype):
    d, steps = 50, 40
    rng = np.random.default_rng(2)
    ef = ErrorFeedback(build_compressor(name, d, dtype, table))
    receiver = build_compressor(name, d, dtype, table)
    assert ef.memory.shape == (d,) and ef.memory.dtype == np.dtype(dtype) and not ef.memory.any()
    e_ref = np.zeros(d)
    sum_v, sum_dec = np.zeros(d), np.zeros(d)
    for t in range(steps):
        v = (rng.standard_normal(d) + 1.0).astype(dtype)
        key = RandomKey(0, 1, t)
        packed = ef.encode(v, key)
        assert packed.nbytes == ef.nbytes == receiver.nbytes
        dec = receiver.decode(packed.buffer, key)                   # what a neighbour reconstructs
        assert bits_equal(ef.decoded, dec) and not ef.decoded.flags.writeable
        # memory = accumulated residual, from the decoded BYTES: (v + e) − decode(message)
        w = (v + e_ref.astype(dtype)).astype(dtype)
        assert bits_equal(receiver.decode(receiver.encode(w, key).buffer, key), dec)
        e_ref = (w - dec).astype(dtype)
        assert bits_equal(ef.memory, e_ref)
        sum_v += v
        sum_dec += dec
    # telescoping: Σ decoded + e_T = Σ v (up to rounding)
    tol = (1e-12 if dtype == "float64" else 1e-4) * np.abs(sum_v).max() * steps
    assert np.max(np.abs(sum_dec + ef.memory - sum_v)) <= tol
    ef.reset()
    assert not ef.memory.any() and ef.describe() == f"error_feedback({receiver.describe()})"


def test_error_feedback_sign_running_average_converges():
    """With error feedback the running average of sign messages tracks the running average of the
    inputs (the gap is ‖e_T‖/T, and e stays bounded); without it the gap does not shrink."""
    d = 40
    rng = np.random.default_rng(3)
    mean = rng.standard_normal(d)
    ef = ErrorFeedback(Sign(d, "float64"))
    plain = Sign(d, "float64")
    sum_v, sum_ef, sum_plain = np.zeros(d), np.zeros(d), np.zeros(d)
    gaps, plain_gaps, memory_norms = {}, {}, []
    for t in range(1, 4001):
        v = mean + 0.5 * rng.standard_normal(d)
        key = RandomKey(0, 0, t)
        sum_v += v
        sum_ef += Sign(d, "float64").decode(ef.encode(v, key).buffer, key)
        sum_plain += plain.decode(plain.encode(v, key).buffer, key)
        memory_norms.append(float(np.linalg.norm(ef.memory)))
        if t in (100, 4000):
            gaps[t] = np.linalg.norm(sum_ef - sum_v) / t
            plain_gaps[t] = np.linalg.norm(sum_plain - sum_v) / t
    avg_norm = np.linalg.norm(sum_v / 4000)
    assert max(memory_norms) < 20 * avg_norm                          # bounded memory
    assert gaps[4000] < gaps[100] / 10 and gaps[4000] < 0.01 * avg_norm
    assert plain_gaps[4000] > 0.2 * avg_norm                         # biased without memory


def test_error_feedback_errors_leave_memory_and_accept_out():
    ef = ErrorFeedback(TopK(20, "float64", fraction=0.25))
    v = np.arange(20.0)
    ef.encode(v, KEY)
    before = ef.memory.copy()
    bad = v.copy()
    bad[3] = np.nan
    with pytest.raises(NonFiniteInputError, match=r"^topk\(fraction=0.25, k=5, index_encoding=bitmap\)"):
        ef.encode(bad, KEY)
    assert bits_equal(ef.memory, before)
    with pytest.raises(ValueError, match="length 20"):
        ef.encode(np.zeros(21), KEY)
    out = np.empty(ef.nbytes, np.uint8)
    packed = ef.encode(v, KEY, out=out)
    assert np.shares_memory(packed.buffer, out)


# ============================================================================= registry (new keys)

@pytest.mark.parametrize("name,table,message", [
    ("topk", {"fraction": 0}, "[compression] fraction must be > 0, got 0"),
    ("randk", {"fraction": 0.0}, "[compression] fraction must be > 0, got 0"),
    ("topk", {"fraction": 1.5}, "[compression] fraction must be ≤ 1, got 1.5"),
    ("randk", {"scaled": 1}, "[compression] scaled must be true or false, got 1 (int)"),
    ("topk", {"fractoin": 0.1}, "[compression] unknown key 'fractoin' for topk (did you mean 'fraction'?; "),
    ("qsgd_contractive", {"bits": 0}, "[compression] bits must be ≥ 1, got 0"),
    ("qsgd_contractive", {"bits": 15}, "[compression] bits must be ≤ 14 (s = 2^b levels take b + 1 level bits"),
    ("qsgd_contractive", {"levels": 4}, "[compression] unknown key 'levels' for qsgd_contractive"),
    ("sign", {"bits": 1}, "[compression] unknown key 'bits' for sign"),
])
def test_build_errors_name_the_key_new_operators(name, table, message):
    with pytest.raises(JobError) as err:
        build_compressor(name, 10, "float64", table)
    assert str(err.value).startswith(message)


def test_registry_new_operators():
    for name, cls in (("qsgd_contractive", QSGDContractive), ("sign", Sign), ("onebit", OneBit),
                      ("topk", TopK), ("randk", RandK)):
        assert COMPRESSORS[name] is cls
    c = build_compressor("qsgd_contractive", 64, "float32", {"name": "qsgd_contractive", "bits": 3, "bucket": 8})
    assert isinstance(c, QSGDContractive) and (c.levels, c.bucket, c.bits) == (8, 8, 64 * 5 + 32 * 8)
    assert build_compressor("topk", 10, "float64", {}).describe() == "topk(fraction=0.1, k=1, index_encoding=list)"
    assert build_compressor("randk", 10, "float64", {"scaled": True}).describe() == \
        "randk(fraction=0.1, scaled=true, k=1)"
