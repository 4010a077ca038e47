"""The numba kernels of ``kernels.py`` (imported only by ``kernels.load()``: numba costs ~0.3 s to
import, which commands that compress nothing should not pay). Module-level functions, so that
numba's on-disk cache (``cache=True``) finds them again in the next process instead of compiling
anew.

What keeps them fast (measured at d = 1e7 float32, issue 13; each rule cost 2–8x where broken):

* Hot loops index with uint64 offsets (``v[vo + np.uint64(j)]``): numba gives a signed index a
  wraparound select (negative → from the end), which LLVM turns into gathers; slices of the arrays
  instead cost reference-count calls per chunk.
* Chunks of 64 entries with a constant trip count: fully unrolled vector code, no remainder loops.
* What LLVM does not vectorise by itself is written in LLVM IR (``@intrinsic``): the eight-lane
  float64 sums of squares, the max |x|, the 64-entry sign-bit select and the top-k candidate
  compress. Plain IEEE operations without fast-math flags (no reassociation, no FMA contraction):
  the same bits as the scalar definition.
* QSGD works on blocks of ~2,048 entries: the block's norms, then its dither in one vector loop,
  then its codes, so memory is read once (the block stays in L1).
* Branch-free: the round-up and sign decisions are random; the float32 round-up of a norm adds 1 to
  its bit pattern instead of calling nextafter behind a branch taken half the time."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from mpidecent.compression.kernels import _M1, _M2, F32_MAX, F64_MAX, PHI, TWO30

if TYPE_CHECKING:
    from numba.core.dispatcher import Dispatcher

_F = TypeVar("_F", bound=Callable[..., object])
_P = ParamSpec("_P")


def _kernel(fn: _F) -> Dispatcher[_F]:
    """``fn`` compiled as an exported kernel: cached on disk, without the GIL, unchecked indices,
    numpy's error model (a division by zero gives inf/NaN instead of raising)."""
    return njit(fn, cache=True, nogil=True, boundscheck=False, error_model="numpy")


def _jitted(fn: Callable[Concatenate[Any, _P], object]) -> Callable[_P, Any]:
    """An ``@intrinsic`` as jitted code calls it (returns ``fn`` itself). Its typing function takes
    the typing context and then numba types; jitted code passes the values only, without the
    context, while numba's stub types the call as the interpreter's (context first, always raising),
    so this declares the jitted call: the arguments after the context, any result."""
    return cast(Callable[_P, Any], fn)


@njit(inline="always")
def _word(key, c):
    z = key + (np.uint64(c) + np.uint64(1)) * PHI
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@_jitted
@intrinsic
def _next_up_if(typingctx, x32, up):
    """x32 (a float32 ≥ +0.0, below inf) or, where ``up``, the next float32 above it: its bit
    pattern + 1, without a branch (the kernels round a norm up about every other bucket, at
    random)."""
    if x32 != types.float32 or up != types.boolean:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.add(builder.bitcast(args[0], i32), builder.zext(args[1], i32))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32, types.boolean), codegen


@njit(inline="always")
def _round_up_f32(x):
    """The smallest float32 ≥ x (0 ≤ x ≤ FLT_MAX): float32(x) is then finite, and the next float32
    above a finite non-negative one is its bit pattern + 1 (np.nextafter, without its branch and
    call)."""
    x32 = np.float32(x)
    return _next_up_if(x32, np.float64(x32) < x)


