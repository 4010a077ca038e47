"""mpidecent: decentralized, communication-compressed learning on MPI.

``mpidecent.train(job, model=..., data=...)`` runs a job from your own script under mpirun
(``api.py``); ``mpidecent run`` is the command line.

Layers (imports point down only; ``tests/unit/test_layers.py`` checks it): cli / api → bench /
report → runner → plan → config → algorithms → comm / io → topology / compression / coding / gossip
/ learning → errors, params, rng, plugins. See docs/architecture.md.
"""

from mpidecent.threads import limit_native_threads as _limit_native_threads

__version__ = "0.1.0"

_limit_native_threads()


def __getattr__(name: str):
    """``train`` and ``TrainResult`` load on first use (they bring MPI and torch)."""
    if name in ("train", "TrainResult"):
        from mpidecent import api

        return getattr(api, name)
    raise AttributeError(f"module 'mpidecent' has no attribute {name!r}")
