"""Gradient coding on real ranks, master = rank 0 (docs/algorithms/gradient-coding.md, property 4;
property 3 needs exactly 7 ranks and runs end to end in tests/e2e/test_gradient_coding_cli.py).

The codes are chosen so that every world size of the MPI phases (4, 8) has a valid one: CRC tolerates
s < n stragglers for any number n of workers.
"""

import numpy as np
import pytest

from mpidecent.coding.stragglers import StragglerModel
from mpidecent.comm.world import init_mpi
from mpidecent.config import load_text
from mpidecent.errors import EXIT_OK, EXIT_PREEMPTED
from mpidecent.io.checkpoint import checkpoint_path, read_checkpoint
from mpidecent.runner import Runner
from mpitools import all_ranks, build_runner, plan_of, results, run_job, stop_at, untimed_series

JOB = """
[run]
name = "gc"
seed = 4
steps = 24
log_every = 6
[algorithm]
name = "gradient_coding"
code = "crc"
stragglers = 1
lr = 2.0
[compression]
name = "identity"
[stragglers]
model = "fixed"
count = 1
[data]
name = "synthetic_logistic"
samples = 600
features = 10
partition = "sorted"
batch_size = 0
[model]
name = "logistic"
l2 = 0.01
"""


def _events(path) -> np.ndarray:
    """/events/stragglers of a results file (read on rank 0, broadcast)."""
    return results(path)["events/stragglers"]


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
def test_exact_coding_with_a_straggler_is_full_gradient_descent(mpi_tmp_path, comm):
    """CRC decoding with one fixed straggler per step gives the exact full gradient, so the trajectory
    equals uncoded master/worker gradient descent without stragglers (float64 messages)."""
    coded = run_job(JOB, mpi_tmp_path / "crc.h5")
    plain = run_job(JOB, mpi_tmp_path / "plain.h5", ["algorithm.name=uncoded", "stragglers.model=none",
                                                    "stragglers.count=0"])
    assert coded["status"] == plain["status"] == 0
    loss_coded, loss_plain = coded["global/avg_model_loss"], plain["global/avg_model_loss"]
    np.testing.assert_allclose(loss_coded, loss_plain, rtol=1e-10, atol=0)
    assert np.all(np.diff(loss_coded) < 0) and coded["global/suboptimality"][-1] < 0.01 * \
        coded["global/suboptimality"][0]
    # Uplink: every non-straggling worker sends d = 11 float64 entries per step; the master sends nothing up.
    workers, d, steps = comm.size - 1, 11, 24
    bits = coded["rank/bits_sent"][-1]
    assert bits[0] == 0 and np.all(bits[1:] % (64 * d) == 0)
    assert int(bits.sum()) == steps * (workers - 1) * 64 * d
    assert all_ranks(np.all(coded["global/consensus_distance"] == 0.0))  # every rank reports the master's θ


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
def test_the_masters_local_optimizer_steps_on_the_decoded_gradient(mpi_tmp_path):
    """Adam on the master: CRC decoding with a straggler gives the exact full gradient, so the coded run is
    uncoded master/worker Adam without stragglers, and it descends."""
    adam = ["algorithm.optimizer=adam", "algorithm.lr=0.2"]
    coded = run_job(JOB, mpi_tmp_path / "crc.h5", adam)
    plain = run_job(JOB, mpi_tmp_path / "plain.h5", [*adam, "algorithm.name=uncoded", "stragglers.model=none",
                                                    "stragglers.count=0"])
    np.testing.assert_allclose(coded["global/avg_model_loss"], plain["global/avg_model_loss"], rtol=1e-10, atol=0)
    sub = coded["global/suboptimality"]
    assert sub[-1] < 0.1 * sub[0], sub
    assert "optimizer=adam" in str(coded["attrs"]["algorithm_description"])


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
def test_fixed_stragglers_are_seeded_recorded_and_reproducible(mpi_tmp_path, comm):
    job = ["run.seed=7", "compression.name=onebit"]
    first = run_job(JOB, mpi_tmp_path / "a.h5", job)
    again = run_job(JOB, mpi_tmp_path / "b.h5", job)
    for key in ("global/avg_model_loss", "rank/bits_sent", "rank/messages_sent"):
        np.testing.assert_array_equal(first[key], again[key])
    recorded = _events(mpi_tmp_path / "a.h5")
    np.testing.assert_array_equal(recorded, _events(mpi_tmp_path / "b.h5"))
    workers = comm.size - 1
    model = StragglerModel("fixed", workers, 7, count=1)
    expected = np.array([model.stragglers(t) for t in range(24)])
    np.testing.assert_array_equal(recorded, expected)
    assert recorded.shape == (24, workers) and np.all(recorded.sum(axis=1) == 1)
    # One-bit uplink: d sign bits + a 32-bit scale per message, once per step per non-straggler.
    d = 11
    sent_steps = 24 - recorded.sum(axis=0)  # steps each worker sent in
    np.testing.assert_array_equal(first["rank/bits_sent"][-1][1:], sent_steps * (d + 32))
    # A different seed draws different stragglers.
    other = StragglerModel("fixed", workers, 8, count=1)
    assert not np.array_equal(expected, np.array([other.stragglers(t) for t in range(24)]))


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
@pytest.mark.parametrize("algorithm", ["uncoded", "gradient_coding"])
def test_delay_model_master_takes_the_first_n_minus_s_arrivals_and_shuts_down_cleanly(mpi_tmp_path, comm,
                                                                                       algorithm):
    """Real straggling: every worker sleeps a seeded random time before sending. The master proceeds with
    the first n − s = n − 1 arrivals (CRC decodes any n − 1 of them, and no fewer), the late message is
    drained, and the run ends with nothing pending on any rank."""
    out = mpi_tmp_path / f"delay_{algorithm}.h5"
    result = run_job(JOB, out, [f"algorithm.name={algorithm}", "stragglers.model=delay", "stragglers.count=0",
                                "stragglers.delay_shift_s=0.002", "stragglers.delay_mean_s=0.01",
                                "run.steps=12", "run.log_every=4"])
    assert result["status"] == 0 and result["attrs"]["status"] == "completed"
    recorded = _events(out)
    assert recorded.shape == (12, comm.size - 1)
    assert np.all(recorded.sum(axis=1) == 1), recorded  # exactly s = 1 worker not waited for, every step
    # Every worker computed and sent every step (nobody skips under the delay model), late or not.
    np.testing.assert_array_equal(result["rank/messages_sent"][-1][1:], 12)
    assert np.all(np.isfinite(result["global/avg_model_loss"]))


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
@pytest.mark.parametrize("algorithm, optimizer", [("gradient_coding", []), ("uncoded", []),
                                                   ("gradient_coding", ["algorithm.optimizer=heavy_ball"])],
                         ids=["gradient_coding", "uncoded", "gradient_coding_heavy_ball"])
