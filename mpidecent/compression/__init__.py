"""Communication compression: operators with exact, data-independent wire formats (pure numpy).

``build_compressor(name, dim, dtype, table)`` builds an operator from the job's ``[compression]``
table; ``COMPRESSORS`` lists them by name (identity, qsgd, qsgd_contractive, sign, onebit, topk,
randk). ``ErrorFeedback`` adds error-feedback memory to any of them. Never imports mpi4py or torch.
"""

from mpidecent.compression.base import COMPRESSORS, Compressor, Packed, build_compressor, register_compressor
from mpidecent.compression.memory import ErrorFeedback
from mpidecent.compression.packing import pack_codes, unpack_codes
from mpidecent.compression.quantizers import QSGD, Identity, OneBit, QSGDContractive, Sign
from mpidecent.compression.sparsifiers import RandK, TopK

__all__ = [
    "COMPRESSORS",
    "Compressor",
    "ErrorFeedback",
    "Identity",
    "OneBit",
    "Packed",
    "QSGD",
    "QSGDContractive",
    "RandK",
    "Sign",
    "TopK",
    "build_compressor",
    "pack_codes",
    "register_compressor",
    "unpack_codes",
]
