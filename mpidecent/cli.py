"""Command line: ``mpidecent run | report | topology | simulate-gossip | bench | info`` (thin: parse, validate,
hand over).

``run`` is started on every rank by ``mpirun``/``srun``. Each rank validates the job on its own (pure,
before any collective), then all ranks agree: if any rank found a problem, rank 0 prints one line and
every rank exits with status 2, so a bad job never leaves ranks waiting in a collective. After that, an
uncaught exception on any rank aborts the whole job (``abort_on_error``).

Exit statuses: 0 success, 1 internal error, 2 bad input (job file, CLI flag, existing results file,
unusable checkpoint), 3 the run diverged (results so far are kept), 4 stopped by SIGUSR1/SIGTERM after
writing a checkpoint (continue with --resume).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

import mpidecent
from mpidecent.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_PREEMPTED, JobError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, only on rank 0, with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from mpidecent.comm.world import launcher_rank

        if launcher_rank() in (None, 0):
            sys.stderr.write(f"mpidecent: error: {message} (see mpidecent {self.prog.split()[-1]} --help)\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mpidecent", description="Decentralized, communication-compressed learning on MPI.")
    parser.add_argument("--version", action="version", version=f"mpidecent {mpidecent.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train (start with mpirun -n N)",
                         description="Run a job on every rank: mpirun -n N mpidecent run JOB.toml")
    run.add_argument("job", help="job file (TOML)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a job key, e.g. --set algorithm.lr=0.05 (repeatable)")
    run.add_argument("--out", help="results file (default: [run] out, else runs/<name>.h5); for a job with "
                                   "[[sweep]] variants, the folder of their files")
    run.add_argument("--force", action="store_true", help="overwrite an existing results file")
    run.add_argument("--resume", action="store_true",
                     help="continue from the checkpoint and append to the results file (a completed run is "
                          "skipped; with neither file present the job starts from step 0)")
    run.add_argument("--quiet", action="store_true", help="no progress lines or summary")

    topo = sub.add_parser("topology", help="inspect a job's graph: degrees, connectivity, spectral gap")
    topo.add_argument("job", help="job file (TOML)")
    topo.add_argument("-n", "--nodes", type=int, help="number of nodes (default: [topology] n)")
    topo.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    topo.add_argument("--plot", metavar="FILE", help="also draw the graph into this PNG file")

    report = sub.add_parser("report", help="compare runs from their results files: table, queries, plots",
                            description="Compare runs from their HDF5 results files (no MPI needed): "
                                        "mpidecent report runs/quickstart.h5 runs/sgp.h5 --plot plots/")
    report.add_argument("files", nargs="+", metavar="RUN.h5", help="results files (partial runs are marked)")
    report.add_argument("--plot", metavar="DIR", help="write PNG figures into this folder")
    report.add_argument("--budget", action="append", metavar="BITS",
                        help="loss of each run when the network had sent BITS bits in total (repeatable, or "
                             "comma-separated)")
    report.add_argument("--target", type=float, metavar="LOSS",
                        help="first logged step, bits and time at which avg-model loss <= LOSS")
    fmt = report.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="machine-readable: CSV, one row per run")
    fmt.add_argument("--json", action="store_true", help="machine-readable: JSON")
    report.add_argument("--bandwidth", type=float, metavar="BPS",
                        help="link bandwidth in bits/s for the modelled time (default: the job's [link])")
    report.add_argument("--latency", type=float, metavar="S",
                        help="per-message latency in seconds for the modelled time (default: the job's [link])")

    from mpidecent.gossip.command import add_parser as add_simulate_gossip

    add_simulate_gossip(sub)
    from mpidecent.bench import add_parser as add_bench

    add_bench(sub)
    sub.add_parser("info", help="MPI library, thread level, one-sided component, passive-target RMA progress, "
                                "h5py MPI support")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "topology":
        return _topology(args)
    if args.command == "report":
        return _report(args)
    if args.command == "bench":
        from mpidecent.bench import main as bench

        return bench(args)
    if args.command == "simulate-gossip":
        from mpidecent.gossip.command import main as simulate_gossip

        return simulate_gossip(args)
    return _info()


def _fail(message: str) -> int:
    sys.stderr.write(f"mpidecent: error: {message}\n")
    return EXIT_BAD_INPUT


def _run(args: argparse.Namespace) -> int:
    from mpidecent.comm.world import abort_on_error, init_mpi
    from mpidecent.preemption import check_world_size, install_stop_handlers

    env = init_mpi(probe_osc=True)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    problem: str | None = None
    work: list[tuple[object, str, object]] = []  # (plan, results file, snapshot to resume or None) per job
    try:
        check_world_size(comm.size)
        if args.resume and args.force:
            raise JobError("--resume continues a run and --force starts it over: give one of them")
        from mpidecent.config import load_jobs

        for job in load_jobs(args.job, args.overrides):
            out = job.run["out"]
            if args.out:  # one results file, or the folder of a sweep's files
                out = os.path.join(args.out, f"{job.variant}.h5") if job.variant else args.out
            prepared = _prepare(job, out, args, comm.rank, comm.size)
            if prepared is not None:
                work.append(prepared)
    except JobError as err:
        problem = str(err)
    # The first collective: every rank learns whether any rank found a problem.
    problems = comm.allgather(problem)
    found = [(r, p) for r, p in enumerate(problems) if p]
    if found:
        if comm.rank == 0:
            rank, text = found[0]
            where = "" if all(p == text for _, p in found) and len(found) == comm.size else f" (on rank {rank})"
            sys.stderr.write(f"mpidecent: error: {text}{where}\n")
            sys.stderr.flush()
        return EXIT_BAD_INPUT
    abort_on_error()
    install_stop_handlers()
    from mpidecent.runner import Runner, comparison_table

    status, runs = EXIT_OK, []
    for plan, out, snapshot in work:
        runner = Runner(plan, env, out, overwrite=args.force, quiet=args.quiet, resume=snapshot)
        code = runner.run()
        runs.append(runner.result)
        status = max(status, code)  # a diverged variant does not stop the rest of a sweep
        if code == EXIT_PREEMPTED:
            break  # a stop request ends the whole launch; --resume continues with this run
    if len(runs) > 1 and comm.rank == 0:
        print(comparison_table(runs), flush=True)
    return status


def _prepare(job, out: str, args: argparse.Namespace, rank: int, size: int):
    """Validate one job for this launch (pure, per rank): its plan, its results file and, with --resume,
    its checkpoint. Returns (plan, out, snapshot or None), or None for a run --resume finds completed."""
    from mpidecent.io.checkpoint import checkpoint_path, read_checkpoint
    from mpidecent.plan import plan_job

    if not args.resume:
        _check_output(out, args.force)
        return plan_job(job, size), out, None
    # Resume checks come first: a launch with the wrong number of ranks should hear about the
    # checkpoint's world size, not about a topology that does not fit that number.
    checkpoint = checkpoint_path(out)
    status, rows = _results_status(out, job) if os.path.exists(out) else ("", 0)
    if status == "completed":
        if rank == 0:
            print(f"mpidecent: {job.run['name']} already completed ({out}); nothing to resume", flush=True)
        return None
    if os.path.exists(checkpoint):
        snapshot = read_checkpoint(checkpoint, rank, size, job.to_toml())
        if not status:
            raise JobError(f"checkpoint {checkpoint!r} has no results file {out!r} to append to; restore it, or "
                           "start over with --force")
        if rows < snapshot.results_rows:
            raise JobError(f"results file {out!r} has {rows} rows but the checkpoint was taken after "
                           f"{snapshot.results_rows}: it is not this run's file")
        return plan_job(job, size), out, snapshot
    if status:
        raise JobError(f"--resume: {out!r} ({status}) has no checkpoint {checkpoint!r} to continue from; start "
                       "over with --force (this overwrites it)")
    _check_output(out, False)  # neither file exists yet: a requeued job that never checkpointed starts
    return plan_job(job, size), out, None


def _results_status(out: str, job) -> tuple[str, int]:
    """Status and row count of an existing results file of this job (JobError if it belongs to another)."""
    import h5py

    try:
        with h5py.File(out, "r") as f:
            stored = str(f.attrs.get("job", ""))
            status = str(f.attrs.get("status", "unknown"))
            rows = int(f["metrics/step"].shape[0])
    except (OSError, KeyError) as err:
        raise JobError(f"results file {out!r} cannot be read ({err}); it was left untouched") from None
    if stored != job.to_toml():
        raise JobError(f"results file {out!r} belongs to a different job; resume with the same job and --set "
                       "options, or choose another --out")
    return status, rows


def _check_output(out: str, force: bool) -> None:
    """The results file can be created: not a directory, not existing (unless --force), and its folder
    can be made and written (tried for real with a probe file: permission bits say nothing to root or
    about read-only file systems). Checked before any collective, so a bad path ends every rank with
    one line instead of failing inside the collective file creation."""
    if os.path.isdir(out):
        raise JobError(f"--out {out!r} is a directory; give a file name such as {out.rstrip('/')}/run.h5")
    if os.path.exists(out) and not force:
        raise JobError(f"results file {out!r} already exists; pass --force to overwrite it or --out to "
                       "write elsewhere")
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise JobError(f"results file {out!r}: cannot write in {folder!r} ({err.strerror}); choose another "
                       "--out or [run] out") from None


def _topology(args: argparse.Namespace) -> int:
    import numpy as np

    from mpidecent.algorithms import ALGORITHMS
    from mpidecent.config import load_jobs
    from mpidecent.plan import build_topology
    from mpidecent.topology import connectivity_problem, is_strongly_connected
    from mpidecent.topology.schedule import schedule_spectral_gap

    try:
        job = load_jobs(args.job, args.overrides)[0]
        n = args.nodes or job.topology["n"]
        if not n or n < 1:
            raise JobError("give the number of nodes with -n N (or set [topology] n)")
        schedule, weights = build_topology(job, n)
    except JobError as err:
        return _fail(str(err))
    algo = ALGORITHMS[job.algorithm["name"]]
    graph = schedule.union()
    strong = is_strongly_connected(graph)
    period = f"; time-varying, period {schedule.period} (degrees below are of the union)" \
        if schedule.time_varying else ""
    print(f"topology: {job.topology['kind']} ({'directed' if graph.directed else 'undirected'}), {n} nodes, "
          f"{graph.num_edges} directed edges; weights: {job.topology['weights']}{period}")
    print(f"{'node':>6} {'in':>4} {'out':>4}  out-neighbours")
    for i in range(n):
        nbrs = " ".join(str(j) for j in graph.out_neighbors(i))
        print(f"{i:>6} {graph.in_degree[i]:>4} {graph.out_degree[i]:>4}  {nbrs}")
    print(f"in-degree min/mean/max: {graph.in_degree.min()}/{graph.in_degree.mean():.2f}/{graph.in_degree.max()}; "
          f"out-degree min/mean/max: {graph.out_degree.min()}/{graph.out_degree.mean():.2f}/{graph.out_degree.max()}")
    regular = all(bool(np.all(g.out_degree == g.out_degree[0])) for g in schedule.graphs)
    print(f"strongly connected: {'yes' if strong else 'no (' + str(connectivity_problem(graph)) + ')'}")
    print(f"regular out-degree: {'yes' if regular else 'no (push-sum weights y_i will differ from 1)'}")
    print(f"spectral gap of W: {schedule_spectral_gap(weights):.6f} (1 − |λ₂|{' per step over a period' if schedule.time_varying else ''}; "
          "larger mixes faster)")
    if algo.graph in ("directed", "undirected") and not strong and job.topology["kind"] != "disconnected":
        print(f"warning: {algo.name} needs a connected graph; this job would be refused")
    if args.plot:
        from mpidecent.report.plots import plot_topology

        union = " (union over the period)" if schedule.time_varying else ""
        edges = f"{graph.num_edges} directed edges" if graph.directed else f"{graph.num_edges // 2} undirected edges"
        title = (f"{job.topology['kind']}{union}: {n} nodes, {edges}\n"
                 f"weights {job.topology['weights']}, spectral gap {schedule_spectral_gap(weights):.4f}")
        try:
            plot_topology(n, graph.edges, graph.directed, args.plot, title)
        except OSError as err:
            return _fail(f"--plot {args.plot!r}: cannot write the figure ({err.strerror or err})")
        print(f"graph drawn: {args.plot}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from mpidecent.report import main as report_main

    return report_main(args)


def _info() -> int:
    from mpidecent.comm.world import init_mpi, threads_per_rank

    env = init_mpi(probe_osc=True)
    import h5py
    import numpy as np
    import torch
    from mpi4py import MPI

    from mpidecent.comm.window import measure_passive_progress

    probe = measure_passive_progress(MPI.COMM_WORLD)  # collective; None on one rank
    if env.rank != 0:
        return EXIT_OK
    rows = [
        ("mpidecent", mpidecent.__version__),
        ("MPI library", env.library),
        ("MPI standard", env.standard),
        ("thread level", env.thread_level),
        ("ranks in this launch", str(env.size)),
        ("one-sided (osc) component", env.osc_component),
        ("passive-target progress", probe.describe() if probe else "not measured (start 2 or more ranks: "
                                                                   "mpirun -n 2 mpidecent info)"),
        ("mpi4py", env.mpi4py_version),
        ("h5py", f"{h5py.__version__} (HDF5 {h5py.version.hdf5_version})"),
        ("h5py has MPI", "yes" if h5py.get_config().mpi else "NO - parallel results files will not work"),
        ("torch", f"{torch.__version__}, {threads_per_rank()} thread(s) per rank"),
        ("numpy", np.__version__),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return EXIT_OK
