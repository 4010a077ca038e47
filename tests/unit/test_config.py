"""Job-file validation: every bad input gets one line naming the key (config.py, plan.py)."""

import math
from pathlib import Path

import pytest

from mpidecent.config import load_job, load_jobs, load_text, load_text_jobs
from mpidecent.errors import JobError
from mpidecent.plan import plan_job

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.toml"))

BASE = """
[run]
steps = 20
[topology]
kind = "chord_ring"
[algorithm]
name = "quantized_push_sum"
lr = 0.5
[compression]
name = "qsgd"
levels = 16
"""


def error_of(text: str, overrides=(), world: int = 8) -> str:
    with pytest.raises(JobError) as info:
        plan_job(load_text(text, overrides=overrides), world)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_shipped_jobs_validate(path):
    """Every shipped job (and every variant of a sweep) validates at its rank count (n, else 8)."""
    for job in load_jobs(path):
        ranks = job.topology["n"] or 8
        assert plan_job(job, ranks).n == ranks


SWEEP = BASE + """
[[sweep]]
name = "coarse"
set = { "compression.levels" = 2, "algorithm.gamma" = 0.5 }

[[sweep]]
name = "exact"
set = { "algorithm.name" = "push_sum", "compression.name" = "identity" }
"""


def test_sweep_variants_apply_their_settings_then_the_command_line():
    coarse, exact = load_text_jobs(SWEEP, overrides=["run.steps=7"], default_name="demo")
    assert (coarse.variant, coarse.run["name"], coarse.run["out"]) == ("coarse", "demo-coarse", "runs/demo/coarse.h5")
    assert coarse.compression["levels"] == 2 and coarse.algorithm["gamma"] == 0.5 and coarse.run["steps"] == 7
    assert exact.algorithm["name"] == "push_sum" and exact.compression["name"] == "identity"
    assert exact.set_aside == ("compression.levels",) and exact.run["steps"] == 7
    with_folder = load_text_jobs(SWEEP.replace("steps = 20", 'steps = 20\nout = "res"'))
    assert [j.run["out"] for j in with_folder] == ["res/coarse.h5", "res/exact.h5"]
    with pytest.raises(JobError, match="has a \\[\\[sweep\\]\\] of 2 variants"):
        load_text(SWEEP)


@pytest.mark.parametrize("sweep, expected", [
    ('[[sweep]]\nname = "a"\nset = { "compression.levels" = 0 }\n', "[[sweep]] a: [compression] levels must be ≥ 1"),
    ('[[sweep]]\nname = "a"\n[[sweep]]\nname = "a"\n', "[[sweep]] name 'a' is used twice"),
    ('[[sweep]]\nset = { "run.steps" = 3 }\n', "[[sweep]] entry 1: name must be a string"),
    ('[[sweep]]\nname = "a b"\n', "[[sweep]] entry 1: name must be a string of letters"),
    ('[[sweep]]\nname = "a"\nsets = {}\n', "[[sweep]] entry 1: unknown key 'sets'"),
    ('[[sweep]]\nname = "a"\nset = { "steps" = 3 }\n', "[[sweep]] a: set 'steps': expected section.key"),
    ('sweep = 3\n', "[[sweep]] must be one or more tables"),
])
def test_bad_sweeps_name_the_variant(sweep, expected):
    with pytest.raises(JobError) as info:
        load_text_jobs(sweep + BASE if sweep.startswith("sweep =") else BASE + sweep)
    assert expected in str(info.value)


def test_defaults_filled_and_resolved_toml_round_trips():
    job = load_text(BASE)
    assert job.algorithm["gamma"] == 1.0 and job.algorithm["reference"] is True
    assert job.compression["bucket"] == 64
    assert job.topology["directed"] is True and job.topology["weights"] == "column_uniform"
    assert job.run["out"] == "runs/job.h5"
    again = load_text(job.to_toml())
    assert again.to_toml() == job.to_toml()


def test_overrides_are_typed_and_bare_words_are_strings():
    job = load_text(BASE, overrides=["algorithm.lr=0.05", "run.steps=7", "topology.kind=ring",
                                     "algorithm.reference=false"])
    assert job.algorithm["lr"] == 0.05 and job.run["steps"] == 7
    assert job.topology["kind"] == "ring" and job.algorithm["reference"] is False


