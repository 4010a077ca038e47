"""The simulator's results file: the layout of ``io/results.py`` (docs/results-format.md), written
serially with h5py (one process, no MPI), so ``mpidecent report`` and h5py scripts read both alike.

    /                        attrs: format_version, mpidecent_version, kind = "simulation", job,
                                    run_name, algorithm, world_size (= n users), mpi_library,
                                    osc_component, status, steps_requested, steps_completed,
                                    started, finished, wall_s, and the summary: mode, gossip_rate,
                                    rate_policy, version_rate, horizon, warmup, tracked_sources,
                                    mean_staleness, max_staleness, formula_staleness,
                                    formula_factor, staleness_ratio, events
    /topology                attrs kind, n, directed (edges only for graphs other than complete)
    /metrics/step            (L,) int64   the job's log steps; row k is logical time step / (K·λ_e)
    /metrics/rank/<name>     (L, n)       staleness_mean, staleness_max (versions, over tracked
                                          sources)
    /metrics/global/<name>   (L,)         staleness_mean (all pairs), logical_time
    /events/<name>           sources (m,) tracked users; updates, gossips (n,) per user by the
                                          horizon
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any

import h5py
import numpy as np

import mpidecent
from mpidecent.gossip.simulator import SimResult
from mpidecent.gossip.versions import MODE_FACTOR
from mpidecent.io.layout import FORMAT_VERSION


def _series(group: h5py.Group, name: str, data: np.ndarray, unit: str, doc: str) -> None:
    dset = group.create_dataset(name, data=data)
    dset.attrs["unit"] = unit
    dset.attrs["description"] = doc


def write_simulation(
    path: str,
    result: SimResult,
    steps: np.ndarray,
    attrs: dict[str, Any],
    edges: np.ndarray | None = None,
    overwrite: bool = False,
) -> None:
    """Write one simulation's file (module docstring). ``steps`` (L,) the log steps of the sample
    times; ``attrs`` job-level attributes (job, run_name, topology kind, ...)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    setup = result.setup
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    with h5py.File(path, "w" if overwrite else "w-") as f:
        f.attrs.update(
            {
                "format_version": FORMAT_VERSION,
                "mpidecent_version": mpidecent.__version__,
                "kind": "simulation",
                "algorithm": "async_gossip",
                "world_size": setup.n,
                "mpi_library": "none (single-process discrete-event simulator)",
                "osc_component": "n/a (simulator)",
                "status": "completed",
                "message": "",
                "started": now,
                "finished": now,
                "steps_requested": int(steps[-1]) if steps.size else 0,
                "steps_completed": int(steps[-1]) if steps.size else 0,
                "wall_s": result.wall_s,
                "mode": setup.mode,
                "gossip_rate_per_user": setup.rate,
                "version_rate": result.version_rate,
                "horizon": setup.horizon,
                "warmup": setup.warmup,
                "seed": setup.seed,
                "tracked_sources": int(result.sources.size),
                "mean_staleness": result.mean_staleness,
                "max_staleness": result.max_staleness,
                "formula_staleness": result.formula,
                "formula_factor": MODE_FACTOR[setup.mode],
                "staleness_ratio": result.ratio,
                "events": result.events,
                "inconsistencies": result.inconsistencies,
                **{k: v for k, v in attrs.items() if v is not None},
            }
        )
        topo = f.create_group("topology")
        topo.attrs.update({"kind": str(attrs.get("topology_kind", "complete")), "n": setup.n})
        if edges is not None:
            topo.create_dataset("edges", data=np.asarray(edges, dtype=np.int32).reshape(-1, 2))
        metrics = f.create_group("metrics")
        _series(
            metrics,
            "step",
            np.asarray(steps, dtype=np.int64),
            "steps",
            "log step of the job; sampled at logical time step / (K·λ_e)",
        )
        rank = metrics.create_group("rank")
        _series(
            rank,
            "staleness_mean",
            result.rank_mean,
            "versions",
            "per user: mean over tracked sources ≠ itself of S = N_s − V_u[s] at the sample time",
        )
        _series(rank, "staleness_max", result.rank_max, "versions", "per user: max of the same")
        glob = metrics.create_group("global")
        _series(
            glob,
            "staleness_mean",
            result.global_mean,
            "versions",
            "mean of S over all (user, tracked source) pairs at the sample time",
        )
        _series(
            glob, "logical_time", result.sample_times, "time units", "logical time of the sample"
        )
        events = f.create_group("events")
        events.create_dataset("sources", data=result.sources)
        events.create_dataset("updates", data=result.updates)
        events.create_dataset("gossips", data=result.gossips)
