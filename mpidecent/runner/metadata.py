"""The results file's run metadata: the root attributes and those of /topology (documented in
``docs/results-format.md``). Pure: the values are gathered by the caller."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import h5py
import numpy as np
import torch

import mpidecent
from mpidecent.algorithms.base import Algorithm
from mpidecent.comm.world import MpiEnvironment
from mpidecent.io.layout import FORMAT_VERSION
from mpidecent.plan import Plan
from mpidecent.runner.build import Node


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_attributes(
    plan: Plan,
    algorithm: Algorithm,
    node: Node,
    optimum: float,
    env: MpiEnvironment,
    started: str,
    hosts: list[str],
) -> dict[str, Any]:
    """The root attributes of a new results file (the same on every rank)."""
    job = plan.job
    return {
        "format_version": FORMAT_VERSION,
        "mpidecent_version": mpidecent.__version__,
        "job": job.to_toml(),
        "job_source": job.source,
        "job_path": job.path,
        "overrides": "\n".join(job.overrides),
        "set_aside": ",".join(job.set_aside),
        "run_name": job.run["name"],
        "algorithm": job.algorithm["name"],
        "algorithm_description": algorithm.describe(),
        "compressor": job.compression["name"],
        "compressor_description": node.compressor.describe(),
        "compressor_bits": node.compressor.bits,
        "model_dim": node.objective.dim,
        "model": job.model["name"],
        "data": job.data["name"],
        "task": node.data.task,
        "num_train": node.data.num_train,
        "num_test": node.data.num_test,
        "schedule_period": plan.schedule.period,
        "dtype": job.run["dtype"],
        "optimum": optimum,
        "world_size": plan.n,
        "hosts": ",".join(sorted(set(hosts))),
        "mpi_library": env.library,
        "mpi_standard": env.standard,
        "mpi_thread_level": env.thread_level,
        "mpi4py_version": env.mpi4py_version,
        "osc_component": env.osc_component,
        "h5py_version": h5py.__version__,
        "hdf5_version": h5py.version.hdf5_version,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "torch_threads_per_rank": torch.get_num_threads(),
        "started": started,
        "finished": "",
        "status": "running",
        "message": "",
        "steps_requested": job.run["steps"],
        "steps_completed": 0,
    }


def topology_attributes(plan: Plan) -> dict[str, Any]:
    """The attributes of /topology."""
    job = plan.job
    return {
        "kind": job.topology["kind"],
        "directed": bool(plan.graph.directed),
        "n": plan.n,
        "weights_name": job.topology["weights"],
        "strongly_connected": bool(plan.strongly_connected),
        "spectral_gap": float(plan.spectral_gap),
        "period": plan.schedule.period,
    }
