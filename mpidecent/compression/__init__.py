"""Communication compression: operators with exact, data-independent wire formats (pure numpy).

``build_compressor(name, dim, dtype, table)`` builds an operator from the job's ``[compression]``
table; ``COMPRESSORS`` lists them by name. Never imports mpi4py or torch.
"""

from mpidecent.compression.base import COMPRESSORS, Compressor, Packed, build_compressor, register_compressor
from mpidecent.compression.packing import pack_codes, unpack_codes
from mpidecent.compression.quantizers import QSGD, Identity

__all__ = [
    "COMPRESSORS",
    "Compressor",
    "Identity",
    "Packed",
    "QSGD",
    "build_compressor",
    "pack_codes",
    "register_compressor",
    "unpack_codes",
]
