"""Fused single-pass kernels for the quantizers' hot paths, and the dither they share with the
reference.

Why: the reference implementations (plain numpy, in ``quantizers.py``) make one full pass over
memory per element-wise operation, about ten per QSGD encode, and drawing float64 uniforms alone
costs a pass; they run at 0.5–1% of ``numpy.copyto``'s bandwidth. The kernels below read each entry
once, quantize it and append its code to the packed buffer in the same loop (numba, compiled on
first use and cached on disk).

Both implementations produce the same bytes for the same input and key
(``tests/unit/test_kernels.py`` checks it bit for bit), because both define every number the same
way:

* **Dither.** Entry k of a message gets the 30-bit integer ``u_k``: the low (entry 2c) or high
  (entry 2c + 1) half of ``w_c = mix64(key64 + (c + 1)·φ)`` (φ = 0x9E3779B97F4A7C15, ``mix64`` the
  SplitMix64 finalizer, all arithmetic mod 2^64), shifted right by 2 — a counter-based stream, so
  any entry's number is known without generating the ones before it. ``key64`` comes from
  ``RandomKey.word(purpose)``. A Bernoulli(p) draw is ``u_k < p·2^30`` (in float64, exact): its
  probability is ⌈p·2^30⌉/2^30, within 2^-30 ≈ 1e-9 of p, below the float32 resolution of the
  inputs. (30 bits, not 32: integers below 2^31 convert to float64 in vector instructions on x86
  without AVX-512.)
* **Sums.** Bucket norms Σu² are accumulated in float64 in eight interleaved lanes combined in a
  fixed tree (``lane_sums``; one chain would be bound by the latency of an add), the ℓ1 norm of
  ``sign`` in entry order (``cumsum`` in the reference), so the float32 headers agree to the bit.

``topk`` uses three more: the candidate pass (entries at or above the sampled threshold, with their
|v|, in one pass over the input instead of a float64 |v| array and three passes), the index-list
packing and a decode that writes the values and the zeros between them in one pass;
``sparsifiers.top_k_indices`` stays the reference, and the selection among the candidates is shared,
so the indices are the same.

``load()`` returns None when numba is not importable (or ``MPIDECENT_KERNELS=reference``); the
quantizers then use their numpy paths. Every kernel takes flat contiguous arrays and allocates
nothing.
"""

from __future__ import annotations

import functools
import os

import numpy as np

PHI = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
TWO30 = 1073741824.0  # 2^30: the dither's range
F32_MAX = float(np.finfo(np.float32).max)
F64_MAX = float(np.finfo(np.float64).max)


def dither_words(key64: int, count: int) -> np.ndarray:
    """Reference: the dither integers u_0 … u_{count−1} (uint32, each < 2^30) of a message keyed by
    ``key64``."""
    c = np.arange(1, (count + 1) // 2 + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key64) + c * PHI
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    # little-endian: the low half of w_c is word 2c, the high half word 2c + 1
    return z.astype("<u8").view("<u4")[:count] >> np.uint32(2)


def lane_sums(squares: np.ndarray) -> np.ndarray:
    """Reference of the kernels' bucket sums: ``squares`` (rows, width) float64 → (rows,), each row
    summed in eight lanes (lane j: columns j, j + 8, … in order; the row zero-padded to a multiple
    of 8), the lanes combined as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))."""
    rows, width = squares.shape
    padded = np.zeros((rows, -(-width // 8) * 8))
    padded[:, :width] = squares
    lanes = np.cumsum(padded.reshape(rows, -1, 8), axis=1)[
        :, -1, :
    ]  # (rows, 8), each lane in order
    return ((lanes[:, 0] + lanes[:, 1]) + (lanes[:, 2] + lanes[:, 3])) + (
        (lanes[:, 4] + lanes[:, 5]) + (lanes[:, 6] + lanes[:, 7])
    )


# Below this length the numpy reference takes microseconds, less than loading compiled code into a
# new process (numba's import and the cached kernels' load: ~0.5 s): short vectors stay on the
# reference.
MIN_DIM = 8192


def choose(fast: bool | None, dim: int) -> dict | None:
    """The kernels a compressor of length ``dim`` uses: None (the numpy reference) for
    ``fast=False``, or for ``fast=None`` (automatic) when ``dim < MIN_DIM``; else ``load()``."""
    if fast is False or (fast is None and dim < MIN_DIM):
        return None
    return load()


@functools.cache
def load() -> dict | None:
    """The compiled kernels by name, or None when numba is missing or
    ``MPIDECENT_KERNELS=reference`` (the quantizers then run their numpy reference). Compiled on
    first use, cached on disk."""
    if os.environ.get("MPIDECENT_KERNELS", "fast") == "reference":
        return None
    try:
        from mpidecent.compression import _jit
    except ImportError:
        return None
    return {
        name: getattr(_jit, name)
        for name in (
            "qsgd_encode",
            "qsgd_decode",
            "onebit_encode",
            "sign_encode",
            "signbits_decode",
            "topk_candidates",
            "pack_indices",
            "topk_decode",
        )
    }
