"""The numba kernels of ``kernels.py`` (imported only by ``kernels.load()``: numba costs ~0.3 s to import,
which commands that compress nothing should not pay). Module-level functions, so that numba's on-disk
cache (``cache=True``) finds them again in the next process instead of compiling anew."""

import numpy as np
from numba import njit

from mpidecent.compression.kernels import _M1, _M2, F32_MAX, PHI, TWO30

OPTIONS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")


@njit(inline="always")
def _word(key, c):
    z = key + (np.uint64(c) + np.uint64(1)) * PHI
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _round_up_f32(x):
    """The smallest float32 ≥ x (0 ≤ x ≤ FLT_MAX)."""
    x32 = np.float32(x)
    if np.float64(x32) < x:
        x32 = np.nextafter(x32, np.float32(np.inf))
    return x32


@njit(inline="always")
def _bucket_norm(v, start, stop):
    """Σ v_k² over [start, stop) in float64 in eight lanes, lane j holding the entries start + j, start + 8 + j,
    … in order, combined as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): independent chains instead of
    one (an add's latency bounds a single sum to ~1.3 ns per entry). ``kernels.lane_sums`` is the reference."""
    l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = 0.0
    k = start
    while k + 8 <= stop:
        x0 = np.float64(v[k])
        x1 = np.float64(v[k + 1])
        x2 = np.float64(v[k + 2])
        x3 = np.float64(v[k + 3])
        x4 = np.float64(v[k + 4])
        x5 = np.float64(v[k + 5])
        x6 = np.float64(v[k + 6])
        x7 = np.float64(v[k + 7])
        l0 += x0 * x0
        l1 += x1 * x1
        l2 += x2 * x2
        l3 += x3 * x3
        l4 += x4 * x4
        l5 += x5 * x5
        l6 += x6 * x6
        l7 += x7 * x7
        k += 8
    rest = stop - k  # the tail goes to lanes 0 … rest − 1, as the zero-padded reference
    if rest > 0:
        x = np.float64(v[k])
        l0 += x * x
    if rest > 1:
        x = np.float64(v[k + 1])
        l1 += x * x
    if rest > 2:
        x = np.float64(v[k + 2])
        l2 += x * x
    if rest > 3:
        x = np.float64(v[k + 3])
        l3 += x * x
    if rest > 4:
        x = np.float64(v[k + 4])
        l4 += x * x
    if rest > 5:
        x = np.float64(v[k + 5])
        l5 += x * x
    if rest > 6:
        x = np.float64(v[k + 6])
        l6 += x * x
    return ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))


@njit(inline="always")
def _fill_dither(key, start, stop, words):
    """Dither words of entries [start, stop) into ``words`` (uint64 scratch; its uint32 view then holds
    u_start … at index k − 2·(start // 2)). A separate loop, so that both it and the entry loop vectorise."""
    c0 = start >> 1
    for c in range(((stop + 1) >> 1) - c0):
        words[c] = _word(key, c0 + c)
    return 2 * c0


@njit(**OPTIONS)
def qsgd_encode(v, levels, bucket, level_bits, key, norms, out, words, codes):
    """QSGD codes of ``v`` (d,) into ``out`` (packed, MSB-first, width 1 + level_bits) and the
    rounded-up float32 bucket norms into ``norms`` (n_buckets,). ``words`` (uint64, ≥ bucket/2 + 1) and
    ``codes`` (uint16, ≥ bucket) are scratch. Returns False on a non-finite norm or one beyond the float32
    range (nothing useful is written then). Branch-free per entry: the round-up and sign decisions are
    random, so branches on them would be mispredicted half the time."""
    d = v.shape[0]
    width = 1 + level_bits
    s = np.float64(levels)
    dither = words.view(np.uint32)
    acc = np.uint64(0)
    filled = 0
    pos = 0
    start = 0
    b = 0
    while start < d:
        stop = min(start + bucket, d)
        r = np.sqrt(_bucket_norm(v, start, stop))
        if not r <= F32_MAX:
            return False
        r32 = _round_up_f32(r)
        norms[b] = r32
        factor = s / (np.float64(r32) if r32 > 0 else 1.0)
        first = _fill_dither(key, start, stop, words)
        n = stop - start
        for j in range(n):
            x = np.float64(v[start + j])
            a = abs(x) * factor
            level = a if a < s else s
            low = np.floor(level)
            u = np.float64(dither[start + j - first] >> np.uint32(2))
            xi = low + (1.0 if u < (level - low) * TWO30 else 0.0)
            sign = 1.0 if (x < 0.0) and (xi != 0.0) else 0.0
            codes[j] = np.uint16(xi + sign * (1 << level_bits))
        if width == 8:
            for j in range(n):
                out[start + j] = np.uint8(codes[j])
            pos = stop
        else:
            for j in range(n):
                acc = (acc << np.uint64(width)) | np.uint64(codes[j])
                filled += width
                while filled >= 8:
                    filled -= 8
                    out[pos] = np.uint8((acc >> np.uint64(filled)) & np.uint64(0xFF))
                    pos += 1
        start = stop
        b += 1
    if filled:
        out[pos] = np.uint8((acc << np.uint64(8 - filled)) & np.uint64(0xFF))
    return True


