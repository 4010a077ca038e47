"""Builds a run from a validated ``Plan`` and owns the step loop, logging cadence and results file.

Which ranks call: ``Runner(...).run()`` on every rank of ``COMM_WORLD`` after the job was validated and
the ranks agreed that it is valid (see ``cli.py``). Rank 0 prints progress and the summary.

Per step a synchronous algorithm's ``step(t)`` runs on every rank, followed by one tiny status
reduction (is any rank's state non-finite?), so that a diverging run stops on every rank at the same
step boundary with a clear message while the results file is still closed properly. At log points
(step 0, every ``log_every`` steps and the last step) the runner computes the network metrics with a few
reductions and appends one row to the results file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch
from mpi4py import MPI

import mpidecent
from mpidecent.algorithms import ALGORITHMS, Algorithm, Context, DataLayout, StepStats, mixing_rows
from mpidecent.comm.collectives import Collectives
from mpidecent.comm.graph import Neighborhood
from mpidecent.comm.master import MasterWorker
from mpidecent.comm.world import MpiEnvironment, threads_per_rank
from mpidecent.compression import build_compressor
from mpidecent.errors import EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED
from mpidecent.io.checkpoint import Snapshot, checkpoint_path, write_checkpoint
from mpidecent.io.results import FORMAT_VERSION, ResultsWriter
from mpidecent.learning.data import Shard, load_node_data
from mpidecent.learning.models import build_flat_model
from mpidecent.learning.problems import GLM_LOSS, LocalEval, NullObjective, TorchObjective, glm_optimum
from mpidecent.plan import Plan, job_folder
from mpidecent.progress import Progress
from mpidecent.topology.schedule import Schedule
from mpidecent.preemption import requeue_under_slurm, stop_requested, stop_signal_name


@dataclass
class Totals:
    """Cumulative per-rank counters since step 0."""

    bits: int = 0
    bytes: int = 0
    messages: int = 0
    compute_s: float = 0.0
    comm_s: float = 0.0
    losses: list[float] = field(default_factory=list)  # minibatch losses since the last log point

    def add(self, s: StepStats) -> None:
        self.bits += s.bits_sent
        self.bytes += s.bytes_sent
        self.messages += s.messages_sent
        self.compute_s += s.compute_s
        self.comm_s += s.comm_s
        self.losses.append(s.loss)


@dataclass
class LogRow:
    step: int
    rank_values: dict[str, float]
    global_values: dict[str, float]
    max_abs: float  # largest |entry| of any rank's model (NaN if any is non-finite)


@dataclass
class RunResult:
    """What a finished run reports (rank 0 prints comparison tables from these)."""

    name: str
    status: str
    out: str
    row: LogRow | None  # None when a resumed run was stopped before logging a row
    steps: int
    n: int
    has_optimum: bool


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Runner:
    """One run on this rank (see module docstring)."""

    def __init__(self, plan: Plan, env: MpiEnvironment, out: str, overwrite: bool, quiet: bool = False,
                 resume: Snapshot | None = None) -> None:
        self.plan = plan
        self.job = plan.job
        self.env = env
        self.out = out
        self.overwrite = overwrite
        self.quiet = quiet
        self.resume = resume
        self.checkpoint = checkpoint_path(out)
        self.comm = MPI.COMM_WORLD.Dup()  # our own communication context, separate from the user's
        self.rank, self.size = self.comm.rank, self.comm.size
        self.collectives = Collectives(self.comm)
        self.dtype = np.dtype(self.job.run["dtype"])
        self.seed = int(self.job.run["seed"])
        torch.set_num_threads(threads_per_rank())
        self.neighborhood: Neighborhood | None = None
        self.master_worker: MasterWorker | None = None
        self.algorithm = self._build_algorithm()

    # ---- set-up -------------------------------------------------------------------------------------------

    def _build_algorithm(self) -> Algorithm:
        job, rank, plan = self.job, self.rank, self.plan
        algo_cls = ALGORITHMS[job.algorithm["name"]]
        layout = algo_cls.data_layout(job, self.size, rank)
        self.data, weights, eval_shard = self._load_data(layout)
        flat = build_flat_model(job.model, self.data.num_features, self.data.num_classes, self.dtype, self.seed,
                                node=rank)
        self.objective = TorchObjective(flat, self.data, job.model["l2"] if layout.regularize else 0.0,
                                        job.data["batch_size"], self.seed, rank, sample_weights=weights,
                                        eval_shard=eval_shard)
        self.objective.eval_l2 = job.model["l2"]  # the network objective includes ℓ2 even if training does not
        self.layout = layout
        self.optimum = self._optimum()
        compressor = build_compressor(job.compression["name"], flat.dim, self.dtype, job.compression)
        rows = mixing_rows(plan.schedule.graphs, plan.slot_weights, rank)
        ctx = Context(rank=rank, size=self.size, seed=self.seed, dtype=self.dtype, params=job.algorithm,
                      objective=self.objective, compressor=compressor, collectives=self.collectives, rows=rows,
                      steps=job.run["steps"], l2=job.model["l2"], stragglers=job.stragglers)
        if algo_cls.graph in ("directed", "undirected"):
            self.neighborhood = Neighborhood(self.comm, plan.schedule)
            ctx.neighborhood = self.neighborhood
        if algo_cls.graph == "master":
            down = flat.dim * self.dtype.itemsize
            self.master_worker = MasterWorker(self.comm, down, compressor.nbytes)
            ctx.master_worker = self.master_worker
        return algo_cls(ctx)

    def _load_data(self, layout: DataLayout):
        """This rank's data for its layout: (NodeData, per-sample weights or None, evaluation shard or None)."""
        job, rank = self.job, self.rank
        if layout.nodes == self.size and layout.train == ((rank, 1.0),) and layout.evaluate == rank:
            # The usual case: read collectively (parallel HDF5 when the data set is a file).
            return load_node_data(job.data, self.size, rank, comm=self.comm, base_dir=job_folder(job)), None, None
        parts = {j: load_node_data(job.data, layout.nodes, j, base_dir=job_folder(job))
                 for j in {j for j, _ in layout.train} | ({layout.evaluate} - {None})}
        template = next(iter(parts.values())) if parts else load_node_data(job.data, layout.nodes, 0,
                                                                           base_dir=job_folder(job))
        chosen = [parts[j].train for j, _ in layout.train]
        features = np.concatenate([s.features for s in chosen]) if chosen else template.train.features[:0]
        targets = np.concatenate([s.targets for s in chosen]) if chosen else template.train.targets[:0]
        indices = np.concatenate([s.indices for s in chosen]) if chosen else template.train.indices[:0]
        weights = np.concatenate([np.full(s.num_samples, w / max(s.num_samples, 1))
                                  for s, (_, w) in zip(chosen, layout.train)]) if chosen else np.zeros(0)
        train = Shard(rank, indices, features, targets)
        evaluate = parts[layout.evaluate].train if layout.evaluate is not None else Shard(
            rank, indices[:0], features[:0], targets[:0])
        test = parts[layout.evaluate].test if layout.evaluate is not None else None
        data = dataclasses.replace(template, train=train, test=test)
        return data, weights, evaluate

    def _optimum(self) -> float:
        """f* of the network objective for convex generalised linear models with ℓ2 > 0, computed
        collectively by Newton's method on the shards (NaN when unknown: non-convex models, softmax)."""
        model, l2 = self.job.model["name"], self.job.model["l2"]
        if model not in GLM_LOSS or l2 <= 0:
            return math.nan
        loss, bias = GLM_LOSS[model]
        shard = self.objective.eval_shard
        return glm_optimum(shard.features, shard.targets, self.layout.nodes, l2, loss, bias, self.collectives).value

    # ---- metrics --------------------------------------------------------------------------------------------

    def _log_row(self, step: int, totals: Totals, wall_s: float) -> LogRow:
        """Collective: network metrics at the reported models (4 small reductions + one of size d)."""
        model = np.asarray(self.algorithm.model_view(), dtype=np.float64)
        mean = model.copy()
        self.collectives.allreduce_sum(mean)
        mean /= self.size
        local_at_mean = self.objective.evaluate(mean)
        local_own = self.objective.evaluate(model)
        test = self.objective.evaluate_test(mean) or LocalEval(0.0, 0, 0)
        spread = float(np.sum((model - mean) ** 2))
        sums = self.collectives.sum_scalars(spread, local_at_mean.objective, local_at_mean.correct,
                                            local_at_mean.count, totals.compute_s, totals.comm_s,
                                            test.objective * test.count, test.correct, test.count,
                                            float(local_at_mean.count > 0))
        counts = np.array([totals.bits, totals.bytes], dtype=np.int64)
        self.collectives.allreduce_sum(counts)
        max_abs = np.array([np.max(np.abs(model)) if np.all(np.isfinite(model)) else np.inf])
        self.collectives.allreduce_max(max_abs)
        avg_loss = sums[1] / sums[9]  # f = (1/n) Σ_i F_i over the ranks that evaluate a partition
        rank_values = {
            "loss": float(np.mean(totals.losses)) if totals.losses else math.nan,
            "local_objective": local_own.objective if local_own.count else math.nan,
            "bits_sent": totals.bits,
            "bytes_sent": totals.bytes,
            "messages_sent": totals.messages,
            "compute_s": totals.compute_s,
            "comm_s": totals.comm_s,
            **self.algorithm.extra_metrics(),
        }
        global_values = {
            "avg_model_loss": avg_loss,
            "suboptimality": avg_loss - self.optimum,
            "accuracy": sums[2] / sums[3] if sums[3] and self.data.task != "regression" else math.nan,
            "consensus_distance": sums[0] / self.size,
            "cumulative_bits": int(counts[0]),
            "cumulative_bytes": int(counts[1]),
            "wall_s": wall_s,
            "compute_s_total": sums[4],
            "comm_s_total": sums[5],
        }
        if self.data.num_test:
            global_values["test_loss"] = sums[6] / sums[8]
            global_values["test_accuracy"] = sums[7] / sums[8] if self.data.task != "regression" else math.nan
        totals.losses.clear()
        return LogRow(step, rank_values, global_values, float(max_abs[0]))

    # ---- the run --------------------------------------------------------------------------------------------

    def _metadata(self) -> dict:
        job, algo, plan = self.job, self.algorithm, self.plan
        started = self.comm.bcast(_utc_now(), root=0)
        hosts = self.comm.allgather(socket.gethostname())
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
            "algorithm_description": algo.describe(),
            "compressor": job.compression["name"],
            "compressor_description": algo.compressor.describe(),
            "compressor_bits": algo.compressor.bits,
            "model_dim": self.objective.dim,
            "model": job.model["name"],
            "data": job.data["name"],
            "task": self.data.task,
            "num_train": self.data.num_train,
            "num_test": self.data.num_test,
            "schedule_period": self.plan.schedule.period,
            "dtype": job.run["dtype"],
            "optimum": self.optimum,
            "world_size": self.size,
            "hosts": ",".join(sorted(set(hosts))),
            "mpi_library": self.env.library,
            "mpi_standard": self.env.standard,
            "mpi_thread_level": self.env.thread_level,
            "mpi4py_version": self.env.mpi4py_version,
            "osc_component": self.env.osc_component,
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

    def run(self) -> int:
        """Run (or resume) every step; returns the process exit status: EXIT_OK, EXIT_DIVERGED, or
        EXIT_PREEMPTED after a stop signal (a checkpoint was written)."""
        job, algo = self.job, self.algorithm
        rank_extras = list(algo.extra_metrics())
        if self.rank == 0 and job.set_aside and not self.quiet:
            print(f"note: a plug-in was switched (by --set or [[sweep]]); keys of the job file only the replaced "
                  f"one uses: {', '.join(job.set_aside)}", flush=True)
        global_extras = {"test_loss": ("f8", "", "mean loss (no ℓ2) of the average model on the held-out test set"),
                         "test_accuracy": ("f8", "fraction", "accuracy of the average model on the test set")
                         } if self.data.num_test else {}
        writer = ResultsWriter(self.out, self.comm, self.overwrite, rank_extras, global_extras,
                               resume_rows=self.resume.results_rows if self.resume else None)
        try:
            if self.resume is None:
                writer.set_attrs(self._metadata())
                writer.write_topology(self.plan.graph.edges, self.plan.slot_weights, {
                    "kind": job.topology["kind"], "directed": bool(self.plan.graph.directed),
                    "n": self.plan.n, "weights_name": job.topology["weights"],
                    "strongly_connected": bool(self.plan.strongly_connected),
                    "spectral_gap": float(self.plan.spectral_gap), "period": self.plan.schedule.period})
            else:
                resumed = [int(s) for s in np.atleast_1d(writer.file.attrs.get("resumed_at", np.zeros(0)))]
                writer.set_attrs({"status": "running", "message": "", "finished": "",
                                  "resumed_at": np.array([*resumed, self.resume.step], dtype=np.int64)})
            # Rank 0 only; a bar on a terminal, plain lines in log files. Speed and ETA count from here.
            self.progress = Progress(job.run["name"], job.run["steps"], self.quiet or self.rank != 0,
                                     first_step=self.resume.step if self.resume is not None else 0)
            try:
                status, message, done, last = self._loop(writer)
            finally:
                self.progress.close()  # end the terminal bar's line before anything else is printed
            for name, data in algo.events(done).items():  # rank 0's record, the same on every rank
                writer.create_event_dataset(name, self.comm.bcast(data if self.rank == 0 else None, root=0))
            finished = self.comm.bcast(_utc_now(), root=0)
            writer.set_attrs({"finished": finished, "status": status, "message": message,
                              "steps_completed": done,
                              "wall_s": last.global_values["wall_s"] if last else math.nan})
        finally:
            writer.close()
            if self.neighborhood is not None:
                self.neighborhood.free()
            if self.master_worker is not None:
                self.master_worker.close()  # completes late messages: nothing is left pending
            self.algorithm.close()  # collective (async_gossip frees its RMA window)
            self.comm.Free()
        self.result = RunResult(job.run["name"], status, self.out, last, job.run["steps"], self.size,
                                math.isfinite(self.optimum))
        if self.rank == 0:
            if status == "preempted":
                note = requeue_under_slurm()
                message += f"; {note}" if note else ""
            if message:
                print(f"mpidecent: {message}", file=sys.stderr, flush=True)
            if not self.quiet and last is not None and status != "preempted":
                print(self.summary(last, status), flush=True)
        return {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "preempted": EXIT_PREEMPTED}[status]

    def _restore(self, totals: Totals) -> float:
        """Overwrite the algorithm's state and the counters from the snapshot; returns the wall time
        already spent (the run's clock continues from it)."""
        snapshot, live = self.resume, self.algorithm.state()
        if set(snapshot.state) != set(live):
            raise RuntimeError(f"checkpoint state {sorted(snapshot.state)} does not match the algorithm's {sorted(live)}")
        for name, array in live.items():
            np.copyto(array, snapshot.state[name])
        self.algorithm.after_restore()
        c = snapshot.counters
        totals.bits, totals.bytes, totals.messages = int(c["bits"][0]), int(c["bytes"][0]), int(c["messages"][0])
        totals.compute_s, totals.comm_s = float(c["compute_s"][0]), float(c["comm_s"][0])
        totals.losses = [float(v) for v in c["losses"]]
        return float(c["wall_s"][0])

    def _checkpoint(self, step: int, totals: Totals, rows: int, wall_s: float) -> None:
        """Collective: write every rank's state at this step boundary (atomic; see io/checkpoint.py)."""
        counters = {
            "bits": np.array([totals.bits], dtype=np.int64), "bytes": np.array([totals.bytes], dtype=np.int64),
            "messages": np.array([totals.messages], dtype=np.int64),
            "compute_s": np.array([totals.compute_s]), "comm_s": np.array([totals.comm_s]),
            "losses": np.array(totals.losses, dtype=np.float64), "wall_s": np.array([wall_s]),
        }
        write_checkpoint(self.checkpoint, self.comm, Snapshot(step, rows, self.algorithm.state(), counters),
                         {"job": self.job.to_toml(), "world_size": self.size, "algorithm": self.job.algorithm["name"],
                          "results_file": os.path.abspath(self.out)})

    def _loop(self, writer: ResultsWriter) -> tuple[str, str, int, LogRow | None]:
        """The step loop; returns (status, message, steps completed, last logged row)."""
        algo, job = self.algorithm, self.job
        steps, log_every, every = job.run["steps"], job.run["log_every"], job.run["checkpoint_every"]
        threshold = job.run["divergence_threshold"]
        totals = Totals()
        flags = np.zeros(2, dtype=np.int32)  # [any rank non-finite, any rank asked to stop]
        row: LogRow | None = None
        first = self.resume.step if self.resume is not None else 0
        if self.resume is not None:
            start = time.perf_counter() - self._restore(totals)
        else:
            start = time.perf_counter()
            algo.before_log()
            row = self._log_row(0, totals, 0.0)
            writer.append(0, row.rank_values, row.global_values)
            self.progress.update(0, row.global_values)
        for t in range(first, steps):
            stats = algo.step(t)
            totals.add(stats)
            done = t + 1
            # Every rank learns whether any rank went non-finite or got a stop signal, so all act at the
            # same step boundary: after every step, or (status_every_step = False) at log and checkpoint
            # boundaries only, where the ranks meet anyway.
            flags[0] |= int(stats.nonfinite or not math.isfinite(stats.loss))
            flags[1] |= int(stop_requested())
            log_point = done % log_every == 0 or done == steps
            checkpoint_point = bool(every) and done % every == 0 and done < steps
            bad = stop = False
            if algo.status_every_step or log_point or checkpoint_point:
                self.collectives.allreduce_max(flags)
                bad, stop = bool(flags[0]), bool(flags[1])
                flags[:] = 0
            if bad or log_point:
                algo.before_log()
                row = self._log_row(done, totals, time.perf_counter() - start)
                writer.append(done, row.rank_values, row.global_values)
                if bad or not row.max_abs <= threshold:
                    return "diverged", self._divergence_message(done, row, stats), done, row
                self.progress.update(done, row.global_values)
            if stop or checkpoint_point:
                self._checkpoint(done, totals, writer.rows, time.perf_counter() - start)
            if stop:
                return ("preempted", f"stop requested ({stop_signal_name() or 'signal on another rank'}) at "
                        f"step {done}: checkpoint {self.checkpoint} written; continue with --resume", done, row)
        return "completed", "", steps, row

    def _divergence_message(self, step: int, row: LogRow, stats: StepStats) -> str:
        local_bad = stats.nonfinite or not math.isfinite(stats.loss) or not np.all(
            np.isfinite(self.algorithm.model_view()))
        ranks = [r for r, b in enumerate(self.comm.allgather(local_bad)) if b]
        what = (f"non-finite values on rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
                if ranks else f"a model entry exceeded [run] divergence_threshold = {self.job.run['divergence_threshold']:g}"
                f" (max |x| = {row.max_abs:.3g})")
        return (f"run diverged at step {step}: {what}; {self.algorithm.describe()}. Lower [algorithm] lr"
                f"{' or gamma' if 'gamma' in self.job.algorithm else ''}, or use a finer quantizer. Results so far "
                f"are in {self.out}")

    # ---- output (rank 0) --------------------------------------------------------------------------------------

    def _topology_text(self) -> str:
        plan, kind = self.plan, self.job.topology["kind"]
        graph = plan.graph
        shape = "directed" if graph.directed else "undirected"
        if plan.schedule.time_varying:
            shape += f", time-varying with period {plan.schedule.period}"
        return (f"{kind} ({shape}), {plan.n} nodes, {graph.num_edges} edges, spectral gap {plan.spectral_gap:.4f}"
                f"{' per step' if plan.schedule.time_varying else ''}")

    def summary(self, row: LogRow, status: str) -> str:
        g, job, plan = row.global_values, self.job, self.plan
        steps = max(row.step, 1)
        busy = g["compute_s_total"] + g["comm_s_total"]
        compute_share = g["compute_s_total"] / busy if busy > 0 else math.nan
        lines = [
            ("run", f"{job.run['name']} ({status}, {row.step}/{job.run['steps']} steps)"),
            ("algorithm", self.algorithm.describe()),
            ("topology", self._topology_text()),
            ("model", f"{job.model['name']}, d = {self.objective.dim}, {job.run['dtype']}; data {job.data['name']} "
                      f"({self.data.task}, {self.data.num_train} train / {self.data.num_test} test samples)"),
            ("avg-model loss", f"{g['avg_model_loss']:.8f}"),
        ]
        if math.isfinite(self.optimum):
            lines += [("optimum f*", f"{self.optimum:.8f}"), ("suboptimality", f"{g['suboptimality']:.4e}")]
        if self.data.task != "regression":
            lines.append(("accuracy", f"{g['accuracy']:.4f} (training set)"))
        if "test_loss" in g:
            test_acc = f", accuracy {g['test_accuracy']:.4f}" if self.data.task != "regression" else ""
            lines.append(("test set", f"loss {g['test_loss']:.6f}{test_acc}"))
        lines += [
            ("consensus dist.", f"{g['consensus_distance']:.4e}"),
            ("bits sent", f"{g['cumulative_bits']:.6e} total, {g['cumulative_bits'] / (plan.n * steps):.1f} "
                          "per node per step"),
            ("bytes sent", f"{g['cumulative_bytes']:,} total"),
            ("wall time", f"{g['wall_s']:.2f} s (compute {100 * compute_share:.0f}%, "
                          f"communication {100 * (1 - compute_share):.0f}% of rank time)"),
            ("results", self.out),
        ]
        width = max(len(k) for k, _ in lines)
        rule = "-" * (width + 2 + max(len(v) for _, v in lines))
        return "\n".join([rule, *(f"{k:<{width}}  {v}" for k, v in lines), rule])


