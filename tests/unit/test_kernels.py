"""The fused kernels (compression/kernels.py) against the numpy reference: the same bytes and the same
decoded values, bit for bit, for every quantizer that has a kernel."""

import numpy as np
import pytest

from mpidecent.compression import COMPRESSORS, build_compressor
from mpidecent.compression.kernels import dither_words, load
from mpidecent.errors import NonFiniteInputError
from mpidecent.rng import RandomKey

CASES = [  # (name, d, params)
    ("qsgd", 1, {"levels": 1, "bucket": 0}), ("qsgd", 7, {"levels": 3, "bucket": 2}),
    ("qsgd", 65, {"levels": 16, "bucket": 64}), ("qsgd", 1000, {"levels": 127, "bucket": 64}),
    ("qsgd", 333, {"levels": 300, "bucket": 32}), ("qsgd", 50, {"levels": 32767, "bucket": 10}),
    ("qsgd", 4099, {"levels": 16, "bucket": 0}), ("qsgd_contractive", 257, {"bits": 2, "bucket": 0}),
    ("qsgd_contractive", 1000, {"bits": 4, "bucket": 100}), ("onebit", 1, {}), ("onebit", 9, {}),
    ("onebit", 1001, {}), ("sign", 1, {}), ("sign", 63, {}), ("sign", 1001, {}),
]


def test_kernels_are_in_use():
    """numba is a dependency: the fast path must be what runs (a silent fallback would be 50× slower)."""
    assert load() is not None
    assert build_compressor("qsgd", 10_000, np.float64, {}).kernels is load()
    assert build_compressor("onebit", 100, np.float64, {}).kernels is None  # short: the reference is cheaper


def test_dither_stream_is_counter_based_and_uniform():
    words = dither_words(2**64 - 1, 100_001)  # the largest key wraps around mod 2^64
    assert words.dtype == np.uint32 and words.shape == (100_001,) and words.max() < 2**30
    np.testing.assert_array_equal(dither_words(7, 10), dither_words(7, 1000)[:10])  # a prefix
    u = words / 2.0**30
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u.size)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.02  # neighbours (the two halves of a word) independent
    assert not np.array_equal(dither_words(1, 64), dither_words(2, 64))


def make(name: str, d: int, dtype, params: dict, fast: bool | None = True):
    return COMPRESSORS[name](d, np.dtype(dtype), fast=fast, **params)


@pytest.mark.parametrize("name, d, params", CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fast_and_reference_give_the_same_bytes_and_values(name, d, params, dtype):
    fast, reference = make(name, d, dtype, params), make(name, d, dtype, params, fast=False)
    assert fast.kernels is not None and reference.kernels is None
    rng = np.random.default_rng(d)
    for trial in range(4):
        v = (rng.standard_normal(d) * rng.uniform(0.01, 100, d)).astype(dtype)
        if trial == 1:
            v[: d // 3] = 0.0
        if trial == 2:
            v[:] = 0.0
        key = RandomKey(3, trial, 11 * trial)
        a, b = fast.encode(v, key).buffer.copy(), reference.encode(v, key).buffer.copy()
        np.testing.assert_array_equal(a, b)
        x, y = fast.decode(a, key), reference.decode(b, key)
        assert x.dtype == y.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))  # also the sign of zeros
        out = np.empty(d, dtype)
        assert fast.decode(a, key, out=out) is out
        np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("name, params", [("qsgd", {"levels": 16, "bucket": 4}), ("onebit", {}), ("sign", {})])
def test_decoding_a_received_row_that_is_not_aligned(name, params):
    c = make(name, 37, np.float64, params)
    v = np.random.default_rng(0).standard_normal(37)
    key = RandomKey(0, 1, 2)
    packed = c.encode(v, key).buffer
    rows = np.zeros(2 * c.nbytes + 1, dtype=np.uint8)  # a receive row at an odd offset
    rows[1:1 + c.nbytes] = packed
    np.testing.assert_array_equal(c.decode(rows[1:1 + c.nbytes], key), c.decode(packed.copy(), key))


