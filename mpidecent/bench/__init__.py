"""``mpidecent bench``: side-by-side performance ratios, printed as tables and written to a JSON
file.

Run it without mpirun; it starts ``mpirun -n N`` itself for the sections that need ranks
(``--launcher`` changes the command, e.g. ``--launcher "srun --mpi=pmix"`` inside an allocation). On
a workstation it sets what ``scripts/mpienv.sh`` sets (oversubscription, and running as root) unless
a batch system gave the slots.

Sections (``--sections``, comma-separated; default all):

1. ``exchange``    mpidecent's neighbour exchange vs a raw mpi4py Isend/Irecv loop, same bytes and
                   graph
2. ``compressors`` encode/decode GB/s of every operator vs numpy.copyto of the same float32 array
3. ``step``        one training step of a ~1e6-parameter MLP: allreduce_sgd, dpsgd, push_sum,
                   quantized_push_sum vs torch DistributedDataParallel (gloo), with bytes per step
4. ``scaling``     bytes per node per step and step time of fixed-degree gossip for n ranks × d
5. ``target``      modelled time to a common target at 1 and 10 Gbit/s for pairs of shipped jobs
6. ``rma``         passive-target RMA progress (Lock/Get/Unlock while the target computes)
   ``memory``      peak RSS per rank of gossip at a large d
   ``startup``     the quickstart launched with 8, 16, 32 and 64 ranks on this machine's cores: wall
                   time to step 0, of the training and to the exit (``tiny``: 8 ranks, 50 steps)
   ``network``     exact vs compressed algorithms over a real rate-limited link (1 Gbit/s, 100
                   Mbit/s): step time, time to a target test accuracy, gradient coding's upload and
                   broadcast (needs root for a network namespace; skips in one line where that is
                   not permitted)
   ``status``      steps/s of the quickstart at 8 and 32 ranks with the status flags agreed by a
                   blocking Allreduce after every step vs pipelined (``comm/status.py``),
                   interleaved runs (``tiny``: 4 ranks, 50 steps, one run each)
   ``overlap``     over the emulated 1 Gbit/s link: D-PSGD's and exact push-sum's step time against
                   compute alone, communication alone, their sum and maximum, with the exchange
                   progressed only when waited, by hooks in the forward/backward pass, or by Open
                   MPI's TCP progress thread; push-sum with and without overlap, and their test
                   accuracy (``large`` adds 100 Mbit/s)
   ``local_steps`` behind one emulated 100 Mbit/s link (d ≈ 1e6): time to a target test accuracy of
                   all-reduce SGD and quantized push-sum every step against DiLoCo, decentralized
                   DiLoCo over quantized push-sum and NoLoCo pairs with H = 50 local steps
                   (``[outer]``)

``--size tiny`` (the CI smoke test: about a minute and a half on 2 idle cores, almost all of it
starting a dozen ``mpirun`` jobs whose ranks import torch, 8 of them for ``startup``),
``small`` (default: about 40 minutes on 2 cores, 20 of them the network section, 10 the local_steps
section and 5 the startup section's 64 ranks; ``--sections`` without those three: about 5) or
``large``. Absolute times on shared machines are noise; the ratios compare contenders measured in
one run, calls interleaved.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mpidecent import texttable

SECTIONS = (
    "exchange",
    "compressors",
    "step",
    "scaling",
    "target",
    "rma",
    "memory",
    "startup",
    "network",
    "status",
    "overlap",
    "local_steps",
)

SIZES: dict[str, dict] = {
    "tiny": {
        "ranks": 4,
        "exchange": {"dims": [1000, 100_000], "repeats": 5},
        "compressors": {"dims": [100_000], "repeats": 3},
        "step": {"hidden": [64], "batch": 16, "repeats": 3},
        "scaling": {"ranks": [4, 6], "dims": [1000, 10_000], "repeats": 3},
        "memory": {"d": 100_000, "steps": 2},
        "target": {"pairs": [0], "steps": {"jobs/quickstart.toml": 60}, "ranks": {0: 4}},
        "startup": {"ranks": [8], "steps": 50, "timeout_s": 600},
        "status": {"ranks": [4], "steps": 50, "repeats": 1},
    },
    "small": {
        "ranks": 8,
        "exchange": {"dims": [1000, 10_000, 100_000, 1_000_000], "repeats": 30},
        "compressors": {"dims": [1_000_000, 10_000_000], "repeats": 7},
        "step": {"hidden": [1024, 1024], "batch": 32, "repeats": 10},
        "scaling": {"ranks": [4, 8, 16], "dims": [10_000, 100_000, 1_000_000], "repeats": 10},
        "memory": {"d": 10_000_000, "steps": 3},
        "target": {"pairs": [0, 1, 2], "steps": {}, "ranks": {}},
        "startup": {"ranks": [8, 16, 32, 64], "steps": None, "timeout_s": 600},
        "status": {"ranks": [8, 32], "steps": None, "repeats": 3},
    },
    "large": {
        "ranks": 8,
        "exchange": {"dims": [1000, 10_000, 100_000, 1_000_000, 10_000_000], "repeats": 50},
        "compressors": {"dims": [1_000_000, 10_000_000, 100_000_000], "repeats": 9},
        "step": {"hidden": [1024, 1024], "batch": 64, "repeats": 30},
        "scaling": {
            "ranks": [4, 8, 16, 32],
            "dims": [10_000, 100_000, 1_000_000, 10_000_000],
            "repeats": 10,
        },
        "memory": {"d": 10_000_000, "steps": 5},
        "target": {"pairs": [0, 1, 2], "steps": {}, "ranks": {}},
        "startup": {"ranks": [8, 16, 32, 64], "steps": None, "timeout_s": 600},
        "status": {"ranks": [8, 16, 32, 64], "steps": None, "repeats": 5},
    },
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="benchmarks: side-by-side ratios (exchange, compressors, step, scaling, time to "
        "target, RMA progress, memory, slow network, status agreement, overlap, local steps)",
        description=__doc__.split("\n\n")[0],
    )
    bench.add_argument(
        "--sections",
        default="all",
        help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all)",
    )
    bench.add_argument(
        "--size",
        choices=tuple(SIZES),
        default="small",
        help="tiny (about a minute and a half: the CI smoke test), small (default: ~30 minutes, "
        "~5 without the network and startup sections), large",
    )
    bench.add_argument("--ranks", type=int, help="ranks for the MPI sections (default: 8; tiny: 4)")
    bench.add_argument(
        "--out", default="bench-results", help="folder for the JSON result (default: bench-results)"
    )
    bench.add_argument(
        "--launcher", default="mpirun", help="MPI launcher command (default: mpirun)"
    )


class BenchError(Exception):
    """A section could not run (one line, printed by ``main``)."""


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    if not any(k in env for k in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")):
        env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")  # as scripts/mpienv.sh
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Launcher:
    def __init__(self, command: str, timeout_s: float = 900) -> None:
        self.command = shlex.split(command)
        self.timeout_s = timeout_s
        self.env = _environment()

    def __call__(self, python_args: Sequence[str], ranks: int) -> None:
        argv = [*self.command, "-n", str(ranks), sys.executable, *python_args]
        try:
            proc = subprocess.run(
                argv, env=self.env, capture_output=True, text=True, timeout=self.timeout_s
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"{shlex.join(argv)} did not finish within {self.timeout_s:.0f} s"
            ) from None
        except FileNotFoundError:
            raise BenchError(f"launcher {self.command[0]!r} not found (--launcher)") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
            raise BenchError(
                f"{shlex.join(argv)} exited with {proc.returncode}:\n  " + "\n  ".join(tail)
            )

    def mpidecent(self, args: Sequence[str], ranks: int) -> None:
        self(["-m", "mpidecent", *args], ranks)

    def section(self, name: str, params: dict, ranks: int) -> dict:
        with tempfile.TemporaryDirectory(prefix="mpidecent-bench-") as tmp:
            params_path, out_path = Path(tmp) / "params.json", Path(tmp) / "result.json"
            params_path.write_text(json.dumps(params))
            self(["-m", "mpidecent.bench.ranks", name, str(params_path), str(out_path)], ranks)
            return json.loads(out_path.read_text())


def _grid(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A bench table: every column left-aligned."""
    return texttable.table(head, body, left=len(head))