def test_switching_a_plugin_with_set_sets_aside_only_the_old_plugins_keys():
    text = BASE.replace("lr = 0.5", "lr = 0.5\ngamma = 0.5")
    job = load_text(text, overrides=["algorithm.name=push_sum", "compression.name=identity"])
    assert job.algorithm["name"] == "push_sum" and "gamma" not in job.algorithm
    assert job.set_aside == ("algorithm.gamma", "compression.levels")
    assert dict(job.compression) == {"name": "identity", "precision": "state", "error_feedback": False}
    # keys unknown to both plug-ins are still errors, and set-aside keys are still checked
    assert "unknown key 'bogus' for identity" in error_of(BASE, ["compression.name=identity",
                                                                 "compression.bogus=1"])
    assert "levels must be ≥ 1" in error_of(BASE, ["compression.levels=0", "compression.name=identity"])
    # without a --set switch, a foreign key is an error as before
    assert "unknown key 'levels' for identity" in error_of(BASE.replace('"qsgd"', '"identity"'))


@pytest.mark.parametrize("text, overrides, expected", [
    (BASE, ["compression.levels=0"], "[compression] levels must be ≥ 1, got 0"),
    (BASE, ["compression.level=3"], "[compression] unknown key 'level' for qsgd (did you mean 'levels'?"),
    (BASE, ["algorithm.gamma=1.5"], "[algorithm] gamma must be ≤ 1, got 1.5"),
    (BASE, ["algorithm.gamma=0"], "[algorithm] gamma must be > 0, got 0"),
    (BASE, ['run.steps="ten"'], "[run] steps must be an integer, got 'ten'"),
    (BASE, ["run.steps=true"], "[run] steps must be an integer, got true"),
    (BASE, ["algorithm.name=pushsum"], "[algorithm] name must be one of"),
    (BASE, ["compression.name=qsdg"], "did you mean 'qsgd'?"),
    (BASE, ["topology.kind=torsu"], "did you mean 'torus'?"),
    (BASE, ["topology.n=16"], "[topology] n = 16 but 8 MPI ranks were started"),
    (BASE, ["topology.kind=torus", "topology.rows=3"], "[topology] rows = 3 does not divide the number of nodes (8)"),
    (BASE, ["topology.kind=star", "topology.directed=true"], "not strongly connected (nodes 1, 2, 3, 4, 5, 6, 7 "
                                                             "cannot reach node 0)"),
    (BASE, ["data.samples=4"], "[data] samples = 4 is fewer than the 8 nodes"),
    (BASE, ["run.dtype=float16"], "[run] dtype must be one of 'float64', 'float32'"),
    (BASE, ["lr=0.1"], "--set 'lr=0.1': expected section.key=value"),
    (BASE, ["optimizer.lr=0.1"], "unknown section [optimizer]"),
    ("[algorithm]\nname = \"push_sum\"\n", [], "missing [topology] section"),
    ("[topology]\nkind = \"ring\"\n", [], "missing [algorithm] section"),
    ("[algorithm]\nname = \"push_sum\"\n[topology]\nkind = \"ring\"\n[compression]\nname = \"qsgd\"\n", [],
     "not supported by push_sum"),
    ("[algorithm]\nname = \"dpsgd\"\n[topology]\nkind = \"exponential\"\n", [],
     "dpsgd needs an undirected graph"),
    ("[algorithm]\nname = \"allreduce_sgd\"\n[topology]\nkind = \"ring\"\n", [],
     "allreduce_sgd all-reduces over every rank"),
    ("[algorithm]\nname = \"dpsgd\"\n[topology]\nkind = \"ring\"\nweights = \"column_uniform\"\n"
     "[data]\nsamples = 100\n", ["topology.kind=star"], "not doubly stochastic"),
    ("[algorithm]\nname = \"push_sum\"\n[topology]\nkind = \"ring\"\ndirected = true\nweights = \"metropolis\"\n", [],
     "weights = \"metropolis\" needs an undirected graph"),
    ("[algorithm]\nname = \"dpsgd\"\n[topology]\nkind = \"one_peer_exponential\"\n", [],
     "[topology] kind = 'one_peer_exponential' is time-varying; dpsgd needs a static graph"),
    ("[algorithm]\nname = \"multi_gossip\"\n[topology]\nkind = \"ring\"\n[compression]\nname = \"qsgd\"\n", [],
     "[compression] qsgd(levels=16, bucket=64) is not contractive; multi_gossip needs a contractive operator"),
    ("[algorithm]\nname = \"dpsgd\"\n[topology]\nkind = \"ring\"\n[data]\nname = \"digits\"\n", [],
     "[model] name = 'logistic' solves binary tasks but [data] 'digits' is a multiclass task"),
    ("[algorithm]\nname = \"push_sum\"\n[topology]\nkind = \"ring\"\n[compression]\nerror_feedback = true\n", [],
     "[compression] error_feedback = true does not apply to push_sum: its messages carry no compression error "
     "forward (error feedback applies to gradient_coding, uncoded); remove it"),
    ("[algorithm]\nname = \"uncoded\"\n[compression]\nname = \"sign\"\nerror_feedback = \"yes\"\n", [],
     "[compression] error_feedback must be true or false"),
    ("[algorithm]\nname = \"dmsgd\"\noptimizer = \"adam\"\n[topology]\nkind = \"ring\"\n", [],
     "[algorithm] unknown key 'optimizer' for dmsgd"),
    ("[algorithm]\nname = \"local_momentum\"\n[topology]\nkind = \"ring\"\n", ["algorithm.momentum=0.5"],
     "[algorithm] unknown key 'momentum' for local_momentum"),
    (BASE, ["algorithm.optimizer=adamw"], "[algorithm] optimizer must be one of 'sgd', 'heavy_ball', 'nesterov', "
                                          "'adam'; got 'adamw' (did you mean 'adam'?)"),
    (BASE, ["algorithm.optimizer=nesterov", "algorithm.momentum=1"], "[algorithm] momentum must be < 1, got 1"),
    (BASE, ["algorithm.adam_beta2=1.0"], "[algorithm] adam_beta2 must be < 1, got 1"),
    (BASE, ["algorithm.adam_eps=0"], "[algorithm] adam_eps must be > 0, got 0"),
    ("[algorithm]\nname = \"dpsgd\"\noptimizer = \"adam\"\nmomentum = 0.5\n[topology]\nkind = \"ring\"\n", [],
     "[algorithm] momentum does not apply to optimizer = 'adam' (it reads adam_beta1, adam_beta2, adam_eps); remove "
     "it or choose the optimizer that uses it"),
    ("[algorithm]\nname = \"dpsgd\"\nadam_eps = 1e-6\n[topology]\nkind = \"ring\"\n", [],
     "[algorithm] adam_eps does not apply to optimizer = 'sgd' (it reads no keys of its own)"),
    ("[run\nsteps = 3\n", [], "invalid TOML"),
    ("run = 3\n", [], "[run] must be a table"),
])
def test_bad_jobs_name_the_key(text, overrides, expected):
    assert expected in error_of(text, overrides)