def comparison_table(runs: list[RunResult]) -> str:
    """One line per run: the final numbers side by side (a sweep's summary)."""
    header = ["run", "status", "steps", "avg-loss", "subopt", "accuracy", "consensus", "bits", "bits/node/step",
              "paper units", "wall s"]
    rows = []
    for r in runs:
        if r.row is None:
            rows.append([r.name, r.status, *["-"] * (len(header) - 2)])
            continue
        g = r.row.global_values
        acc = g.get("test_accuracy", g["accuracy"])
        paper = r.row.rank_values.get("paper_bits")
        rows.append([r.name, r.status, str(r.row.step), f"{g['avg_model_loss']:.6f}",
                     f"{g['suboptimality']:.3e}" if r.has_optimum else "-",
                     "-" if not math.isfinite(acc) else f"{acc:.4f}{' (test)' if 'test_accuracy' in g else ''}",
                     f"{g['consensus_distance']:.2e}", f"{g['cumulative_bits']:.3e}",
                     f"{g['cumulative_bits'] / (r.n * max(r.row.step, 1)):.0f}",
                     "-" if paper is None else f"{paper:.4g}", f"{g['wall_s']:.1f}"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def gossip_only(comm: MPI.Intracomm, schedule: Schedule, slot_weights: tuple[np.ndarray, ...], name: str,
                compressor: str, comp_params: dict, params: dict, x0: np.ndarray, seed: int = 0) -> Algorithm:
    """Collective: algorithm ``name`` with zero gradients (pure gossip, i.e. average consensus) on ``comm``,
    starting from this rank's ``x0`` (its dtype is the state dtype); ``params`` override the algorithm's
    defaults. The caller frees ``algorithm.ctx.neighborhood`` when done. For tests and benchmarks."""
    objective = NullObjective(x0.size, x0.dtype)
    objective.params[:] = x0
    cls = ALGORITHMS[name]
    ctx = Context(rank=comm.rank, size=comm.size, seed=seed, dtype=x0.dtype,
                  params={p.name: p.default for p in cls.params} | params, objective=objective,
                  compressor=build_compressor(compressor, x0.size, x0.dtype, comp_params),
                  collectives=Collectives(comm), neighborhood=Neighborhood(comm, schedule),
                  rows=mixing_rows(schedule.graphs, slot_weights, comm.rank))
    return cls(ctx)
