"""The run: set-up on every rank, the step loop with its logging and checkpoint cadence, the results file.

Which ranks call: ``Runner(...).run()`` on every rank of ``COMM_WORLD`` after the job was validated and
the ranks agreed that it is valid (see ``cli/run.py``). Rank 0 prints progress and the summary.

Per step a synchronous algorithm's ``step(t)`` runs on every rank, followed by one tiny status
reduction (is any rank's state non-finite? did any rank get a stop signal?), so that a diverging run
stops on every rank at the same step boundary with a clear message while the results file is still
closed properly. At log points (step 0, every ``log_every`` steps and the last step) the runner computes
the network metrics (``metrics.py``) and appends one row to the results file, then checks the run's health
(``Health``): a non-finite or blown-up loss or consensus distance, or a model entry beyond
``[run] divergence_threshold``, ends the run as ``diverged`` with the quantity, the step and a hint.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time

import numpy as np
import torch
from mpi4py import MPI

from mpidecent.algorithms.base import StepStats
from mpidecent.algorithms.catalog import divergence_hint, stability_warnings
from mpidecent.compression.quantizers import DEFAULT_BUCKET
from mpidecent.comm.collectives import Collectives
from mpidecent.comm.world import MpiEnvironment
from mpidecent.errors import EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED
from mpidecent.io.checkpoint import Snapshot, checkpoint_path, write_checkpoint
from mpidecent.io.layout import RANK_TEST_SERIES, TEST_SERIES
from mpidecent.io.results import ResultsWriter
from mpidecent.plan import Plan
from mpidecent.preemption import requeue_under_slurm, stop_requested, stop_signal_name
from mpidecent.progress import Progress
from mpidecent.runner.build import build_algorithm, build_node
from mpidecent.runner.checkpointing import restore, snapshot
from mpidecent.runner.export import save_models
from mpidecent.runner.metadata import run_attributes, topology_attributes, utc_now
from mpidecent.runner.metrics import LogRow, Totals, log_row, network_optimum
from mpidecent.runner.summary import Health, RunResult, summary
from mpidecent.threads import threads_per_rank

_EXIT = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "preempted": EXIT_PREEMPTED}


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
        torch.set_num_threads(threads_per_rank())
        self.node = build_node(plan, self.rank, self.size, self.comm)
        self.objective = self.node.objective
        self.optimum = network_optimum(self.job.model, self.objective, self.node.layout.nodes, self.collectives)
        self.algorithm, self.connection = build_algorithm(plan, self.node, self.comm, self.collectives)
        self.models: list[str] = []  # the saved model files (rank 0: the average model's first)

    # ---- the run --------------------------------------------------------------------------------------------

    def resume_problem(self) -> str | None:
        """Collective, before ``run``: with a checkpoint to resume, the first rank's line if its saved arrays
        do not match this run's (names, shapes, kinds), the same on every rank; checked before the results
        file is opened, so a refused resume leaves it untouched. None when there is nothing to refuse."""
        from mpidecent.errors import JobError
        from mpidecent.runner.checkpointing import check_shapes, live_state

        problem = None
        if self.resume is not None:
            try:
                check_shapes(self.resume, live_state(self.algorithm, self.objective))
            except JobError as err:
                problem = f"--resume: {err}; {self.out} and its checkpoint were left untouched"
        found = [p for p in self.comm.allgather(problem) if p]
        return found[0] if found else None

    def abandon(self) -> None:
        """Collective: free what the constructor built, for a run that will not start."""
        self.connection.close()
        self.comm.Free()

    def run(self) -> int:
        """Run (or resume) every step; returns the process exit status: EXIT_OK, EXIT_DIVERGED, or
        EXIT_PREEMPTED after a stop signal (a checkpoint was written)."""
        job, algo, data = self.job, self.algorithm, self.node.data
        if self.rank == 0 and job.set_aside and not self.quiet:
            print(f"note: a plug-in was switched (by --set or [[sweep]]); keys of the job file only the replaced "
                  f"one uses: {', '.join(job.set_aside)}", flush=True)
        bucket, dim = getattr(self.node.compressor, "bucket", 0), self.node.compressor.dim
        if self.rank == 0 and not self.quiet and bucket > dim and bucket != DEFAULT_BUCKET:
            print(f"note: [compression] bucket = {bucket} is larger than the model (d = {dim}): capped to one "
                  f"bucket of {dim} entries (the same as bucket = 0)", flush=True)
        if self.rank == 0:
            for warning in stability_warnings(job):
                print(f"mpidecent: warning: {job.run['name']}: {warning}", file=sys.stderr, flush=True)
        writer = ResultsWriter(self.out, self.comm, self.overwrite, list(algo.extra_metrics()),
                               TEST_SERIES if data.num_test else {},
                               resume_rows=self.resume.results_rows if self.resume else None,
                               rank_declared=RANK_TEST_SERIES if data.num_test else {})
        try:
            if self.resume is None:
                started = self.comm.bcast(utc_now(), root=0)
                hosts = self.comm.allgather(socket.gethostname())
                writer.set_attrs(run_attributes(self.plan, algo, self.node, self.optimum, self.env, started, hosts))
                writer.write_topology(self.plan.graph.edges, self.plan.slot_weights, topology_attributes(self.plan))
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
            for name, array in algo.events(done).items():  # rank 0's record, the same on every rank
                writer.create_event_dataset(name, self.comm.bcast(array if self.rank == 0 else None, root=0))
            self.models = save_models(self.out, self.objective.flat, algo.model_view(), self.collectives, self.rank,
                                      job.run["save_model"]) if status == "completed" else []
            finished = self.comm.bcast(utc_now(), root=0)
            writer.set_attrs({"finished": finished, "status": status, "message": message,
                              "steps_completed": done,
                              "wall_s": last.global_values["wall_s"] if last else math.nan,
                              **({"model_file": os.path.basename(self.models[0])} if self.models else {})})
        finally:
            writer.close()
            self.connection.close()  # collective: graph communicator, master/worker channel, RMA window
            self.comm.Free()
        self.result = RunResult(job.run["name"], status, self.out, last, job.run["steps"], self.size,
                                math.isfinite(self.optimum), self.models[0] if self.models else None,
                                label=job.label, message=message, step=done)
        if self.rank == 0:
            if status == "preempted":
                note = requeue_under_slurm()
                message += f"; {note}" if note else ""
            if message:
                print(f"mpidecent: {message}", file=sys.stderr, flush=True)
            if not self.quiet and last is not None and status != "preempted":
                print(summary(self.plan, algo, self.node, self.optimum, last, status, self.out,
                              self.models[0] if self.models else None), flush=True)
        return _EXIT[status]

    def _log_row(self, step: int, totals: Totals, wall_s: float) -> LogRow:
        data = self.node.data
        return log_row(step, self.algorithm, self.objective, self.collectives, totals, wall_s, self.optimum,
                       data.task, bool(data.num_test))

    def _loop(self, writer: ResultsWriter) -> tuple[str, str, int, LogRow | None]:
        """The step loop; returns (status, message, steps completed, last logged row)."""
        algo, job = self.algorithm, self.job
        steps, log_every, every = job.run["steps"], job.run["log_every"], job.run["checkpoint_every"]
        threshold = job.run["divergence_threshold"]
        status_every_step = self.plan.algorithm.status_every_step
        totals = Totals()
        flags = np.zeros(2, dtype=np.int32)  # [any rank non-finite, any rank asked to stop]
        row: LogRow | None = None
        first = self.resume.step if self.resume is not None else 0
        if self.resume is not None:
            start = time.perf_counter() - restore(self.resume, algo, self.objective, totals)
            rows = self.resume.results_rows
            metrics = writer.file["metrics/global"]
            health = Health.from_series(metrics["avg_model_loss"][:rows], metrics["consensus_distance"][:rows])
        else:
            start = time.perf_counter()
            algo.before_log()
            row = self._log_row(0, totals, 0.0)
            writer.append(0, row.rank_values, row.global_values)
            health = Health()
            health.observe(row.global_values["avg_model_loss"], row.global_values["consensus_distance"])
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
            if status_every_step or log_point or checkpoint_point:
                self.collectives.allreduce_max(flags)
                bad, stop = bool(flags[0]), bool(flags[1])
                flags[:] = 0
            if bad or log_point:
                algo.before_log()
                row = self._log_row(done, totals, time.perf_counter() - start)
                writer.append(done, row.rank_values, row.global_values)
                blown = health.problem(row.global_values)
                if bad or blown or not row.max_abs <= threshold:
                    return "diverged", self._divergence_message(done, row, stats, blown), done, row
                self.progress.update(done, row.global_values)
            if stop or checkpoint_point:
                self._checkpoint(done, totals, writer.rows, time.perf_counter() - start)
            if stop:
                return ("preempted", f"stop requested ({stop_signal_name() or 'signal on another rank'}) at "
                        f"step {done}: checkpoint {self.checkpoint} written; continue with --resume", done, row)
        return "completed", "", steps, row

    def _checkpoint(self, step: int, totals: Totals, rows: int, wall_s: float) -> None:
        """Collective: write every rank's state at this step boundary (atomic; see io/checkpoint.py)."""
        write_checkpoint(self.checkpoint, self.comm, snapshot(step, rows, self.algorithm, self.objective, totals,
                                                              wall_s),
                         {"job": self.job.to_toml(), "world_size": self.size, "algorithm": self.job.algorithm["name"],
                          "results_file": os.path.abspath(self.out)})

    def _divergence_message(self, step: int, row: LogRow, stats: StepStats, blown: str | None) -> str:
        """Collective: which quantity blew up (non-finite ranks first), at which step, and what to try."""
        local_bad = stats.nonfinite or not math.isfinite(stats.loss) or not np.all(
            np.isfinite(self.algorithm.model_view()))
        ranks = [r for r, b in enumerate(self.comm.allgather(local_bad)) if b]
        if ranks:
            what = f"non-finite values on rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
        elif blown:
            what = blown
        else:
            what = (f"a model entry exceeded [run] divergence_threshold = {self.job.run['divergence_threshold']:g}"
                    f" (max |x| = {row.max_abs:.3g})")
        return (f"run diverged at step {step}: {what}; {self.algorithm.describe()}. Hint: "
                f"{divergence_hint(self.job)}. Results so far are in {self.out}")