def test_missing_job_file(tmp_path):
    with pytest.raises(JobError, match="job file .*nope.toml' not found"):
        load_job(tmp_path / "nope.toml")


def test_relative_edge_file_is_read_next_to_the_job(tmp_path):
    (tmp_path / "graph.txt").write_text("# a directed ring of 4 plus a chord\n0 1\n1 2\n2 3\n3 0\n0 2\n")
    job_path = tmp_path / "job.toml"
    job_path.write_text('[algorithm]\nname = "push_sum"\n[topology]\nkind = "file"\npath = "graph.txt"\n'
                        "directed = true\n[data]\nsamples = 40\n")
    plan = plan_job(load_job(job_path), 4)
    assert plan.graph.out_neighbors(0).tolist() == [1, 2]
    with pytest.raises(JobError, match="out of range for 3 ranks"):
        plan_job(load_job(job_path), 3)


def test_job_file_reference_is_in_sync_with_the_code():
    from mpidecent.config import job_reference

    doc = Path(__file__).resolve().parents[2] / "docs" / "job-file.md"
    assert doc.read_text(encoding="utf-8") == job_reference(), \
        "regenerate it: python -m mpidecent.config > docs/job-file.md"


def test_error_feedback_is_stored_in_the_job_only_when_set():
    """A key added after results files existed: a job without it keeps its stored text, so --resume of an
    older run still finds the same job; set, it round-trips."""
    plain = load_text(GC)
    assert plain.compression["error_feedback"] is False and "error_feedback" not in plain.to_toml()
    with_ef = load_text(GC, overrides=["compression.name=sign", "compression.error_feedback=true"])
    assert "error_feedback = true" in with_ef.to_toml()
    assert load_text(with_ef.to_toml()).to_toml() == with_ef.to_toml()


