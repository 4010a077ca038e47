"""Do all ranks hold the same data set? A cheap fingerprint of what a user's loader returned.

A loader that returns the whole set (``[data] name = "module:load"`` without ``rank`` or
``world_size`` parameters) is called on every rank, and each rank cuts its partition from what it
loaded itself. An unseeded shuffle or a rank-dependent file would silently train the nodes on
inconsistent partitions, so after set-up the ranks compare a fingerprint of the loaded arrays (one
small allgather, ``runner/launch.py``): the shape, dtype and a CRC-32 (``zlib.crc32``) of the
training features and targets and of the test features and targets. Pure: no MPI here. Loaders that
name ``rank`` or ``world_size`` shard the data themselves and are exempt; built-in data sets are
generated from the job's seed and never fingerprinted.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mpidecent import plugins
from mpidecent.learning.data import Dataset

# Arrays up to this size are checksummed whole (zlib.crc32 runs at about 1 GB/s: tens of ms); a
# larger one is checksummed on a strided sample of rows (every k-th row, k = ceil(nbytes /
# FULL_BYTES)), so a fingerprint never reads more than about FULL_BYTES per array. A difference only
# in rows outside the sample then goes unnoticed, but a shuffle or another file moves every row.
FULL_BYTES = 64 << 20

Fingerprint = tuple[tuple[str, tuple[int, ...], str, int], ...]  # (part, shape, dtype, crc32) each


def array_fingerprint(array: np.ndarray) -> tuple[tuple[int, ...], str, int]:
    """(shape, dtype name, CRC-32 of the bytes in C order) of ``array``; the CRC covers every k-th
    row when the array holds more than ``FULL_BYTES`` (see above)."""
    sample = array
    if array.nbytes > FULL_BYTES and array.ndim and array.shape[0] > 1:
        sample = array[:: math.ceil(array.nbytes / FULL_BYTES)]
    crc = zlib.crc32(np.ascontiguousarray(sample).data)
    return tuple(int(s) for s in array.shape), array.dtype.name, crc


def dataset_fingerprint(dataset: Dataset) -> Fingerprint:
    """The fingerprint of a loaded set: its training and test features and targets."""
    train = dataset.num_samples - dataset.fixed_test
    parts = (
        ("train features", dataset.features[:train]),
        ("train targets", dataset.targets[:train]),
        ("test features", dataset.features[train:]),
        ("test targets", dataset.targets[train:]),
    )
    return tuple((name, *array_fingerprint(array)) for name, array in parts)


def is_checked_loader(values: Mapping[str, Any], base_dir: str | None) -> bool:
    """Whether the resolved [data] values name a user's loader whose set the ranks must agree on: an
    import path whose signature names neither ``rank`` nor ``world_size``."""
    if not plugins.is_import_path(values["name"]):
        return False
    loader = plugins.load(values["name"], "[data] name", base_dir)
    return not (
        plugins.names_parameters(loader, "rank") or plugins.names_parameters(loader, "world_size")
    )


def _difference(ours: Sequence[Any], theirs: Sequence[Any]) -> str:
    """What differs between two parts' (part, shape, dtype, crc32), in words."""
    _, shape_a, dtype_a, crc_a = ours
    part, shape_b, dtype_b, crc_b = theirs
    if shape_a != shape_b:
        return f"{part} (shape {shape_a} vs {shape_b})"
    if dtype_a != dtype_b:
        return f"{part} (dtype {dtype_a} vs {dtype_b})"
    return f"{part} (checksum {crc_a:08x} vs {crc_b:08x})"


def mismatch(name: str, gathered: Sequence[Fingerprint | None]) -> str | None:
    """One line naming the loader ``name`` (``[data] name``), the first rank whose fingerprint
    differs from the first rank's and what differs, or None when every rank agrees (``gathered[r]``:
    rank r's fingerprint, None for a rank that loaded nothing)."""
    ranks = [r for r, fingerprint in enumerate(gathered) if fingerprint is not None]
    first = ranks[0] if ranks else 0
    for rank in ranks:
        ours, theirs = gathered[first], gathered[rank]
        assert ours is not None and theirs is not None  # ranks holds the ranks with one
        if theirs == ours:
            continue
        differs = next(_difference(a, b) for a, b in zip(ours, theirs, strict=True) if a != b)
        return (
            f"[data] name = {name!r}: ranks {first} and {rank} loaded different {differs}; every "
            "rank must load the same whole set: seed the shuffle (or read the same file on every "
            "rank), or take rank and world_size parameters and return this rank's shard yourself"
        )
    return None