@_jitted
@intrinsic
def _lane_sumsq(typingctx, arr, start, stop):
    """Σ x_k² over arr[start:stop] in float64 in eight lanes, lane j holding the entries start + j,
    start + 8 + j, … in order (the tail zero-padded: + 0.0 changes no lane), combined as ((l0 + l1)
    + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): independent chains instead of one (an add's latency
    bounds a single sum to ~1.3 ns per entry). ``kernels.lane_sums`` is the reference.

    Written in LLVM IR as one <8 x double> accumulator because LLVM does not vectorise the eight
    scalar chains by itself (0.4–0.55 ns per entry scalar, ~0.15 vectorised). Plain IEEE operations,
    no fast-math flags: no reassociation and no FMA contraction, so every lane is the reference's
    sum to the bit."""
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 1
        and arr.layout == "C"
        and arr.dtype in (types.float32, types.float64)
    ):
        return None
    sig = types.float64(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        a = context.make_array(aty)(context, builder, args[0])
        start, stop = args[1], args[2]
        elt = context.get_data_type(aty.dtype)
        vin = ir.VectorType(elt, 8)
        f64 = ir.DoubleType()
        v8 = ir.VectorType(f64, 8)
        base = builder.gep(a.data, [start])
        n = builder.sub(stop, start)
        groups = builder.ashr(n, ir.Constant(n.type, 3))
        acc = cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8))
        with cgutils.for_range(builder, groups) as loop:
            p = builder.gep(base, [builder.shl(loop.index, ir.Constant(n.type, 3))])
            x = builder.load(builder.bitcast(p, vin.as_pointer()), align=aty.dtype.bitwidth // 8)
            if aty.dtype == types.float32:
                x = builder.fpext(x, v8)
            builder.store(builder.fadd(builder.load(acc), builder.fmul(x, x)), acc)
        rest = builder.sub(n, builder.shl(groups, ir.Constant(n.type, 3)))
        with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(n.type, 0))):
            p = builder.gep(base, [builder.shl(groups, ir.Constant(n.type, 3))])
            tail = cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8))
            with cgutils.for_range(builder, rest) as loop:
                x = builder.load(builder.gep(p, [loop.index]))
                if aty.dtype == types.float32:
                    x = builder.fpext(x, f64)
                builder.store(
                    builder.insert_element(builder.load(tail), builder.fmul(x, x), loop.index), tail
                )
            builder.store(builder.fadd(builder.load(acc), builder.load(tail)), acc)
        lanes = builder.load(acc)
        lane = [builder.extract_element(lanes, ir.Constant(ir.IntType(32), j)) for j in range(8)]
        add = builder.fadd
        return add(
            add(add(lane[0], lane[1]), add(lane[2], lane[3])),
            add(add(lane[4], lane[5]), add(lane[6], lane[7])),
        )

    return sig, codegen


@njit(inline="always")
def _fill_dither(key, start, stop, words):
    """Dither words of entries [start, stop) into ``words`` (uint64 scratch; its uint32 view then
    holds u_start … at index k − 2·(start // 2)). A separate loop, so that both it and the entry
    loop vectorise."""
    c0 = start >> 1
    for c in range(((stop + 1) >> 1) - c0):
        words[c] = _word(key, c0 + c)
    return 2 * c0


@njit(inline="always")
def _quantize(v, vo, dither, do, factor, s, sign_bit, codes, co, n):
    """Codes of n entries of one bucket: codes[co + j] = ξ_j + sign_j·2^L (``sign_bit`` = 2^L as
    float64) for the entries v[vo + j] and their dither integers dither[do + j] (uint32, before the
    shift by 2): the reference's float64 arithmetic, every value an exact small integer, one
    conversion at the end (integer lanes would be int64 in numba: twice the instructions). The
    offsets are uint64: numba gives a signed index a wraparound select (negative → from the end),
    which turns the vector loads into gathers (~8x slower); slices instead cost reference-count
    calls per chunk."""
    for i in range(n):
        j = np.uint64(i)
        x = np.float64(v[vo + j])
        a = abs(x) * factor
        level = a if a < s else s
        low = np.floor(level)
        u = np.float64(
            np.int32(dither[do + j] >> np.uint32(2))
        )  # < 2^30: exact, a signed vector conversion
        xi = low + (1.0 if u < (level - low) * TWO30 else 0.0)
        code = xi + (sign_bit if (x < 0.0) & (xi != 0.0) else 0.0)
        codes[co + j] = np.int32(code)


