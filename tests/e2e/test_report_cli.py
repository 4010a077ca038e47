"""End to end: ``mpidecent report`` on results files of real runs made with the CLI under mpirun, including a
run that is still going and then killed (issue 7).

(Named test_report_cli.py, not test_report.py: tests/unit/test_report.py exists and pytest cannot collect
two test modules of one basename from folders without __init__.py in one session.)"""

from __future__ import annotations

import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli import ROOT, mpidecent
from mpidecent.io.reader import SUPPORTED_FORMAT_VERSION, ReportError, read_header, read_run

TINY = ["--set", "run.steps=40", "--set", "run.log_every=10"]
FIGURES = {"loss_vs_step.png", "suboptimality_vs_step.png", "accuracy_vs_step.png", "loss_vs_bits.png",
           "suboptimality_vs_bits.png", "loss_vs_modelled_time.png", "suboptimality_vs_modelled_time.png",
           "consensus_vs_step.png", "rank_spread.png", "extra_push_sum_weight.png", "accuracy_vs_bits.png"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    paths = {}
    for job in ("quickstart", "sgp"):
        out = folder / f"{job}.h5"
        result = mpidecent("run", str(ROOT / "jobs" / f"{job}.toml"), *TINY, "--out", str(out), "--quiet", ranks=4)
        assert result.returncode == 0, result.stderr
        paths[job] = out
    return paths


def _final(path: Path) -> dict:
    run = read_run(str(path))
    g = {k: v[-1].item() for k, v in run.global_series.items()}
    g["step"] = run.last_step
    g["n"] = int(run.attrs["world_size"])
    g["format_version"] = int(run.attrs["format_version"])
    g["push_sum_weight"] = run.rank("push_sum_weight")[-1]
    g["compute"] = run.rank("compute_s")[-1].sum()
    g["comm"] = run.rank("comm_s")[-1].sum()
    return g


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    assert len(data) > 2000, f"{path} is (nearly) empty"
    return struct.unpack(">II", data[16:24])


@pytest.mark.timeout(300)
def test_printed_table_matches_the_hdf5_files(runs):
    result = mpidecent("report", str(runs["quickstart"]), str(runs["sgp"]))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    block = lines[lines.index("final values (last logged step)"):]
    for name, path in runs.items():
        h5 = _final(path)
        assert h5["format_version"] == SUPPORTED_FORMAT_VERSION
        ident = next(x.split() for x in lines if x.startswith(f"{name} ") and "completed" in x)
        assert ident[-2:] == [str(h5["n"]), "40/40"]
        cells = next(x.split() for x in block if x.startswith(f"{name} "))
        loss, subopt, acc, consensus, bits, nbytes, per_node, wall = cells[1:9]
        assert float(loss) == pytest.approx(h5["avg_model_loss"], abs=5e-7)
        assert float(subopt) == pytest.approx(h5["suboptimality"], rel=1e-3)
        assert float(acc) == pytest.approx(h5["accuracy"], abs=5e-5)
        assert float(consensus) == pytest.approx(h5["consensus_distance"], rel=1e-3)
        assert float(bits) == pytest.approx(h5["cumulative_bits"], rel=1e-4)
        assert int(nbytes) == h5["cumulative_bytes"]
        assert float(per_node) == pytest.approx(h5["cumulative_bits"] / (4 * 40), abs=0.05)
        assert float(wall) == pytest.approx(h5["wall_s"], abs=0.005)
        share = round(100 * h5["compute"] / (h5["compute"] + h5["comm"]))
        assert cells[9] == f"{share}/{100 - share}%"
        extra = next(x.split() for x in lines if x.startswith(f"{name} ") and "push_sum_weight" in x)
        assert float(extra[2]) == pytest.approx(h5["push_sum_weight"].mean(), rel=1e-5)
        assert float(extra[3]) == pytest.approx(h5["push_sum_weight"].max(), rel=1e-5)
    assert "note: modelled time is a model" in result.stdout
    assert "10 Gbit/s, latency 5 µs (job [link])" in result.stdout
    assert "partial" not in result.stdout


@pytest.mark.timeout(300)
def test_json_and_csv_hold_the_exact_values(runs):
    result = mpidecent("report", str(runs["quickstart"]), str(runs["sgp"]), "--json", "--budget", "1e5,1e12",
                       "--target", "0.4", "--target-accuracy", "0.6")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [r["run"] for r in doc["runs"]] == ["quickstart", "sgp"]
    for rec, path in zip(doc["runs"], runs.values()):
        h5 = _final(path)
        for key in ("avg_model_loss", "suboptimality", "consensus_distance", "wall_s"):
            assert rec[key] == h5[key], key
        assert (rec["total_bits"], rec["total_bytes"]) == (h5["cumulative_bits"], h5["cumulative_bytes"])
        assert rec["steps"] == h5["step"] == 40 and rec["n"] == 4 and rec["partial"] is False
        assert rec["budgets"][0]["reached"] and not rec["budgets"][1]["reached"]
        run = read_run(str(path))
        loss, bits, steps = run.glob("avg_model_loss"), run.glob("cumulative_bits"), run.steps
        assert rec["budgets"][0]["avg_model_loss"] == pytest.approx(np.interp(1e5, bits, loss))
        first = int(np.flatnonzero(loss <= 0.4)[0])
        assert (rec["target"]["step"], rec["target"]["bits"]) == (steps[first], bits[first])
        # No test set in these jobs: the accuracy target is met on the training accuracy.
        accuracy = run.glob("accuracy")
        assert run.glob("test_accuracy") is None and run.rank("test_accuracy") is None
        first = int(np.flatnonzero(accuracy >= 0.6)[0])
        assert rec["target_accuracy"]["accuracy_set"] == "training" and rec["target_accuracy"]["reached"]
        assert (rec["target_accuracy"]["step"], rec["target_accuracy"]["bits"]) == (steps[first], bits[first])
    csv_result = mpidecent("report", str(runs["quickstart"]), str(runs["sgp"]), "--csv", "--bandwidth", "1e9")
    assert csv_result.returncode == 0, csv_result.stderr
    header, *rows = csv_result.stdout.splitlines()
    assert len(rows) == 2 and header.startswith("run,file,status,partial")
    assert "1000000000.0" in rows[0] and "--bandwidth, rest from job [link]" in rows[0]


@pytest.mark.timeout(300)
def test_plot_writes_the_expected_pngs(runs, tmp_path):
    folder = tmp_path / "plots"
    result = mpidecent("report", str(runs["quickstart"]), str(runs["sgp"]), "--plot", str(folder))
    assert result.returncode == 0, result.stderr
    assert {p.name for p in folder.glob("*.png")} == FIGURES
    assert set((folder / ".mpidecent-figures").read_text().split()) == FIGURES  # the manifest of this report's figures
    for name in FIGURES:
        assert _png_size(folder / name) == (800, 500), name
        assert str(folder / name) in result.stdout


@pytest.mark.timeout(300)
def test_results_datasets_carry_dimension_scales(runs):
    """The parallel writer attaches /metrics/step to the log-row axis of every series and /metrics/rank_index to
    the rank axis of the per-rank ones (HDF5 dimension scales: xarray names the dimensions step and rank)."""
    with h5py.File(runs["quickstart"], "r") as f:
        metrics = f["metrics"]
        assert metrics["step"].is_scale and metrics["rank_index"].is_scale
        n = int(f.attrs["world_size"])
        assert list(metrics["rank_index"][()]) == list(range(n))
        for name, dset in [*metrics["global"].items(), *metrics["rank"].items()]:
            assert dset.dims[0].label == "step" and dset.dims[0][0].name == "/metrics/step", name
            if dset.ndim == 2:
                assert dset.dims[1].label == "rank" and dset.dims[1][0].name == "/metrics/rank_index", name
    # The reader ignores the scales: the run reads as before.
    run = read_run(str(runs["quickstart"]))
    assert "rank_index" not in run.rank_series and run.rank("loss").shape == (run.rows, run.n)


@pytest.mark.timeout(300)
def test_folder_and_series_csv_of_real_runs(runs, tmp_path):
    folder = runs["quickstart"].parent
    result = mpidecent("report", str(folder), "--series")
    assert result.returncode == 0, result.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    total = sum(read_run(str(p)).rows for p in sorted(folder.glob("*.h5")) if not p.name.endswith(".ckpt.h5"))
    assert len(rows) == total and {"run", "file", "step", "avg_model_loss", "cumulative_bits", "modelled_s",
                                   "algorithm.name", "compression.name", "run.seed"} <= set(rows[0])
    quick = [r for r in rows if r["file"] == str(runs["quickstart"])]
    assert [float(r["avg_model_loss"]) for r in quick] == list(read_run(str(runs["quickstart"])).glob("avg_model_loss"))


@pytest.mark.timeout(300)
def test_bad_files_and_flags_exit_2_with_one_line(runs, tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    result = mpidecent("report", str(runs["quickstart"]), str(foreign))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"mpidecent: error: not an mpidecent results file: {foreign} (no format_version attribute)\n"
    result = mpidecent("report", str(runs["quickstart"]), "--latency", "-1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--latency" in result.stderr
    result = mpidecent("report", str(runs["quickstart"]), "--bogus")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--bogus" in result.stderr


# ---- a run that is still going, then killed ---------------------------------------------------------------

# Each rank writes its pid to $PIDDIR/<rank>, then runs the CLI (so the test can kill one rank like a crash).
WRAPPER = """
import os, sys
with open(os.path.join(os.environ["PIDDIR"], os.environ.get("OMPI_COMM_WORLD_RANK", "0")), "w") as f:
    f.write(str(os.getpid()))
from mpidecent.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _rows(path: Path) -> int:
    try:
        return read_header(str(path)).rows  # opened without file locking: the ranks are writing it
    except ReportError:  # not created yet, or its attributes not written yet
        return 0


@pytest.mark.timeout(600)
def test_running_and_killed_runs_are_reported_as_partial(tmp_path):
    out, piddir = tmp_path / "long.h5", tmp_path / "pids"
    piddir.mkdir()
    args = ["run", str(ROOT / "jobs/quickstart.toml"), "--set", "run.steps=200000", "--set", "run.log_every=100",
            "--out", str(out), "--quiet"]
    command = (f". {shlex.quote(str(ROOT / 'scripts/mpienv.sh'))} && exec mpirun -n 4 {shlex.quote(sys.executable)} "
               f"-c {shlex.quote(WRAPPER)} {' '.join(shlex.quote(a) for a in args)}")
    env = {**os.environ, "PIDDIR": str(piddir), "HDF5_USE_FILE_LOCKING": "FALSE"}
    proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while _rows(out) < 2:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "the run did not log 2 rows in time"
            time.sleep(0.2)
        # Still running: the report reads what is there (a retry covers a read that meets a row being written).
        for _ in range(5):
            live = mpidecent("report", str(out), "--json")
            if live.returncode == 0:
                break
            time.sleep(0.5)
        assert live.returncode == 0, live.stderr
        rec = json.loads(live.stdout)["runs"][0]
        assert rec["partial"] is True and rec["status"] == "running" and rec["steps"] >= 100
        assert "status 'running'" in rec["partial_reason"]
        # Crash: SIGKILL one rank; mpirun then ends the others.
        assert proc.poll() is None
        os.kill(int((piddir / "1").read_text()), signal.SIGKILL)
        proc.communicate(timeout=120)
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    result = mpidecent("report", str(out))
    assert result.returncode == 0, result.stderr
    run = read_run(str(out))
    assert run.status == "running" and run.partial and 2 <= run.rows < 2001
    assert "running (partial)" in result.stdout
    assert "note: quickstart is partial: status 'running'" in result.stdout
    assert f"{run.rows} of 2001 log rows, last step {run.last_step} of 200000" in result.stdout
    folder = tmp_path / "plots"
    plotted = mpidecent("report", str(out), "--plot", str(folder))
    assert plotted.returncode == 0, plotted.stderr
    assert (folder / "loss_vs_step.png").exists()
