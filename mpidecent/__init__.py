"""mpidecent: decentralized, communication-compressed learning on MPI.

Layers (arrows point down only): cli → runner → algorithms → comm / compression / learning / io,
with topology and config as pure foundations. See ``docs/`` and the README.
"""

__version__ = "0.1.0"
