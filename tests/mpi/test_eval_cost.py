"""[run] eval_every and eval under MPI (runner/loop.py, runner/metrics.py): the rows between evaluations,
the "reduce" form's MPI Reduce to rank 0, what the report reads from such files, and a resume across
rows that were not evaluated. The maths of one row, with its tolerances, is in tests/unit/test_eval_cost.py.

    mpirun -n 4 python -m pytest --with-mpi tests/mpi/test_eval_cost.py
"""

import math
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from mpitools import all_ranks, build_runner, plan_of, results, stop_at, untimed_series
from mpidecent.comm.world import init_mpi
from mpidecent.config import load_text
from mpidecent.errors import EXIT_OK, EXIT_PREEMPTED
from mpidecent.io.checkpoint import checkpoint_path, read_checkpoint
from mpidecent.runner import Runner

JOB = """
[run]
steps = 25
log_every = 5
seed = 2
dtype = "float32"
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
lr = 0.3
[data]
name = "digits"
partition = "iid"
batch_size = 16
test_fraction = 0.2
[model]
name = "mlp"
hidden = [16]
l2 = 0.0001
"""
EVALUATED = ("avg_model_loss", "suboptimality", "accuracy", "consensus_distance", "test_loss", "test_accuracy")
COUNTERS = ("loss", "bits_sent", "bytes_sent", "messages_sent")


