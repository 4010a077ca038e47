"""The Python entry point, for your own script under ``mpirun -n N python script.py``::

    import mpidecent

    class Net(torch.nn.Module):
        def __init__(self, input_shape, classes): ...

    result = mpidecent.train("job.toml", model=Net)        # every rank calls it
    print(result.metrics["test_accuracy"], result.model)    # the same on every rank

``job`` is a job file's path, TOML text or a dict of sections (relative paths in the job — data
files, ``.py`` files — are read from the job file's folder, or from the current folder for text and
dicts). ``model`` and ``data`` may be Python callables: a model factory (a ``torch.nn.Module`` class
or function taking the ``[model]`` keys and, if it names them, ``input_shape`` and ``classes``) and
a data loader (see ``learning/sources.py``). They are given import paths that resolve to these
objects (``module:qualname``, stored in the results file's job text), so a resumed run must pass the
same callables again.

Every rank validates the job on its own, then the ranks agree: a bad job raises ``JobError`` with
the same one-line message on every rank, before any run starts. A run installs mpidecent's handlers
for SIGUSR1/SIGTERM (checkpoint and stop at a step boundary the ranks agree on) and an excepthook
that aborts every rank when one fails, as ``mpidecent run`` does, so a failing rank cannot leave the
others waiting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpidecent import plugins
from mpidecent.errors import JobError


@dataclass(frozen=True)
class TrainResult:
    """What one run ended with, the same on every rank."""

    name: str
    status: str  # completed | diverged | preempted
    results: str  # the results file (HDF5)
    model: str | None  # the average model's torch state_dict file (None unless completed and saved)
    steps: int  # steps completed
    metrics: dict[str, float] = field(default_factory=dict)  # the last logged network metrics


def _jobs(job: str | os.PathLike | Mapping[str, Any], overrides: Sequence[str]) -> list:
    from mpidecent.config import load_jobs, load_text_jobs, table_to_toml

    if isinstance(job, Mapping):
        return load_text_jobs(table_to_toml(job), "<dict>", overrides)
    if isinstance(job, os.PathLike) or (
        isinstance(job, str) and "\n" not in job and (job.endswith(".toml") or os.path.isfile(job))
    ):
        return load_jobs(job, overrides)
    if isinstance(job, str):
        return load_text_jobs(job, "<string>", overrides)
    raise JobError(
        "mpidecent.train: job must be a job file's path, TOML text or a dict, got "
        f"{type(job).__name__}"
    )


def _callable_override(section: str, obj: Callable[..., Any] | None) -> list[str]:
    if obj is None:
        return []
    if not callable(obj):
        raise JobError(f"mpidecent.train: {section}= must be a callable, got {type(obj).__name__}")
    path = plugins.register(obj)
    return [f'{section}.name="{path}"']


def train(
    job: str | os.PathLike | Mapping[str, Any],
    model: Callable[..., Any] | None = None,
    data: Callable[..., Any] | None = None,
    *,
    out: str | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
    resume: bool = False,
    quiet: bool = False,
) -> TrainResult | list[TrainResult]:
    """Run a job on every rank of ``MPI.COMM_WORLD`` (collective: every rank calls it with the same
    arguments); returns its ``TrainResult`` (a list for a job with [[sweep]] variants).

    ``out``: the results file (a sweep's folder), default [run] out; ``overrides``: ``--set``
    strings such as ``"algorithm.lr=0.05"``; ``force`` overwrites an existing results file;
    ``resume`` continues from its checkpoint; ``quiet`` prints no progress. Raises ``JobError``
    (every rank, the same message) for a bad job, model, data set or output path."""
    from mpidecent.comm.world import init_mpi

    env = init_mpi(probe_osc=True)
    from mpi4py import MPI

    from mpidecent.runner.launch import prepare_all, run_jobs

    def load():
        if resume and force:
            raise JobError(
                "mpidecent.train: resume continues a run and force starts it over: give one of them"
            )
        extra = [*_callable_override("model", model), *_callable_override("data", data), *overrides]
        return _jobs(Path(job) if isinstance(job, os.PathLike) else job, extra)

    work, problem = prepare_all(MPI.COMM_WORLD, load, out, force, resume)
    if problem:
        raise JobError(problem)
    from mpidecent.comm.world import abort_on_error
    from mpidecent.preemption import install_stop_handlers

    abort_on_error()
    install_stop_handlers()
    _, runs = run_jobs(work, env, force, quiet)
    results = [
        TrainResult(
            r.name,
            r.status,
            r.out,
            r.model,
            r.row.step if r.row else 0,
            dict(r.row.global_values) if r.row else {},
        )
        for r in runs
    ]
    return results[0] if len(results) == 1 else results


__all__ = ["TrainResult", "train"]
