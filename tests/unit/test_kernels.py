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
