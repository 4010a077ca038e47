"""Asynchronous gossip without MPI: version vectors and staleness (``versions``), the seeded logical
clock (``clock``), delta semantics of a round (``rounds``) and the discrete-event simulator
(``simulator``). The MPI engine (``algorithms/async_gossip.py`` + ``comm/window.py``) uses the first
three; nothing here imports mpi4py."""