def test_reading_every_shipped_job_needs_no_torch_mpi_or_algorithm_code():
    """config validates against declarations (algorithms/catalog.py, comm/patterns.py): checking a job
    loads neither torch, mpi4py, numba nor h5py, nor any algorithm's implementation."""
    import subprocess
    import sys

    code = ("import sys, glob, mpidecent.config as c\n"
            "for p in sorted(glob.glob('jobs/*.toml')): c.load_jobs(p)\n"
            "heavy = {'torch', 'mpi4py', 'numba', 'h5py', 'matplotlib'} & set(sys.modules)\n"
            "impl = [m for m in sys.modules if m.startswith('mpidecent.algorithms.') and "
            "m.split('.')[-1] not in ('catalog', 'lr')]\n"
            "print(sorted(heavy), impl)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[] []", out.stdout


def test_validation_needs_no_mpi():
    """Job validation runs on every rank before MPI is used, so its modules must not import mpi4py."""
    import subprocess
    import sys

    code = ("import sys, mpidecent.config, mpidecent.plan, mpidecent.algorithms, mpidecent.learning.problems; "
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


GC = """
[algorithm]
name = "gradient_coding"
stragglers = 2
[compression]
name = "onebit"
[stragglers]
model = "fixed"
count = 2
[data]
samples = 300
batch_size = 0
"""


@pytest.mark.parametrize("overrides, world, message", [
    (["topology.kind=ring"], 7, "[topology] gradient_coding uses rank 0 as the master of ranks 1..n: remove "
                                "[topology] or set kind = \"star\" (undirected, hub = 0), not kind = \"ring\""),
    (["topology.kind=star", "topology.hub=2"], 7, "not kind = \"star\", hub = 2"),
    ([], 8, "[algorithm] FRC needs (s + 1) | n; got n = 7 workers and s = 2 (7 workers = ranks − 1)"),
    (["stragglers.count=3"], 7, "[stragglers] count = 3 is more than the frc code tolerates (stragglers = 2); "
                                "raise [algorithm] stragglers or set approximate = true"),
    (["stragglers.model=bernoulli", "stragglers.p=0.1"], 7, "use code = \"sgc\" or set [algorithm] approximate"),
    (["data.batch_size=16"], 7, "[data] batch_size = 16: gradient_coding workers send gradients of whole partitions"),
    (["stragglers.count=6", "algorithm.approximate=true"], 7, "[stragglers] count = 6 leaves no worker among 6"),
    ([], 1, "gradient_coding needs a master and at least one worker: start 2 or more ranks"),
    (["algorithm.name=dpsgd", "compression.name=identity", "topology.kind=ring"], 7,
     "[stragglers] model = 'fixed' applies to master/worker algorithms"),
])
def test_master_worker_jobs_are_checked_before_any_collective(overrides, world, message):
    assert message in error_of(GC, overrides, world=world)


def test_master_worker_jobs_record_the_star_around_rank_0():
    plan = plan_job(load_text(GC), 7)
    assert plan.job.topology["kind"] == "star"
    assert sorted(map(tuple, plan.schedule.graphs[0].edges.tolist())) == sorted(
        [(0, j) for j in range(1, 7)] + [(j, 0) for j in range(1, 7)])


# ---- sweep grids and labels, run health, start-up warnings, resume differences (issue 14) -----------------

GRID = BASE + """
[[sweep]]
grid = { "compression.levels" = [4, 16], "algorithm.gamma" = [0.5, 1.0] }
"""


def test_a_sweep_grid_is_the_cartesian_product_with_names_and_labels_from_the_values():
    jobs = load_text_jobs(GRID, default_name="demo")
    assert [j.variant for j in jobs] == ["levels4-gamma0.5", "levels4-gamma1", "levels16-gamma0.5", "levels16-gamma1"]
    assert [(j.compression["levels"], j.algorithm["gamma"]) for j in jobs] == [(4, 0.5), (4, 1.0), (16, 0.5),
                                                                                 (16, 1.0)]
    assert jobs[1].run["name"] == "demo-levels4-gamma1" and jobs[1].run["out"] == "runs/demo/levels4-gamma1.h5"
    assert [j.label for j in jobs] == ["levels=4 gamma=0.5", "levels=4 gamma=1.0", "levels=16 gamma=0.5",
                                       "levels=16 gamma=1.0"]


def test_grid_with_prefix_common_settings_and_a_plain_variant_label_every_swept_key():
    text = BASE + """
[[sweep]]
name = "exact"
set = { "algorithm.name" = "push_sum", "compression.name" = "identity" }

[[sweep]]
name = "q"
set = { "algorithm.gamma" = 0.5 }
grid = { "compression.name" = ["qsgd", "topk"] }
"""
    jobs = load_text_jobs(text, default_name="demo")
    assert [j.variant for j in jobs] == ["exact", "q-qsgd", "q-topk"]
    assert jobs[1].algorithm["gamma"] == 0.5 and jobs[2].compression["name"] == "topk"
    # algorithm.name and compression.name share "name": labelled by section.key; every swept key shows
    assert jobs[0].label == 'algorithm.name=push_sum compression.name=identity gamma=-'
    assert jobs[1].label == 'algorithm.name=quantized_push_sum compression.name=qsgd gamma=0.5'
    # two variants differing only in a key's value never share a label (the old table showed "qsgd" twice)
    levels = load_text_jobs(BASE + '[[sweep]]\nname = "a"\nset = { "compression.levels" = 4 }\n'
                            '[[sweep]]\nname = "b"\nset = { "compression.levels" = 16 }\n')
    assert [j.label for j in levels] == ["levels=4", "levels=16"]
    table = load_text_jobs(BASE + '[sweep]\ngrid = { "run.seed" = [1, 2] }\n')
    assert [j.variant for j in table] == ["seed1", "seed2"]


@pytest.mark.parametrize("sweep, expected", [
    ('[[sweep]]\ngrid = { "algorithm.gamma" = [] }\n', "[[sweep]] entry 1: grid must be a table"),
    ('[[sweep]]\ngrid = { "algorithm.gamma" = 0.5 }\n', "[[sweep]] entry 1: grid must be a table"),
    ('[[sweep]]\ngrid = { "algorithm.gamma" = [0.5, "0.5"] }\n', "name 'gamma0.5' is used twice"),
    ('[[sweep]]\ngrid = { "algorithm.gamma" = [0.5, 2.0] }\n', "[[sweep]] gamma2: [algorithm] gamma must be ≤ 1"),
    ('[[sweep]]\ngrid = { "gamma" = [0.5] }\n', "[[sweep]] gamma0.5: set 'gamma': expected section.key"),
    ('[[sweep]]\nname = "a b"\ngrid = { "algorithm.gamma" = [0.5] }\n', "name must be a string of letters"),
    ('[[sweep]]\ngrids = {}\n', "unknown key 'grids' (keys: name, set, grid)"),
])
def test_bad_grids_are_one_line_errors(sweep, expected):
    with pytest.raises(JobError) as info:
        load_text_jobs(BASE + sweep)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_the_job_file_reference_documents_sweeps_and_grids():
    from mpidecent.config import job_reference

    doc = job_reference()
    assert "## [[sweep]]" in doc and "grid = { \"compression.levels\" = [4, 16]" in doc and "## Run health" in doc
    assert "levels4-gamma0.5" in doc
    qps = doc[doc.index('### name = "quantized_push_sum"'):doc.index("## [compression]")]
    assert "needs γ < 1" in qps or "needs gamma < 1" in qps


def test_health_rule_names_the_quantity_that_blew_up():
    from mpidecent.runner.summary import Health

    health = Health()
    assert health.problem({"avg_model_loss": 0.69, "consensus_distance": 0.0}) is None
    assert health.problem({"avg_model_loss": 0.5, "consensus_distance": 1e-4}) is None  # first nonzero spread
    assert health.problem({"avg_model_loss": 900.0, "consensus_distance": 50.0}) is None  # < 1000 × max(0.69, 1)
    problem = health.problem({"avg_model_loss": 1.5e9, "consensus_distance": 1.0})
    assert problem.startswith("the average model's loss 1.5e+09 exceeded 1000 × max(initial loss 0.69, 1)")
    spread = health.problem({"avg_model_loss": 0.4, "consensus_distance": 2e6})
    assert spread.startswith("the consensus distance 2e+06 exceeded 1e+06")
    assert "loss is nan" in health.problem({"avg_model_loss": float("nan"), "consensus_distance": 1.0})
    assert "consensus distance is inf" in health.problem({"avg_model_loss": 1.0, "consensus_distance": float("inf")})
    resumed = Health.from_series([50.0, 3.0], [0.0, 2.0])
    assert resumed.loss0 == 50.0 and resumed.consensus0 == 2.0
    assert resumed.problem({"avg_model_loss": 49_000.0, "consensus_distance": 1.0}) is None
    assert resumed.problem({"avg_model_loss": 51_000.0, "consensus_distance": 1.0}) is not None


def test_unstable_combinations_warn_and_the_hint_fits_the_compressor():
    from mpidecent.algorithms.catalog import divergence_hint, stability_warnings

    topk = load_text(BASE, overrides=["compression.name=topk", "compression.fraction=0.1"])
    [warning] = stability_warnings(topk)
    assert "quantized_push_sum with the biased operator topk(fraction=0.1) and [algorithm] gamma = 1" in warning
    assert "gamma ≤ 0.5" in warning
    assert divergence_hint(topk).startswith("biased compressor (topk) with γ = 1: try γ ≤ 0.5")
    assert stability_warnings(load_text(BASE, overrides=["compression.name=topk", "algorithm.gamma=0.5"])) == []
    assert stability_warnings(load_text(BASE)) == []  # qsgd is unbiased
    assert stability_warnings(load_text(BASE, overrides=["compression.name=randk", "compression.scaled=true"])) == []
    assert stability_warnings(load_text(BASE, overrides=["compression.name=randk", "compression.scaled=false"]))
    choco = load_text(BASE, overrides=["algorithm.name=choco_sgd", "topology.kind=ring", "compression.name=sign",
                             "algorithm.gamma=1.0"])
    assert "choco_sgd with the biased operator sign()" in stability_warnings(choco)[0]
    assert "more levels" in divergence_hint(load_text(BASE, overrides=["compression.levels=4"]))
    assert divergence_hint(load_text(BASE, overrides=["algorithm.name=dpsgd", "topology.kind=ring",
                                            "compression.name=identity"])) == "lower [algorithm] lr (now 0.5)"


def test_resume_of_another_job_names_the_first_differing_key():
    from mpidecent.runner.launch import job_difference

    stored = load_text(BASE).to_toml()
    assert job_difference(load_text(BASE, overrides=["algorithm.lr=0.3"]).to_toml(), stored) == \
        "[algorithm] lr = 0.3 here, 0.5 in the file"
    assert job_difference(load_text(BASE, overrides=["run.save_model=none"]).to_toml(), stored) == \
        '[run] save_model = "none" here, not set in the file'


def test_a_single_rank_launch_of_a_job_that_needs_more_says_start_it_with_mpirun(tmp_path):
    from mpidecent.runner.launch import prepare

    job = load_text(BASE, path="job.toml")
    with pytest.raises(JobError) as info:
        prepare(job, str(tmp_path / "r.h5"), False, False, 0, 1)
    message = str(info.value)
    assert "needs at least 3 nodes, got n = 1" in message
    assert "start it with mpirun -n N mpidecent run job.toml (N ≥ " in message and "\n" not in message
    fixed = load_text(BASE, overrides=["topology.n=4"])  # plan_job's own message already says how many to start
    with pytest.raises(JobError) as info:
        prepare(fixed, str(tmp_path / "r.h5"), False, False, 0, 1)
    assert str(info.value).count("mpirun") == 1


def test_the_sweep_table_lists_settings_statuses_and_the_exit_status_rule():
    from mpidecent.runner.summary import RunResult, comparison_table

    runs = [RunResult("demo-a", "completed", "a.h5", None, 10, 4, False, label="levels=4"),
            RunResult("demo-b", "diverged", "b.h5", None, 10, 4, False, label="levels=16",
                      message="run diverged at step 5: the average model's loss is nan", step=5)]
    text = comparison_table(runs)
    assert "settings" in text.splitlines()[0] and "levels=4" in text and "levels=16" in text
    assert "2 runs: 1 completed, 1 diverged" in text
    assert "demo-b: diverged at step 5: run diverged at step 5" in text
    assert "exit status 3" in text
    assert "exit status 0 (every run completed)" in comparison_table(runs[:1])


def test_the_sweep_table_shows_a_loss_not_computed_as_a_dash_and_a_diverged_one_as_nan():
    from mpidecent.runner.metrics import LogRow
    from mpidecent.runner.summary import RunResult, comparison_table

    values = {"avg_model_loss": math.nan, "suboptimality": math.nan, "accuracy": math.nan,
              "test_accuracy": 0.5, "consensus_distance": 0.1, "cumulative_bits": 80.0,
              "wall_s": 1.0}
    row = LogRow(10, {}, values, 1.0)
    runs = [RunResult("reduce", "completed", "a.h5", row, 10, 4, True),  # eval = "reduce"
            RunResult("bad", "diverged", "b.h5", row, 10, 4, True)]
    reduce_line, diverged_line = comparison_table(runs).splitlines()[2:4]
    assert reduce_line.split()[3:5] == ["-", "-"] and "0.5000 (test)" in reduce_line
    assert diverged_line.split()[3:5] == ["nan", "-"]