@_kernel
def qsgd_encode(v, levels, bucket, level_bits, key, norms, out, words, codes):
    """QSGD codes of ``v`` (d,) into ``out`` (packed, MSB-first, width 1 + level_bits) and the
    rounded-up float32 bucket norms into ``norms`` (n_buckets,). ``words`` (uint64, ≥ bucket/2 + 2)
    and ``codes`` (uint16, ≥ bucket) are scratch. Returns False on a non-finite norm or one beyond
    the float32 range (nothing useful is written then).

    Blocks of as many whole buckets as ``words`` holds the dither of (at least one): the norms of
    the block's buckets (independent chains, so their square roots and divisions overlap), the
    block's dither in one long vector loop, then each bucket's codes; the block stays in L1/L2
    between the passes, so memory is read once. Branch-free per entry: the round-up and sign
    decisions are random, so branches on them would be mispredicted half the time."""
    d = v.shape[0]
    width = 1 + level_bits
    s = np.float64(levels)
    sign_bit = np.float64(1 << level_bits)  # the sign bit's value
    dither = words.view(np.uint32)
    per = max(1, 2 * (words.shape[0] - 2) // bucket) * bucket  # entries per block
    acc = np.uint64(0)
    filled = 0
    pos = 0
    start = 0
    b = 0
    while start < d:
        end = min(start + per, d)
        first = b
        k = start
        while k < end:
            stop = min(k + bucket, end)
            r = np.sqrt(_lane_sumsq(v, k, stop))
            if not r <= F32_MAX:
                return False
            norms[b] = _round_up_f32(r)
            b += 1
            k = stop
        offset = start - _fill_dither(key, start, end, words)
        b = first
        k = start
        while k < end:
            stop = min(k + bucket, end)
            r32 = norms[b]
            factor = s / (np.float64(r32) if r32 > 0 else 1.0)
            # Chunks of 64 entries with a constant trip count (fully unrolled, no remainder loops:
            # 25% faster than one loop of a run-time length), then the rest.
            j = k
            while j < stop:
                m = min(64, stop - j)
                vo = np.uint64(j)
                do = np.uint64(j - start + offset)
                if width == 8 and m == 64:
                    _quantize(v, vo, dither, do, factor, s, sign_bit, out, vo, 64)
                elif width == 8:
                    _quantize(v, vo, dither, do, factor, s, sign_bit, out, vo, m)
                elif m == 64:
                    _quantize(v, vo, dither, do, factor, s, sign_bit, codes, np.uint64(j - k), 64)
                else:
                    _quantize(v, vo, dither, do, factor, s, sign_bit, codes, np.uint64(j - k), m)
                j += m
            if width != 8:
                for j in range(stop - k):
                    acc = (acc << np.uint64(width)) | np.uint64(codes[j])
                    filled += width
                    while filled >= 8:
                        filled -= 8
                        out[pos] = np.uint8((acc >> np.uint64(filled)) & np.uint64(0xFF))
                        pos += 1
            b += 1
            k = stop
        start = end
    if filled:
        out[pos] = np.uint8((acc << np.uint64(8 - filled)) & np.uint64(0xFF))
    return True


@njit(inline="always")
def _signed_level(c, level_bits):
    """±ξ of a code (int32: sign bit at ``level_bits``, ξ below it) as an integer: what the decode
    table ``signed_level`` holds, as float64, for every code."""
    negative = c >> level_bits
    level = c & ((np.int32(1) << level_bits) - np.int32(1))
    return (level ^ -negative) + negative


@njit(inline="always")
def _dequantize(codes, out, o, n, level_bits, scale):
    for i in range(n):
        j = o + np.uint64(i)
        out[j] = np.float64(_signed_level(np.int32(codes[j]), level_bits)) * scale


@njit(inline="always")
def _dequantize_tau(codes, out, o, n, level_bits, scale, tau):
    for i in range(n):
        j = o + np.uint64(i)
        out[j] = (np.float64(_signed_level(np.int32(codes[j]), level_bits)) * scale) / tau


@_kernel
def qsgd_decode(codes, norms, bucket, level_bits, signed_level, tau, out):
    """Inverse of ``qsgd_encode``: out_k = signed_level[code_k] · (float64(r32) / s), then / τ when
    τ ≠ 1, cast to out's dtype. ``signed_level`` (2^width float64) maps a code to ±ξ, and the caller
    passes the norms already divided by s (``norms`` float64, one per bucket). Width 8 computes ±ξ
    from the code instead (the same float64 values: an integer, negated as an integer, so never
    −0.0) in a loop over slices, which vectorises; the table's gather and a wraparound-checked index
    do not."""
    d = out.shape[0]
    width = 1 + level_bits
    wmask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    shift = np.int32(level_bits)
    acc = np.uint64(0)
    avail = 0
    pos = 0
    start = 0
    b = 0
    while start < d:
        stop = min(start + bucket, d)
        scale = norms[b]
        if width == 8 and tau == 1.0:
            _dequantize(codes, out, np.uint64(start), stop - start, shift, scale)
        elif width == 8:
            _dequantize_tau(codes, out, np.uint64(start), stop - start, shift, scale, tau)
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


@_jitted
@intrinsic
def _abs_max(typingctx, arr, stop):
    """max |x_k| over arr[0:stop) as float64 (0.0 for none), or NaN when one of them is NaN. One
    vector of running maxima (16 float32 or 8 float64 lanes: a maximum does not depend on the
    order), the last stop mod lanes entries one at a time. LLVM does not vectorise the max of a
    scalar loop by itself (it may not reorder it without fast-math flags, although a maximum is
    exact in any order)."""
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 1
        and arr.layout == "C"
        and arr.dtype in (types.float32, types.float64)
    ):
        return None

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        a = context.make_array(aty)(context, builder, args[0])
        stop = args[1]
        elt = context.get_data_type(aty.dtype)
        lanes = 512 // aty.dtype.bitwidth
        vty = ir.VectorType(elt, lanes)
        mask_ty = ir.VectorType(ir.IntType(1), lanes)
        suffix = "f32" if aty.dtype == types.float32 else "f64"
        fabs_v = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty]), f"llvm.fabs.v{lanes}{suffix}"
        )
        fabs_s = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(elt, [elt]), f"llvm.fabs.{suffix}"
        )
        groups = builder.udiv(stop, ir.Constant(stop.type, lanes))
        acc = cgutils.alloca_once_value(builder, ir.Constant(vty, [0.0] * lanes))
        nan = cgutils.alloca_once_value(builder, ir.Constant(mask_ty, [0] * lanes))
        with cgutils.for_range(builder, groups) as loop:
            ptr = builder.gep(a.data, [builder.mul(loop.index, ir.Constant(stop.type, lanes))])
            x = builder.call(
                fabs_v,
                [
                    builder.load(
                        builder.bitcast(ptr, vty.as_pointer()), align=aty.dtype.bitwidth // 8
                    )
                ],
            )
            m = builder.load(acc)
            builder.store(builder.select(builder.fcmp_ordered(">", x, m), x, m), acc)
            builder.store(builder.or_(builder.load(nan), builder.fcmp_unordered("uno", x, x)), nan)
        best = cgutils.alloca_once_value(builder, ir.Constant(elt, 0.0))
        any_nan = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(1), 0))
        vec, flags = builder.load(acc), builder.load(nan)
        for j in range(lanes):
            x = builder.extract_element(vec, ir.Constant(ir.IntType(32), j))
            m = builder.load(best)
            builder.store(builder.select(builder.fcmp_ordered(">", x, m), x, m), best)
            builder.store(
                builder.or_(
                    builder.load(any_nan),
                    builder.extract_element(flags, ir.Constant(ir.IntType(32), j)),
                ),
                any_nan,
            )
        rest = builder.sub(stop, builder.mul(groups, ir.Constant(stop.type, lanes)))
        tail = builder.gep(a.data, [builder.mul(groups, ir.Constant(stop.type, lanes))])
        with cgutils.for_range(builder, rest) as loop:
            x = builder.call(fabs_s, [builder.load(builder.gep(tail, [loop.index]))])
            m = builder.load(best)
            builder.store(builder.select(builder.fcmp_ordered(">", x, m), x, m), best)
            builder.store(
                builder.or_(builder.load(any_nan), builder.fcmp_unordered("uno", x, x)), any_nan
            )
        result = builder.load(best)
        if aty.dtype == types.float32:
            result = builder.fpext(result, ir.DoubleType())
        return builder.select(
            builder.load(any_nan), ir.Constant(ir.DoubleType(), float("nan")), result
        )

    return types.float64(arr, types.intp), codegen


