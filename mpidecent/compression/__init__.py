"""Communication compression: operators with exact, data-independent wire formats (pure numpy).

``build_compressor(name, dim, dtype, table)`` builds an operator from the job's ``[compression]``
table; ``COMPRESSORS`` lists them by name (identity, qsgd, qsgd_contractive, sign, onebit, topk,
randk) and ``COMMON_PARAMS`` the keys every operator has. ``ErrorFeedback`` adds error-feedback
memory to any of them. Never imports mpi4py or torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import numpy as np

from mpidecent.compression.base import (
    COMPRESSORS,
    Compressor,
    Packed,
    contractive_operators,
    register_compressor,
    unbiased_operators,
)
from mpidecent.compression.memory import ErrorFeedback
from mpidecent.compression.packing import pack_codes, unpack_codes
from mpidecent.compression.quantizers import QSGD, Identity, OneBit, QSGDContractive, Sign
from mpidecent.compression.sparsifiers import RandK, TopK
from mpidecent.errors import JobError
from mpidecent.params import Param, resolve

#: Keys of ``[compression]`` that every operator has (the operator's own keys are its ``params``).
COMMON_PARAMS: tuple[Param, ...] = (
    Param("name", str, "identity", "compression operator", choices=tuple(COMPRESSORS)),
    Param(
        "error_feedback",
        bool,
        False,
        "error feedback (memory): send C(v + e), keep e ← (v + e) − decode(message), so a biased "
        "operator "
        '(sign, topk) loses nothing, only delays it; for the algorithms marked "error feedback '
        'available"',
    ),
)
COMMON_KEYS: tuple[str, ...] = tuple(p.name for p in COMMON_PARAMS)


def build_compressor(
    name: str, dim: int, dtype: np.dtype | str, table: Mapping[str, Any]
) -> Compressor:
    """Build the operator ``name`` for vectors of length ``dim`` and state ``dtype`` from the job's
    ``[compression]`` table (the keys every operator has are ignored here). Raises ``JobError``
    naming the key for an unknown operator, an unknown key or a bad value."""
    cls = COMPRESSORS.get(name) if isinstance(name, str) else None
    if cls is None:
        names = sorted(COMPRESSORS)
        close = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise JobError(f"[compression] name must be one of {', '.join(names)}; got {name!r}{hint}")
    values = resolve("compression", cls.params, table, owner=name, ignore=COMMON_KEYS)
    return cls(dim, dtype, **values)


__all__ = [
    "COMMON_KEYS",
    "COMMON_PARAMS",
    "COMPRESSORS",
    "QSGD",
    "Compressor",
    "ErrorFeedback",
    "Identity",
    "OneBit",
    "Packed",
    "QSGDContractive",
    "RandK",
    "Sign",
    "TopK",
    "build_compressor",
    "contractive_operators",
    "pack_codes",
    "register_compressor",
    "unbiased_operators",
    "unpack_codes",
]
