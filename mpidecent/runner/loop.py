"""The run: set-up on every rank, the step loop with its logging and checkpoint cadence, the results
file.

Which ranks call: ``Runner(...).run()`` on every rank of ``COMM_WORLD`` after the job was validated
and the ranks agreed that it is valid (see ``cli/run.py``). Rank 0 prints progress and the summary.

Per step the algorithm's ``step(t)`` runs on every rank. The ranks agree on three status flags (is
any rank's state non-finite? did any rank get a stop signal? does rank 0 see no room for the
output?) so that every rank acts on them at the same step boundary: a diverging run stops with a
clear message while the results file is still closed properly, a stop signal checkpoints and exits 4
on every rank. The agreement (``comm/status.py``) is a blocking reduction at log and checkpoint
boundaries, where the ranks meet anyway; between them a synchronous algorithm
(``status_every_step``: the neighbour patterns and allreduce_sgd) pipelines it: after boundary b
each rank starts a non-blocking reduction of its flags and every rank waits for it at boundary b +
L, L = clamp(directed diameter of the graph, 1, 16) (1 for allreduce_sgd), so no step waits on the
slowest rank of the world. A flag raised at boundary b (a step that went non-finite, a signal seen
there) is thus acted on at boundary min(b + L, the next log or checkpoint boundary); the others
(master/worker, async gossip) act at that next log or checkpoint boundary.
``MPIDECENT_STATUS=blocking`` (or ``Runner(status="blocking")``) restores the blocking reduction
after every step (b + 0), for benchmarks only.

At log points (step 0, every ``log_every`` steps and the last step) the runner computes the network
metrics (``metrics.py``) and appends one row to the results file, then checks the run's health
(``Health``): a non-finite or blown-up loss or consensus distance, or a model entry beyond ``[run]
divergence_threshold``, ends the run as ``diverged`` with the quantity, the step and a hint. Before
a log row, before a checkpoint and once at the end, every rank calls ``algorithm.drain()`` at the
same boundary, so that no message is in flight when the state is read or the run closes.
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
from mpidecent.comm.collectives import Collectives
from mpidecent.comm.status import STATUS_ENV, STATUS_MODES, StatusPipe, agreed_lag
from mpidecent.comm.world import MpiEnvironment
from mpidecent.compression.quantizers import DEFAULT_BUCKET
from mpidecent.errors import EXIT_DIVERGED, EXIT_IO, EXIT_OK, EXIT_PREEMPTED, JobError, OutputError
from mpidecent.io.checkpoint import Snapshot, checkpoint_path, write_checkpoint
from mpidecent.io.faults import ROW_METADATA_BYTES, OutputWatch, guarded
from mpidecent.io.layout import RANK_TEST_SERIES, TEST_SERIES
from mpidecent.io.results import ResultsWriter
from mpidecent.plan import Plan
from mpidecent.preemption import requeue_under_slurm, stop_requested, stop_signal_name
from mpidecent.progress import Progress
from mpidecent.runner.build import build_algorithm, build_node
from mpidecent.runner.checkpointing import live_state, restore, snapshot
from mpidecent.runner.export import save_models
from mpidecent.runner.metadata import run_attributes, topology_attributes, utc_now
from mpidecent.runner.metrics import (
    LogRow,
    Totals,
    eval_series,
    evaluates,
    health_series,
    log_row,
    network_optimum,
)
from mpidecent.runner.summary import Health, RunResult, summary
from mpidecent.threads import threads_per_rank

FAULT_AGREEMENT_S = (
    3.0  # how long a rank whose write failed waits for the others before it aborts alone
)
# The status flags: [any rank non-finite, any rank asked to stop, rank 0 sees no room or no output
# folder]
NONFINITE, STOP, NO_ROOM = range(3)
STATUS_FLAGS = 3
_EXIT = {
    "completed": EXIT_OK,
    "diverged": EXIT_DIVERGED,
    "preempted": EXIT_PREEMPTED,
    "failed": EXIT_IO,
}


class Runner:
    """One run on this rank (see module docstring)."""

    def __init__(
        self,
        plan: Plan,
        env: MpiEnvironment,
        out: str,
        overwrite: bool,
        quiet: bool = False,
        resume: Snapshot | None = None,
        status: str | None = None,
    ) -> None:
        """Collective over ``COMM_WORLD``. ``status``: how a synchronous algorithm's ranks agree on
        the status flags between log points, "pipelined" or "blocking" (a benchmark switch; None:
        rank 0's ``MPIDECENT_STATUS``, default pipelined)."""
        self.plan = plan
        self.job = plan.job
        self.env = env
        self.out = out
        self.overwrite = overwrite
        self.quiet = quiet
        self.resume = resume
        self.checkpoint = checkpoint_path(out)
        self.comm = MPI.COMM_WORLD.Dup()  # our own communication context, separate from the user's
        self.fault_comm = (
            self.comm.Dup()
        )  # only for ranks agreeing after a failed write (_abort_on_output_error)
        self.rank, self.size = self.comm.rank, self.comm.size
        self.collectives = Collectives(self.comm)
        torch.set_num_threads(threads_per_rank())
        self.node = build_node(plan, self.rank, self.size, self.comm)
        self.objective = self.node.objective
        self.optimum = network_optimum(
            self.job.model, self.objective, self.node.layout.nodes, self.collectives
        )
        self.algorithm, self.connection = build_algorithm(
            plan, self.node, self.comm, self.collectives
        )
        self.status_mode, self.status_lag = self._status_plan(status)
        self.models: list[str] = []  # the saved model files (rank 0: the average model's first)

    def _status_plan(self, requested: str | None) -> tuple[str, int]:
        """Collective: (how the ranks agree on the status flags between log and checkpoint
        boundaries, the pipeline's lag): "pipelined" with the lag of the planned (union) graph,
        "blocking" (every step, lag 0), or "boundaries" (no agreement in between) for algorithms
        with ``status_every_step = False``. The request is rank 0's, so that every rank runs the
        same protocol whatever its environment."""
        if requested is None and self.rank == 0:
            requested = os.environ.get(STATUS_ENV, "").strip().lower() or "pipelined"
        requested = self.comm.bcast(requested, root=0)
        if requested not in STATUS_MODES:
            if self.rank != 0:  # rank 0 says it in one line and its excepthook aborts every rank
                self.comm.Barrier()
            raise JobError(
                f"{STATUS_ENV}={requested!r}: choose one of {', '.join(STATUS_MODES)} (a benchmark "
                "switch; leave it unset for runs)"
            )
        if not self.plan.algorithm.status_every_step:
            return "boundaries", 0
        if requested == "blocking":
            return "blocking", 0
        return "pipelined", agreed_lag(self.comm, self.plan.graph)

    # ---- the run ---------------------------------------------------------------------------------

    def resume_problem(self) -> str | None:
        """Collective, before ``run``: with a checkpoint to resume, the first rank's line if its
        saved arrays do not match this run's (names, shapes, kinds), the same on every rank; checked
        before the results file is opened, so a refused resume leaves it untouched. None when there
        is nothing to refuse."""
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
        self.fault_comm.Free()
        self.comm.Free()

    def run(self) -> int:
        """Run (or resume) every step; returns the process exit status: EXIT_OK, EXIT_DIVERGED,
        EXIT_PREEMPTED after a stop signal (a checkpoint was written), or EXIT_IO when rank 0 found
        no room or no output folder before a write (status ``failed``). A write that fails anyway
        aborts the job."""
        job, algo, data = self.job, self.algorithm, self.node.data
        if self.rank == 0 and job.set_aside and not self.quiet:
            print(
                "note: a plug-in was switched (by --set or [[sweep]]); keys of the job file only "
                f"the replaced one uses: {', '.join(job.set_aside)}",
                flush=True,
            )
        bucket, dim = getattr(self.node.compressor, "bucket", 0), self.node.compressor.dim
        if self.rank == 0 and not self.quiet and bucket > dim and bucket != DEFAULT_BUCKET:
            print(
                f"note: [compression] bucket = {bucket} is larger than the model (d = {dim}): "
                f"capped to one bucket of {dim} entries (the same as bucket = 0)",
                flush=True,
            )
        if self.rank == 0:
            for warning in stability_warnings(job):
                print(
                    f"mpidecent: warning: {job.run['name']}: {warning}", file=sys.stderr, flush=True
                )
        self.watch: OutputWatch | None = None
        self.checkpoint_step = self.resume.step if self.resume is not None else None
        self.logged_step: int | None = self.resume.step if self.resume is not None else None
        self.step_now = self.resume.step if self.resume is not None else 0
        # No try/finally around the file: after an error on one rank, closing it (a collective)
        # could wait forever for ranks that are elsewhere. An output error ends the job here
        # (``_abort_on_output_error``); any other error reaches the excepthook, which aborts every
        # rank (``abort_on_error``).
        try:
            writer = ResultsWriter(
                self.out,
                self.comm,
                self.overwrite,
                list(algo.extra_metrics()),
                {**(TEST_SERIES if data.num_test else {}), **eval_series(job.run)},
                resume_rows=self.resume.results_rows if self.resume else None,
                rank_declared=RANK_TEST_SERIES if data.num_test else {},
            )
            self.watch = OutputWatch(self.out) if self.rank == 0 else None
            if self.resume is None:
                started = self.comm.bcast(utc_now(), root=0)
                hosts = self.comm.allgather(socket.gethostname())
                writer.set_attrs(
                    run_attributes(
                        self.plan, algo, self.node, self.optimum, self.env, started, hosts
                    )
                )
                writer.write_topology(
                    self.plan.graph.edges, self.plan.slot_weights, topology_attributes(self.plan)
                )
            else:
                resumed = [
                    int(s)
                    for s in np.atleast_1d(writer.open_file.attrs.get("resumed_at", np.zeros(0)))
                ]
                writer.set_attrs(
                    {
                        "status": "running",
                        "message": "",
                        "finished": "",
                        "resumed_at": np.array([*resumed, self.resume.step], dtype=np.int64),
                    }
                )
            # Rank 0 only; a bar on a terminal, plain lines in log files. Speed and ETA count from
            # here.
            self.progress = Progress(
                job.run["name"],
                job.run["steps"],
                self.quiet or self.rank != 0,
                first_step=self.resume.step if self.resume is not None else 0,
            )
            self.status_pipe = StatusPipe(self.comm, max(self.status_lag, 1), STATUS_FLAGS)
            try:
                status, message, done, last = self._loop(writer)
            finally:
                self.progress.close()  # end the terminal bar's line before anything else is printed
            self.status_pipe.close()  # empty: every way out of the loop drained it
            # every rank returned at the same boundary: nothing is left in flight at the close
            algo.drain()
            for name, array in algo.events(done).items():  # rank 0's record, the same on every rank
                writer.create_event_dataset(
                    name, self.comm.bcast(array if self.rank == 0 else None, root=0)
                )
            with guarded("saving the model next to", self.out):
                self.models = (
                    save_models(
                        self.out,
                        self.objective.flat,
                        algo.model_view(),
                        self.collectives,
                        self.rank,
                        job.run["save_model"],
                    )
                    if status == "completed"
                    else []
                )
            finished = self.comm.bcast(utc_now(), root=0)
            writer.set_attrs(
                {
                    "finished": finished,
                    "status": status,
                    "message": message,
                    "steps_completed": done,
                    "wall_s": last.global_values["wall_s"] if last else math.nan,
                    **({"model_file": os.path.basename(self.models[0])} if self.models else {}),
                }
            )
            writer.close()
        except OutputError as err:
            self._abort_on_output_error(err)
        self.connection.close()  # collective: graph communicator, master/worker channel, RMA window
        self.fault_comm.Free()
        self.comm.Free()
        self.result = RunResult(
            job.run["name"],
            status,
            self.out,
            last,
            job.run["steps"],
            self.size,
            math.isfinite(self.optimum),
            self.models[0] if self.models else None,
            label=job.label,
            message=message,
            step=done,
        )
        if self.rank == 0:
            if status == "preempted":
                note = requeue_under_slurm()
                message += f"; {note}" if note else ""
            if message and status != "failed":
                print(f"mpidecent: {message}", file=sys.stderr, flush=True)
            if not self.quiet and last is not None and status != "preempted":
                print(
                    summary(
                        self.plan,
                        algo,
                        self.node,
                        self.optimum,
                        last,
                        status,
                        self.out,
                        self.models[0] if self.models else None,
                    ),
                    flush=True,
                )
            if status == "failed":  # last, where a terminal or a Slurm log shows it
                print(f"mpidecent: error: {message}", file=sys.stderr, flush=True)
        return _EXIT[status]

    def _log_row(self, step: int, totals: Totals, wall_s: float, evaluate: bool = True) -> LogRow:
        data, run = self.node.data, self.job.run
        return log_row(
            step,
            self.algorithm,
            self.objective,
            self.collectives,
            totals,
            wall_s,
            self.optimum,
            data.task,
            bool(data.num_test),
            evaluate,
            run.get("eval", "allreduce"),
            run["divergence_threshold"],
        )

    def _loop(self, writer: ResultsWriter) -> tuple[str, str, int, LogRow | None]:
        """The step loop; returns (status, message, steps completed, last logged row). Every rank
        returns at the same step boundary with the same status."""
        algo, job, pipe = self.algorithm, self.job, self.status_pipe
        steps, log_every, every = (
            job.run["steps"],
            job.run["log_every"],
            job.run["checkpoint_every"],
        )
        threshold = job.run["divergence_threshold"]
        mode = self.status_mode
        totals = Totals()
        local = np.zeros(
            STATUS_FLAGS, dtype=np.int32
        )  # this rank's flags not yet handed to an agreement
        self.nonfinite_since: int | None = (
            None  # the first boundary at which this rank was non-finite
        )
        row: LogRow | None = None
        first = self.resume.step if self.resume is not None else 0
        if self.resume is not None:
            start = time.perf_counter() - restore(self.resume, algo, self.objective, totals)
            rows = self.resume.results_rows
            metrics = writer.open_file["metrics/global"]
            loss = health_series(job.run.get("eval", "allreduce"), bool(self.node.data.num_test))
            health = Health.from_series(metrics[loss][:rows], metrics["consensus_distance"][:rows])
        else:
            start = time.perf_counter()
            algo.drain()
            algo.before_log()
            row = self._log_row(0, totals, 0.0)
            writer.append(0, row.rank_values, row.global_values)
            self.logged_step = 0
            health = Health()
            assert row.health is not None  # an evaluated row (step 0 always is) has its health
            health.observe(row.health["avg_model_loss"], row.health["consensus_distance"])
            self.progress.update(0, row.global_values)
        for t in range(first, steps):
            stats = algo.step(t)
            totals.add(stats)
            done = self.step_now = t + 1
            nonfinite = stats.nonfinite or not math.isfinite(stats.loss)
            if nonfinite and self.nonfinite_since is None:
                self.nonfinite_since = done
            local[NONFINITE] |= int(nonfinite)
            local[STOP] |= int(stop_requested())
            log_point = done % log_every == 0 or done == steps
            checkpoint_point = bool(every) and done % every == 0 and done < steps
            # Every rank gets the same `agreed` flags at the same boundary (None: nothing agreed
            # here).
            agreed: np.ndarray | None = None
            output_problem = None
            if log_point or checkpoint_point:  # the ranks meet here anyway: one blocking reduction
                output_problem = self._output_problem(writer, done, log_point, checkpoint_point)
                local[NO_ROOM] = output_problem is not None
                local |= pipe.drain()  # the flags of every reduction still in flight ride along
                pipe.agree(local)
                agreed, local = local, np.zeros_like(local)
            elif mode == "pipelined":
                pipe.start(done, local)
                local[:] = 0
                agreed = pipe.due(done)
                if (
                    agreed is not None and agreed.any()
                ):  # acting now: decide on every flag raised so far
                    agreed |= pipe.drain()
            elif (
                mode == "blocking"
            ):  # the benchmark's reference: a blocking reduction after every step
                pipe.agree(local)
                agreed, local = local, np.zeros_like(local)
            bad = stop = False
            if agreed is not None:
                bad, stop = bool(agreed[NONFINITE]), bool(agreed[STOP])
                if agreed[
                    NO_ROOM
                ]:  # every rank stops here, before writing anything (message from rank 0)
                    return (
                        "failed",
                        self._stopped_message(done, self.comm.bcast(output_problem, root=0)),
                        done,
                        row,
                    )
            if bad or log_point:
                algo.drain()
                algo.before_log()
                row = self._log_row(
                    done,
                    totals,
                    time.perf_counter() - start,
                    bad or evaluates(done, steps, job.run.get("eval_every", 0)),
                )
                writer.append(done, row.rank_values, row.global_values)
                self.logged_step = done
                blown = health.problem(row.health) if row.health is not None else None
                if bad or blown or not row.max_abs <= threshold:
                    return "diverged", self._divergence_message(done, row, stats, blown), done, row
                self.progress.update(done, row.global_values)
            if stop or checkpoint_point:
                algo.drain()
                self._checkpoint(done, totals, writer.rows, time.perf_counter() - start)
            if stop:
                return (
                    "preempted",
                    f"stop requested ({stop_signal_name() or 'signal on another rank'}) at "
                    f"step {done}: checkpoint {self.checkpoint} written; continue with --resume",
                    done,
                    row,
                )
        return "completed", "", steps, row

    def _checkpoint(self, step: int, totals: Totals, rows: int, wall_s: float) -> None:
        """Collective: write every rank's state at this step boundary (atomic; see
        io/checkpoint.py)."""
        write_checkpoint(
            self.checkpoint,
            self.comm,
            snapshot(step, rows, self.algorithm, self.objective, totals, wall_s),
            {
                "job": self.job.to_toml(),
                "world_size": self.size,
                "algorithm": self.job.algorithm["name"],
                "results_file": os.path.abspath(self.out),
            },
        )
        self.checkpoint_step = step

    # ---- output faults (io/faults.py) ------------------------------------------------------------

    def _output_problem(
        self, writer: ResultsWriter, step: int, log_point: bool, checkpoint_point: bool
    ) -> str | None:
        """Rank 0 (None elsewhere): what stops the writes of this boundary — a vanished folder or
        results file, or too little room for the row and the checkpoint (the previous checkpoint's
        size; before the first, twice rank 0's state per rank) and, at the end, the saved model."""
        if self.watch is None:
            return None
        needed = writer.growth_bytes() if log_point else 0
        if checkpoint_point:
            try:
                needed += os.path.getsize(self.checkpoint)
            except OSError:
                state = sum(a.nbytes for a in live_state(self.algorithm, self.objective).values())
                needed += 2 * state * self.size + ROW_METADATA_BYTES
        if step == self.job.run["steps"] and self.job.run["save_model"] != "none":
            copies = 1 + (self.size if self.job.run["save_model"] == "all" else 0)
            needed += copies * self.algorithm.model_view().nbytes
        return self.watch.problem(needed)

    def _kept(self) -> str:
        """What a stopped run leaves, in words (this rank's look at the folder): the results up to
        the last logged step, the last checkpoint, and how to go on."""
        results = self.watch.intact() if self.watch is not None else os.path.exists(self.out)
        checkpoint = self.checkpoint_step is not None and os.path.exists(self.checkpoint)
        if self.logged_step is None:  # nothing of value in it yet
            return f"nothing: remove the unfinished {self.out} and start again once there is room"
        kept = [f"the results file {self.out} up to step {self.logged_step}"] if results else []
        if checkpoint:
            kept.append(f"the checkpoint {self.checkpoint} of step {self.checkpoint_step}")
        if results and checkpoint:
            advice = "make room, then continue with --resume"
        else:
            advice = "start over with --force once the output folder can be written"
        return f"{' and '.join(kept) or 'nothing'}: {advice}"

    def _every_rank_failed(self, seconds: float) -> bool:
        """Did every rank reach ``_abort_on_output_error`` within ``seconds``? A barrier on the
        communicator used for nothing else, abandoned after the wait (the job is aborted right
        after)."""
        request = self.fault_comm.Ibarrier()
        deadline = time.monotonic() + seconds
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _stopped_message(self, step: int, problem: str) -> str:
        """Collective-free: the one line of a run stopped cleanly by ``_output_problem``."""
        return f"{self.job.run['name']}: stopped at step {step}: {problem}. Kept: {self._kept()}"

    def _abort_on_output_error(self, err: OutputError) -> None:
        """This rank only: a write failed (``guarded``); the other ranks may be waiting inside HDF5
        for this one, so print one line and abort the job (MPI_Abort, exit status EXIT_IO). Never
        returns."""
        progress = getattr(self, "progress", None)
        if progress is not None:
            progress.close()  # end a terminal bar's line first
        # When every rank saw the error (e.g. all failed to create the file), rank 0 alone speaks; a
        # rank whose partners are stuck elsewhere speaks for itself after a short wait.
        if not self._every_rank_failed(FAULT_AGREEMENT_S) or self.rank == 0:
            sys.stderr.write(
                f"mpidecent: error: {self.job.run['name']}: {err} (rank {self.rank}, step "
                f"{self.step_now}); every rank was stopped. Kept: {self._kept()}\n"
            )
            sys.stderr.flush()
        from mpidecent.io import run_lock

        run_lock.release_all()  # rank 0's results-file locks: Abort skips every finally
        try:
            MPI.COMM_WORLD.Abort(EXIT_IO)
        finally:
            os._exit(EXIT_IO)

    def _divergence_message(
        self, step: int, row: LogRow, stats: StepStats, blown: str | None
    ) -> str:
        """Collective: which quantity blew up (non-finite ranks first, and the first to go
        non-finite when the ranks agreed on it some steps later), at which step, and what to try."""
        since = self.nonfinite_since
        if since is None and (
            stats.nonfinite
            or not math.isfinite(stats.loss)
            or not np.all(np.isfinite(self.algorithm.model_view()))
        ):
            since = step
        found = [(s, r) for r, s in enumerate(self.comm.allgather(since)) if s is not None]
        ranks = sorted(r for _, r in found)
        if ranks:
            plural = "s" if len(ranks) > 1 else ""
            what = f"non-finite values on rank{plural} {', '.join(map(str, ranks))}"
            first_step, first_rank = min(found)
            if first_step < step:
                what += f" (first on rank {first_rank} at step {first_step})"
        elif blown:
            what = blown
        else:
            what = (
                "a model entry exceeded [run] divergence_threshold = "
                f"{self.job.run['divergence_threshold']:g} (max |x| = {row.max_abs:.3g})"
            )
        return (
            f"run diverged at step {step}: {what}; {self.algorithm.describe()}. Hint: "
            f"{divergence_hint(self.job)}. Results so far are in {self.out}"
        )
