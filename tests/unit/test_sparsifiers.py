"""Single-process tests of the sparsifiers ``topk`` and ``randk`` (``mpidecent.compression.sparsifiers``).

Round trips against plain references, the index-list / bitmap wire formats and their switch point,
bit formulas, the contraction / unbiasedness properties of ``docs/algorithms/compressors.md``,
shared-seed index regeneration for rand-k, edge cases and errors. (Properties shared with the other
operators — buffer sizes, second-instance decoding, zero vector, NaN/inf, determinism — are in
``test_compression.py``.)
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from mpidecent.compression import RandK, TopK, build_compressor
from mpidecent.errors import NonFiniteInputError
from codec import KEY, bits_equal
from mpidecent.rng import RandomKey


def k_of(fraction: float, d: int) -> int:
    return max(1, round(fraction * d))


def index_width(d: int) -> int:
    return math.ceil(math.log2(d)) if d > 1 else 0


def pack_bits_reference(codes, width: int) -> np.ndarray:
    """MSB-first bit string of ``width``-bit codes, zero-padded to whole bytes."""
    bits = "".join(format(int(c), f"0{width}b") for c in codes) if width else ""
    bits += "0" * (-len(bits) % 8)
    return np.array([int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)], dtype=np.uint8)


def sparse_reference(v: np.ndarray, idx, dtype, scale: float = 1.0) -> np.ndarray:
    out = np.zeros(v.size, dtype)
    for i in idx:
        out[i] = np.float32(float(v[i]) * scale)
    return out


# ============================================================================================== top-k

def topk_indices_reference(v: np.ndarray, k: int) -> list[int]:
    """The k largest |v_i| (distinct magnitudes assumed), ascending."""
    order = sorted(range(v.size), key=lambda i: -abs(float(v[i])))
    return sorted(order[:k])


@pytest.mark.parametrize("d,fraction", [(1, 0.5), (2, 0.5), (2, 1.0), (7, 0.3), (8, 0.25), (63, 0.1),
                                        (64, 0.05), (65, 0.5), (1000, 0.099), (1000, 0.1), (1024, 0.01),
                                        (1024, 102 / 1024), (1024, 103 / 1024), (1000, 1.0)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_topk_round_trip_and_wire(d, fraction, dtype):
    rng = np.random.default_rng(d)
    v = (rng.standard_normal(d) * rng.uniform(0.1, 10, d)).astype(dtype)
    c = TopK(d, dtype, fraction=fraction)
    k, width = k_of(fraction, d), index_width(d)
    assert (c.k, c.index_width) == (k, width)
    idx = topk_indices_reference(v, k)
    buf = c.encode(v, KEY).buffer
    # values: float32, little-endian, ascending index order
    assert np.array_equal(buf[: 4 * k].view("<f4"), v[idx].astype(np.float32))
    if k * width < d:
        assert c.index_encoding == "list"
        assert np.array_equal(buf[4 * k:], pack_bits_reference(idx, width))
    else:
        assert c.index_encoding == "bitmap"
        mask = np.zeros(d, np.uint8)
        mask[idx] = 1
        assert np.array_equal(buf[4 * k:], pack_bits_reference(mask, 1))
    assert c.bits == 32 * k + min(k * width, d) and buf.nbytes == math.ceil(c.bits / 8)
    assert bits_equal(c.decode(buf, KEY), sparse_reference(v, idx, dtype))
    assert f"index_encoding={c.index_encoding}" in c.describe()


def test_topk_index_encoding_switch_point():
    # d = 1024: L = 10, list while 10k < 1024 (k ≤ 102), bitmap from k = 103; ties go to the bitmap
    for k, enc, index_bits in ((1, "list", 10), (102, "list", 1020), (103, "bitmap", 1024), (1024, "bitmap", 1024)):
        c = TopK(1024, "float64", fraction=k / 1024)
        assert (c.k, c.index_encoding, c.index_bits, c.bits) == (k, enc, index_bits, 32 * k + index_bits)
    c = TopK(1000, "float64", fraction=0.1)              # 100 · 10 = 1000 = d: a tie
    assert (c.k, c.index_encoding, c.bits) == (100, "bitmap", 3200 + 1000)
    c = TopK(1000, "float64", fraction=0.099)
    assert (c.k, c.index_encoding, c.bits) == (99, "list", 3168 + 990)
    c = TopK(1, "float64", fraction=1.0)                 # d = 1: 0 index bits, just the value
    assert (c.k, c.index_width, c.index_encoding, c.bits, c.nbytes) == (1, 0, "list", 32, 4)
    c = TopK(2, "float64", fraction=0.5)
    assert (c.index_encoding, c.bits) == ("list", 33)
    c = TopK(2, "float64", fraction=1.0)
    assert (c.index_encoding, c.bits) == ("bitmap", 66)


@pytest.mark.parametrize("d", [1, 2, 7, 8, 63, 64, 65, 1000, 1024])
def test_topk_randk_bit_formulas(d):
    for fraction in (1e-9, 0.01, 0.1, 0.25, 0.5, 0.77, 1.0):
        k = k_of(fraction, d)
        t = TopK(d, "float64", fraction=fraction)
        r = RandK(d, "float64", fraction=fraction)
        assert t.k == r.k == k and 1 <= k <= d
        assert (t.payload_bits, t.header_bits) == (32 * k + min(k * index_width(d), d), 0)
        assert (r.payload_bits, r.header_bits, r.nbytes) == (32 * k, 0, 4 * k)
        assert t.nbytes == math.ceil(t.bits / 8)
    assert TopK(d, "float64", fraction=1e-9).k == 1 and TopK(d, "float64", fraction=1.0).k == d


@pytest.mark.parametrize("d,fraction", [(70_000, 0.001), (200_000, 0.0005), (65_536, 0.001), (65_537, 0.001)])
def test_topk_wide_index_lists(d, fraction):
    """Index widths beyond 16 bits (d > 65,536) keep the MSB-first code layout."""
    rng = np.random.default_rng(d)
    v = rng.standard_normal(d)
    c = TopK(d, "float64", fraction=fraction)
    assert c.index_encoding == "list" and c.index_width == index_width(d)
    buf = c.encode(v, KEY).buffer
    idx = np.sort(np.argsort(-np.abs(v), kind="stable")[: c.k])
    assert np.array_equal(buf[4 * c.k:], pack_bits_reference(idx, c.index_width))
    assert bits_equal(c.decode(buf, KEY), sparse_reference(v, idx, np.float64))
    # the extreme index d − 1 survives the round trip
    w = np.zeros(d)
    w[[0, d - 1]] = [-1.0, 2.0]
    got = c.decode(c.encode(w, KEY).buffer, KEY)
    assert got[0] == -1.0 and got[d - 1] == 2.0 and np.count_nonzero(got) == 2


def test_topk_contraction_deterministic():
    rng = np.random.default_rng(4)
    for d in (1, 2, 7, 64, 1000):
        for fraction in (0.01, 0.1, 0.5, 1.0):
            c = TopK(d, "float32", fraction=fraction)
            for v in (rng.standard_normal(d).astype(np.float32), (rng.standard_normal(d) ** 5).astype(np.float32)):
                got = c.decode(c.encode(v, KEY).buffer, KEY).astype(np.float64)
                vf = v.astype(np.float64)
                err, norm2 = float(((got - vf) ** 2).sum()), float(vf @ vf)
                assert err <= (1 - c.k / d) * norm2 * (1 + 1e-12)          # float32 values are exact
                kept = np.flatnonzero(got)
                assert np.array_equal(got[kept], vf[kept])
    # float64 input: the bound holds up to the float32 rounding of the kept values
    v = rng.standard_normal(100)
    c = TopK(100, "float64", fraction=1.0)
    err = float(((c.decode(c.encode(v, KEY).buffer, KEY) - v) ** 2).sum())
    assert err <= 2.0**-46 * float(v @ v)


def test_topk_ties_are_deterministic_and_keep_the_largest():
    v = np.array([1.0, -3.0, 3.0, 2.0, -3.0, 0.5, 3.0, -2.0])
    c = TopK(8, "float64", fraction=0.25)                # k = 2 of the four |v| = 3 entries
    bufs = {c.encode(v, RandomKey(0, 0, t)).buffer.tobytes() for t in range(5)}
    bufs.add(TopK(8, "float64", fraction=0.25).encode(v, KEY).buffer.tobytes())
    assert len(bufs) == 1
    got = c.decode(np.frombuffer(bufs.pop(), np.uint8).copy(), KEY)
    kept = np.flatnonzero(got)
    assert kept.size == 2 and np.all(np.abs(v[kept]) == 3.0) and np.array_equal(got[kept], v[kept])


def test_topk_nonfinite_and_huge(no_warnings):
    d = 50
    v = np.random.default_rng(5).standard_normal(d) * 100
    for fraction in (0.02, 0.5, 1.0):                    # k = 1: a NaN among large values is still seen
        c = TopK(d, "float64", fraction=fraction)
        for bad in (np.nan, np.inf, -np.inf):
            for count in (1, 3, 40):
                w = v.copy()
                w[np.arange(count) * (d // count)] = bad
                with pytest.raises(NonFiniteInputError, match="^" + re.escape(c.describe()) + ": input contains NaN"):
                    c.encode(w, KEY)
        w = v.copy()
        w[7] = -1e39                                     # finite float64, beyond float32: always kept
        with pytest.raises(NonFiniteInputError, match=re.escape(c.describe()) + ": input values too large"):
            c.encode(w, KEY)


def test_topk_decode_rejects_corrupt_indices():
    c = TopK(1024, "float64", fraction=0.01)             # list of 10 indices of 10 bits
    buf = c.encode(np.arange(1024.0), KEY).buffer.copy()
    buf[4 * c.k:] = 0                                    # ten zeros: not strictly increasing
    with pytest.raises(ValueError, match="corrupt message"):
        c.decode(buf, KEY)
    b = TopK(20, "float64", fraction=0.25)               # bitmap
    buf = b.encode(np.arange(20.0), KEY).buffer.copy()
    buf[-1] ^= 0xF0
    with pytest.raises(ValueError, match="bitmap has"):
        b.decode(buf, KEY)


# ============================================================================================= rand-k

def randk_indices_reference(key: RandomKey, d: int, k: int) -> list[int]:
    """The documented rule, plainly: k = d → all; m = min(k, d − k) ≤ d/20 → m draws without
    replacement (the kept ones, or the dropped ones for k > d/2); else Bernoulli(k/d) with float32
    uniforms, corrected to exactly k by dropping / adding uniformly chosen indices."""
    if k == d:
        return list(range(d))
    gen = key.generator("sparsify")
    m = min(k, d - k)
    if 20 * m <= d:
        picked = {int(i) for i in gen.choice(d, m, replace=False, shuffle=False)}
        return sorted(picked) if m == k else [i for i in range(d) if i not in picked]
    u = gen.random(d, dtype=np.float32)
    kept = [i for i in range(d) if u[i] < np.float32(k / d)]
    rest = [i for i in range(d) if not u[i] < np.float32(k / d)]
    n = len(kept)
    if n > k:
        drop = {kept[int(j)] for j in gen.choice(n, n - k, replace=False, shuffle=False)}
        kept = [i for i in kept if i not in drop]
    elif n < k:
        kept = sorted(kept + [rest[int(j)] for j in gen.choice(d - n, k - n, replace=False, shuffle=False)])
    return kept


@pytest.mark.parametrize("d,fraction", [(1, 0.5), (2, 0.5), (7, 0.3), (8, 0.5), (9, 0.6), (63, 0.1),
                                        (64, 0.9), (65, 0.5), (1000, 0.01), (1000, 0.1), (1000, 0.95),
                                        (1000, 0.3), (1000, 0.75), (1024, 0.5), (1024, 1.0)])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_randk_round_trip_and_shared_indices(d, fraction, scaled, dtype):
    rng = np.random.default_rng(d)
    v = (rng.standard_normal(d) * rng.uniform(0.1, 10, d)).astype(dtype)
    c = RandK(d, dtype, fraction=fraction, scaled=scaled)
    k = k_of(fraction, d)
    idx = randk_indices_reference(KEY, d, k)
    assert c.k == k and np.array_equal(c.indices(KEY), idx) and len(set(idx)) == k
    assert not c.indices(KEY).flags.writeable
    scale = d / k if scaled else 1.0
    buf = c.encode(v, KEY).buffer
    assert buf.nbytes == 4 * k                           # values only: indices are not sent
    assert np.array_equal(buf.view("<f4"), np.array([np.float32(float(v[i]) * scale) for i in idx], np.float32))
    assert bits_equal(c.decode(buf, KEY), sparse_reference(v, idx, dtype, scale))
    # a receiver rebuilds the indices from the SENDER's key; another key means other indices
    rx = RandK(d, dtype, fraction=fraction, scaled=scaled)
    assert bits_equal(rx.decode(buf, KEY), sparse_reference(v, idx, dtype, scale))
    other = RandomKey(KEY.seed, KEY.rank + 1, KEY.step)
    if 0 < k < d and math.comb(d, k) > 1000:
        assert not np.array_equal(rx.indices(other), idx)
        assert not bits_equal(rx.decode(buf, other), rx.decode(buf, KEY))


def test_randk_index_rule_all_branches():
    """Many keys through every branch of the index rule (draw kept, draw dropped, Bernoulli with
    too many and too few), each against the plain reference."""
    d = 200
    bernoulli_counts = set()
    for fraction in (0.05, 0.08, 0.3, 0.5, 0.7, 0.97):
        c = RandK(d, "float32", fraction=fraction)
        for t in range(25):
            key = RandomKey(9, 4, t)
            assert np.array_equal(c.indices(key), randk_indices_reference(key, d, c.k))
            if 20 * min(c.k, d - c.k) > d:
                u = key.generator("sparsify").random(d, dtype=np.float32)
                n = int(np.count_nonzero(u < np.float32(c.k / d)))
                bernoulli_counts.add((n > c.k) - (n < c.k))
    assert bernoulli_counts == {-1, 0, 1} or bernoulli_counts == {-1, 1}


def test_randk_index_cache_is_not_stale():
    c = RandK(100, "float64", fraction=0.1)
    keys = [RandomKey(0, r, 5) for r in range(3)]
    fresh = [randk_indices_reference(key, 100, 10) for key in keys]
    for key, want in zip(keys + keys[::-1], fresh + fresh[::-1]):
        assert np.array_equal(c.indices(key), want)
    v = np.arange(100.0)
    buf = c.encode(v, keys[0]).buffer
    c.indices(keys[1])
    assert np.array_equal(np.flatnonzero(c.decode(buf, keys[0])), fresh[0])


def test_randk_scaled_unbiased_and_unscaled_contraction():
    """10⁴ draws through real per-step keys: scaled rand-k is unbiased; unscaled has
    E‖C(v) − v‖² = (1 − k/d)‖v‖²; every coordinate is kept with probability k/d."""
    d, n = 16, 10_000
    v = np.random.default_rng(6).standard_normal(d).astype(np.float32).astype(np.float64)  # exact on the wire
    scaled, plain = RandK(d, "float64", fraction=0.25, scaled=True), RandK(d, "float64", fraction=0.25)
    k = scaled.k
    q = np.empty((n, d))
    err = np.empty(n)
    kept = np.zeros((n, d))
    for t in range(n):
        key = RandomKey(2, 1, t)
        scaled.decode(scaled.encode(v, key).buffer, key, out=q[t])
        c = plain.decode(plain.encode(v, key).buffer, key)
        err[t] = float(((c - v) ** 2).sum())
        kept[t] = c != 0
    se = q.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(q.mean(axis=0) - v) <= 4 * se)
    assert abs(err.mean() - (1 - k / d) * float(v @ v)) <= 4 * err.std(ddof=1) / math.sqrt(n)
    # uniform k-subsets: each index kept with probability k/d, each pair with k(k−1)/(d(d−1))
    assert np.all(kept.sum(axis=1) == k)
    p = k / d
    assert np.all(np.abs(kept.mean(axis=0) - p) <= 4 * math.sqrt(p * (1 - p) / n))
    pairs = (kept.T @ kept / n)[np.triu_indices(d, 1)]
    p2 = k * (k - 1) / (d * (d - 1))
    assert np.all(np.abs(pairs - p2) <= 4.5 * math.sqrt(p2 * (1 - p2) / n))
    # per instance: scaled is unbiased, unscaled contractive
    assert scaled.unbiased and not scaled.contractive and plain.contractive and not plain.unbiased


def test_randk_nonfinite_anywhere_and_huge(no_warnings):
    d = 100
    v = np.random.default_rng(7).standard_normal(d)
    for table in ({"fraction": 0.05}, {"fraction": 0.05, "scaled": True}):
        c = build_compressor("randk", d, "float64", table)
        sent = set(c.indices(KEY).tolist())
        unsent = next(i for i in range(d) if i not in sent)
        for bad in (np.nan, np.inf):
            w = v.copy()
            w[unsent] = bad                              # not sent, still an error (a diverging run)
            with pytest.raises(NonFiniteInputError, match="^" + re.escape(c.describe()) + ": input contains NaN"):
                c.encode(w, KEY)
        huge = np.full(d, 1e300)                         # sum overflows, entries finite: only sent values matter
        with pytest.raises(NonFiniteInputError, match="input values too large"):
            c.encode(huge, KEY)
    c = RandK(d, "float64", fraction=0.05)
    ok = np.full(d, 1e300)
    ok[sorted(c.indices(KEY))] = 1.0
    assert np.count_nonzero(c.decode(c.encode(ok, KEY).buffer, KEY)) == c.k
    # scaling by d/k can push a float32-representable value beyond the float32 range
    s = RandK(d, "float32", fraction=0.05, scaled=True)
    with pytest.raises(NonFiniteInputError, match="too large"):
        s.encode(np.full(d, 3e37, np.float32), KEY)


@pytest.mark.parametrize("d, k, kind", [(10, 3, "ties"), (1000, 10, "random"), (70_000, 700, "random"),
                                        (70_000, 700, "ties"), (200_000, 1, "random"), (100_000, 50_000, "random"),
                                        (70_000, 700, "spike")])
def test_top_k_indices_is_exact_and_breaks_ties_by_lowest_index(d, k, kind):
    from mpidecent.compression.sparsifiers import top_k_indices

    rng = np.random.default_rng(d + k)
    if kind == "ties":
        a = rng.integers(0, 5, d).astype(np.float64)  # many equal values at the cut
    elif kind == "spike":
        a = np.zeros(d)  # the sample (every 4th entry) sees none of the large ones: the estimate fails
        a[1::4][: k] = 1.0
        a[rng.integers(0, d, 50)] = 0.5
    else:
        a = np.abs(rng.standard_normal(d))
    got = top_k_indices(a, k)
    order = np.lexsort((np.arange(d), -a))  # by value descending, then index ascending
    np.testing.assert_array_equal(got, np.sort(order[:k]))
