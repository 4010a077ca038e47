"""Communication topologies: graphs as plain edge lists, mixing weights kept separate from wiring.

Pure numpy (never imports mpi4py or torch), so everything here is testable in one process.

- ``graphs``: ``Graph`` (directed edge list ``(src, dst)``, row = receiver in ``adjacency()``),
  the families (ring, exponential, torus, complete, star, erdos_renyi, chord_ring, file), the
  ``KINDS`` registry of ``[topology] kind`` values and their keys, and ``build_graph``.
- ``weights``: mixing matrices (``W[i, j]`` = weight receiver ``i`` gives sender ``j``),
  stochasticity checks and the spectral gap.
- ``validate``: strong / weak connectivity and phrases for error messages.
"""

from mpidecent.topology.graphs import (
    CHORDS_DEFAULT,
    KIND_PARAM,
    KINDS,
    Graph,
    TopologyKind,
    build_graph,
    chord_ring,
    complete,
    erdos_renyi,
    exponential,
    from_file,
    get_kind,
    ring,
    square_factors,
    star,
    torus,
)
from mpidecent.topology.validate import (
    cannot_reach,
    connectivity_problem,
    is_strongly_connected,
    is_weakly_connected,
    reachable_from,
    reaching,
    unreachable_from,
)
from mpidecent.topology.weights import (
    WEIGHTS,
    WEIGHTS_PARAM,
    build_weights,
    column_stochastic_uniform,
    is_column_stochastic,
    is_doubly_stochastic,
    is_row_stochastic,
    is_symmetric,
    metropolis_hastings,
    perron_vector,
    row_stochastic_uniform,
    spectral_gap,
)

__all__ = [
    "CHORDS_DEFAULT",
    "KINDS",
    "KIND_PARAM",
    "WEIGHTS",
    "WEIGHTS_PARAM",
    "Graph",
    "TopologyKind",
    "build_graph",
    "build_weights",
    "cannot_reach",
    "chord_ring",
    "column_stochastic_uniform",
    "complete",
    "connectivity_problem",
    "erdos_renyi",
    "exponential",
    "from_file",
    "get_kind",
    "is_column_stochastic",
    "is_doubly_stochastic",
    "is_row_stochastic",
    "is_strongly_connected",
    "is_symmetric",
    "is_weakly_connected",
    "metropolis_hastings",
    "perron_vector",
    "reachable_from",
    "reaching",
    "ring",
    "row_stochastic_uniform",
    "spectral_gap",
    "square_factors",
    "star",
    "torus",
    "unreachable_from",
]