@njit(inline="always")
def _store_bits(w, out, o, nbytes):
    """The first ``nbytes`` bytes of the little-endian ``w`` into out[o:o + nbytes]: with entry j of
    a chunk at bit j ^ 7 of ``w``, that is the wire's MSB-first order (entry 8i + t: bit 7 − t of
    byte i)."""
    for i in range(nbytes):
        out[np.uint64(o) + np.uint64(i)] = np.uint8((w >> np.uint64(8 * i)) & np.uint64(0xFF))


@njit(inline="always")
def _onebit_chunk(v, vo, dither, do, inverse, m):
    """Sign bits of m ≤ 64 entries (v[vo:], their dither from dither[do:]) as one word, entry j at
    bit j ^ 7."""
    w = np.uint64(0)
    for j in range(m):
        p = (np.float64(v[vo + np.uint64(j)]) * inverse + 1.0) * 0.5
        u = np.float64(np.int32(dither[do + np.uint64(j)] >> np.uint32(2)))
        negative = np.uint64(0) if u < p * TWO30 else np.uint64(1)
        w |= negative << np.uint64(j ^ 7)
    return w


@_kernel
def onebit_encode(v, key, out, words):
    """Stochastic 1-bit: sign bits (1 = −R) of ``v`` into ``out`` (⌈d/8⌉ bytes); returns R32 (the
    rounded-up ‖v‖∞), or −1 for a NaN/inf input or R beyond the float32 range. ``words``: uint64
    scratch of ≥ 34 entries; blocks of 2·(len − 2) entries rounded down to a multiple of 64 get
    their dither in one fill. Two passes over memory (R first), each one vector loop per 64
    entries."""
    d = v.shape[0]
    r = _abs_max(v, d)
    if not r <= F32_MAX:
        return np.float32(-1.0)
    r32 = _round_up_f32(r)
    nbytes = (d + 7) // 8
    if r32 == 0:
        out[:nbytes] = 0
        return r32
    inverse = 1.0 / np.float64(r32)
    dither = words.view(np.uint32)
    per = max(64, (2 * (words.shape[0] - 2)) // 64 * 64)  # entries per dither fill (even: offset 0)
    for start in range(0, d, per):
        end = min(start + per, d)
        _fill_dither(key, start, end, words)
        for k in range(start, end, 64):
            m = min(64, end - k)
            if m == 64:
                w = _onebit_chunk(v, np.uint64(k), dither, np.uint64(k - start), inverse, 64)
                _store_bits(w, out, k >> 3, 8)
            else:
                w = _onebit_chunk(v, np.uint64(k), dither, np.uint64(k - start), inverse, m)
                _store_bits(w, out, k >> 3, (m + 7) >> 3)
    return r32


@njit(inline="always")
def _sign_chunk(v, vo, m):
    w = np.uint64(0)
    for j in range(m):
        w |= np.uint64(v[vo + np.uint64(j)] < 0) << np.uint64(j ^ 7)
    return w


@_kernel
def sign_encode(v, out):
    """Scaled sign: sign bits (1 = negative) into ``out``; returns float32(Σ|v_k| / d), or −1 for a
    non-finite sum or one beyond the float32 range. One pass, 64 entries at a time: the sum must run
    in entry order (one chain of dependent adds, bound by the add's latency), and the sign bits of
    the same entries (a vector loop) execute in its shadow."""
    d = v.shape[0]
    total = 0.0
    for k in range(0, d, 64):
        m = min(64, d - k)
        vo = np.uint64(k)
        if m == 64:
            for j in range(64):
                total += abs(np.float64(v[vo + np.uint64(j)]))
            _store_bits(_sign_chunk(v, vo, 64), out, k >> 3, 8)
        else:
            for j in range(m):
                total += abs(np.float64(v[vo + np.uint64(j)]))
            _store_bits(_sign_chunk(v, vo, m), out, k >> 3, (m + 7) >> 3)
    scale = total / d
    if not scale <= F32_MAX:
        return np.float32(-1.0)
    return np.float32(scale)


@njit(inline="always")
def _signbits_chunk(w, positive, negative, out, o, m):
    for j in range(m):
        out[o + np.uint64(j)] = negative if (w >> np.uint64(j ^ 7)) & np.uint64(1) else positive


@_jitted
@intrinsic
def _signbits64(typingctx, w, positive, negative, out, o):
    """out[o:o + 64] ← negative where entry j's bit (bit j ^ 7 of ``w``) is set, else positive: the
    word's bits reordered to entry order (bitreverse, then bswap: bits within each byte reversed)
    become a <64 x i1> mask for vector selects, instead of 64 shifts."""
    if not (
        isinstance(out, types.Array)
        and out.ndim == 1
        and out.layout == "C"
        and w == types.uint64
        and out.dtype in (types.float32, types.float64)
        and positive == out.dtype
        and negative == out.dtype
    ):
        return None

    def codegen(context, builder, signature, args):
        word, pos, neg, arr, o = args
        aty = signature.args[3]
        a = context.make_array(aty)(context, builder, arr)
        i64 = ir.IntType(64)
        rev = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64]), "llvm.bitreverse.i64"
        )
        swap = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64]), "llvm.bswap.i64"
        )
        mask = builder.bitcast(
            builder.call(swap, [builder.call(rev, [word])]), ir.VectorType(ir.IntType(1), 64)
        )
        elt = context.get_data_type(aty.dtype)
        vty = ir.VectorType(elt, 64)

        def splat(x):  # x in all 64 lanes
            return builder.shuffle_vector(
                builder.insert_element(
                    ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0)
                ),
                ir.Constant(vty, ir.Undefined),
                ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64),
            )

        values = builder.select(mask, splat(neg), splat(pos))
        ptr = builder.bitcast(builder.gep(a.data, [o]), vty.as_pointer())
        builder.store(values, ptr, align=aty.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(w, positive, negative, out, types.intp), codegen


@_kernel
def signbits_decode(bits, a, out):
    """±a from sign bits: a for bit 0, 0.0 − a for bit 1 (out's dtype), branch-free, 64 entries (one
    little-endian word of bits, entry j at bit j ^ 7) at a time."""
    d = out.shape[0]
    table = np.empty(2, dtype=out.dtype)
    table[0] = a
    table[1] = 0.0 - a  # +0.0, not −0.0, for a = 0 (a is a float32 value: both casts are exact)
    positive = table[0]
    negative = table[1]
    for k in range(0, d, 64):
        m = min(64, d - k)
        bo = np.uint64(k >> 3)
        w = np.uint64(0)
        for i in range((m + 7) >> 3):
            w |= np.uint64(bits[bo + np.uint64(i)]) << np.uint64(8 * i)
        if m == 64:
            _signbits64(w, positive, negative, out, k)
        else:
            _signbits_chunk(w, positive, negative, out, np.uint64(k), m)


@njit(inline="always")
def _count_at_least(v, vo, threshold, m):
    """(entries with |x| ≥ threshold, entries that are not finite) among v[vo:vo + m]: a vector
    loop."""
    hits = 0
    bad = 0
    for j in range(m):
        a = abs(np.float64(v[vo + np.uint64(j)]))
        hits += a >= threshold
        bad += not a <= F64_MAX
    return hits, bad


@_jitted
@intrinsic
def _compress8(typingctx, arr, k, threshold, index, value, n):
    """Of the eight entries arr[k:k + 8], those with |x| ≥ threshold (as float64) go, in order, to
    index[n:] (their indices) and value[n:] (|x|); returns n + their count. A vector compress
    (vpcompressq) and two full-width stores: index and value need eight places of room past n."""
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 1
        and arr.layout == "C"
        and arr.dtype in (types.float32, types.float64)
        and index == types.Array(types.intp, 1, "C")
        and value == types.Array(types.float64, 1, "C")
    ):
        return None

    def codegen(context, builder, signature, args):
        vals, k, t, idx, val, n = args
        aty = signature.args[0]
        a = context.make_array(aty)(context, builder, vals)
        ia = context.make_array(signature.args[3])(context, builder, idx)
        va = context.make_array(signature.args[4])(context, builder, val)
        f64, i64, i32 = ir.DoubleType(), ir.IntType(64), ir.IntType(32)
        elt = context.get_data_type(aty.dtype)
        v8, i8x8, m8 = ir.VectorType(f64, 8), ir.VectorType(i64, 8), ir.VectorType(ir.IntType(1), 8)
        x = builder.load(
            builder.bitcast(builder.gep(a.data, [k]), ir.VectorType(elt, 8).as_pointer()),
            align=aty.dtype.bitwidth // 8,
        )
        if aty.dtype == types.float32:
            x = builder.fpext(x, v8)
        fabs = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8, [v8]), "llvm.fabs.v8f64"
        )
        x = builder.call(fabs, [x])

        def splat(value, vty):
            one = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(
                one, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(i32, 8), [0] * 8)
            )

        mask = builder.fcmp_ordered(">=", x, splat(t, v8))
        positions = builder.add(splat(k, i8x8), ir.Constant(i8x8, list(range(8))))
        compress_i = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(i8x8, [i8x8, m8, i8x8]),
            "llvm.experimental.vector.compress.v8i64",
        )
        compress_f = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(v8, [v8, m8, v8]),
            "llvm.experimental.vector.compress.v8f64",
        )
        ci = builder.call(compress_i, [positions, mask, ir.Constant(i8x8, ir.Undefined)])
        cf = builder.call(compress_f, [x, mask, ir.Constant(v8, ir.Undefined)])
        builder.store(ci, builder.bitcast(builder.gep(ia.data, [n]), i8x8.as_pointer()), align=8)
        builder.store(cf, builder.bitcast(builder.gep(va.data, [n]), v8.as_pointer()), align=8)
        i8 = ir.IntType(8)
        ctpop = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i8, [i8]), "llvm.ctpop.i8"
        )
        count = builder.call(ctpop, [builder.bitcast(mask, i8)])
        return builder.add(n, builder.zext(count, n.type))

    return types.intp(arr, types.intp, types.float64, index, value, types.intp), codegen


