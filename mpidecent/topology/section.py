"""The job file's ``[topology]`` section: the keys every kind has, and the kind's (or schedule's)
own.

Pure (no MPI). The communication pattern of the job's algorithm decides which graphs fit
(``comm/patterns.py``); this module only knows the keys: ``resolve_common`` checks the keys every
kind has, ``resolve_specific`` the chosen kind's own, and ``kind_keys`` hands a resolved section's
own keys to ``build_graph`` / ``build_schedule``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mpidecent.params import Param, resolve
from mpidecent.topology.graphs import KINDS
from mpidecent.topology.schedule import SCHEDULES

COMMON_PARAMS: tuple[Param, ...] = (
    Param(
        "kind",
        str,
        "complete",
        "graph family (static) or schedule (time-varying)",
        choices=(*KINDS, *SCHEDULES),
    ),
    Param(
        "n",
        int,
        0,
        "number of nodes; 0 = the number of MPI ranks started (when set it must match)",
        minimum=0,
    ),
    Param("directed", bool, None, "directed graph (default depends on the kind)"),
    Param(
        "weights",
        str,
        "auto",
        "mixing matrix: column_uniform (push-sum), metropolis (undirected); auto = the algorithm's "
        "choice",
        choices=("auto", "column_uniform", "metropolis"),
    ),
)
COMMON_KEYS: tuple[str, ...] = tuple(p.name for p in COMMON_PARAMS)
KIND_NAMES: tuple[str, ...] = (*KINDS, *SCHEDULES)


def resolve_common(table: Mapping[str, Any]) -> dict[str, Any]:
    """The keys every kind has, defaults filled in (``directed`` stays None: the kind decides)."""
    return resolve("topology", COMMON_PARAMS, {k: v for k, v in table.items() if k in COMMON_KEYS})


def is_schedule(kind: str) -> bool:
    return kind in SCHEDULES


def resolve_specific(kind: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's own keys of ``table`` (the common keys are skipped), defaults filled in."""
    owner = SCHEDULES[kind] if kind in SCHEDULES else KINDS[kind]
    return resolve("topology", owner.params, table, owner=owner.name, ignore=COMMON_KEYS)


def kind_keys(section: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved section without the keys every kind has: what the graph or schedule builder
    takes."""
    return {k: v for k, v in section.items() if k not in COMMON_KEYS}
