"""End to end: the real CLI under mpirun, and the HDF5 results file it leaves (design §4)."""

from __future__ import annotations

import hashlib
import os
import re

import h5py
import numpy as np
import pytest

from cli import ROOT, mpidecent, run_python
from mpidecent.compression import build_compressor
from mpidecent.config import load_job, load_text
from mpidecent.io.reader import read_run
from mpidecent.plan import plan_job

QUICKSTART = str(ROOT / "jobs" / "quickstart.toml")
FAST = ["--set", "run.steps=60", "--set", "run.log_every=20"]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "quick.h5"
    result = mpidecent("run", QUICKSTART, *FAST, "--out", str(out), ranks=4)
    return result, out


@pytest.mark.timeout(300)
def test_quickstart_prints_progress_and_summary(quickstart_run):
    result, out = quickstart_run
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith("[quickstart] step")]
    assert [line.split()[2] for line in progress] == ["0/60", "20/60", "40/60", "60/60"]
    for key in ("avg-model loss", "suboptimality", "bits sent", "consensus dist.", str(out)):
        assert key in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(300)
def test_results_file_has_the_documented_layout_and_exact_bit_counts(quickstart_run):
    result, out = quickstart_run
    assert result.returncode == 0, result.stderr
    job = load_job(QUICKSTART, FAST[1::2])
    plan = plan_job(job, 4)
    with h5py.File(out, "r") as f:
        attrs = f.attrs
        assert attrs["format_version"] == 1 and attrs["world_size"] == 4
        assert attrs["status"] == "completed" and attrs["steps_completed"] == 60
        assert attrs["algorithm"] == "quantized_push_sum" and attrs["osc_component"] == "rdma"
        assert "Open MPI" in attrs["mpi_library"] and attrs["finished"]
        # design §6: torch threads per rank = SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS, else 1
        expected_threads = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("OMP_NUM_THREADS") or 1)
        assert attrs["torch_threads_per_rank"] == expected_threads
        assert load_text(attrs["job"]).to_toml() == job.to_toml()  # the stored job is the resolved job
        np.testing.assert_array_equal(f["topology/edges"][()], plan.graph.edges)
        np.testing.assert_allclose(f["topology/weights"][()].sum(axis=0), 1.0, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(f["metrics/step"][()], [0, 20, 40, 60])
        for name in ("loss", "bits_sent", "bytes_sent", "messages_sent", "compute_s", "comm_s",
                     "push_sum_weight", "local_objective"):
            assert f[f"metrics/rank/{name}"].shape == (4, 4), name
        for name in ("avg_model_loss", "suboptimality", "consensus_distance", "cumulative_bits", "accuracy"):
            assert f[f"metrics/global/{name}"].shape == (4,), name
        # Bits are counted from the packed buffers: 60 steps × out-degree × (qsgd bits + 64 bits of y).
        dim = job.data["features"] + 1
        per_message = build_compressor("qsgd", dim, np.float64, job.compression).bits + 64
        out_degree = plan.graph.out_degree
        np.testing.assert_array_equal(f["metrics/rank/bits_sent"][-1], 60 * out_degree * per_message)
        np.testing.assert_array_equal(f["metrics/rank/bytes_sent"][-1], 60 * out_degree * ((per_message + 7) // 8))
        np.testing.assert_array_equal(f["metrics/rank/messages_sent"][-1], 60 * out_degree)
        assert f["metrics/global/cumulative_bits"][-1] == f["metrics/rank/bits_sent"][-1].sum()
        sub = f["metrics/global/suboptimality"][()]
        assert sub[-1] < sub[0] / 10 and np.all(sub > 0)
        assert f["metrics/rank/bits_sent"].attrs["unit"] == "bits"


@pytest.mark.timeout(300)
def test_existing_results_are_never_overwritten_without_force(quickstart_run):
    _, out = quickstart_run
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    result = mpidecent("run", QUICKSTART, *FAST, "--out", str(out), ranks=4)
    assert result.returncode == 2
    assert result.stderr.count("already exists; pass --force") == 1
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before


BAD_JOBS = [
    (["--set", "compression.levels=0"], "[compression] levels must be ≥ 1, got 0"),
    (["--set", "algorithm.gama=0.5"], "[algorithm] unknown key 'gama' for quantized_push_sum"),
    (["--set", "run.steps=many"], "[run] steps must be an integer, got 'many'"),
    (["--set", "algorithm.name=sgd"], "[algorithm] name must be one of"),
    (["--set", "compression.name=top_k"], "(did you mean 'topk'?)"),
    (["--set", "topology.kind=mesh"], "[topology] kind must be one of"),
    (["--set", "topology.kind=star", "--set", "topology.directed=true"], "is not strongly connected"),
    (["--set", "topology.n=8"], "[topology] n = 8 but 4 MPI ranks were started"),
    (["--set", "topology.kind=torus", "--set", "topology.rows=3"], "[topology] rows = 3 does not divide"),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("overrides, message", BAD_JOBS, ids=[m[:40] for _, m in BAD_JOBS])
def test_bad_jobs_end_every_rank_with_one_line(tmp_path, overrides, message):
    out = tmp_path / "bad.h5"
    result = mpidecent("run", QUICKSTART, *overrides, "--out", str(out), ranks=4, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.count(message) == 1, result.stderr
    mine = [line for line in result.stderr.splitlines() if line.startswith("mpidecent:")]
    assert len(mine) == 1 and "Traceback" not in result.stderr
    assert result.seconds < 60
    assert not out.exists()


@pytest.mark.timeout(120)
def test_unwritable_results_path_is_one_line_on_every_rank():
    result = mpidecent("run", QUICKSTART, "--out", "/proc/mpidecent-nope/run.h5", ranks=4, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("cannot write in '/proc/mpidecent-nope'") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_an_exception_on_one_rank_aborts_the_whole_job():
    """design §6: the other ranks, blocked in a collective, must not hang."""
    code = ("from mpidecent.comm.world import abort_on_error, init_mpi; init_mpi(); abort_on_error(); "
            "from mpi4py import MPI; comm = MPI.COMM_WORLD; "
            "comm.rank == 1 and 1 / 0; comm.Barrier()")
    result = run_python(code, ranks=4, timeout=90)
    assert result.returncode != 0
    assert result.stderr.count("mpidecent: internal error on rank 1") == 1
    assert "ZeroDivisionError" in result.stderr
    assert result.seconds < 60


@pytest.mark.timeout(120)
def test_bad_flags_and_missing_files(tmp_path):
    result = mpidecent("run", QUICKSTART, "--sett", "x", ranks=2, timeout=60)
    assert result.returncode == 2 and result.stderr.count("unrecognized arguments: --sett") == 1
    result = mpidecent("run", str(tmp_path / "missing.toml"), ranks=2, timeout=60)
    assert result.returncode == 2 and result.stderr.count("missing.toml' not found") == 1


@pytest.mark.timeout(300)
def test_divergence_stops_every_rank_and_keeps_results(tmp_path):
    """Quantized push-sum spec property 5: coarse qsgd on a directed ring diverges at γ = 1."""
    job = tmp_path / "unstable.toml"
    job.write_text(
        '[run]\nsteps = 400\nlog_every = 50\n[topology]\nkind = "ring"\ndirected = true\n'
        '[algorithm]\nname = "quantized_push_sum"\nlr = 0.0\ngamma = 1.0\n'
        '[compression]\nname = "qsgd"\nlevels = 4\nbucket = 64\n'
        '[data]\nfeatures = 200\n[model]\ninit = "normal"\ninit_scale = 1.0\n')
    out = tmp_path / "unstable.h5"
    result = mpidecent("run", str(job), "--out", str(out), ranks=4, timeout=240)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("run diverged at step") == 1
    assert "gamma=1.0" in result.stderr and "qsgd(levels=4, bucket=64)" in result.stderr
    run = read_run(str(out))
    assert run.status == "diverged" and run.rows >= 1
    stable = mpidecent("run", str(job), "--set", "algorithm.gamma=0.2", "--out", str(tmp_path / "stable.h5"),
                       ranks=4, timeout=240)
    assert stable.returncode == 0, stable.stderr


@pytest.mark.timeout(120)
def test_topology_command_reports_degrees_connectivity_and_gap():
    result = mpidecent("topology", QUICKSTART, "-n", "8")
    assert result.returncode == 0, result.stderr
    assert "strongly connected: yes" in result.stdout
    assert "regular out-degree: no" in result.stdout
    assert "spectral gap of W:" in result.stdout
    # the irregular chord ring's Perron vectors (gradient tracking's effective steps), values from numpy
    assert "Perron vector of W, W u = u: n·u_i min/max 0.180/2.157" in result.stdout
    assert "Perron vector of R = row_uniform, vᵀR = vᵀ: n·v_i min/max 0.188/2.259" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 8
    bad = mpidecent("topology", QUICKSTART, "-n", "8", "--set", "topology.kind=star",
                    "--set", "topology.directed=true")
    assert bad.returncode == 0 and "strongly connected: no (nodes 1, 2, 3, 4, 5, 6, 7 cannot reach node 0)" in bad.stdout


@pytest.mark.timeout(120)
def test_info_reports_mpi_osc_and_parallel_h5py():
    result = mpidecent("info", ranks=2)
    assert result.returncode == 0, result.stderr
    assert "Open MPI" in result.stdout
    assert "one-sided (osc) component  rdma" in result.stdout
    assert "h5py has MPI               yes" in result.stdout
    assert "ranks in this launch       2" in result.stdout


def _hdf5_job(tmp_path, **data):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((300, 6))
    labels = (features @ rng.standard_normal(6) > 0).astype(np.int64)
    with h5py.File(tmp_path / "mydata.h5", "w") as f:
        f["inputs"] = features
        f["classes"] = labels
    keys = {"path": "mydata.h5", "features_dataset": "inputs", "labels_dataset": "classes", **data}
    table = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in keys.items())
    job = tmp_path / "user_data.toml"
    job.write_text('[run]\nsteps = 40\nlog_every = 20\n[topology]\nkind = "ring"\n[algorithm]\nname = "dpsgd"\n'
                   f'lr = 0.5\n[data]\nname = "hdf5"\ntask = "binary"\npartition = "sorted"\n{table}\n'
                   '[model]\nname = "logistic"\nl2 = 0.01\n')
    return job


@pytest.mark.timeout(240)
def test_user_hdf5_data_set_end_to_end(tmp_path):
    job = _hdf5_job(tmp_path)
    out = tmp_path / "user.h5"
    result = mpidecent("run", str(job), "--out", str(out), ranks=4)
    assert result.returncode == 0, result.stderr
    run = read_run(str(out))
    assert run.attrs["data"] == "hdf5" and run.attrs["task"] == "binary" and run.attrs["num_train"] == 300
    sub = run.glob("suboptimality")
    assert np.all(np.isfinite(sub)) and sub[-1] < sub[0] / 5
    missing = mpidecent("run", str(_hdf5_job(tmp_path, path="nope.h5")), "--out", str(tmp_path / "x.h5"), ranks=4)
    assert missing.returncode == 2 and missing.stderr.count("[data] path: no such file") == 1
    wrong = mpidecent("run", str(_hdf5_job(tmp_path, features_dataset="X")), "--out", str(tmp_path / "y.h5"), ranks=4)
    assert wrong.returncode == 2
    assert wrong.stderr.count("[data] features_dataset = 'X' not found in") == 1 and "classes, inputs" in wrong.stderr


@pytest.mark.timeout(300)
def test_sweep_runs_every_variant_and_prints_a_comparison(tmp_path):
    job = tmp_path / "sweep.toml"
    job.write_text(open(QUICKSTART).read() + '\n[[sweep]]\nname = "quantized"\nset = {}\n\n[[sweep]]\nname = "exact"\n'
                   'set = { "algorithm.name" = "push_sum", "compression.name" = "identity" }\n')
    result = mpidecent("run", str(job), "--set", "run.steps=30", "--out", str(tmp_path / "res"), ranks=4)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "res" / "quantized.h5").exists() and (tmp_path / "res" / "exact.h5").exists()
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if re.match(r"run\s+status\s+steps", line))
    assert [line.split()[0] for line in lines[header + 2:header + 4]] == ["quickstart-quantized", "quickstart-exact"]
    assert all(line.split()[1] == "completed" for line in lines[header + 2:header + 4])
    assert result.stdout.count("keys of the job file only the replaced one uses: algorithm.gamma, "
                               "compression.levels, compression.bucket") == 1


UNSTABLE = ('[run]\nsteps = 400\nlog_every = 50\n[topology]\nkind = "ring"\ndirected = true\n'
            '[algorithm]\nname = "quantized_push_sum"\nlr = 0.0\ngamma = 1.0\n'
            '[compression]\nname = "qsgd"\nlevels = 4\nbucket = 64\n'
            '[data]\nfeatures = 200\n[model]\ninit = "normal"\ninit_scale = 1.0\n')


@pytest.mark.timeout(400)
def test_a_grid_sweep_records_a_diverged_variant_runs_the_others_and_exits_3(tmp_path):
    job = tmp_path / "unstable.toml"
    job.write_text(UNSTABLE + '\n[[sweep]]\ngrid = { "algorithm.gamma" = [1.0, 0.2] }\n')
    result = mpidecent("run", str(job), "--out", str(tmp_path / "res"), ranks=4, timeout=360)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("run diverged at step") == 1 and "Hint: " in result.stderr
    assert read_run(str(tmp_path / "res" / "gamma1.h5")).status == "diverged"
    assert read_run(str(tmp_path / "res" / "gamma0.2.h5")).status == "completed"
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if re.match(r"run\s+status\s+steps", line))
    assert lines[header].rstrip().endswith("settings")
    rows = [line.split() for line in lines[header + 2:header + 4]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [("unstable-gamma1", "diverged", "gamma=1.0"),
                                                   ("unstable-gamma0.2", "completed", "gamma=0.2")]
    assert "2 runs: 1 completed, 1 diverged" in result.stdout and "exit status 3" in result.stdout


@pytest.mark.timeout(300)
def test_start_warnings_mpirun_hint_torus_shape_and_resume_difference(tmp_path):
    warned = mpidecent("run", QUICKSTART, "--set", "run.steps=2", "--set", "run.log_every=1", "--set",
                       "compression.name=topk", "--set", "compression.fraction=0.5", "--out",
                       str(tmp_path / "w.h5"), ranks=4)
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr.count("mpidecent: warning: quickstart: quantized_push_sum with the biased operator "
                               "topk(fraction=0.5) and [algorithm] gamma = 1 is known to diverge") == 1
    alone = mpidecent("run", QUICKSTART, "--out", str(tmp_path / "alone.h5"))
    assert alone.returncode == 2
    assert "needs at least 3 nodes, got n = 1" in alone.stderr and "start it with mpirun -n N" in alone.stderr
    torus = mpidecent("run", QUICKSTART, "--set", "topology.kind=torus", "--set", "algorithm.name=dpsgd",
                      "--set", "compression.name=identity", "--out", str(tmp_path / "t.h5"), ranks=5)
    assert torus.returncode == 2 and torus.stderr.count("kind = 'torus' on n = 5 nodes: 5 is prime") == 1
    other = mpidecent("run", QUICKSTART, "--set", "run.steps=2", "--set", "run.log_every=1", "--set",
                      "compression.name=topk", "--set", "compression.fraction=0.25", "--out", str(tmp_path / "w.h5"),
                      "--resume", ranks=4)
    assert other.returncode == 2
    assert "belongs to a different job ([compression] fraction = 0.25 here, 0.5 in the file)" in other.stderr


@pytest.mark.timeout(120)
def test_simulate_gossip_nodes_replace_a_sweep_over_n_instead_of_multiplying_it(tmp_path):
    result = mpidecent("simulate-gossip", str(ROOT / "jobs" / "async_sim_const.toml"), "-n", "8,16", "--set",
                       "run.steps=40", "--out", str(tmp_path / "sim"))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "sim")) == ["async_sim_const-n16.h5", "async_sim_const-n8.h5"]
    assert "-n8-n" not in result.stdout and result.stdout.count("] n = ") == 2


# ---- bad input: one line, exit 2, nothing destroyed (issue 15) ------------------------------------------------

@pytest.mark.timeout(300)
def test_bad_run_inputs_end_every_rank_with_one_line(tmp_path):
    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n")
    cases = [
        (["--set", "model.init=normal", "--set", "model.init_scale=1e308",
         "--out", str(tmp_path / "big.h5")], "initial model is not finite"),
        (["--out", str(victim), "--force"], "--force overwrites only mpidecent results files"),
    ]
    for args, said in cases:
        result = mpidecent("run", QUICKSTART, *FAST, *args, ranks=4)
        lines = [line for line in result.stderr.splitlines() if line.startswith("mpidecent: error:")]
        assert result.returncode == 2, result.stderr
        assert len(lines) >= 1 and said in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert victim.read_text() == "precious\n"


@pytest.mark.timeout(300)
def test_out_through_a_missing_folder_is_the_normalised_path(tmp_path):
    result = mpidecent("run", QUICKSTART, *FAST, "--out", str(tmp_path / "nosuch" / ".." / "x.h5"), ranks=4)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.h5").exists() and not (tmp_path / "nosuch").exists()