def _run(out, overrides=()):
    runner = build_runner(JOB, out, overrides)
    status = runner.run()
    models = MPI.COMM_WORLD.allgather(np.array(runner.algorithm.model_view(), copy=True))
    return {**results(out), "status": status, "models": np.stack(models), "file": str(out)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = Path(MPI.COMM_WORLD.bcast(str(tmp_path_factory.mktemp("eval")) if MPI.COMM_WORLD.rank == 0 else None))
    return {name: _run(folder / f"{name}.h5", overrides) for name, overrides in {
        "default": [],
        "every": ["run.eval_every=10"],
        "reduce": ['run.eval="reduce"'],
        "reduce_every": ['run.eval="reduce"', "run.eval_every=10"],
    }.items()}


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_evaluation_never_changes_training(runs):
    base = runs["default"]
    for name, run in runs.items():
        assert run["status"] == EXIT_OK and run["attrs"]["status"] == "completed", name
        np.testing.assert_array_equal(run["models"], base["models"])
        np.testing.assert_array_equal(run["step"], [0, 5, 10, 15, 20, 25])
        for key in COUNTERS:  # training traffic counts no evaluation traffic, whatever the form
            np.testing.assert_array_equal(run[f"rank/{key}"], base[f"rank/{key}"])
        np.testing.assert_array_equal(run["global/cumulative_bits"], base["global/cumulative_bits"])
    assert "global/eval_bytes" not in base  # a default run's file has the series it always had


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_rows_between_evaluations_are_nan_and_the_last_row_is_evaluated(runs):
    base, every = runs["default"], runs["every"]
    dim = int(base["attrs"]["model_dim"])
    evaluated = np.array([True, False, True, False, True, True])  # steps 0, 10, 20 and the last, 25
    for key in EVALUATED:
        values = every[f"global/{key}"]
        if key == "suboptimality":  # f* is unknown for an MLP: NaN in every row of both runs
            assert np.all(np.isnan(values))
            continue
        assert np.all(np.isnan(values[~evaluated])) and np.all(np.isfinite(values[evaluated])), key
        np.testing.assert_array_equal(values[evaluated], base[f"global/{key}"][evaluated])  # the same numbers
    for key in ("local_objective", "test_loss", "test_accuracy"):
        values = every[f"rank/{key}"]
        assert np.all(np.isnan(values[~evaluated])), key
        np.testing.assert_array_equal(values[evaluated], base[f"rank/{key}"][evaluated])
    np.testing.assert_array_equal(every["global/eval_bytes"], np.where(evaluated, 8 * dim, 0))


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_reduce_matches_allreduce_to_rounding(runs):
    base, red = runs["default"], runs["reduce"]
    n = MPI.COMM_WORLD.size
    dim = int(base["attrs"]["model_dim"])
    num_test = int(base["attrs"]["num_test"])
    np.testing.assert_array_equal(red["global/eval_bytes"], np.full(6, 4 * dim))  # float32: 4 bytes an entry
    for key in ("avg_model_loss", "suboptimality", "accuracy"):
        assert np.all(np.isnan(red[f"global/{key}"])), key
    assert np.all(np.abs(red["global/test_accuracy"] - base["global/test_accuracy"]) <= 1 / num_test)
    np.testing.assert_allclose(red["global/test_loss"], base["global/test_loss"], rtol=1e-5)
    for key in ("local_objective", "test_loss", "test_accuracy"):  # each node's own model: unchanged
        np.testing.assert_array_equal(red[f"rank/{key}"], base[f"rank/{key}"])
    # consensus distance at the last row, within the bound of tests/unit/test_eval_cost.py (MPI's tree order)
    x = base["models"].astype(np.float64)
    mean, m = x.mean(axis=0), np.abs(x).mean(axis=0)
    u = 2.0 ** -24
    bound = (2 * (n - 1) * u * float(np.abs(mean) @ m) + ((n - 1) * u) ** 2 * float(m @ m)
             + 4 * dim * 2.0 ** -53 * float(np.mean(np.sum(x * x, axis=1))))
    assert abs(red["global/consensus_distance"][-1] - base["global/consensus_distance"][-1]) <= bound
    assert red["global/consensus_distance"][0] == 0.0  # identical initial models
    np.testing.assert_allclose(red["global/consensus_distance"][1:], base["global/consensus_distance"][1:],
                               rtol=1e-3)
    both = runs["reduce_every"]
    evaluated = np.array([True, False, True, False, True, True])
    for key in ("consensus_distance", "test_loss", "test_accuracy"):
        np.testing.assert_array_equal(both[f"global/{key}"][evaluated], red[f"global/{key}"][evaluated])
        assert np.all(np.isnan(both[f"global/{key}"][~evaluated]))


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_the_report_reads_files_with_rows_not_evaluated(runs):
    if MPI.COMM_WORLD.rank == 0:
        from mpidecent.io.reader import read_run
        from mpidecent.report.tables import accuracy_target_query, render_text, summarize

        base, every = runs["default"], runs["every"]
        num_test = int(base["attrs"]["num_test"])
        # reached at step 10 (not before) by the default run, and so by "reduce" (at most one sample apart)
        target = float(base["global/test_accuracy"][2]) - 1.5 / num_test
        assert np.all(base["global/test_accuracy"][:1] < target)
        for name in ("every", "reduce_every"):
            run = read_run(runs[name]["file"])
            final = summarize(run)
            assert not final["partial"] and final["test_accuracy"] is not None
            assert final["test_accuracy"] == pytest.approx(float(runs[name]["global/test_accuracy"][-1]))
            assert final["node_test_accuracy_min"] is not None
            query = accuracy_target_query(run, target)
            assert query["reached"] and query["accuracy_set"] == "test"
            assert query["step"] in (10, 20, 25)
            assert render_text([run], target=target)
        first = accuracy_target_query(read_run(every["file"]), target)
        assert first["step"] == 10 and first["bits"] == int(every["global/cumulative_bits"][2])
    assert all_ranks(True)


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_resume_across_rows_not_evaluated_is_bit_identical(mpi_tmp_path, monkeypatch):
    overrides = ['run.eval="reduce"', "run.eval_every=10"]
    comm = MPI.COMM_WORLD
    whole = build_runner(JOB, mpi_tmp_path / "whole.h5", overrides)
    assert whole.run() == EXIT_OK
    out = mpi_tmp_path / "cut.h5"
    stop_at(monkeypatch, 12)
    first = build_runner(JOB, out, overrides)
    assert first.run() == EXIT_PREEMPTED
    monkeypatch.undo()
    job = load_text(JOB, overrides=overrides)
    snapshot = read_checkpoint(checkpoint_path(str(out)), comm.rank, comm.size, job.to_toml())
    second = Runner(plan_of(job), init_mpi(), str(out), overwrite=False, quiet=True, resume=snapshot)
    assert second.run() == EXIT_OK
    if comm.rank == 0:
        (a, _), (b, attrs) = untimed_series(whole.out), untimed_series(out)
        assert a.keys() == b.keys() and "global/eval_bytes" in a
        different = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]
        assert not different, different
        assert attrs["status"] == "completed"
        assert math.isnan(a["global/test_loss"][1]) and math.isfinite(a["global/test_loss"][-1])
    assert all_ranks(True)


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_the_summary_of_a_reduce_run_shows_only_what_was_evaluated(mpi_tmp_path, capsys):
    """Under eval = "reduce" x̄ is evaluated on the test set only: the summary says so instead of
    printing NaN for its training loss and accuracy, and shows the test values; allreduce keeps them."""
    printed = {}
    for form in ("allreduce", "reduce"):
        runner = Runner(plan_of(JOB, [f'run.eval="{form}"']), init_mpi(),
                        str(mpi_tmp_path / f"{form}.h5"), overwrite=True, quiet=False)
        assert runner.run() == EXIT_OK
        printed[form] = capsys.readouterr().out
    if MPI.COMM_WORLD.rank != 0:
        return
    summary = {form: [line for line in text.splitlines() if line[:1].isalpha()] for form, text in printed.items()}
    reduce_text = "\n".join(summary["reduce"])
    assert "nan" not in reduce_text.lower()
    assert 'avg-model loss   on the test set only ([run] eval = "reduce")' in reduce_text
    assert "(training set)" not in reduce_text
    assert any(line.startswith("test set") and "accuracy" in line for line in summary["reduce"])
    allreduce_text = "\n".join(summary["allreduce"])
    assert "(training set)" in allreduce_text and "nan" not in allreduce_text.lower()
