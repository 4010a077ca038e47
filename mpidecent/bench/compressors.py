"""Compressor throughput: encode and decode GB/s (float32 input) of every operator, as a ratio to
``numpy.copyto`` of the same array measured in the same run (one core's memory bandwidth).

Single process, no MPI. Each timing is the best of ``repeats`` runs (the least disturbed by other
processes on a shared machine); memcpy is timed between the operators, so a ratio compares numbers
taken seconds apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from mpidecent.compression import COMPRESSORS
from mpidecent.rng import RandomKey

# (label, operator, parameters, goal as a fraction of memcpy or None)
OPERATORS: tuple[tuple[str, str, dict, float | None], ...] = (
    ("identity float32", "identity", {"precision": "float32"}, None),
    ("qsgd 8-bit (s=127, B=64)", "qsgd", {"levels": 127, "bucket": 64}, 0.25),
    ("qsgd 6-bit (s=16, B=64)", "qsgd", {"levels": 16, "bucket": 64}, None),
    ("qsgd_contractive b=4", "qsgd_contractive", {"bits": 4, "bucket": 0}, None),
    ("onebit (stochastic 1-bit)", "onebit", {}, 0.25),
    ("sign (scaled 1-bit)", "sign", {}, 0.25),
    ("topk 1%", "topk", {"fraction": 0.01}, 0.15),
    ("randk 1%", "randk", {"fraction": 0.01}, None),
)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls, in seconds (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(dims: Sequence[int], repeats: int = 7, fast: bool | None = None) -> list[dict]:
    """One row per (operator, d): seconds and GB/s (float32 input bytes per second) of encode,
    decode and both, memcpy's GB/s, the ratio of encode+decode to memcpy, the same ratio for the
    numpy reference of operators that have a kernel (``reference_ratio``), and the goal."""
    rows = []
    for d in dims:
        v = np.random.default_rng(d).standard_normal(d).astype(np.float32)
        copy = np.empty_like(v)
        out = np.empty_like(v)
        for label, name, params, goal in OPERATORS:
            cls = COMPRESSORS[name]
            extra = (
                {"fast": fast}
                if name in ("qsgd", "qsgd_contractive", "onebit", "sign", "topk")
                else {}
            )
            compressor = cls(d, np.float32, **params, **extra)
            buf = np.zeros(compressor.nbytes, dtype=np.uint8)
            key = RandomKey(0, 0, 1)
            memcpy = best_of(partial(np.copyto, copy, v), repeats)
            encode = best_of(partial(compressor.encode, v, key, out=buf), repeats)
            decode = best_of(partial(compressor.decode, buf, key, out=out), repeats)
            reference_ratio = None
            if getattr(compressor, "kernels", None) is not None:
                # the numpy reference, side by side
                plain = cls(d, np.float32, **params, fast=False)
                fewer = max(2, repeats // 3)
                plain_encode = best_of(partial(plain.encode, v, key, out=buf), fewer)
                plain_decode = best_of(partial(plain.decode, buf, key, out=out), fewer)
                reference_ratio = memcpy / (plain_encode + plain_decode)
            rows.append(
                {
                    "operator": label,
                    "name": name,
                    "params": params,
                    "d": d,
                    "bits": compressor.bits,
                    "encode_s": encode,
                    "decode_s": decode,
                    "memcpy_s": memcpy,
                    "encode_GBps": v.nbytes / encode / 1e9,
                    "decode_GBps": v.nbytes / decode / 1e9,
                    "memcpy_GBps": v.nbytes / memcpy / 1e9,
                    "ratio": memcpy / (encode + decode),
                    "goal": goal,
                    "reference_ratio": reference_ratio,
                    "kernels": bool(getattr(compressor, "kernels", None) is not None),
                }
            )
    return rows


# What bounds each operator with a goal at d = 1e7 (measured; docs/performance.md, "What limits").
LIMITS = {
    "qsgd": "the dither hash and quantize per entry (scalar 64-bit multiplies without AVX-512)",
    "onebit": "the dither hash per entry",
    "sign": "the ℓ1 scale summed in entry order: one chain of dependent float64 adds",
    "topk": "the candidate pass over |v| (a scan without AVX-512's vector compress)",
}


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = [
        "operator",
        "d",
        "encode GB/s",
        "decode GB/s",
        "memcpy GB/s",
        "enc+dec / memcpy",
        "numpy reference",
        "goal",
        "met",
    ]
    body = []
    for r in rows:
        # The goals are about the memory-bound case (d ≥ 1e7); a smaller array sits in cache, where
        # memcpy runs several times faster and every ratio looks worse.
        goal = r["goal"] if r["d"] >= 10_000_000 else None
        body.append(
            [
                r["operator"],
                f"{r['d']:.0e}",
                f"{r['encode_GBps']:.2f}",
                f"{r['decode_GBps']:.2f}",
                f"{r['memcpy_GBps']:.1f}",
                f"{r['ratio']:.3f}",
                "-" if r.get("reference_ratio") is None else f"{r['reference_ratio']:.3f}",
                "-" if goal is None else f"≥ {goal}",
                "-"
                if goal is None
                else (
                    "yes"
                    if r["ratio"] >= goal
                    else f"NO: {r['ratio']:.2f} < {goal}; {LIMITS.get(r['name'], '')}"
                ),
            ]
        )
    return head, body