@pytest.mark.parametrize("name, params, message", [
    ("qsgd", {"levels": 16, "bucket": 8}, "qsgd(levels=16, bucket=8): input contains NaN"),
    ("onebit", {}, "onebit(): input contains NaN"), ("sign", {}, "sign(): input contains NaN")])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_refused_by_both(name, params, message, bad):
    for fast in (True, False):
        c = make(name, 20, np.float32, params, fast)
        v = np.ones(20, np.float32)
        v[13] = bad
        with pytest.raises(NonFiniteInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            c.encode(v, RandomKey(0, 0, 0))
    big = make(name, 4, np.float64, params)
    with pytest.raises(NonFiniteInputError, match="input values too large"):
        big.encode(np.array([1e300, 1e300, 1.0, 2.0]), RandomKey(0, 0, 0))


# ------------------------------------------------------------------ awkward sizes (the blocked/vector kernels)

def mixed_scales(rng, d, dtype, zero_buckets=0, bucket=64):
    """NaN-free data whose magnitudes span ~1e-20 … 1e20 per entry, with some all-zero buckets."""
    v = rng.standard_normal(d) * 10.0 ** rng.uniform(-20, 20, d)
    v[rng.random(d) < 0.05] = 0.0
    for b in rng.choice(max(1, -(-d // max(bucket, 1))), size=min(zero_buckets, -(-d // max(bucket, 1))), replace=False):
        v[b * bucket:(b + 1) * bucket] = 0.0
    return v.astype(dtype)


def same_bytes_and_values(name, d, dtype, params, trials=3, fast=True, seed=0):
    a, b = make(name, d, dtype, params, fast=fast), make(name, d, dtype, params, fast=False)
    rng = np.random.default_rng([d, seed])
    bucket = params.get("bucket", 64) or d
    for trial in range(trials):
        if trial == 0:
            v = (rng.standard_normal(d) * rng.uniform(0.01, 100, d)).astype(dtype)
        else:
            v = mixed_scales(rng, d, dtype, zero_buckets=3, bucket=bucket)
        key = RandomKey(seed, trial, d)
        x, y = a.encode(v, key).buffer.copy(), b.encode(v, key).buffer.copy()
        np.testing.assert_array_equal(x, y, err_msg=f"{name} d={d} {dtype} {params} trial {trial}")
        p, q = a.decode(x, key), b.decode(y, key)
        np.testing.assert_array_equal(p.view(np.uint8), q.view(np.uint8))
    return a


AWKWARD_D = [1, 7, 63, 64, 65, 127, 129, 2047, 2048, 2049, 2 * 2048 + 63, 8191, 8192, 8193, 10_007]


@pytest.mark.parametrize("d", AWKWARD_D)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, params", [
    ("qsgd", {"levels": 127, "bucket": 64}),      # width 8: the byte path, 64-entry chunks
    ("qsgd", {"levels": 100, "bucket": 100}),     # width 8, buckets of 64 + 36
    ("qsgd", {"levels": 16, "bucket": 63}),       # width 6: packed, odd buckets (odd dither offsets)
    ("qsgd", {"levels": 32767, "bucket": 4096}),  # width 16, buckets larger than a dither block
    ("qsgd_contractive", {"bits": 6, "bucket": 64}),  # width 8 with τ ≠ 1
    ("onebit", {}), ("sign", {})])
def test_kernels_match_the_reference_on_awkward_sizes(name, params, d, dtype):
    same_bytes_and_values(name, d, dtype, params)


@pytest.mark.parametrize("d", [8191, 8192, 8193])
@pytest.mark.parametrize("name, params", [("qsgd", {"levels": 127, "bucket": 64}), ("onebit", {}), ("sign", {})])
def test_the_automatic_choice_around_the_kernel_threshold(name, params, d):
    """fast=None: the reference below kernels.MIN_DIM (8,192), the kernels from there on; the same bytes."""
    c = same_bytes_and_values(name, d, "float32", params, fast=None)
    assert (c.kernels is None) == (d < 8192)


def test_whole_vector_bucket_and_zero_vectors():
    same_bytes_and_values("qsgd", 5000, "float32", {"levels": 127, "bucket": 0})
    same_bytes_and_values("qsgd_contractive", 5000, "float64", {"bits": 2, "bucket": 0})
    for name, params in [("qsgd", {"levels": 127, "bucket": 64}), ("onebit", {}), ("sign", {})]:
        fast, reference = make(name, 3000, "float32", params), make(name, 3000, "float32", params, fast=False)
        zero = np.zeros(3000, np.float32)
        zero[::7] = -0.0
        a = fast.encode(zero, RandomKey(0, 0, 0)).buffer.copy()
        np.testing.assert_array_equal(a, reference.encode(zero, RandomKey(0, 0, 0)).buffer)
        out = fast.decode(a, RandomKey(0, 0, 0))
        assert not np.signbit(out).any() and not out.any()


@pytest.mark.parametrize("name, params", [("qsgd", {"levels": 127, "bucket": 64}), ("onebit", {}), ("sign", {})])
@pytest.mark.parametrize("where", [0, 17, 2047, 2048, 9000, 9999])  # vector part, block edges, the tail
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries_anywhere_are_refused(name, params, where, bad):
    c = make(name, 10_000, np.float32, params)
    v = np.ones(10_000, np.float32)
    v[where] = bad
    with pytest.raises(NonFiniteInputError):
        c.encode(v, RandomKey(0, 0, 0))


def test_lane_sums_round_up_and_abs_max_kernels_against_numpy():
    from numba import njit

    from mpidecent.compression._jit import _abs_max, _lane_sumsq, _round_up_f32
    from mpidecent.compression.kernels import lane_sums

    @njit
    def norms(v, bucket, out):
        for b in range(out.shape[0]):
            out[b] = _lane_sumsq(v, b * bucket, min((b + 1) * bucket, v.shape[0]))

    @njit
    def round_up(xs, out):
        for i in range(xs.shape[0]):
            out[i] = _round_up_f32(xs[i])

    @njit
    def abs_max(v):
        return _abs_max(v, v.shape[0])

    rng = np.random.default_rng(5)
    for d, bucket in [(1, 1), (5, 3), (1000, 64), (1003, 7), (999, 999), (4096, 17)]:
        for dtype in (np.float32, np.float64):
            v = mixed_scales(rng, d, dtype)
            got = np.empty(-(-d // bucket))
            norms(v, bucket, got)
            rows = np.zeros((got.shape[0], bucket))
            rows.reshape(-1)[:d] = v
            np.testing.assert_array_equal(got, lane_sums(rows * rows))
            assert abs_max(v) == np.abs(v.astype(np.float64)).max()
            for where in (0, d // 2, d - 1):
                w = v.copy()
                w[where] = np.nan
                assert np.isnan(abs_max(w))
    xs = np.concatenate([np.abs(rng.standard_normal(10_000)) * 10.0 ** rng.integers(-60, 38, 10_000),
                         [0.0, 1e-300, 2.0**-149, 2.0**-150, 1.0, float(np.finfo(np.float32).max)]])
    got = np.empty(xs.shape, np.float32)
    round_up(xs, got)
    want = xs.astype(np.float32)
    low = want.astype(np.float64) < xs
    want[low] = np.nextafter(want[low], np.float32(np.inf))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


# ------------------------------------------------------------------------------------------- top-k kernels

@pytest.mark.parametrize("d, fraction", [(65_536, 0.01), (65_537, 0.3), (70_001, 0.001), (100_003, 0.01),
                                         (131_072, 0.5), (200_000, 1e-5)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_topk_kernels_give_the_reference_bytes(d, fraction, dtype):
    a = COMPRESSORS["topk"](d, np.dtype(dtype), fraction=fraction, fast=True)
    b = COMPRESSORS["topk"](d, np.dtype(dtype), fraction=fraction, fast=False)
    assert a.kernels is not None and b.kernels is None
    rng = np.random.default_rng(d)
    key = RandomKey(0, 0, 1)
    for trial in range(5):
        v = (rng.standard_normal(d) * rng.uniform(0.01, 100, d)).astype(dtype)
        if trial == 1:
            v = np.round(v).astype(dtype)                 # many ties at the cut
        if trial == 2:
            v = mixed_scales(rng, d, dtype)
        if trial == 3:
            v = np.sort(np.abs(v)).astype(dtype)          # the strided sample sees a skewed picture
        if trial == 4:
            v[:] = 0.0                                    # everything ties
        x, y = a.encode(v, key).buffer.copy(), b.encode(v, key).buffer.copy()
        np.testing.assert_array_equal(x, y, err_msg=f"trial {trial}")
        p, q = a.decode(x, key), b.decode(y, key)
        np.testing.assert_array_equal(p.view(np.uint8), q.view(np.uint8))
        out = np.full(d, 7.0, dtype)
        assert a.decode(x, key, out=out) is out
        np.testing.assert_array_equal(out, q)


def test_topk_kernels_refuse_non_finite_input_and_corrupt_lists():
    c = COMPRESSORS["topk"](70_000, np.dtype("float32"), fraction=0.01, fast=True)
    assert c.kernels is not None and c.index_encoding == "list"
    for where in (0, 69_999, 69_990):
        v = np.ones(70_000, np.float32)
        v[where] = np.nan
        with pytest.raises(NonFiniteInputError):
            c.encode(v, RandomKey(0, 0, 0))
    buf = c.encode(np.arange(70_000, dtype=np.float32), RandomKey(0, 0, 0)).buffer.copy()
    buf[c._values_bytes:] = buf[c._values_bytes:][::-1]  # indices out of order
    with pytest.raises(ValueError, match="corrupt message"):
        c.decode(buf, RandomKey(0, 0, 0))


@pytest.mark.parametrize("name, params", [("qsgd", {"levels": 127, "bucket": 64}), ("qsgd", {"levels": 16, "bucket": 64}),
                                          ("onebit", {}), ("sign", {}), ("topk", {"fraction": 0.01})])
def test_read_only_and_strided_inputs(name, params):
    """Received or shared arrays may be read-only (another numba type) or strided: the same bytes."""
    v = np.random.default_rng(1).standard_normal(140_000).astype(np.float32)
    v.flags.writeable = False
    for x in (v[:70_000], v[::2]):
        a = COMPRESSORS[name](70_000, np.dtype("float32"), fast=True, **params)
        b = COMPRESSORS[name](70_000, np.dtype("float32"), fast=False, **params)
        assert a.kernels is not None
        buf = a.encode(x, RandomKey(0, 0, 1)).buffer.copy()
        np.testing.assert_array_equal(buf, b.encode(x, RandomKey(0, 0, 1)).buffer)
        buf.flags.writeable = False
        np.testing.assert_array_equal(a.decode(buf, RandomKey(0, 0, 1)), b.decode(buf.copy(), RandomKey(0, 0, 1)))
