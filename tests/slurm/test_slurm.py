"""The Slurm scripts against a real single-node Slurm started by this test session (slurm_harness.py):
the warning signal, the requeue and the automatic resume of slurm/train.sbatch, the SLURM_NTASKS check,
srun --mpi=pmix as the alternative launcher (also through MPIDECENT_LAUNCHER, with the warning signal and
the requeue), slurm/sweep.sbatch array jobs (issue 6), and slurm/sweep-array.sbatch with a site file and
SBATCH_PARTITION (issue 14).

Run on its own (the tests start Slurm themselves):  .venv/bin/python -m pytest tests/slurm
Skipped, with the reason, only where Slurm cannot be installed (no root, no apt, no package mirror).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mpidecent.io.reader import ReportError, read_header, read_run
from slurm_harness import SlurmCluster, SlurmUnavailable

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = "jobs/quickstart.toml"  # relative: the batch scripts run in the submit directory (ROOT)
RANKS = 8
# Long enough that the warning, sent after 4 rows (step 300), lands well before the end, at any load:
# both the job and the signal's way slow down together.
LONG = ["--set", "run.steps=1500", "--set", "run.log_every=100"]
TIMING = {"wall_s", "compute_s", "comm_s"}  # wall-clock series: the only ones a resume may change


@pytest.fixture(scope="session")
def slurm():
    try:
        cluster = SlurmCluster().start()
    except SlurmUnavailable as err:
        pytest.skip(f"no Slurm for these tests: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()


def _job_env(cluster: SlurmCluster) -> dict[str, str]:
    env = dict(cluster.env)
    if os.geteuid() == 0:  # the test machine runs as root; mpirun refuses that unless told
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # The node claims 16 CPUs on a 2-core machine, so Open MPI, counting Slurm's slots, does not know
    # that 8 ranks share 2 cores and would busy-poll (measured 3.5 instead of ~100 steps/s): yield.
    env["OMPI_MCA_mpi_yield_when_idle"] = "1"
    # Slurm's slots, not the workstation setting of scripts/mpienv.sh, decide how many ranks fit.
    env.pop("OMPI_MCA_rmaps_base_oversubscribe", None)
    # The poller below reads the results file while the job writes it.
    env["HDF5_USE_FILE_LOCKING"] = "FALSE"
    return env


def _series(path) -> dict[str, np.ndarray]:
    """Every series but the timing ones, through mpidecent's reader."""
    run = read_run(str(path))
    return {"step": run.steps, **{f"global/{k}": v for k, v in run.global_series.items() if k not in TIMING},
            **{f"rank/{k}": v for k, v in run.rank_series.items() if k not in TIMING}}


def _differing_series(a, b) -> list[str]:
    x, y = _series(a), _series(b)
    assert set(x) == set(y), (sorted(x), sorted(y))
    return [k for k in x if not np.array_equal(x[k], y[k], equal_nan=True)]


def _rows(path) -> int:
    try:
        return read_header(str(path)).rows
    except ReportError:  # not written yet (or mid-creation)
        return 0


def _reference_run(out: Path, ranks: int, args: list[str]) -> None:
    """The same job with mpirun directly, outside Slurm (the workstation settings of scripts/mpienv.sh)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    command = (f". scripts/mpienv.sh && exec mpirun -n {ranks} {shlex.quote(sys.executable)} -m mpidecent run "
               + " ".join(shlex.quote(a) for a in [QUICKSTART, *args, "--out", str(out), "--quiet"]))
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]


def _job_id(cluster: SlurmCluster, name: str, proc: subprocess.Popen, limit: float = 60) -> str:
    """The id of the job named ``name`` (sbatch --wait prints it only at the end when piped)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        ids = cluster.run(["squeue", "-h", "-o", "%i", "-n", name], check=False).stdout.split()
        if ids:
            return ids[0]
        if proc.poll() is not None:
            raise AssertionError(f"sbatch exited ({proc.returncode}) before the job showed up: {proc.communicate()}")
        time.sleep(0.3)
    raise AssertionError(f"job {name!r} not in squeue after {limit:.0f} s\n{cluster.logs()}")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _sbatch(cluster, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["sbatch", "--wait", *args], cwd=ROOT, env=_job_env(cluster), capture_output=True,
                          text=True, timeout=timeout)


