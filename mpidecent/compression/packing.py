"""Packing fixed-width unsigned codes into bytes, MSB-first, with no padding between codes.

Layout: code ``i`` occupies bits ``[i·w, (i+1)·w)`` of the bit stream, most significant bit first,
and bit ``j`` of the stream is bit ``7 − j % 8`` of byte ``j // 8`` (the ``np.packbits``
convention). The last byte is zero-padded, so ``count`` codes of width ``w`` take exactly
``ceil(count·w / 8)`` bytes.

Every path is vectorised; the only Python loops run over the (at most 8) code positions inside one
group of bytes, never over codes. Paths, fastest first:

* width 1 — ``np.packbits`` directly;
* width 8 / 16 — a plain (big-endian) integer copy;
* width 2, 4 — ``8/w`` codes per byte combined with shift-or in ``uint8``;
* widths whose ``lcm(w, 8) ≤ 64`` (3, 5, 6, 7, 10, 12, 14) — ``lcm(w, 8)/w`` codes are shift-or'ed
  into one ``uint32``/``uint64`` that yields exactly ``lcm(w, 8)/8`` whole bytes (QSGD's default s =
  16 uses width 6: 4 codes in 3 bytes);
* the rest (9, 11, 13, 15) and the tails of the paths above — a ``(count, w)`` bit matrix through
  ``np.unpackbits`` / ``np.packbits``.

Tails (the last ``count mod group`` codes) always start on a byte boundary, so they can be packed
separately by the bit-matrix path without shifting anything.
"""

from __future__ import annotations

import math

import numpy as np

MAX_WIDTH = 16


def packed_nbytes(count: int, width: int) -> int:
    """Bytes needed for ``count`` codes of ``width`` bits: ``ceil(count·width / 8)``."""
    return (count * width + 7) // 8


def code_dtype(width: int) -> np.dtype:
    """The unsigned dtype ``unpack_codes`` returns for ``width``: uint8 up to 8 bits, else
    uint16."""
    return np.dtype(np.uint8) if width <= 8 else np.dtype(np.uint16)


def _check_width(width: int) -> None:
    if not isinstance(width, (int, np.integer)) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"code width must be an integer in 1..{MAX_WIDTH}, got {width!r}")


def _group(width: int) -> tuple[int, int]:
    """(codes, bytes) per smallest byte-aligned group of codes: lcm(width, 8) bits."""
    bits = math.lcm(width, 8)
    return bits // width, bits // 8


# --------------------------------------------------------------------------------------------- pack


def _pack_bitmatrix(codes: np.ndarray, width: int, out: np.ndarray) -> None:
    """General path: codes → (n, 16) bit matrix via their big-endian uint16 bytes → keep w
    columns."""
    n = codes.shape[0]
    if n == 0:
        return
    # (un)packbits on flat arrays: the axis=1 variants are an order of magnitude slower.
    be = codes.astype(">u2").view(np.uint8)
    bits = np.unpackbits(be).reshape(n, MAX_WIDTH)[:, MAX_WIDTH - width :]  # (n, width), MSB first
    out[...] = np.packbits(bits.reshape(-1))  # packbits zero-pads the last byte


def _pack_subbyte(codes: np.ndarray, width: int, out: np.ndarray) -> int:
    """Widths 2 and 4: 8/w codes per byte, shift-or in uint8. Returns codes consumed."""
    per = 8 // width
    full = codes.shape[0] // per
    head = codes[: full * per].reshape(full, per)
    acc = out[:full]
    np.left_shift(head[:, 0], 8 - width, out=acc, casting="unsafe")
    for j in range(1, per):  # loop over positions within a byte (≤ 4), not over codes
        acc |= (head[:, j] << (8 - width * (j + 1))).astype(np.uint8, copy=False)
    return full * per


def _acc_dtype(group_bytes: int) -> np.dtype:
    """Narrowest unsigned accumulator holding one group: uint32 (faster) up to 4 bytes, else
    uint64."""
    return np.dtype(np.uint32) if group_bytes <= 4 else np.dtype(np.uint64)


def _pack_grouped(codes: np.ndarray, width: int, out: np.ndarray) -> int:
    """lcm(w, 8) ≤ 64: g codes → one integer → its low gb bytes, big-endian. Returns codes
    consumed."""
    g, gb = _group(width)
    full = codes.shape[0] // g
    if full == 0:
        return 0
    acc_t = _acc_dtype(gb)
    head = codes[: full * g].reshape(full, g)
    acc = np.empty(full, dtype=acc_t)
    tmp = np.empty(full, dtype=acc_t)
    np.left_shift(head[:, 0], width * (g - 1), out=acc, dtype=acc_t, casting="unsafe")
    for j in range(1, g):  # loop over positions within a group (≤ 8), not over codes
        np.left_shift(head[:, j], width * (g - 1 - j), out=tmp, dtype=acc_t, casting="unsafe")
        acc |= tmp
    size = acc_t.itemsize
    be = acc.astype(acc_t.newbyteorder(">")).view(np.uint8).reshape(full, size)
    out[: full * gb].reshape(full, gb)[...] = be[:, size - gb :]
    return full * g


