"""The ``network`` section of ``mpidecent bench``: exact vs compressed algorithms, measured over a
real bandwidth-limited link (``netlink.py``: a private network namespace, its loopback rate-limited
by a token bucket, Open MPI on TCP over it). All ranks share the one link, like nodes behind one
slow uplink.

Per link × model size it runs, each as a real ``mpirun`` job of ``mpidecent run`` inside the
namespace:

* **step time** of every contender (exact and quantized push-sum, D-PSGD, CHOCO-SGD, multi-gossip Q
  = 5, all-reduce SGD, 1-bit and 32-bit gradient coding): a short run, the steady per-step training
  time read from the results file between its last two log points (the first steps load compiled
  kernels);
* **time to a target test accuracy** for the push-sum pair: a longer run, the training time at the
  first log point whose average model reaches the target;
* **gradient coding's phases** (``uplink`` below, run on the ranks): the workers' upload of a 1-bit
  vs a 32-bit update, and the master's full-precision broadcast, each timed on its own.

"Training time" is the slowest rank's cumulative compute + communication seconds (``compute_s`` +
``comm_s`` of the results file): the steps themselves, without the evaluation at log points (whose
all-reduce of the model over the slow link would otherwise dominate short runs). Wall time including
everything is shown beside it. Every run also reports the bytes that crossed the link (the
loopback's transmit counter: payload, TCP/IP headers, launcher and evaluation traffic) against the
bytes the run counted, and the report's link model (``comm/linkmodel.py``, shared-link form) against
the measurement.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mpidecent.bench.netlink import Link, command, environment, probe
from mpidecent.params import toml_value

if TYPE_CHECKING:
    from mpidecent.io.reader import Run


@dataclass(frozen=True)
class Contender:
    """One algorithm of the comparison: a [[sweep]] variant of the base job (``name``, its ``set``
    of "section.key" values) on ``ranks`` ranks."""

    label: str
    name: str
    ranks: int
    settings: dict = field(default_factory=dict)


QSGD8 = {"compression.name": "qsgd", "compression.levels": 127, "compression.bucket": 64}
TOPK10 = {"compression.name": "topk", "compression.fraction": 0.1}
GC = {
    "topology.kind": "star",
    "algorithm.name": "gradient_coding",
    "algorithm.code": "frc",
    "algorithm.stragglers": 2,
    "algorithm.lr": 0.003,
    "algorithm.optimizer": "adam",
    "stragglers.model": "fixed",
    "stragglers.count": 2,
    "data.batch_size": 0,
}

CONTENDERS: dict[str, Contender] = {
    c.label: c
    for c in (
        Contender("push_sum float32", "push_sum-f32", 8, {"algorithm.name": "push_sum"}),
        Contender(
            "quantized_push_sum qsgd 8-bit",
            "qps-qsgd8",
            8,
            {"algorithm.name": "quantized_push_sum", **QSGD8},
        ),
        Contender(
            "dpsgd float32", "dpsgd-f32", 8, {"topology.kind": "ring", "algorithm.name": "dpsgd"}
        ),
        Contender(
            "choco_sgd top-k 10%",
            "choco-topk10",
            8,
            {
                "topology.kind": "ring",
                "algorithm.name": "choco_sgd",
                "algorithm.gamma": 0.1,
                **TOPK10,
            },
        ),
        Contender(
            "multi_gossip Q=5 top-k 10%",
            "mg5-topk10",
            8,
            {
                "topology.kind": "ring",
                "algorithm.name": "multi_gossip",
                "algorithm.gamma": 0.1,
                "algorithm.gossip_rounds": 5,
                **TOPK10,
            },
        ),
        Contender(
            "allreduce_sgd float32",
            "allreduce-f32",
            8,
            {"topology.kind": "complete", "algorithm.name": "allreduce_sgd"},
        ),
        Contender("gradient_coding 1-bit", "gc-1bit", 7, {**GC, "compression.name": "onebit"}),
        Contender("gradient_coding float32", "gc-f32", 7, {**GC, "compression.name": "identity"}),
    )
}
PAIR = (
    "quantized_push_sum qsgd 8-bit",
    "push_sum float32",
)  # (compressed, exact) of the time-to-target goal

SIZES: dict[str, dict] = {
    "tiny": {
        "links": ["1gbit"],
        "models": {"d≈2e3": [32]},
        "contenders": ["push_sum float32", "quantized_push_sum qsgd 8-bit"],
        "ranks": 4,
        "step_runs": {"steps": 4, "log_every": 2},
        "target": None,
        "uplink": {"repeats": 2},
        "calibrate_bytes": 1_000_000,
    },
    "small": {
        "links": ["1gbit", "100mbit"],
        "models": {"d≈1e5": [256, 256], "d≈1e6": [1024, 1024]},
        "contenders": list(CONTENDERS),
        "ranks": None,
        "step_runs": {"steps": 6, "log_every": 3},
        # per model: the first log point whose average model reaches the test accuracy (digits)
        "target": {
            "d≈1e5": {"steps": 20, "log_every": 2, "test_accuracy": 0.7},
            "d≈1e6": {"steps": 20, "log_every": 5, "test_accuracy": 0.85},
        },
        "uplink": {"repeats": 5},
        "calibrate_bytes": 10_000_000,
    },
}
SIZES["large"] = {
    **SIZES["small"],
    "target": {
        "d≈1e5": {"steps": 40, "log_every": 2, "test_accuracy": 0.8},
        "d≈1e6": {"steps": 40, "log_every": 5, "test_accuracy": 0.9},
    },
    "uplink": {"repeats": 9},
}

# The base job every contender varies: digits (64 features, 10 classes, held-out test set), an MLP
# of the size's width, float32, Nesterov momentum; the graph a directed chord ring unless a
# contender sets another.
BASE: dict[str, dict[str, Any]] = {
    "run": {"seed": 1, "dtype": "float32"},
    "topology": {"kind": "chord_ring"},
    "algorithm": {"name": "push_sum", "lr": 0.1, "optimizer": "nesterov"},
    "data": {"name": "digits", "batch_size": 32},
    "model": {"name": "mlp"},
}


def job_text(
    name: str,
    contenders: Sequence[Contender],
    hidden: Sequence[int],
    steps: int,
    log_every: int,
    ranks: int,
) -> str:
    """One job file whose [[sweep]] variants are the contenders (one launch runs them one after
    another)."""
    sections: dict[str, dict] = {k: dict(v) for k, v in BASE.items()}
    sections["run"].update({"name": name, "steps": steps, "log_every": log_every})
    sections["topology"]["n"] = ranks
    sections["model"]["hidden"] = list(hidden)
    lines: list[str] = []
    for key, table in sections.items():
        lines += [f"[{key}]", *(f"{k} = {toml_value(v)}" for k, v in table.items()), ""]
    for c in contenders:
        settings = ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in c.settings.items())
        lines += ["[[sweep]]", f"name = {toml_value(c.name)}", f"set = {{ {settings} }}", ""]
    return "\n".join(lines)


def _train_seconds(run: Run) -> np.ndarray:
    """Slowest rank's cumulative compute + comm seconds at each log point (L,)."""
    return (run.need_rank("compute_s") + run.need_rank("comm_s")).max(axis=1)