@_jitted
@intrinsic
def _has_vector_compress(typingctx):
    """True when the code is compiled for AVX-512 (vpcompressq): a compile-time constant. Elsewhere
    LLVM expands a vector compress element by element through memory, slower than a scan."""

    def codegen(context, builder, signature, args):
        features = getattr(context.codegen(), "_tm_features", "") or ""
        return ir.Constant(ir.IntType(1), int("+avx512f" in features.split(",")))

    return types.boolean(), codegen


@njit(inline="always")
def _scan(v, k, m, threshold, index, value, n):
    """The candidates among v[k:k + m] appended at index[n:], value[n:] without a branch per entry
    (each entry is written at the next free place, which advances only for a candidate); returns the
    new n."""
    for j in range(m):
        a = abs(np.float64(v[np.uint64(k + j)]))
        index[np.uint64(n)] = k + j
        value[np.uint64(n)] = a
        n += a >= threshold
    return n


@_kernel
def topk_candidates(v, threshold, index, value):
    """The entries with |v_k| ≥ ``threshold`` in index order: their indices into ``index`` (intp)
    and their |v_k| (float64) into ``value``, as many as fit (less 72 places: room for the vector
    stores); returns how many there are (which may exceed the room), or −1 when v holds NaN or ±inf.
    One pass over memory, 64 entries at a time: a vector loop counts the candidates and the
    non-finite entries, then eight vector compresses (``_compress8``, AVX-512) write the candidates
    without a branch per entry; without AVX-512, the groups of eight that hold a candidate are
    scanned."""
    d = v.shape[0]
    room = index.shape[0] - 72
    n = 0
    full = d - d % 64
    for k in range(0, full, 64):
        hits, bad = _count_at_least(v, np.uint64(k), threshold, 64)
        if bad:
            return -1
        if n > room:
            n += hits
        elif _has_vector_compress():
            for g in range(8):
                n = _compress8(v, k + 8 * g, threshold, index, value, n)
        elif hits:
            for g in range(k, k + 64, 8):
                if _count_at_least(v, np.uint64(g), threshold, 8)[0]:
                    n = _scan(v, g, 8, threshold, index, value, n)
    m = d - full
    hits, bad = _count_at_least(v, np.uint64(full), threshold, m)
    if bad:
        return -1
    if n <= room:
        n = _scan(v, full, m, threshold, index, value, n)
    else:
        n += hits
    return n


