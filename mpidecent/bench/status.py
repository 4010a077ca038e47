"""The ``status`` section of ``mpidecent bench``: steps per second of the quickstart
(``jobs/quickstart.toml``: quantized push-sum of a logistic model with d = 51, so small that the
per-step status agreement is a visible part of a step) with the status flags agreed by a blocking
``Allreduce`` after every step (``MPIDECENT_STATUS=blocking``, the behaviour before the pipeline)
against the pipelined agreement of ``comm/status.py`` (the default).

One ``mpirun -n n python -m mpidecent.bench.ranks status ...`` per n: its ranks run the quickstart
in one process again and again, both ways, interleaved (the order alternates from one repeat to the
next, after an unrecorded warm-up run that pays the one-time costs: numba's kernels, torch's first
calls), and rank 0 reads each run's steps and training wall time (``wall_s``) from its results file.
The table gives the median steps/s of each way and their ratio; the launcher side (``run``) skips an
n whose ranks would not fit in the available memory, as the startup section does.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mpidecent.bench.startup import JOB, RANK_MIB
from mpidecent.machine import available_memory

MODES = ("blocking", "pipelined")


# ---- on the ranks (mpirun -n n python -m mpidecent.bench.ranks status PARAMS RESULT) -------------


def measure(comm: Any, params: dict) -> dict:
    """Collective over ``comm`` (``COMM_WORLD``): ``params["repeats"]`` runs of the quickstart each
    way, with ``params["steps"]`` steps (None: the job's 500) and results files in
    ``params["out"]``. Returns (on every rank; rank 0's numbers) {"n", "steps", "lag",
    "steps_per_s": {mode: [...]}}."""
    from mpidecent.comm.world import init_mpi
    from mpidecent.config import load_job
    from mpidecent.io.reader import read_run
    from mpidecent.plan import plan_job
    from mpidecent.runner import Runner

    steps = params["steps"]
    folder = Path(params["out"])
    if comm.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    env = init_mpi()

    def job(run_steps: int | None):  # the quickstart as shipped (log every 50 steps), or shortened
        keys = (
            []
            if run_steps is None
            else [f"run.steps={run_steps}", f"run.log_every={min(50, run_steps)}"]
        )
        return plan_job(load_job(Path(params["root"]) / JOB, keys), comm.size)

    def run_once(mode: str, plan, name: str) -> tuple[float, int, int]:
        """(steps/s, steps completed, the lag used) of one run; rank 0's reading of its results
        file."""
        out = folder / f"{name}-{comm.size}.h5"
        runner = Runner(plan, env, str(out), overwrite=True, quiet=True, status=mode)
        code = runner.run()
        reading = None
        if comm.rank == 0:
            attrs = read_run(str(out)).attrs
            done, wall = int(attrs["steps_completed"]), float(attrs["wall_s"])
            reading = (done / wall if code == 0 and wall > 0 else 0.0, done, runner.status_lag)
        return comm.bcast(reading, root=0)

    plan = job(steps)
    run_once("pipelined", job(min(50, steps or 50)), "warm-up")  # not recorded
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    lag, done = 0, 0
    for repeat in range(params["repeats"]):
        for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
            rate, done, used = run_once(mode, plan, mode)
            rates[mode].append(rate)
            lag = used if mode == "pipelined" else lag
    return {"n": comm.size, "steps": done, "lag": lag, "steps_per_s": rates}


# ---- the launcher side (mpidecent bench) ---------------------------------------------------------


def run(
    section: Callable[[str, dict, int], dict],
    root: Path,
    out: Path,
    ranks: Sequence[int],
    steps: int | None,
    repeats: int,
) -> dict:
    """One launch per n of ``ranks`` through ``section`` (``Launcher.section``); returns {"job",
    "steps", "repeats", "rows"}, each row {"n", "lag", "steps", "steps_per_s", "median", "ratio"} or
    a skip note."""
    rows: list[dict] = []
    for n in ranks:
        free = available_memory()
        if free is not None and n * RANK_MIB > free / 2**20:
            rows.append(
                {
                    "n": int(n),
                    "status": f"skipped: {n} ranks need about {n * RANK_MIB / 1024:.1f} GiB, "
                    f"{free / 2**30:.1f} GiB available",
                }
            )
            continue
        result = section(
            "status", {"root": str(root), "out": str(out), "steps": steps, "repeats": repeats}, n
        )
        median = {mode: statistics.median(result["steps_per_s"][mode]) for mode in MODES}
        rows.append(
            {
                **result,
                "status": "ok",
                "median": median,
                "ratio": median["pipelined"] / median["blocking"]
                if median["blocking"] > 0
                else None,
            }
        )
    return {"job": JOB, "steps": steps, "repeats": repeats, "rows": rows}


def table(result: dict) -> tuple[str, list[str], list[list[str]]]:
    """(title, head, body) of the section's table."""
    steps = result["steps"] or "its 500"
    title = (
        f"{result['job']} ({steps} steps): steps/s with the status flags agreed by a blocking "
        f"Allreduce after every step vs pipelined (lag L), median of {result['repeats']} "
        "interleaved runs each"
    )
    head = [
        "n",
        "L",
        "blocking steps/s",
        "pipelined steps/s",
        "pipelined ÷ blocking",
        "runs (blocking | pipelined)",
    ]
    body = []
    for r in result["rows"]:
        if r["status"] != "ok":
            body.append([str(r["n"]), "-", "-", "-", "-", r["status"]])
            continue
        runs = " | ".join(" ".join(f"{v:.0f}" for v in r["steps_per_s"][mode]) for mode in MODES)
        body.append(
            [
                str(r["n"]),
                str(r["lag"]),
                f"{r['median']['blocking']:.1f}",
                f"{r['median']['pipelined']:.1f}",
                "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                runs,
            ]
        )
    return title, head, body
