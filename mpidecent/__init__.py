"""mpidecent: decentralized, communication-compressed learning on MPI.

Layers (imports point down only; ``tests/unit/test_layers.py`` checks it): cli → bench / report →
runner → plan → config → algorithms → comm / io → topology / compression / coding / gossip / learning →
errors, params, rng. See the README's architecture section.
"""

from mpidecent.threads import limit_native_threads as _limit_native_threads

__version__ = "0.1.0"

_limit_native_threads()