def _warn_after_rows(cluster, sbatch: subprocess.Popen, name: str, out: Path, log: Path,
                     err: Path) -> tuple[str, str, str, str]:
    """Wait for 4 logged rows (the ranks' stop handlers are installed), send the warning signal the way
    --signal=B:USR1@120 does (to the batch shell only) and wait for the job; returns (job id, job.out,
    job.err, the context for assertion messages). Cancels the job if anything fails on the way."""
    stdout = stderr = ""
    try:
        job = _job_id(cluster, name, sbatch)
        deadline = time.time() + 240
        while _rows(out) < 4:
            assert sbatch.poll() is None, f"the job ended early:\n{_read(log)}\n{_read(err)}"
            assert time.time() < deadline, f"no progress in {out}:\n{_read(log)}\n{_read(err)}\n{cluster.logs()}"
            time.sleep(0.2)
        cluster.run(["scancel", "--signal=USR1", "--batch", job])
        # The requeued job waits cred_expire + 1 s (21 s here) before it may start again.
        stdout, stderr = sbatch.communicate(timeout=420)
    finally:
        if sbatch.poll() is None:
            sbatch.kill()
            cluster.run(["scancel", "--full", "-n", name], check=False)
    log_text, err_text = _read(log), _read(err)
    context = f"\n--- job.out ---\n{log_text}\n--- job.err ---\n{err_text}\n--- sbatch ---\n{stdout}{stderr}"
    return job, log_text, err_text, context


def _starts(log_text: str) -> list[str]:
    """The launch lines of the job's starts (one per start, in order)."""
    return [line for line in log_text.splitlines() if re.search(r"start \d+ \(SLURM_RESTART_COUNT\)", line)]