def test_resume_is_bit_identical_and_the_stop_waits_for_a_boundary(algorithm, optimizer, mpi_tmp_path, monkeypatch,
                                                                   comm):
    """The checkpoint contract of every algorithm, for master/worker: the ranks do not synchronise every
    step, so a stop signal during step 8 is acted on at the next log boundary (12), and resuming from
    there reproduces the uninterrupted run bit for bit, straggler record included. A local optimizer's
    state is the master's (the workers hold the same names, empty)."""
    overrides = [f"algorithm.name={algorithm}", "compression.name=onebit", *optimizer]
    whole = build_runner(JOB, mpi_tmp_path / "whole.h5", overrides)
    assert whole.run() == EXIT_OK
    out = mpi_tmp_path / "cut.h5"
    stop_at(monkeypatch, 8)
    assert build_runner(JOB, out, overrides).run() == EXIT_PREEMPTED
    monkeypatch.undo()
    job = load_text(JOB, overrides=overrides)
    snapshot = read_checkpoint(checkpoint_path(str(out)), comm.rank, comm.size, job.to_toml())
    assert snapshot.step == 12
    if optimizer:
        master = comm.rank == 0
        m, steps = snapshot.state["optimizer_m"], snapshot.state["optimizer_steps"]
        assert all_ranks(m.shape == ((whole.algorithm.theta.shape[0],) if master else (0,)))
        assert all_ranks(list(steps) == [12 if master else 0] and (not master or np.any(m != 0)))
    second = Runner(plan_of(job), init_mpi(), str(out), overwrite=False, quiet=True, resume=snapshot)
    assert second.run() == EXIT_OK
    final, resumed = whole.algorithm.state(), second.algorithm.state()
    assert all_ranks(set(final) == set(resumed) and all(np.array_equal(final[k], resumed[k]) for k in final))
    np.testing.assert_array_equal(_events(mpi_tmp_path / "whole.h5"), _events(out))
    if comm.rank == 0:
        (a, _), (b, attrs) = untimed_series(whole.out), untimed_series(out)
        different = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]
        assert not different, different
        assert attrs["status"] == "completed"