def _machine(launcher: Launcher) -> dict:
    """What the numbers came from. No MPI here: this process launches the MPI jobs (an MPI singleton
    would hand its environment to them)."""
    import numpy
    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "launcher": shlex.join(launcher.command),
        "mpi": _launcher_version(launcher),
    }


def _launcher_version(launcher: Launcher) -> str:
    try:
        proc = subprocess.run(
            [launcher.command[0], "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (
        (proc.stdout or proc.stderr).strip().splitlines()[0]
        if (proc.stdout or proc.stderr).strip()
        else "unknown"
    )


def _tables(name: str, result: dict) -> str:
    if name == "compressors":
        from mpidecent.bench.compressors import table as compressors_table

        return _grid(*compressors_table(result["rows"]))
    if name == "target":
        from mpidecent.bench.target import table as target_table

        return _grid(*target_table(result["rows"]))
    if name == "network":
        from mpidecent.bench.network import tables

        return tables(result)
    if name == "startup":
        from mpidecent.bench.startup import table as startup_table

        title, head, body = startup_table(result)
        return title + "\n" + _grid(head, body)
    if name == "status":
        from mpidecent.bench.status import table as status_table

        title, head, body = status_table(result)
        return title + "\n" + _grid(head, body)
    if name == "local_steps":
        from mpidecent.bench.local_steps import table as local_steps_table

        if "skipped" in result:
            return f"skipped: {result['skipped']}"
        title, head, body = local_steps_table(result)
        return title + "\n" + _grid(head, body)
    if name == "overlap":
        from mpidecent.bench.overlap import table as overlap_table

        if "skipped" in result:
            return f"skipped: {result['skipped']}"
        title, head, body = overlap_table(result)
        return title + "\n" + _grid(head, body)
    rows = result.get("rows", [])
    if name == "exchange":
        head = [
            "d (float32)",
            "bytes/msg",
            "out-degree",
            "mpidecent µs",
            "raw µs",
            "ratio",
            "goal ≤ 1.15 (d ≥ 1e5)",
        ]
        body = [
            [
                f"{r['d']:.0e}",
                str(r["bytes_per_message"]),
                str(r["out_degree"]),
                f"{r['mpidecent_s'] * 1e6:.1f}",
                f"{r['raw_s'] * 1e6:.1f}",
                f"{r['ratio']:.3f}",
                (
                    "yes"
                    if r["ratio"] <= 1.15
                    else f"NO: {(r['mpidecent_s'] - r['raw_s']) * 1e6:.0f} µs more per call "
                    "(per-call Python, or load: rerun)"
                )
                if r["d"] >= 1e5
                else "-",
            ]
            for r in rows
        ]
        return result["graph"] + "\n" + _grid(head, body)
    if name == "step":
        head = [
            "algorithm",
            "step ms",
            "÷ DDP",
            "goal ≤ 1.1 (exact)",
            "bytes/node/step",
            "bytes counted as",
        ]
        exact = {"allreduce_sgd", "dpsgd", "push_sum"}
        body = [
            [
                r["algorithm"],
                f"{r['step_s'] * 1e3:.2f}",
                f"{r['ratio_to_ddp']:.3f}",
                (
                    "yes"
                    if r["ratio_to_ddp"] <= 1.1
                    else f"NO: {r['ratio_to_ddp']:.2f}× DDP's step (see "
                    "docs/performance.md, what limits)"
                )
                if r["algorithm"] in exact
                else "-",
                f"{r['bytes_per_node_per_step']:.4g}",
                r["bytes_kind"],
            ]
            for r in rows
        ]
        return f"{result['model']}, {result['ranks']} ranks\n" + _grid(head, body)
    if name == "scaling":
        head = ["n", "d", "step ms", "bytes/node/step"]
        body = [
            [
                str(r["n"]),
                f"{r['d']:.0e}",
                f"{r['step_s'] * 1e3:.3f}",
                f"{r['bytes_per_node_per_step']:.6g}",
            ]
            for r in rows
        ]
        return (
            "quantized push-sum gossip (qsgd 8-bit), directed ring + 1 chord: out-degree 2 at "
            "every n\n" + _grid(head, body)
        )
    if name == "memory":
        peaks, before = result["peak_rss_bytes"], min(result["rss_before_bytes"]) / 2**20
        mib = max(peaks) / 2**20
        text = (
            f"{result['algorithm']}, d = {result['d']:.0e} {result['dtype']} "
            f"({result['state_vector_bytes'] / 2**20:.1f} MiB per state vector): peak RSS per rank "
            f"{min(peaks) / 2**20:.0f}–{mib:.0f} MiB (before building it {before:.0f} MiB)"
        )
        if result["d"] >= 10_000_000:  # the goal is stated at d = 1e7
            arrays = sum(result.get("arrays_bytes", {}).values()) / 2**20
            text += (
                "\ngoal ≤ 450 MiB: yes"
                if mib <= 450
                else f"\ngoal ≤ 450 MiB: NO: {before:.0f} MiB before building (python, numpy, "
                f"torch, MPI), {arrays:.0f} MiB of the library's large arrays, the rest "
                "numba's kernels and the allocator"
            )
        return text
    if name == "rma":
        return (
            "\n".join(
                f"osc component {r['osc_component']}: passive-target progress {r['verdict']}"
                for r in rows
            )
            or "not measured (needs 2 ranks)"
        )
    return json.dumps(result)


def run_sections(
    names: Sequence[str],
    size: str,
    ranks: int | None,
    launcher: Launcher,
    root: Path,
    out_dir: Path,
) -> dict:
    """Run the sections; returns {"machine", "size", "ranks", "sections": {name: result}}."""
    config = SIZES[size]
    ranks = ranks or config["ranks"]
    results: dict = {
        "machine": _machine(launcher),
        "size": size,
        "ranks": ranks,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "sections": {},
    }
    for name in names:
        if name == "compressors":
            from mpidecent.bench import compressors

            cfg = config["compressors"]
            result = {"rows": compressors.run(cfg["dims"], cfg["repeats"])}
        elif name == "scaling":
            cfg = config["scaling"]
            rows = []
            for n in cfg["ranks"]:
                rows += launcher.section("scaling", cfg, n)["rows"]
            result = {"rows": rows}
        elif name == "target":
            from mpidecent.bench import target

            cfg = config["target"]
            result = {
                "rows": target.run(
                    launcher.mpidecent,
                    root,
                    out_dir / "target-runs",
                    cfg["pairs"],
                    cfg["steps"],
                    cfg["ranks"],
                )
            }
        elif name == "startup":
            from mpidecent.bench import startup

            cfg = config["startup"]
            result = startup.run(
                launcher.command,
                launcher.env,
                root,
                out_dir / "startup-runs",
                cfg["ranks"],
                cfg["steps"],
                cfg["timeout_s"],
            )
        elif name == "network":
            from mpidecent.bench import network

            result = network.run(size, launcher.command, out_dir / "network-runs")
        elif name == "local_steps":
            from mpidecent.bench import local_steps

            result = local_steps.run(size, launcher.command, out_dir / "local-steps-runs")
        elif name == "overlap":
            from mpidecent.bench import overlap

            result = overlap.run(size, launcher.command, out_dir / "overlap-runs")
        elif name == "status":
            from mpidecent.bench import status

            cfg = config["status"]
            result = status.run(
                launcher.section,
                root,
                out_dir / "status-runs",
                cfg["ranks"],
                cfg["steps"],
                cfg["repeats"],
            )
        else:
            result = launcher.section(name, config.get(name, {}), ranks)
        results["sections"][name] = result
        print(f"\n== {name}\n{_tables(name, result)}", flush=True)
    return results


def main(args: argparse.Namespace) -> int:
    names = (
        SECTIONS
        if args.sections == "all"
        else tuple(s.strip() for s in args.sections.split(",") if s.strip())
    )
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        print(
            f"mpidecent: error: --sections: unknown section {unknown[0]!r}; choose from "
            f"{', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        return 2
    if args.ranks is not None and args.ranks < 2:
        print(f"mpidecent: error: --ranks must be ≥ 2, got {args.ranks}", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[2]
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"mpidecent: error: --out {args.out!r}: {err.strerror or err}", file=sys.stderr)
        return 2
    try:
        results = run_sections(names, args.size, args.ranks, Launcher(args.launcher), root, out_dir)
    except BenchError as err:
        print(f"mpidecent: error: bench: {err}", file=sys.stderr)
        return 1
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"bench-{args.size}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {path}")
    return 0