@pytest.mark.timeout(600)
def test_warning_signal_requeues_and_the_job_resumes_to_the_uninterrupted_numbers(slurm, tmp_path):
    reference = tmp_path / "reference.h5"
    _reference_run(reference, RANKS, LONG)

    out, name = tmp_path / "preempted.h5", f"mpidecent-requeue-{os.getpid()}"
    log, err = tmp_path / "job.out", tmp_path / "job.err"
    sbatch = subprocess.Popen(
        ["sbatch", "--wait", "-J", name, "-n", str(RANKS), "-t", "10", "-o", str(log), "-e", str(err),
         "slurm/train.sbatch", QUICKSTART, *LONG, "--quiet", "--out", str(out)],
        cwd=ROOT, env=_job_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job, log_text, err_text, context = _warn_after_rows(slurm, sbatch, name, out, log, err)
    assert sbatch.returncode == 0, context

    # Slurm's view: requeued once, then completed.
    info = slurm.job_info(job)
    assert info.get("Restarts") == "1" and info.get("JobState") == "COMPLETED", f"{info}{context}"
    # The batch shell forwarded the signal; the ranks checkpointed and rank 0 requeued the job; the
    # second start resumed (--resume added by the script, appending to the same log).
    assert "SIGUSR1 received: forwarding SIGUSR1 to mpirun" in log_text, context
    stop = re.findall(r"stop requested \(SIGUSR1\) at step (\d+): checkpoint .* written", err_text)
    assert len(stop) == 1 and f"requeued Slurm job {job}" in err_text, context
    starts = re.findall(r"start (\d) \(SLURM_RESTART_COUNT\).*", log_text)
    assert starts == ["0", "1"], context
    # Only the second start's command has --resume (the exit-4 line may mention it too, as advice).
    assert [bool(re.search(r" --resume$", line)) for line in _starts(log_text)] == [False, True], context
    assert "mpirun finished (exit 0)" in log_text, context

    attrs = read_run(str(out)).attrs
    assert attrs["status"] == "completed", attrs
    assert list(np.atleast_1d(attrs["resumed_at"])) == [int(stop[0])]
    assert attrs["steps_completed"] == 1500 and attrs["world_size"] == RANKS
    # Bit-identical to the uninterrupted run, except the wall-clock series.
    assert _differing_series(reference, out) == []


@pytest.mark.timeout(600)
def test_world_size_other_than_slurm_ntasks_is_refused(slurm, tmp_path):
    # A batch job of 2 tasks that starts the program without a launcher: MPI makes a singleton (world
    # size 1). mpidecent must refuse in one line instead of training alone.
    out, log = tmp_path / "single.h5", tmp_path / "single.out"
    command = f"exec .venv/bin/mpidecent run {QUICKSTART} --set run.steps=20 --out {shlex.quote(str(out))}"
    result = _sbatch(slurm, ["-n", "2", "-t", "5", "-o", str(log), "--wrap", command], timeout=300)
    text = _read(log)
    assert result.returncode == 2, f"{result}\n{text}"
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert errors == ["mpidecent: error: MPI started 1 rank(s) but Slurm allocated SLURM_NTASKS = 2: the MPI "
                      "library and the launcher disagree (use mpirun inside the allocation, or srun --mpi=pmix)"], text
    assert not out.exists()

    # srun without a PMI plug-in: this Open MPI notices the direct launch and stops in MPI_Init before
    # mpidecent runs (an MPI that starts singletons instead is caught by the check above).
    out2 = tmp_path / "srun.h5"
    srun = slurm.run(["srun", "--mpi=none", "-n", "2", "-t", "5", ".venv/bin/mpidecent", "run", QUICKSTART,
                      "--set", "run.steps=20", "--out", str(out2)], timeout=300, check=False, cwd=ROOT,
                     env=_job_env(slurm))
    assert srun.returncode != 0, srun
    assert not out2.exists()


@pytest.mark.timeout(600)
def test_srun_with_pmix_is_a_working_alternative_to_mpirun(slurm, tmp_path):
    out = tmp_path / "srun.h5"
    result = slurm.run(["srun", "--mpi=pmix", "-n", "4", "-t", "5", ".venv/bin/mpidecent", "run", QUICKSTART,
                        "--set", "run.steps=40", "--set", "run.log_every=20", "--quiet", "--out", str(out)],
                       timeout=300, check=False, cwd=ROOT, env=_job_env(slurm))
    if result.returncode != 0 and "pmix" in result.stderr.lower() and "invalid mpi type" in result.stderr.lower():
        pytest.skip(f"this Slurm has no PMIx plug-in: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr[-3000:]
    attrs = read_run(str(out)).attrs
    assert attrs["status"] == "completed" and attrs["world_size"] == 4


@pytest.mark.timeout(600)
def test_sweep_array_over_seeds_and_over_job_files(slurm, tmp_path):
    steps = ["--set", "run.steps=60", "--set", "run.log_every=20", "--quiet"]
    seeds, files = tmp_path / "seeds", tmp_path / "files"
    common = ["-n", "4", "-t", "5", "--array=0-1"]

    def submit(prefix: str, *args: str) -> subprocess.Popen:
        logs = ["-o", str(tmp_path / f"{prefix}-%A_%a.out"), "-e", str(tmp_path / f"{prefix}-%A_%a.err")]
        return subprocess.Popen(["sbatch", "--wait", *common, *logs, "slurm/sweep.sbatch", *args], cwd=ROOT,
                                env=_job_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # Both arrays at once (4 jobs of 4 ranks: the node has 16 CPUs).
    procs = [submit("seed", QUICKSTART, *steps, "--out", str(seeds)),
             submit("file", QUICKSTART, "jobs/sgp.toml", *steps, "--out", str(files))]
    try:
        outputs = [p.communicate(timeout=420)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = "\n".join(f"--- {p.name} ---\n{_read(p)}" for p in sorted(tmp_path.glob("*.out")))
    assert [p.returncode for p in procs] == [0, 0], f"{outputs}\n{logs}"

    # Over seeds: run.seed = array task id, one file per seed, different numbers.
    finals = []
    for seed in (0, 1):
        run = read_run(str(seeds / f"quickstart-seed{seed}.h5"))
        assert run.status == "completed" and run.n == 4
        assert 'seed = ' + str(seed) in run.attrs["job"].split("[topology]")[0]
        finals.append(run.glob("avg_model_loss")[-1])
    assert finals[0] != finals[1]
    # Over job files: task i ran the i-th file.
    for stem, algorithm in (("quickstart", "quantized_push_sum"), ("sgp", "push_sum")):
        run = read_run(str(files / f"{stem}.h5"))
        assert run.status == "completed" and run.algorithm == algorithm


def _has_pmix(cluster: SlurmCluster) -> bool:
    listed = cluster.run(["srun", "--mpi=list"], check=False)
    return "pmix" in (listed.stdout + listed.stderr)


@pytest.mark.timeout(600)
def test_srun_launcher_forwards_the_warning_signal_and_the_job_resumes(slurm, tmp_path):
    """MPIDECENT_LAUNCHER="srun --mpi=pmix": the batch shell forwards SIGUSR1 to srun, srun to every rank."""
    if not _has_pmix(slurm):
        pytest.skip("this Slurm has no PMIx plug-in (srun --mpi=list)")
    out, name, ranks, steps = tmp_path / "srun.h5", f"mpidecent-srun-{os.getpid()}", 4, 1500
    log, err = tmp_path / "job.out", tmp_path / "job.err"
    env = {**_job_env(slurm), "MPIDECENT_LAUNCHER": "srun --mpi=pmix"}
    sbatch = subprocess.Popen(
        ["sbatch", "--wait", "-J", name, "-n", str(ranks), "-t", "10", "-o", str(log), "-e", str(err),
         "slurm/train.sbatch", QUICKSTART, "--set", f"run.steps={steps}", "--set", "run.log_every=50", "--quiet",
         "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job, log_text, err_text, context = _warn_after_rows(slurm, sbatch, name, out, log, err)
    assert sbatch.returncode == 0, context
    info = slurm.job_info(job)
    assert info.get("Restarts") == "1" and info.get("JobState") == "COMPLETED", f"{info}{context}"
    assert re.search(r"start 0 \(SLURM_RESTART_COUNT\).*: srun --mpi=pmix \S+ run ", log_text), context
    assert "SIGUSR1 received: forwarding SIGUSR1 to srun" in log_text, context
    stop = re.findall(r"stop requested \(SIGUSR1\) at step (\d+): checkpoint .* written", err_text)
    # Rank 0 ran `scontrol requeue`. With srun the ranks (and that scontrol) are in a job step, which Slurm
    # cancels as it requeues, so scontrol may be killed before it reports success: rank 0 then logs that
    # the requeue was requested (mpidecent/preemption.py); the job was requeued either way (Restarts == 1).
    assert len(stop) == 1, context
    assert f"requeued Slurm job {job}" in err_text or f"requeue of Slurm job {job} requested" in err_text, context
    assert re.findall(r"start (\d) \(SLURM_RESTART_COUNT\)", log_text) == ["0", "1"], context
    # Only the second start's command has --resume (the exit-4 line may mention it too, as advice).
    assert [bool(re.search(r" --resume$", line)) for line in _starts(log_text)] == [False, True], context
    assert "srun finished (exit 0)" in log_text, context
    attrs = read_run(str(out)).attrs
    assert attrs["status"] == "completed" and attrs["world_size"] == ranks, attrs
    assert attrs["steps_completed"] == steps and list(np.atleast_1d(attrs["resumed_at"])) == [int(stop[0])]


SWEEP = ('\n[[sweep]]\nname = "quantized"\nset = {}\n\n[[sweep]]\nname = "exact"\n'
         'set = { "algorithm.name" = "push_sum", "compression.name" = "identity" }\n')


@pytest.mark.timeout(600)
def test_sweep_array_runs_one_variant_per_task_with_the_files_of_a_whole_sweep(slurm, tmp_path):
    job = tmp_path / "sweep.toml"
    job.write_text((ROOT / QUICKSTART).read_text() + SWEEP)
    site = tmp_path / "site.sh"
    site.write_text('echo "site file of the test: loaded"\nexport MPIDECENT_LAUNCHER=mpirun\n')
    steps = ["--set", "run.steps=40", "--set", "run.log_every=20", "--quiet"]
    array, whole = tmp_path / "array", tmp_path / "whole"
    # Partition from the environment (over the scripts' #SBATCH lines), the site file from MPIDECENT_SITE.
    env = {**_job_env(slurm), "SBATCH_PARTITION": "other", "MPIDECENT_SITE": str(site)}
    logs = ["-o", str(tmp_path / "task-%A_%a.out"), "-e", str(tmp_path / "task-%A_%a.err")]
    # Tasks 0 and 1 run the two variants; task 2 is one too many and must say so.
    sbatch = subprocess.Popen(["sbatch", "--wait", "-n", "4", "-t", "5", "--array=0-2", *logs,
                               "slurm/sweep-array.sbatch", str(job), *steps, "--out", str(array)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Meanwhile the whole sweep in one launch, outside Slurm: the reference.
        env_ref = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        command = (f". scripts/mpienv.sh && exec mpirun -n 4 {shlex.quote(sys.executable)} -m mpidecent run "
                   + " ".join(shlex.quote(a) for a in [str(job), *steps, "--out", str(whole)]))
        reference = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env_ref, capture_output=True, text=True,
                                   timeout=400)
        assert reference.returncode == 0, reference.stderr[-3000:]
        output = sbatch.communicate(timeout=420)[0]
    finally:
        if sbatch.poll() is None:
            sbatch.kill()
    texts = {p.name: _read(p) for p in sorted(tmp_path.glob("task-*"))}
    context = output + "".join(f"\n--- {n} ---\n{t}" for n, t in texts.items())
    array_id = re.search(r"Submitted batch job (\d+)", output)
    assert sbatch.returncode != 0 and array_id, context  # task 2 failed
    a = array_id.group(1)
    assert slurm.job_info(a).get("Partition") == "other", context
    for task in (0, 1, 2):
        assert "site file: " + str(site) in texts[f"task-{a}_{task}.out"], context
        assert f"--variant {task} " in texts[f"task-{a}_{task}.out"], context
    errors = [line for line in texts[f"task-{a}_2.err"].splitlines() if "error" in line]
    assert errors == [f"mpidecent: error: --variant 2: index out of range, {job} has 2 [[sweep]] variant(s) "
                      "(names: quantized, exact; indexes: 0-1)"], context

    # The same files as the whole sweep, with the same numbers.
    assert sorted(p.name for p in array.iterdir()) == sorted(p.name for p in whole.iterdir()), context
    for variant in ("quantized", "exact"):
        run = read_run(str(array / f"{variant}.h5"))
        assert run.status == "completed" and run.n == 4 and run.name == f"quickstart-{variant}", context
        assert _differing_series(whole / f"{variant}.h5", array / f"{variant}.h5") == [], variant