@njit(**OPTIONS)
def qsgd_decode(codes, norms, bucket, level_bits, signed_level, tau, out):
    """Inverse of ``qsgd_encode``: out_k = signed_level[code_k] · (float64(r32) / s), then / τ when τ ≠ 1,
    cast to out's dtype. ``signed_level`` (2^width float64) maps a code to ±ξ, and the caller passes the
    norms already divided by s (``norms`` float64, one per bucket)."""
    d = out.shape[0]
    width = 1 + level_bits
    wmask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    acc = np.uint64(0)
    avail = 0
    pos = 0
    start = 0
    b = 0
    while start < d:
        stop = min(start + bucket, d)
        scale = norms[b]
        if width == 8 and tau == 1.0:
            for k in range(start, stop):
                out[k] = signed_level[codes[k]] * scale
        elif width == 8:
            for k in range(start, stop):
                out[k] = (signed_level[codes[k]] * scale) / tau
        else:
            for k in range(start, stop):
                while avail < width:
                    acc = (acc << np.uint64(8)) | np.uint64(codes[pos])
                    pos += 1
                    avail += 8
                avail -= width
                value = signed_level[(acc >> np.uint64(avail)) & wmask] * scale
                out[k] = value if tau == 1.0 else value / tau
        start = stop
        b += 1


@njit(**OPTIONS)
def onebit_encode(v, key, out, words):
    """Stochastic 1-bit: sign bits (1 = −R) of ``v`` into ``out`` (⌈d/8⌉ bytes); returns R32 (the
    rounded-up ‖v‖∞), or −1 for a NaN/inf input or R beyond the float32 range. ``words``: uint64
    scratch of ≥ 33 entries."""
    d = v.shape[0]
    r = 0.0
    nan = False
    for k in range(d):
        a = abs(np.float64(v[k]))
        r = max(r, a)
        nan |= a != a
    if nan or not r <= F32_MAX:
        return np.float32(-1.0)
    r32 = _round_up_f32(r)
    nbytes = (d + 7) // 8
    if r32 == 0:
        out[:nbytes] = 0
        return r32
    inverse = 1.0 / np.float64(r32)
    dither = words.view(np.uint32)
    block = 64  # entries per dither fill (8 bytes of output)
    for start in range(0, d, block):
        stop = min(start + block, d)
        first = _fill_dither(key, start, stop, words)
        for byte in range(start >> 3, (stop + 7) >> 3):
            bits = 0
            for j in range(8):
                k = min(byte * 8 + j, d - 1)  # past the end: a valid index, its bit masked below
                p = (np.float64(v[k]) * inverse + 1.0) * 0.5
                u = np.float64(dither[k - first] >> np.uint32(2))
                negative = 0 if u < p * TWO30 else 1
                bits |= (negative & (byte * 8 + j < d)) << (7 - j)
            out[byte] = np.uint8(bits)
    return r32


@njit(**OPTIONS)
def sign_encode(v, out):
    """Scaled sign: sign bits (1 = negative) into ``out``; returns float32(Σ|v_k| / d), or −1 for a
    non-finite sum or one beyond the float32 range."""
    d = v.shape[0]
    total = 0.0
    for k in range(d):
        total += abs(np.float64(v[k]))
    scale = total / d
    if not scale <= F32_MAX:
        return np.float32(-1.0)
    full = d // 8
    for byte in range(full):
        bits = np.uint64(0)
        for j in range(8):
            bits |= np.uint64(v[byte * 8 + j] < 0) << np.uint64(7 - j)
        out[byte] = np.uint8(bits)
    if d > full * 8:
        bits = np.uint64(0)
        for j in range(d - full * 8):
            bits |= np.uint64(v[full * 8 + j] < 0) << np.uint64(7 - j)
        out[full] = np.uint8(bits)
    return np.float32(scale)


@njit(**OPTIONS)
def signbits_decode(bits, a, out):
    """±a from sign bits: a for bit 0, 0.0 − a for bit 1 (out's dtype), by table lookup (no branch)."""
    d = out.shape[0]
    table = np.empty(2, dtype=out.dtype)
    table[0] = a
    table[1] = 0.0 - a  # +0.0, not −0.0, for a = 0 (a is a float32 value: both casts are exact)
    for k in range(d):
        out[k] = table[(bits[k >> 3] >> (7 - (k & 7))) & 1]