@_kernel
def pack_indices(index, width, out):
    """``index`` (ascending, each < 2^width, width ≤ 56) as ``width``-bit codes, MSB-first, into
    ``out`` (⌈k·width/8⌉ bytes, the last one zero-padded): ``packing.pack_codes``' bit stream."""
    acc = np.uint64(0)
    filled = 0
    pos = 0
    w = np.uint64(width)
    for i in range(index.shape[0]):
        acc = (acc << w) | np.uint64(index[i])
        filled += width
        while filled >= 8:
            filled -= 8
            out[pos] = np.uint8((acc >> np.uint64(filled)) & np.uint64(0xFF))
            pos += 1
    if filled:
        out[pos] = np.uint8((acc << np.uint64(8 - filled)) & np.uint64(0xFF))


@_kernel
def topk_decode(codes, width, values, out):
    """Top-k decode from the index list: k ``width``-bit indices (MSB-first) from ``codes``,
    values[i] at index i, zeros everywhere else, in one pass over ``out``. Returns False (out then
    undefined) when the indices are not strictly increasing below d, which a canonical message never
    has."""
    d = out.shape[0]
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    acc = np.uint64(0)
    avail = 0
    pos = 0
    nxt: int | np.intp = 0  # the first entry not written yet
    for i in range(values.shape[0]):
        while avail < width:
            acc = (acc << np.uint64(8)) | np.uint64(codes[pos])
            pos += 1
            avail += 8
        avail -= width
        j = np.intp((acc >> np.uint64(avail)) & mask)
        if j < nxt or j >= d:
            return False
        out[nxt:j] = 0.0
        out[j] = values[i]
        nxt = j + 1
    out[nxt:] = 0.0
    return True