def measure(
    launcher_argv: Sequence[str],
    link: Link,
    ranks: int,
    job: str,
    folder: Path,
    contenders: Sequence[Contender],
    target_accuracy: float | None,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> tuple[list[dict], dict]:
    """One ``mpirun … mpidecent run`` of the contenders' sweep behind ``link`` (``env``: more
    variables for the launch, e.g. MCA settings): (one row per contender, the launch: bytes that
    crossed the link, bytes the runs counted, seconds of the whole command)."""
    from mpidecent.bench import BenchError
    from mpidecent.comm.linkmodel import LinkModel
    from mpidecent.io.reader import read_runs

    folder.mkdir(parents=True, exist_ok=True)
    job_path, counter = folder / "job.toml", folder / "link.bytes"
    job_path.write_text(job)
    argv = [
        *launcher_argv,
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpidecent",
        "run",
        str(job_path),
        "--out",
        str(folder),
        "--force",
        "--quiet",
    ]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command(argv, link, str(counter)),
            env={**environment(_bench_env()), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"a run behind the {link.rate} link did not finish within {timeout_s:.0f} s"
        ) from None
    command_s = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise BenchError(
            f"{' '.join(argv)} behind the {link.rate} link exited with {proc.returncode}:\n  "
            + "\n  ".join(tail)
        )
    link_bytes = int(counter.read_text().strip() or 0) if counter.exists() else None
    rows = []
    for c in contenders:
        run = read_runs([str(folder / f"{c.name}.h5")])[0]
        step_index = np.asarray(run.steps)
        train, wall = _train_seconds(run), run.need_glob("wall_s")
        modelled = run.modelled_time(LinkModel(link.bandwidth_bps, 0.0, shared=True))
        accuracy = run.glob("test_accuracy")
        reached = None
        if target_accuracy is not None and accuracy is not None:
            hits = np.flatnonzero(np.isfinite(accuracy) & (accuracy >= target_accuracy))
            if hits.size:
                reached = {
                    "step": int(step_index[hits[0]]),
                    "train_s": float(train[hits[0]]),
                    "wall_s": float(wall[hits[0]]),
                    "bytes": int(run.need_glob("cumulative_bytes")[hits[0]]),
                }
        rows.append(
            {
                "algorithm": c.label,
                "ranks": ranks,
                "d": int(run.attrs.get("model_dim", 0)) or None,
                "steps": int(step_index[-1]),
                # steady state: between the last two log points (the first steps warm caches up)
                "step_s": float((train[-1] - train[-2]) / (step_index[-1] - step_index[-2])),
                "train_s": float(train[-1]),
                "wall_s": float(wall[-1]),
                "bytes_counted": int(run.need_glob("cumulative_bytes")[-1]),
                "modelled_s": float(modelled[-1]) if modelled is not None else None,
                "compute_s": float(run.need_rank("compute_s")[-1].max()),
                "test_accuracy": float(accuracy[-1]) if accuracy is not None else None,
                "test_accuracy_series": [float(a) for a in accuracy]
                if accuracy is not None
                else None,
                "reached": reached,
                "launch": folder.name,
            }
        )
    return rows, {
        "launch": folder.name,
        "link": link.rate,
        "ranks": ranks,
        "link_bytes": link_bytes,
        "bytes_counted": sum(r["bytes_counted"] for r in rows),
        "command_s": command_s,
    }


def _bench_env() -> dict[str, str]:
    from mpidecent.bench import _environment

    return _environment()


def unavailable(launcher_argv: Sequence[str]) -> str | None:
    """Why no run can go behind an emulated link here (one line), or None."""
    if Path(launcher_argv[0]).name not in ("mpirun", "mpiexec", "orterun"):
        return (
            "an emulated link starts every rank on this machine with mpirun, not "
            f"{launcher_argv[0]!r} (--launcher)"
        )
    return probe()


def run(
    size: str, launcher_argv: Sequence[str], out: Path, contenders: Sequence[str] | None = None
) -> dict:
    """The whole section: {"skipped": reason} where no emulated link can be made, else its rows."""
    reason = unavailable(launcher_argv)
    if reason:
        return {"skipped": reason}
    config = SIZES[size]
    chosen = [CONTENDERS[n] for n in (contenders or config["contenders"])]
    steps_rows, target_rows, uplink_rows, launches, calibration = [], [], [], [], []
    for rate in config["links"]:
        link = Link(rate)
        for model_name, hidden in config["models"].items():
            tag = f"{rate}-{model_name.replace('≈', '')}"
            by_ranks: dict[int, list[Contender]] = {}
            for c in chosen:
                by_ranks.setdefault(min(c.ranks, config["ranks"] or c.ranks), []).append(c)
            for ranks, group in by_ranks.items():
                job = job_text(f"steps-{tag}", group, hidden, ranks=ranks, **config["step_runs"])
                rows, launch = measure(
                    launcher_argv,
                    link,
                    ranks,
                    job,
                    out / f"steps-{tag}-n{ranks}",
                    group,
                    None,
                    1800,
                )
                launches.append(launch)
                steps_rows += [{"link": rate, "model": model_name, **r} for r in rows]
                for r in rows:
                    print(
                        f"   {rate} {model_name} {r['algorithm']}: {_ms(r['step_s'])} ms/step",
                        flush=True,
                    )
            if config["target"]:
                tcfg, pair = config["target"][model_name], [CONTENDERS[n] for n in PAIR]
                job = job_text(
                    f"target-{tag}", pair, hidden, tcfg["steps"], tcfg["log_every"], pair[0].ranks
                )
                rows, launch = measure(
                    launcher_argv,
                    link,
                    pair[0].ranks,
                    job,
                    out / f"target-{tag}",
                    pair,
                    tcfg["test_accuracy"],
                    3600,
                )
                launches.append(launch)
                target_rows += [
                    {
                        "link": rate,
                        "model": model_name,
                        "target_accuracy": tcfg["test_accuracy"],
                        **r,
                    }
                    for r in rows
                ]
                for r in rows:
                    print(
                        f"   {rate} {model_name} {r['algorithm']}: test accuracy "
                        f"{tcfg['test_accuracy']} at "
                        f"{'-' if not r['reached'] else round(r['reached']['train_s'], 2)} s",
                        flush=True,
                    )
        uplink_rows += uplink_phases(launcher_argv, link, config)
        calibration.append(calibrate(launcher_argv, link, config["calibrate_bytes"], 3))
    return {
        "steps": steps_rows,
        "target": target_rows,
        "uplink": uplink_rows,
        "launches": launches,
        "calibration": calibration,
        "links": config["links"],
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


# ---- gradient coding's phases, on the ranks ------------------------------------------------------


def _on_ranks(
    launcher_argv: Sequence[str],
    link: Link,
    section: str,
    ranks: int,
    params: dict,
    timeout_s: float,
) -> dict:
    """``section`` of ``main`` below run on ``ranks`` ranks behind ``link``; rank 0's result."""
    with tempfile.TemporaryDirectory(prefix=f"mpidecent-{section}-") as tmp:
        params_path, result = Path(tmp) / "p.json", Path(tmp) / "r.json"
        params_path.write_text(json.dumps(params))
        argv = [
            *launcher_argv,
            "-n",
            str(ranks),
            sys.executable,
            "-m",
            "mpidecent.bench.network",
            section,
            str(params_path),
            str(result),
        ]
        proc = subprocess.run(
            command(argv, link),
            env=environment(_bench_env()),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if proc.returncode != 0:
            from mpidecent.bench import BenchError

            tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
            raise BenchError(
                f"the {section} probe behind the {link.rate} link exited with {proc.returncode}:\n "
                " " + "\n  ".join(tail)
            )
        return json.loads(result.read_text())


def uplink_phases(launcher_argv: Sequence[str], link: Link, config: dict) -> list[dict]:
    ranks = 7 if config["ranks"] is None else min(7, config["ranks"])
    return [
        {
            "link": link.rate,
            "model": model_name,
            **_on_ranks(
                launcher_argv,
                link,
                "uplink",
                ranks,
                {"d": _mlp_dim(64, hidden, 10), "repeats": config["uplink"]["repeats"]},
                900,
            ),
        }
        for model_name, hidden in config["models"].items()
    ]


def calibrate(launcher_argv: Sequence[str], link: Link, nbytes: int, repeats: int) -> dict:
    """The link's effective rate: one message of ``nbytes`` from rank 0 to rank 1 (2 ranks), median
    of ``repeats``, from a barrier until the receiver has it."""
    seconds = _on_ranks(
        launcher_argv, link, "calibrate", 2, {"nbytes": nbytes, "repeats": repeats}, 600
    )["seconds"]
    return {
        "link": link.rate,
        "nominal_bps": link.bandwidth_bps,
        "nbytes": nbytes,
        "seconds": seconds,
        "effective_bps": 8 * nbytes / seconds,
    }


def _one_way(comm, params: dict) -> dict:
    from mpi4py import MPI

    from mpidecent.bench.ranks import _timed

    buf = np.zeros(int(params["nbytes"]), dtype=np.uint8)

    def one() -> None:
        if comm.rank == 0:
            comm.Send([buf, MPI.BYTE], dest=1)
        elif comm.rank == 1:
            comm.Recv([buf, MPI.BYTE], source=0)

    times = [
        _timed(comm, one) for _ in range(int(params["repeats"]) + 1)
    ]  # the first opens the connection
    return {"seconds": float(np.median(times[1:]))}


def _mlp_dim(features: int, hidden: Sequence[int], classes: int) -> int:
    widths = [features, *hidden, classes]
    return int(sum(a * b + b for a, b in itertools.pairwise(widths)))


def uplink(comm, params: dict) -> dict:
    """On the ranks (rank 0 master): the workers' upload of an encoded update (encode + send until
    the master holds all of them) and the master's broadcast of θ at full precision, each timed from
    a barrier on the slowest rank, median over repeats, 1-bit and float32 calls interleaved."""
    from mpidecent.bench.ranks import _timed
    from mpidecent.comm.master import MasterWorker
    from mpidecent.comm.messages import Stopwatch
    from mpidecent.comm.uplink import Uplink
    from mpidecent.compression import build_compressor

    d, repeats = int(params["d"]), int(params["repeats"])
    rng = np.random.default_rng(comm.rank)
    update = rng.standard_normal(d, dtype=np.float32)
    theta = np.zeros(d, dtype=np.float32)
    streams = {}
    for name in ("onebit", "identity"):
        compressor = build_compressor(name, d, "float32", {})
        link = MasterWorker(comm, d * 4, compressor.nbytes)
        streams[name] = (
            link,
            Uplink(link, compressor, 1, comm.rank, Stopwatch()),
            compressor.nbytes,
        )
    everyone = np.arange(comm.size - 1)
    times: dict[str, list[float]] = {
        f"{n}_{p}": [] for n in streams for p in ("upload", "broadcast")
    }

    step = 0
    for repeat in range(repeats + 1):  # the first round warms the kernels and connections up
        for name, (link, stream, _) in streams.items():
            step += 1

            def up(stream=stream, link=link, step=step) -> None:
                if comm.rank == 0:
                    stream.gather(step, everyone, lambda finished: bool(finished.all()))
                else:
                    stream.encode(update, step)
                    stream.send(step)
                    link.complete_send()

            def down(stream=stream, link=link, step=step) -> None:
                if comm.rank == 0:
                    stream.broadcast(theta, step)
                    link.complete_broadcasts()
                else:
                    stream.receive(theta, step)

            u, b = _timed(comm, up), _timed(comm, down)
            if repeat:
                times[f"{name}_upload"].append(u)
                times[f"{name}_broadcast"].append(b)
    for link, _, _ in streams.values():
        link.close()
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "d": d,
        "workers": comm.size - 1,
        "onebit_bytes": streams["onebit"][2],
        "float32_bytes": streams["identity"][2],
        "upload_onebit_s": med["onebit_upload"],
        "upload_float32_s": med["identity_upload"],
        "broadcast_s": float(np.median(times["onebit_broadcast"] + times["identity_broadcast"])),
        "upload_speedup": med["identity_upload"] / med["onebit_upload"],
    }


# ---- tables --------------------------------------------------------------------------------------


def tables(result: dict) -> str:
    from mpidecent import texttable

    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    parts = [
        "All ranks share one emulated link (network namespace, tbf on loopback, Open MPI over TCP)."
    ]
    parts += [
        f"{c['link']}: one {c['nbytes'] / 1e6:g} MB message takes {c['seconds'] * 1e3:.0f} ms, "
        f"{c['effective_bps'] / 1e6:.0f} Mbit/s effective "
        f"({c['effective_bps'] / c['nominal_bps']:.0%} of nominal)"
        for c in result.get("calibration", [])
    ]
    parts.append(
        "train s = slowest rank's compute + communication (steps only); wall s includes evaluation "
        "at log points; model ÷ measured = the shared-link model's time ÷ train s."
    )
    head = [
        "link",
        "model",
        "algorithm",
        "ranks",
        "ms/step",
        "train s",
        "wall s",
        "MB counted",
        "model ÷ measured",
    ]
    body = [
        [
            r["link"],
            f"{r['model']} (d={r['d']:,})" if r["d"] else r["model"],
            r["algorithm"],
            str(r["ranks"]),
            _ms(r["step_s"]),
            f"{r['train_s']:.2f}",
            f"{r['wall_s']:.1f}",
            f"{r['bytes_counted'] / 1e6:.1f}",
            "-"
            if not r["modelled_s"] or not r["train_s"]
            else f"{r['modelled_s'] / r['train_s']:.2f}",
        ]
        for r in result["steps"]
    ]
    parts.append(texttable.table(head, body, left=3))
    for launch in result["launches"]:
        parts.append(
            f"launch {launch['launch']}: the runs counted {launch['bytes_counted'] / 1e6:,.1f} MB "
            f"of messages; {(launch['link_bytes'] or 0) / 1e6:,.1f} MB crossed the link (with "
            "TCP/IP headers, start-up and the evaluation at log points); whole command "
            f"{launch['command_s']:.0f} s"
        )
    if result["target"]:
        head = [
            "link",
            "model",
            "algorithm",
            "target test acc",
            "reached at step",
            "train s to target",
            "exact ÷ compressed",
            "goal ≥ 3× (100 Mbit/s, d ≥ 1e6)",
        ]
        body = []
        by = {(r["link"], r["model"], r["algorithm"]): r for r in result["target"]}
        for r in result["target"]:
            exact = by.get((r["link"], r["model"], PAIR[1]))
            ratio = "-"
            goal = "-"
            if r["algorithm"] == PAIR[0] and exact and r["reached"] and exact["reached"]:
                value = exact["reached"]["train_s"] / r["reached"]["train_s"]
                ratio = f"{value:.2f}×"
                if r["link"] == "100mbit" and (r["d"] or 0) >= 1e6:
                    goal = (
                        "met"
                        if value >= 3
                        else (
                            f"NOT met: {value:.2f}× < 3× (compute per step "
                            f"{r['compute_s'] / max(r['steps'], 1) * 1e3:.0f} ms of the compressed "
                            "run)"
                        )
                    )
            body.append(
                [
                    r["link"],
                    r["model"],
                    r["algorithm"],
                    f"{r['target_accuracy']:.2f}",
                    str(r["reached"]["step"]) if r["reached"] else "not reached",
                    f"{r['reached']['train_s']:.2f}" if r["reached"] else "-",
                    ratio,
                    goal,
                ]
            )
        parts.append(texttable.table(head, body, left=3))
    if result["uplink"]:
        head = [
            "link",
            "model",
            "workers",
            "upload 1-bit ms",
            "upload float32 ms",
            "float32 ÷ 1-bit",
            "goal ≥ 5× (100 Mbit/s, d ≥ 1e6)",
            "master broadcast ms (float32)",
        ]
        body = [
            [
                r["link"],
                f"{r['model']} (d={r['d']:,})",
                str(r["workers"]),
                _ms(r["upload_onebit_s"]),
                _ms(r["upload_float32_s"]),
                f"{r['upload_speedup']:.1f}×",
                (
                    "met"
                    if r["upload_speedup"] >= 5
                    else f"NOT met: {r['upload_speedup']:.1f}× < 5× (1-bit upload "
                    f"{_ms(r['upload_onebit_s'])} ms: encode and latency)"
                )
                if r["link"] == "100mbit" and r["d"] >= 1e6
                else "-",
                _ms(r["broadcast_s"]),
            ]
            for r in result["uplink"]
        ]
        parts.append(texttable.table(head, body, left=2))
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    """On the ranks: ``python -m mpidecent.bench.network uplink|calibrate PARAMS.json OUT.json``."""
    from mpi4py import MPI

    section, params_path, out_path = argv
    sections = {"uplink": uplink, "calibrate": _one_way}
    if section not in sections:
        print(f"unknown rank section {section!r}", file=sys.stderr)
        return 2
    with open(params_path) as f:
        params = json.load(f)
    result = sections[section](MPI.COMM_WORLD, params)
    if MPI.COMM_WORLD.rank == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main(sys.argv[1:]))