EF_JOB = """
[run]
steps = 400
log_every = 100
seed = 1
[algorithm]
name = "uncoded"
lr = 0.05
[compression]
name = "sign"
[data]
name = "syn1"
samples = 600
features = 40
partition = "sorted"
batch_size = 0
[model]
name = "linear"
l2 = 0.01
"""


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(240)
@pytest.mark.parametrize("compressor", [["compression.name=sign"],
                                        ["compression.name=topk", "compression.fraction=0.1"]])
def test_error_feedback_removes_the_bias_of_sign_and_topk(compressor, mpi_tmp_path):
    """[compression] error_feedback = true on the workers' updates (EF-SGD). With label-sorted
    partitions the workers' gradients disagree, so at the optimum Σ_j C(g_j) ≠ 0 for the biased sign
    and top-k: without error feedback full-batch descent settles away from f*; with it, whatever a message
    leaves out is sent later, and the run reaches f* (both well below 1e-4 of the start, measured 1e-6)."""
    plain = run_job(EF_JOB, mpi_tmp_path / "plain.h5", compressor)
    fed = run_job(EF_JOB, mpi_tmp_path / "fed.h5", [*compressor, "compression.error_feedback=true"])
    start, biased, corrected = plain["global/suboptimality"][0], plain["global/suboptimality"][-1], \
        fed["global/suboptimality"][-1]
    assert fed["global/suboptimality"][0] == start
    assert biased > 1e-4 * start, biased
    assert corrected < 1e-2 * biased and corrected < 1e-5 * start, (corrected, biased)
    # Error feedback sends nothing extra: the same bits on the wire.
    np.testing.assert_array_equal(plain["rank/bits_sent"], fed["rank/bits_sent"])
    assert "error feedback" in str(fed["attrs"]["algorithm_description"])


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
def test_error_feedback_memory_is_checkpointed_and_resumes_bit_for_bit(mpi_tmp_path, monkeypatch, comm):
    overrides = ["algorithm.name=uncoded", "compression.name=topk", "compression.fraction=0.2",
                 "compression.error_feedback=true", "stragglers.model=none", "stragglers.count=0"]
    whole = build_runner(JOB, mpi_tmp_path / "whole.h5", overrides)
    assert whole.run() == EXIT_OK
    out = mpi_tmp_path / "cut.h5"
    stop_at(monkeypatch, 8)
    assert build_runner(JOB, out, overrides).run() == EXIT_PREEMPTED
    monkeypatch.undo()
    job = load_text(JOB, overrides=overrides)
    snapshot = read_checkpoint(checkpoint_path(str(out)), comm.rank, comm.size, job.to_toml())
    memory = snapshot.state["error_feedback"]
    assert all_ranks(memory.shape == ((0,) if comm.rank == 0 else whole.algorithm.theta.shape))
    assert all_ranks(comm.rank == 0 or np.any(memory != 0))  # a real residual was saved
    second = Runner(plan_of(job), init_mpi(), str(out), overwrite=False, quiet=True, resume=snapshot)
    assert second.run() == EXIT_OK
    final, resumed = whole.algorithm.state(), second.algorithm.state()
    assert all_ranks(set(final) == set(resumed) and all(np.array_equal(final[k], resumed[k]) for k in final))