def pack_codes(codes: np.ndarray, width: int, out: np.ndarray, *, check: bool = True) -> None:
    """Pack ``codes`` (1-D unsigned integers, each < 2**width) into ``out``, MSB-first, no gaps.

    ``codes``: shape (n,), any unsigned (or non-negative signed) integer dtype; ``width``: bits per
    code, 1..16; ``out``: uint8, shape (ceil(n·width/8),), C-contiguous; every byte of it is written
    (pad bits of the last byte are zero). Raises ValueError for a bad width, a wrong-size ``out`` or
    a code that does not fit in ``width`` bits (which would otherwise silently corrupt its
    neighbours); callers that guarantee the range by construction may skip that O(n) check with
    ``check=False``.
    """
    _check_width(width)
    codes = np.asarray(codes)
    if codes.ndim != 1 or codes.dtype.kind not in "ui":
        raise ValueError(
            f"codes must be a 1-D integer array, got shape {codes.shape} dtype {codes.dtype}"
        )
    n = codes.shape[0]
    need = packed_nbytes(n, width)
    if out.dtype != np.uint8 or out.ndim != 1 or out.shape[0] != need or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a contiguous 1-D uint8 array of {need} bytes for {n} codes of "
            f"{width} bits, got shape {out.shape} dtype {out.dtype}"
        )
    if n == 0:
        return
    # One cheap pass; skipped when the dtype cannot hold an out-of-range code.
    if check and (codes.dtype.itemsize * 8 > width or codes.dtype.kind == "i"):
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >> width:
            raise ValueError(f"codes must lie in [0, 2**{width}), got values in [{lo}, {hi}]")

    if width == 1:
        out[...] = np.packbits(codes.astype(np.uint8, copy=False))
        return
    if width == 8:
        np.copyto(out, codes, casting="unsafe")
        return
    if width == 16:
        np.copyto(out.view(">u2"), codes, casting="unsafe")
        return
    if width in (2, 4):
        used = _pack_subbyte(codes.astype(np.uint8, copy=False), width, out)
    elif math.lcm(width, 8) <= 64:
        used = _pack_grouped(codes, width, out)
    else:
        used = 0
    if used < n:
        # The consumed codes end on a byte boundary, so the tail is packed independently.
        _pack_bitmatrix(codes[used:], width, out[packed_nbytes(used, width) :])


# ------------------------------------------------------------------------------------------- unpack


def _unpack_bitmatrix(buf: np.ndarray, width: int, out: np.ndarray) -> None:
    """General path: bits → (n, 16) matrix left-padded with zeros → packbits → big-endian uint16."""
    n = out.shape[0]
    if n == 0:
        return
    bits = np.unpackbits(buf, count=n * width).reshape(n, width)
    wide = np.zeros((n, MAX_WIDTH), dtype=np.uint8)
    wide[:, MAX_WIDTH - width :] = bits
    np.copyto(out, np.packbits(wide.reshape(-1)).view(">u2"), casting="unsafe")


def _unpack_subbyte(buf: np.ndarray, width: int, out: np.ndarray) -> int:
    per = 8 // width
    full = out.shape[0] // per
    head = out[: full * per].reshape(full, per)
    src = buf[:full]
    mask = (1 << width) - 1
    for j in range(per):  # positions within a byte (≤ 4)
        np.bitwise_and(src >> (8 - width * (j + 1)), mask, out=head[:, j], casting="unsafe")
    return full * per


def _unpack_grouped(buf: np.ndarray, width: int, out: np.ndarray) -> int:
    g, gb = _group(width)
    full = out.shape[0] // g
    if full == 0:
        return 0
    acc_t = _acc_dtype(gb)
    src = buf[: full * gb].reshape(full, gb)
    acc = np.empty(full, dtype=acc_t)
    tmp = np.empty(full, dtype=acc_t)
    # Assemble each group's big-endian bytes into one integer by shift-or (no zero-padded copy).
    np.left_shift(src[:, 0], 8 * (gb - 1), out=acc, dtype=acc_t, casting="unsafe")
    for i in range(1, gb):  # bytes within a group (≤ 7)
        np.left_shift(src[:, i], 8 * (gb - 1 - i), out=tmp, dtype=acc_t, casting="unsafe")
        acc |= tmp
    head = out[: full * g].reshape(full, g)
    mask = (1 << width) - 1
    for j in range(g):  # positions within a group (≤ 8)
        np.right_shift(acc, width * (g - 1 - j), out=tmp)
        np.bitwise_and(tmp, mask, out=head[:, j], casting="unsafe")
    return full * g


def unpack_codes(
    buf: np.ndarray, width: int, count: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Inverse of ``pack_codes``: read ``count`` codes of ``width`` bits from ``buf``.

    ``buf``: uint8, 1-D, at least ceil(count·width/8) bytes (extra bytes are ignored). Returns shape
    (count,) of ``code_dtype(width)`` (uint8 for width ≤ 8, else uint16), written into ``out`` when
    given (which must have exactly that shape and dtype).
    """
    _check_width(width)
    need = packed_nbytes(count, width)
    if buf.dtype != np.uint8 or buf.ndim != 1 or buf.shape[0] < need:
        raise ValueError(
            f"buf must be a 1-D uint8 array of at least {need} bytes for {count} codes of "
            f"{width} bits, got shape {buf.shape} dtype {buf.dtype}"
        )
    dt = code_dtype(width)
    if out is None:
        out = np.empty(count, dtype=dt)
    elif out.dtype != dt or out.shape != (count,):
        raise ValueError(
            f"out must have shape ({count},) and dtype {dt}, got {out.shape} {out.dtype}"
        )
    if count == 0:
        return out
    buf = buf[:need]

    if width == 1:
        out[...] = np.unpackbits(buf, count=count)
        return out
    if width == 8:
        out[...] = buf
        return out
    if width == 16:
        np.copyto(out, buf.view(">u2"), casting="unsafe")
        return out
    if width in (2, 4):
        used = _unpack_subbyte(buf, width, out)
    elif math.lcm(width, 8) <= 64:
        used = _unpack_grouped(buf, width, out)
    else:
        used = 0
    if used < count:
        _unpack_bitmatrix(buf[packed_nbytes(used, width) :], width, out[used:])
    return out
