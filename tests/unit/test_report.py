"""``mpidecent report`` on synthetic results files (written serially with h5py in the real layout), the
link model, the [link] job section, the topology drawing and rank 0's progress reporter."""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpidecent import cli
from mpidecent.comm.linkmodel import LinkModel
from mpidecent.config import LINK_PARAMS, load_text
from mpidecent.errors import JobError
from mpidecent.progress import Progress
from mpidecent.io import layout
from mpidecent.io.reader import (BASE_GLOBAL_SERIES, BASE_RANK_SERIES, SUPPORTED_FORMAT_VERSION, ReportError, RunHeader,
                                 read_header, read_run, read_runs)
from mpidecent.report import expand_files, parse_targets
from mpidecent.report.plots import (FIGSIZE, MANIFEST, TOPOLOGY_FIGSIZE, _accuracy_bits_figure, _staleness_figure,
                                    _stragglers_figure, pixel_size, torus_shape, write_plots)
from mpidecent.report.tables import (accuracy_target_query, budget_query, group_runs, render_csv, render_json,
                                     render_series_csv, render_text, summarize, target_query)

ROOT = Path(__file__).resolve().parents[2]

JOB = """
[run]
name = "{name}"
steps = 30
log_every = 10
[topology]
kind = "chord_ring"
[algorithm]
name = "quantized_push_sum"
[compression]
name = "qsgd"
[link]
bandwidth_bps = 8000.0
latency_s = 0.1
"""

# The synthetic run: 4 ranks, rows at steps 0, 10, 20, 30.
STEPS = np.array([0, 10, 20, 30])
LOSS = np.array([0.7, 0.5, 0.4, 0.35])
OPTIMUM = 0.3
BITS = np.array([0, 1000, 2000, 3000])
TEST_ACCURACY = np.array([.5, .6, .7, .75])  # the average model's; training accuracy: .5, .7, .8, .85
NODE_OFFSET = np.array([-0.1, -0.05, 0.0, 0.05])  # each node's own test accuracy = TEST_ACCURACY + offset (n = 4)


def write_results(path: Path, *, name: str = "syn", rows: int = 4, status: str = "completed",
                  format_version: int | None = 1, extras: dict[str, np.ndarray] | None = None,
                  events: dict[str, np.ndarray] | None = None, test_set: bool = False, node_test: bool = False,
                  accuracy: bool = True, n: int = 4, seed: int = 0, loss_shift: float = 0.0, job_extra: str = "",
                  steps: np.ndarray | None = None) -> Path:
    """A results file in the writer's layout (io/results.py, Runner._metadata), serially. ``node_test``: with
    the per-rank test series (each node's own model on the test set; implies ``test_set``); ``accuracy``
    False: NaN accuracy, like a regression."""
    test_set = test_set or node_test
    job = load_text(JOB.format(name=name).replace("[run]\n", f"[run]\nseed = {seed}\n", 1) + job_extra)
    share = np.arange(1, n + 1) / np.arange(1, n + 1).sum()  # rank i's share of the bits
    bits_rank = np.rint(BITS[:, None] * share[None, :]).astype(np.int64)
    rank = {
        "loss": (np.full((4, n), 0.5), ""), "local_objective": (LOSS[:, None] + 0.01 * np.arange(n)[None, :], ""),
        "bits_sent": (bits_rank, "bits"), "bytes_sent": ((bits_rank + 7) // 8, "bytes"),
        "messages_sent": (np.outer(STEPS, np.ones(n, dtype=np.int64)), "messages"),
        "compute_s": (np.outer(STEPS, np.linspace(0.01, 0.02, n)), "s"),
        "comm_s": (np.outer(STEPS, np.full(n, 0.005)), "s"),
        "push_sum_weight": (np.tile(np.linspace(0.8, 1.2, n), (4, 1)), ""),
    }
    for key, values in (extras or {}).items():
        rank[key] = (values, "")
    glob = {
        "avg_model_loss": (LOSS + loss_shift, ""), "suboptimality": (LOSS + loss_shift - OPTIMUM, ""), "accuracy": (np.array([.5, .7, .8, .85]), "fraction"),
        "consensus_distance": (np.array([0.0, 1e-1, 1e-2, 1e-3]), ""), "cumulative_bits": (bits_rank.sum(axis=1), "bits"),
        "cumulative_bytes": (((bits_rank + 7) // 8).sum(axis=1), "bytes"), "wall_s": (STEPS * 0.01, "s"),
    }
    if not accuracy:
        glob["accuracy"] = (np.full(4, np.nan), "fraction")
    if test_set:
        glob["test_loss"] = (LOSS + 0.05, "")
        glob["test_accuracy"] = (TEST_ACCURACY if accuracy else np.full(4, np.nan), "fraction")
    if node_test:
        rank["test_loss"] = (LOSS[:, None] + 0.1 + 0.01 * np.arange(n)[None, :], "")
        node_accuracy = TEST_ACCURACY[:, None] + NODE_OFFSET[None, :n] if accuracy else np.full((4, n), np.nan)
        rank["test_accuracy"] = (node_accuracy, "fraction")
    with h5py.File(path, "w") as f:
        attrs = {"mpidecent_version": "0.1.0", "job": job.to_toml(), "run_name": name,
                 "algorithm": "quantized_push_sum", "algorithm_description": "quantized_push_sum(...)",
                 "compressor": "qsgd", "compressor_description": "qsgd(levels=16, bucket=64)", "optimum": OPTIMUM,
                 "world_size": n, "status": status, "message": "", "steps_requested": 30,
                 "steps_completed": 30 if status == "completed" else 0, "started": "2026-01-01T00:00:00+00:00"}
        if format_version is not None:
            attrs["format_version"] = format_version
        for k, v in attrs.items():
            f.attrs[k] = v
        topo = f.create_group("topology")
        topo.create_dataset("edges", data=np.array([[i, (i + 1) % n] for i in range(n)], dtype=np.int32))
        topo.create_dataset("weights", data=np.eye(n))
        for k, v in {"kind": "chord_ring", "directed": True, "n": n, "period": 1, "spectral_gap": 0.5}.items():
            topo.attrs[k] = v
        metrics = f.create_group("metrics")
        d = metrics.create_dataset("step", data=STEPS[:rows], maxshape=(None,))
        d.attrs["unit"] = ""
        for group, series in (("rank", rank), ("global", glob)):
            g = metrics.create_group(group)
            for key, (values, unit) in series.items():
                d = g.create_dataset(key, data=values[:rows])
                d.attrs["unit"] = unit
                d.attrs["description"] = key
        for key, values in (events or {}).items():
            f.require_group("events").create_dataset(key, data=values)
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert len(data) > 2000, f"{path} is (nearly) empty"
    return struct.unpack(">II", data[16:24])


def report(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# ---- reader ------------------------------------------------------------------------------------------------


def test_reader_and_writer_take_the_layout_from_one_module():
    """io/layout.py declares the format version and the series once; the reader derives its names from it,
    and the writer (io/results.py, which needs mpi4py: checked by its source) imports them, defining none."""
    assert SUPPORTED_FORMAT_VERSION == layout.FORMAT_VERSION == 1
    assert tuple(layout.RANK_SERIES) == ("loss", "local_objective", "bits_sent", "bytes_sent", "messages_sent",
                                         "compute_s", "comm_s")
    assert BASE_RANK_SERIES == (*layout.RANK_SERIES, *layout.RANK_TEST_SERIES)
    assert BASE_GLOBAL_SERIES == (*layout.GLOBAL_SERIES, *layout.TEST_SERIES)
    assert tuple(layout.TEST_SERIES) == tuple(layout.RANK_TEST_SERIES) == ("test_loss", "test_accuracy")
    assert [s.unit for s in layout.RANK_TEST_SERIES.values()] == ["", "fraction"]
    for series in (*layout.RANK_SERIES.values(), *layout.GLOBAL_SERIES.values(), *layout.TEST_SERIES.values(),
                   *layout.RANK_TEST_SERIES.values()):
        assert series.dtype in ("i8", "f8") and series.description
    tree = ast.parse((ROOT / "mpidecent/io/results.py").read_text(encoding="utf-8"))
    names = ("FORMAT_VERSION", "RANK_SERIES", "GLOBAL_SERIES")
    imported = {alias.name for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.module == "mpidecent.io.layout" for alias in node.names}
    assert set(names) <= imported
    assigned = {t.id for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    assert not assigned & set(names)


def test_read_header_gives_job_status_and_rows(tmp_path):
    path = write_results(tmp_path / "a.h5", rows=3, status="preempted")
    header = read_header(str(path))
    assert header == RunHeader(job=load_text(JOB.format(name="syn")).to_toml(), status="preempted", rows=3)
    assert load_text(header.job).run["name"] == "syn"
    with h5py.File(path, "a") as f:
        del f.attrs["status"]
    assert read_header(path).status == "unknown"


def test_read_header_refuses_unusable_files_in_one_line(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    newer = write_results(tmp_path / "newer.h5", format_version=SUPPORTED_FORMAT_VERSION + 1)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    no_steps = write_results(tmp_path / "nosteps.h5")
    with h5py.File(no_steps, "a") as f:
        del f["metrics/step"]
    cases = [(foreign, "not an mpidecent results file"), (newer, "is newer than this mpidecent reads"),
             (text, "(not an HDF5 file)"), (tmp_path / "missing.h5", "no such file"), (tmp_path, "is a directory"),
             (no_steps, "damaged results file (no /metrics/step series)")]
    for path, message in cases:
        with pytest.raises(ReportError) as info:
            read_header(str(path))
        assert message in str(info.value) and "\n" not in str(info.value), path


def test_run_holds_the_hdf5_data(tmp_path):
    path = write_results(tmp_path / "a.h5")
    run = read_run(str(path))
    assert run.name == "syn" and run.n == 4 and run.rows == 4 and run.last_step == 30
    assert not run.partial and run.partial_reason == "" and run.expected_rows == 4
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(run.steps, f["metrics/step"][()])
        for name in f["metrics/rank"]:
            np.testing.assert_array_equal(run.rank(name), f[f"metrics/rank/{name}"][()])
        for name in f["metrics/global"]:
            np.testing.assert_array_equal(run.glob(name), f[f"metrics/global/{name}"][()])
    assert run.rank_extras == ["push_sum_weight"] and run.glob("test_loss") is None
    assert run.link == LinkModel(8000.0, 0.1) and run.link_source == "job [link]"
    assert run.unit("rank", "bits_sent") == "bits"


def test_table_values_equal_the_hdf5_data(tmp_path, capsys):
    path = write_results(tmp_path / "a.h5", test_set=True)
    s = summarize(read_run(str(path)))
    with h5py.File(path, "r") as f:
        g = {k: d[-1] for k, d in f["metrics/global"].items()}
        compute, comm = f["metrics/rank/compute_s"][-1].sum(), f["metrics/rank/comm_s"][-1].sum()
        weight = f["metrics/rank/push_sum_weight"][-1]
    assert s["avg_model_loss"] == g["avg_model_loss"] and s["suboptimality"] == g["suboptimality"]
    assert s["accuracy"] == g["test_accuracy"] and s["accuracy_set"] == "test"
    assert s["consensus_distance"] == g["consensus_distance"] and s["wall_s"] == g["wall_s"]
    assert s["total_bits"] == g["cumulative_bits"] and s["total_bytes"] == g["cumulative_bytes"]
    assert s["bits_per_step_per_node"] == g["cumulative_bits"] / (4 * 30)
    assert s["compute_share"] == pytest.approx(compute / (compute + comm))
    assert s["extras"]["push_sum_weight"] == {"mean": pytest.approx(weight.mean()), "max": weight.max(), "unit": ""}
    assert (s["n"], s["steps"], s["steps_requested"], s["algorithm"], s["compressor"]) == (4, 30, 30,
                                                                                         "quantized_push_sum", "qsgd")
    code, out, err = report(capsys, path)
    assert code == 0 and err == ""
    line = next(x for x in out.splitlines() if x.startswith("syn ") and "0.350000" in x)
    cells = line.split()
    assert cells[1:5] == ["0.350000", f"{g['suboptimality']:.3e}", f"{g['test_accuracy']:.4f}", "t"]
    assert f"{g['cumulative_bits']:.4e}" in cells and str(g["cumulative_bytes"]) in cells
    assert "push_sum_weight" in out and "note: modelled time is a model" in out
    assert "8 kbit/s, latency 100 ms (job [link])" in out


def test_budget_queries_interpolate_in_cumulative_bits(tmp_path):
    run = read_run(str(write_results(tmp_path / "a.h5")))
    half = budget_query(run, 1500)  # halfway between the rows at 1000 and 2000 bits
    assert half["reached"] and half["avg_model_loss"] == pytest.approx(0.45)
    assert half["suboptimality"] == pytest.approx(0.15) and half["step"] == pytest.approx(15)
    assert budget_query(run, 1000)["avg_model_loss"] == pytest.approx(0.5)  # exactly at a log point
    assert budget_query(run, 0)["avg_model_loss"] == pytest.approx(0.7)
    assert budget_query(run, 3000)["avg_model_loss"] == pytest.approx(0.35)
    beyond = budget_query(run, 3001)
    assert not beyond["reached"] and beyond["avg_model_loss"] is None


def test_target_query_finds_the_first_logged_step(tmp_path):
    run = read_run(str(write_results(tmp_path / "a.h5")))
    hit = target_query(run, 0.45)
    assert hit["reached"] and (hit["step"], hit["bits"]) == (20, 2000) and hit["wall_s"] == pytest.approx(0.2)
    assert hit["modelled_s"] == pytest.approx(run.modelled_time()[2])
    assert target_query(run, 0.4)["step"] == 20  # ≤ target counts
    miss = target_query(run, 0.3)
    assert not miss["reached"] and miss["step"] is None and miss["best_loss"] == pytest.approx(0.35)


def test_per_node_test_series_are_base_series_not_extras(tmp_path):
    path = write_results(tmp_path / "a.h5", node_test=True)
    run = read_run(str(path))
    assert run.rank_extras == ["push_sum_weight"] and run.global_extras == []
    assert {"test_loss", "test_accuracy"} <= set(BASE_RANK_SERIES)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(run.rank("test_accuracy"), f["metrics/rank/test_accuracy"][()])
        np.testing.assert_array_equal(run.node_test_series("test_loss"), f["metrics/rank/test_loss"][()])
        np.testing.assert_array_equal(run.glob("test_accuracy"), f["metrics/global/test_accuracy"][()])
    assert run.unit("rank", "test_accuracy") == "fraction"
    s = summarize(run)
    assert set(s["extras"]) == {"push_sum_weight"}
    # Without a test set (or with NaN accuracies, a regression) there is nothing per node.
    plain = read_run(str(write_results(tmp_path / "b.h5")))
    assert plain.node_test_series("test_accuracy") is None and summarize(plain)["node_test_accuracy_mean"] is None
    nan = read_run(str(write_results(tmp_path / "c.h5", node_test=True, accuracy=False)))
    assert nan.node_test_series("test_accuracy") is None and nan.node_test_series("test_loss") is not None


def test_node_test_metrics_min_mean_max_in_text_csv_and_json(tmp_path, capsys):
    a = write_results(tmp_path / "a.h5", name="a", node_test=True)
    b = write_results(tmp_path / "b.h5", name="b")  # no test set: no row in the test-set block
    node_acc = TEST_ACCURACY[-1] + NODE_OFFSET  # 0.65, 0.70, 0.75, 0.80
    node_loss = LOSS[-1] + 0.1 + 0.01 * np.arange(4)
    s = summarize(read_run(str(a)))
    assert s["test_accuracy"] == s["accuracy"] == TEST_ACCURACY[-1] and s["accuracy_set"] == "test"
    assert (s["node_test_accuracy_min"], s["node_test_accuracy_max"]) == (node_acc.min(), node_acc.max())
    assert s["node_test_accuracy_mean"] == pytest.approx(node_acc.mean())
    assert (s["node_test_loss_min"], s["node_test_loss_max"]) == (node_loss.min(), node_loss.max())
    assert s["node_test_loss_mean"] == pytest.approx(node_loss.mean())

    code, out, err = report(capsys, a, b)
    assert code == 0 and err == ""
    lines = out.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("test set (last logged step)"))
    assert lines[start + 1].split()[:5] == ["run", "avg", "acc", "node", "acc"]
    block = lines[start + 3:lines.index("", start)]
    assert len(block) == 1 and block[0].split() == [
        "a", "0.7500", "0.6500", "0.7250", "0.8000", f"{LOSS[-1] + 0.05:.6f}", f"{node_loss.min():.6f}",
        f"{node_loss.mean():.6f}", f"{node_loss.max():.6f}"]
    # Runs without per-node series print no such block.
    assert "test set (last logged step)" not in report(capsys, b, write_results(tmp_path / "t.h5", test_set=True))[1]

    rows = list(csv.DictReader(io.StringIO(report(capsys, a, b, "--csv")[1])))
    assert float(rows[0]["node_test_accuracy_min"]) == 0.65 and float(rows[0]["node_test_accuracy_max"]) == 0.8
    assert float(rows[0]["node_test_accuracy_mean"]) == pytest.approx(0.725)
    assert rows[1]["node_test_accuracy_mean"] == "" and rows[1]["test_accuracy"] == ""
    doc = json.loads(report(capsys, a, b, "--json")[1])
    assert doc["runs"][0]["node_test_accuracy_mean"] == pytest.approx(0.725)
    assert doc["runs"][0]["node_test_loss_max"] == pytest.approx(node_loss.max())
    assert doc["runs"][1]["node_test_accuracy_min"] is None


def test_accuracy_target_query(tmp_path):
    test = read_run(str(write_results(tmp_path / "a.h5", test_set=True)))  # test accuracy .5 .6 .7 .75
    hit = accuracy_target_query(test, 0.7)  # ≥ counts
    assert hit["reached"] and hit["accuracy_set"] == "test" and (hit["step"], hit["bits"]) == (20, 2000)
    assert hit["wall_s"] == pytest.approx(0.2) and hit["modelled_s"] == pytest.approx(test.modelled_time()[2])
    miss = accuracy_target_query(test, 0.8)  # the training accuracy reaches 0.8, the test accuracy does not
    assert not miss["reached"] and miss["step"] is None and miss["best_accuracy"] == pytest.approx(0.75)
    training = read_run(str(write_results(tmp_path / "b.h5")))  # no test set: training accuracy .5 .7 .8 .85
    hit = accuracy_target_query(training, 0.8)
    assert hit["reached"] and hit["accuracy_set"] == "training" and (hit["step"], hit["bits"]) == (20, 2000)
    assert accuracy_target_query(training, 1.0)["best_accuracy"] == pytest.approx(0.85)
    none = accuracy_target_query(read_run(str(write_results(tmp_path / "c.h5", accuracy=False))), 0.5)
    assert not none["reached"] and none["accuracy_set"] is None and none["best_accuracy"] is None


def test_target_accuracy_in_text_csv_and_json(tmp_path, capsys):
    a = write_results(tmp_path / "a.h5", name="a", test_set=True)
    b = write_results(tmp_path / "b.h5", name="b")
    r = write_results(tmp_path / "r.h5", name="r", accuracy=False)
    code, out, err = report(capsys, a, b, r, "--target-accuracy", "0.8")
    assert code == 0 and err == ""
    lines = out.splitlines()
    start = lines.index("first logged step with average-model accuracy ≥ 0.8 "
                        "(test set; the training set for runs without one)")
    rows = [x.split() for x in lines[start + 3:start + 6]]
    assert rows[0] == ["a", "test", "not", "reached", "(best", "0.7500)", "-", "-"]
    modelled = read_run(str(b)).modelled_time()[2]
    assert rows[1] == ["b", "training", "20", "2.0000e+03", "0.20", f"{modelled:.4f}"]
    assert rows[2][:3] == ["r", "-", "no"]

    rows = list(csv.DictReader(io.StringIO(report(capsys, a, b, r, "--target-accuracy", "0.8", "--csv")[1])))
    answers = [(x["target_accuracy_set"], x["target_accuracy_reached"], x["target_accuracy_step"],
                x["target_accuracy_bits"]) for x in rows]
    assert answers == [("test", "False", "", ""), ("training", "True", "20", "2000"), ("", "False", "", "")]
    assert float(rows[0]["target_accuracy"]) == 0.8 and "target_step" not in rows[0]

    doc = json.loads(report(capsys, a, b, "--target-accuracy", "0.7", "--target", "0.45", "--json")[1])
    first, second = doc["runs"]
    assert first["target_accuracy"] == {"target": 0.7, "accuracy_set": "test", "reached": True, "step": 20,
                                        "bits": 2000, "wall_s": pytest.approx(0.2),
                                        "modelled_s": pytest.approx(read_run(str(a)).modelled_time()[2]),
                                        "best_accuracy": 0.75}
    assert second["target_accuracy"]["step"] == 10 and second["target_accuracy"]["accuracy_set"] == "training"
    assert first["target"]["step"] == 20  # --target still answers alongside
    assert "target_accuracy" not in json.loads(report(capsys, a, "--json")[1])["runs"][0]


def test_queries_in_text_csv_and_json(tmp_path, capsys):
    a = write_results(tmp_path / "a.h5", name="a")
    b = write_results(tmp_path / "b.h5", name="b")
    code, out, _ = report(capsys, a, b, "--budget", "1500", "--budget", "2500,9999", "--target", "0.45")
    assert code == 0
    assert "0.450000" in out and "not reached" in out and "(ended at 3000 bits)" in out
    budget_rows = [x for x in out.splitlines() if x.startswith(("a ", "b ")) and "1500" in x]
    assert len(budget_rows) == 2

    code, out, _ = report(capsys, a, b, "--budget", "1500,9999", "--target", "0.45", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run"] for r in rows] == ["a", "b"]
    assert float(rows[0]["loss_at_bits_1500"]) == pytest.approx(0.45) and rows[0]["loss_at_bits_9999"] == ""
    assert rows[0]["target_step"] == "20" and rows[0]["target_bits"] == "2000"
    assert float(rows[0]["avg_model_loss"]) == 0.35 and rows[0]["total_bits"] == "3000"
    assert float(rows[0]["extra.push_sum_weight.max"]) == pytest.approx(1.2)

    code, out, _ = report(capsys, a, b, "--budget", "1500,9999", "--target", "0.3", "--json")
    assert code == 0
    doc = json.loads(out)
    first = doc["runs"][0]
    assert first["avg_model_loss"] == 0.35 and first["total_bits"] == 3000 and first["partial"] is False
    assert first["budgets"][0]["avg_model_loss"] == pytest.approx(0.45)
    assert first["budgets"][1] == {"bits": 9999.0, "reached": False, "avg_model_loss": None, "suboptimality": None,
                                   "step": None}
    assert first["target"]["reached"] is False and first["target"]["best_loss"] == pytest.approx(0.35)
    assert render_json([read_run(str(a))]) == render_json([read_run(str(a))])  # deterministic
    assert render_csv([read_run(str(a))]).count("\n") == 2


def test_link_flags_override_the_jobs_link(tmp_path, capsys):
    path = write_results(tmp_path / "a.h5")
    base = json.loads(report(capsys, path, "--json")[1])["runs"][0]
    fast = json.loads(report(capsys, path, "--json", "--bandwidth", "1e12", "--latency", "0")[1])["runs"][0]
    run = read_run(str(path))
    assert base["modelled_s"] == pytest.approx(run.modelled_time(LinkModel(8000.0, 0.1))[-1])
    assert fast["modelled_s"] == pytest.approx(run.modelled_time(LinkModel(1e12, 0.0))[-1])
    assert fast["modelled_s"] < base["modelled_s"] and fast["link_source"] == "--bandwidth and --latency"
    half = read_runs([str(path)], bandwidth_bps=1e6)[0]
    assert half.link == LinkModel(1e6, 0.1) and "--bandwidth" in half.link_source
    shared = json.loads(report(capsys, path, "--json", "--shared-link")[1])["runs"][0]
    assert shared["modelled_s"] == pytest.approx(run.modelled_time(LinkModel(8000.0, 0.1, shared=True))[-1])
    assert shared["link_shared"] and shared["link_source"] == "--shared-link, rest from job [link]"


def test_partial_file_is_reported_as_partial(tmp_path, capsys):
    path = write_results(tmp_path / "cut.h5", rows=2, status="running")
    run = read_run(str(path))
    assert run.partial and run.rows == 2 and run.last_step == 10
    assert "status 'running'" in run.partial_reason and "2 of 4 log rows, last step 10 of 30" in run.partial_reason
    code, out, err = report(capsys, path)
    assert code == 0 and err == ""
    assert "running (partial)" in out and "10/30" in out
    assert "note: syn is partial: status 'running'" in out
    assert json.loads(report(capsys, path, "--json")[1])["runs"][0]["partial"] is True
    # A completed run with fewer rows than its job logs is partial too.
    assert read_run(str(write_results(tmp_path / "short.h5", rows=3))).partial


def test_unwritten_trailing_rows_are_ignored(tmp_path):
    """A writer killed between resizing and writing leaves a row of fill values (step 0)."""
    path = write_results(tmp_path / "killed.h5", rows=3, status="running")
    with h5py.File(path, "a") as f:
        f["metrics/step"].resize((4,))
    run = read_run(str(path))
    assert run.rows == 3 and run.partial and "unwritten" in run.partial_reason


def test_foreign_and_too_new_files_are_refused(tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    code, out, err = report(capsys, foreign)
    assert code == 2 and out == ""
    assert err == f"mpidecent: error: not an mpidecent results file: {foreign} (no format_version attribute)\n"

    newer = write_results(tmp_path / "newer.h5", format_version=SUPPORTED_FORMAT_VERSION + 1)
    code, out, err = report(capsys, newer)
    assert code == 2 and out == ""
    assert err == (f"mpidecent: error: {newer}: results format_version {SUPPORTED_FORMAT_VERSION + 1} is newer "
                   f"than this mpidecent reads (up to {SUPPORTED_FORMAT_VERSION}); upgrade mpidecent to report on it\n")

    text = tmp_path / "notes.h5"
    text.write_text("hello")
    assert report(capsys, text)[2] == f"mpidecent: error: not an mpidecent results file: {text} (not an HDF5 file)\n"
    assert report(capsys, tmp_path / "missing.h5")[2] == f"mpidecent: error: {tmp_path / 'missing.h5'}: no such file\n"
    good = write_results(tmp_path / "good.h5")
    code, out, err = report(capsys, good, foreign)  # one bad file: nothing printed but the error
    assert code == 2 and out == "" and err.count("\n") == 1


def _set_attr(name, value):
    return lambda f: f.attrs.__setitem__(name, value)


DAMAGE = {  # issue 15: what a damaged file says, refused in one line before libhdf5 or numpy trusts it
    "huge_rows": (lambda f: f["metrics/step"].resize((1 << 40,)), "/metrics/step claims shape (1099511627776,)"),
    "world_size_text": (_set_attr("world_size", "4"), "attribute 'world_size' = '4' is not an integer"),
    "world_size_zero": (_set_attr("world_size", 0), "attribute 'world_size' = 0 is not an integer in 1.."),
    "columns": (_set_attr("world_size", 3), "/metrics/rank/bits_sent has 4 columns but world_size is 3"),
    "status_number": (_set_attr("status", 7), "attribute 'status' is int, not text"),
    "job_not_toml": (_set_attr("job", "[run\nsteps = 30"), "its job attribute is not valid TOML"),
    "steps_negative": (_set_attr("steps_requested", -1), "attribute 'steps_requested' = -1 is not an integer"),
    "period_text": (lambda f: f["topology"].attrs.__setitem__("period", "1"), "/topology attribute 'period'"),
    "series_text": (lambda f: f.create_dataset("metrics/global/notes", data=np.array([b"a", b"b", b"c", b"d"])),
                    "/metrics/global/notes holds |S1, not numbers"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_files_are_refused_in_one_line(case, tmp_path, capsys):
    edit, message = DAMAGE[case]
    path = write_results(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        edit(f)
    code, out, err = report(capsys, path)
    assert code == 2 and out == "" and err.count("\n") == 1 and f"{path}: damaged results file (" in err, err
    assert message in err, err


def test_a_damaged_global_heap_is_refused_before_libhdf5_reads_it(tmp_path, capsys):
    path = write_results(tmp_path / "r.h5")
    data = bytearray(path.read_bytes())
    data[data.index(b"GCOL") + 16 + 8 + 5] ^= 1  # the first heap object's size gains 2**40: one flipped bit
    path.write_bytes(data)
    code, _, err = report(capsys, path)
    assert code == 2 and "damaged results file (global heap at byte" in err and "runs past" in err, err


@pytest.mark.parametrize("flags, message", [
    (["--bandwidth", "0"], "--bandwidth must be a finite number of bits per second > 0"),
    (["--latency", "-1"], "--latency must be a finite number of seconds ≥ 0"),
    (["--budget", "lots"], "--budget 'lots': expected a number of bits"),
    (["--target", "nan"], "--target must be a finite loss"),
    (["--target-accuracy", "0"], "--target-accuracy must be a fraction 0 < A ≤ 1, got 0"),
    (["--target-accuracy", "-0.5"], "--target-accuracy must be a fraction 0 < A ≤ 1, got -0.5"),
    (["--target-accuracy", "1.5"], "--target-accuracy must be a fraction 0 < A ≤ 1, got 1.5 (for 1.5% give 0.015)"),
    (["--target-accuracy", "95"], "--target-accuracy must be a fraction 0 < A ≤ 1, got 95 (for 95% give 0.95)"),
    (["--target-accuracy", "nan"], "--target-accuracy must be a fraction 0 < A ≤ 1, got nan"),
    (["--target-accuracy", "inf"], "--target-accuracy must be a fraction 0 < A ≤ 1, got inf"),
])
def test_bad_flags_are_one_line_and_status_2(tmp_path, capsys, flags, message):
    code, out, err = report(capsys, write_results(tmp_path / "a.h5"), *flags)
    assert code == 2 and out == "" and err.startswith(f"mpidecent: error: {message}") and err.count("\n") == 1


def test_target_accuracy_must_be_a_number(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["report", str(write_results(tmp_path / "a.h5")), "--target-accuracy", "high"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --target-accuracy: invalid float value: 'high'" in err and err.count("\n") == 1


def test_csv_and_json_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["report", str(write_results(tmp_path / "a.h5")), "--csv", "--json"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mpidecent: error: argument --json: not allowed with argument --csv") and err.count("\n") == 1


def test_duplicate_run_names_get_unique_labels(tmp_path):
    runs = read_runs([str(write_results(tmp_path / "x.h5")), str(write_results(tmp_path / "y.h5"))])
    assert [r.label for r in runs] == ["syn [x]", "syn [y]"]
    assert "syn [x]" in render_text(runs)


# ---- link model ----------------------------------------------------------------------------------------


def test_link_model_formula_on_a_hand_computed_example():
    compute = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 3.0]])
    nbytes = np.array([[0, 0], [1000, 0], [1000, 2000]])
    messages = np.array([[0, 0], [10, 0], [10, 20]])
    link = LinkModel(bandwidth_bps=8000.0, latency_s=0.1)  # 8·1000 bytes / 8000 bit/s = 1 s
    # interval 1: rank 0 = 1 + 1 + 10·0.1 = 3, rank 1 = 2 + 0 + 0 = 2 → 3
    # interval 2: rank 0 = 2 + 0 + 0 = 2,   rank 1 = 1 + 2 + 20·0.1 = 5 → 5
    np.testing.assert_allclose(link.interval_times(compute, nbytes, messages), [[0, 0], [3, 2], [2, 5]])
    np.testing.assert_allclose(link.modelled_time(compute, nbytes, messages), [0.0, 3.0, 8.0])
    assert LinkModel().describe() == "10 Gbit/s, latency 5 µs"
    # One link shared by both ranks: their bytes queue on it together; compute and messages of the slowest.
    # interval 1: max(1, 2) + 8·1000/8000 + max(10, 0)·0.1 = 2 + 1 + 1 = 4
    # interval 2: max(2, 1) + 8·(0 + 2000)/8000 + max(0, 20)·0.1 = 2 + 2 + 2 = 6
    shared = LinkModel(bandwidth_bps=8000.0, latency_s=0.1, shared=True)
    np.testing.assert_allclose(shared.modelled_time(compute, nbytes, messages), [0.0, 4.0, 10.0])
    assert shared.describe() == "8 kbit/s shared by all ranks, latency 100 ms"
    with pytest.raises(ValueError):
        LinkModel(0.0, 1e-6)
    with pytest.raises(ValueError):
        LinkModel(1e9, -1.0)


def test_link_section_of_the_job_file():
    job = load_text(JOB.format(name="x"))
    assert dict(job.link) == {"bandwidth_bps": 8000.0, "latency_s": 0.1, "shared": False}
    plain = load_text(JOB.format(name="x").split("[link]")[0])
    assert dict(plain.link) == {p.name: p.default for p in LINK_PARAMS} == {"bandwidth_bps": 10e9, "latency_s": 5e-6,
                                                                            "shared": False}
    # shared = false is left out of the stored job, so runs made before the key existed resume unchanged
    assert "[link]\nbandwidth_bps = 10000000000.0\nlatency_s = 5e-06\n" in plain.to_toml()
    assert "shared" not in plain.to_toml()
    assert "shared = true" in load_text(JOB.format(name="x"), overrides=["link.shared=true"]).to_toml()
    assert load_text(plain.to_toml()).to_toml() == plain.to_toml()
    assert load_text(JOB.format(name="x"), overrides=["link.bandwidth_bps=1e9"]).link["bandwidth_bps"] == 1e9
    with pytest.raises(JobError, match=r"\[link\] bandwidth_bps must be > 0, got 0"):
        load_text(JOB.format(name="x"), overrides=["link.bandwidth_bps=0"])
    with pytest.raises(JobError, match=r"\[link\] unknown key 'bandwidth'"):
        load_text(JOB.format(name="x"), overrides=["link.bandwidth=1"])


# ---- plots --------------------------------------------------------------------------------------------


def test_plots_are_pngs_of_the_expected_size(tmp_path, capsys):
    a = write_results(tmp_path / "a.h5", name="a")
    b = write_results(tmp_path / "b.h5", name="b", test_set=True)
    code, out, _ = report(capsys, a, b, "--plot", tmp_path / "plots")
    assert code == 0
    expected = {"loss_vs_step.png", "suboptimality_vs_step.png", "accuracy_vs_step.png", "loss_vs_bits.png",
                "suboptimality_vs_bits.png", "loss_vs_modelled_time.png", "suboptimality_vs_modelled_time.png",
                "consensus_vs_step.png", "rank_spread.png", "extra_push_sum_weight.png", "accuracy_vs_bits.png"}
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} == expected
    for name in expected:
        assert png_size(tmp_path / "plots" / name) == pixel_size(FIGSIZE) == (800, 500), name
        assert str(tmp_path / "plots" / name) in out


def test_accuracy_vs_bits_figure(tmp_path, capsys):
    with_nodes = write_results(tmp_path / "nodes.h5", name="nodes", node_test=True)
    training = write_results(tmp_path / "train.h5", name="train")
    code, out, _ = report(capsys, with_nodes, training, "--plot", tmp_path / "plots")
    figure = tmp_path / "plots" / "accuracy_vs_bits.png"
    assert code == 0 and str(figure) in out
    assert png_size(figure) == pixel_size(FIGSIZE) == (800, 500)
    assert not (tmp_path / "plots" / "extra_test_accuracy.png").exists()  # base series, not an extra
    # The band over the nodes changes the picture; a run without per-rank series draws the line alone.
    plain = write_results(tmp_path / "plain.h5", name="nodes", test_set=True)
    a = _accuracy_bits_figure(str(tmp_path / "a.png"), [read_run(str(with_nodes))])
    b = _accuracy_bits_figure(str(tmp_path / "b.png"), [read_run(str(plain))])
    assert png_size(Path(a)) == png_size(Path(b)) == (800, 500)
    assert Path(a).read_bytes() != Path(b).read_bytes()
    # No run with an accuracy series (regressions): no figure, and none among those --plot writes.
    regressions = [write_results(tmp_path / f"r{i}.h5", name=f"r{i}", accuracy=False, test_set=i == 1) for i in (0, 1)]
    assert _accuracy_bits_figure(str(tmp_path / "none.png"), [read_run(str(p)) for p in regressions]) is None
    assert not (tmp_path / "none.png").exists()
    files = {Path(p).name for p in write_plots([read_run(str(p)) for p in regressions], str(tmp_path / "reg"))}
    assert "accuracy_vs_bits.png" not in files and "accuracy_vs_step.png" not in files and "loss_vs_bits.png" in files


def test_extras_plots_for_staleness_and_stragglers(tmp_path, capsys):
    rng = np.random.default_rng(0)
    staleness = rng.integers(0, 4, size=(4, 4)).astype(np.float64)
    stragglers = rng.random((30, 4)) < 0.1
    path = write_results(tmp_path / "async.h5", extras={"staleness_mean": staleness},
                         events={"stragglers": stragglers})
    run = read_run(str(path))
    files = {Path(p).name for p in write_plots([run], str(tmp_path / "plots"))}
    assert {"staleness.png", "stragglers.png"} <= files and "extra_staleness_mean.png" not in files
    for name in ("staleness.png", "stragglers.png"):
        assert png_size(tmp_path / "plots" / name) == (800, 500)
    s = summarize(run)
    assert s["extras"]["staleness_mean"]["max"] == staleness[-1].max()
    assert s["events"]["stragglers"] == {"count": int(stragglers.sum()), "of": 120,
                                         "fraction": pytest.approx(stragglers.mean())}
    out = report(capsys, path)[1]
    assert "staleness_mean" in out and f"{int(stragglers.sum())} of 120" in out
    # Runs without these data sets get no such figures.
    plain = [read_run(str(write_results(tmp_path / "p.h5")))]
    assert _staleness_figure(str(tmp_path / "s.png"), plain) is None
    assert _stragglers_figure(str(tmp_path / "t.png"), plain) is None
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "t.png").exists()


def test_topology_plot(tmp_path, capsys):
    out = tmp_path / "graph.png"
    assert cli.main(["topology", str(ROOT / "jobs/quickstart.toml"), "-n", "8", "--plot", str(out)]) == 0
    assert f"graph drawn: {out}" in capsys.readouterr().out
    assert png_size(out) == pixel_size(TOPOLOGY_FIGSIZE) == (700, 700)
    undirected = tmp_path / "ring.png"
    assert cli.main(["topology", str(ROOT / "jobs/dpsgd.toml"), "-n", "5", "--plot", str(undirected)]) == 0
    assert png_size(undirected) == (700, 700)


def test_report_modules_need_no_mpi():
    code = ("import sys, mpidecent.io.layout; print('h5py' in sys.modules or 'mpi4py' in sys.modules); "
            "import mpidecent.report, mpidecent.io.reader, mpidecent.report.tables, mpidecent.cli.report, "
            "mpidecent.report.plots, mpidecent.comm.linkmodel, mpidecent.progress; print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---- analysis export: folders and patterns, the series CSV, --target acc=, --group-by ----------------------


def test_folders_and_patterns_expand_to_results_files(tmp_path, capsys):
    folder = tmp_path / "sweep"
    folder.mkdir()
    b = write_results(folder / "b.h5", name="b")
    a = write_results(folder / "a.h5", name="a")
    (folder / "a.ckpt.h5").write_bytes(b"checkpoint")  # io/checkpoint.py's naming: skipped, never read
    (folder / "notes.txt").write_text("not a results file")
    (folder / "sub").mkdir()
    write_results(folder / "sub" / "c.h5", name="c")  # a folder is not searched recursively
    assert expand_files([str(folder)]) == [str(a), str(b)]
    assert expand_files([str(folder / "*.h5")]) == [str(a), str(b)]
    assert expand_files([str(folder / "**" / "*.h5")]) == [str(a), str(b), str(folder / "sub" / "c.h5")]
    assert expand_files([str(b), str(folder / "a*")]) == [str(b), str(a)]
    code, out, err = report(capsys, folder, "--csv")
    assert code == 0 and err == ""
    assert [row["run"] for row in csv.DictReader(io.StringIO(out))] == ["a", "b"]
    # Nothing matches: one line, exit status 2.
    for given, message in ((folder / "x*.h5", "no results file"), (tmp_path, "no results files")):
        code, out, err = report(capsys, given)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err and str(given) in err
    (tmp_path / "empty").mkdir()
    assert "no results files" in report(capsys, tmp_path / "empty")[2]
    assert "no results file" in report(capsys, folder / "*.ckpt.h5")[2]


def test_series_csv_is_one_row_per_run_and_logged_step(tmp_path, capsys):
    a = write_results(tmp_path / "a.h5", name="a", seed=1)
    b = write_results(tmp_path / "b.h5", name="b", seed=2, test_set=True, rows=3)
    out_file = tmp_path / "series.csv"
    code, out, _ = report(capsys, a, b, "--series", out_file)
    assert code == 0 and "final values" in out and f"series: 7 rows (2 runs × logged steps) in {out_file}" in out
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert len(rows) == 4 + 3
    columns = list(rows[0])
    assert columns[:4] == ["run", "file", "step", "avg_model_loss"]
    for name in ("suboptimality", "accuracy", "test_accuracy", "consensus_distance", "cumulative_bits",
                 "cumulative_bytes", "wall_s", "modelled_s", "run.seed", "algorithm.name", "compression.name",
                 "compression.levels", "link.bandwidth_bps", "run.name"):
        assert name in columns, name
    assert [r["run"] for r in rows] == ["a"] * 4 + ["b"] * 3 and rows[0]["file"] == str(a)
    assert [int(r["step"]) for r in rows] == [*STEPS, *STEPS[:3]]
    assert [float(r["avg_model_loss"]) for r in rows[:4]] == list(LOSS)
    assert [int(r["cumulative_bits"]) for r in rows[:4]] == list(read_run(str(a)).glob("cumulative_bits"))
    assert [r["run.seed"] for r in (rows[0], rows[-1])] == ["1", "2"]
    assert rows[0]["test_accuracy"] == "" and float(rows[-1]["test_accuracy"]) == TEST_ACCURACY[2]
    modelled = read_run(str(a)).modelled_time()
    assert [float(r["modelled_s"]) for r in rows[:4]] == pytest.approx(list(modelled))
    assert rows[0]["compression.name"] == "qsgd" and rows[0]["algorithm.name"] == "quantized_push_sum"
    # --series without a file: the CSV alone on stdout (no table), the same text.
    code, out, err = report(capsys, a, b, "--series")
    assert code == 0 and err == "" and out == out_file.read_text()
    assert render_series_csv(read_runs([str(a), str(b)])) == out


def test_target_accepts_an_accuracy(tmp_path, capsys):
    path = write_results(tmp_path / "a.h5", test_set=True)
    assert parse_targets(["0.4"]) == (0.4, None)
    assert parse_targets(["loss=0.4", "acc=0.7"]) == (0.4, 0.7)
    assert parse_targets(["accuracy=0.7"]) == (None, 0.7)
    by_flag = report(capsys, path, "--target-accuracy", "0.7", "--json")[1]
    by_target = report(capsys, path, "--target", "acc=0.7", "--json")[1]
    assert by_flag == by_target and json.loads(by_target)["runs"][0]["target_accuracy"]["step"] == 20
    both = json.loads(report(capsys, path, "--target", "0.4", "--target", "acc=0.7", "--json")[1])["runs"][0]
    assert both["target"]["step"] == 20 and both["target_accuracy"]["step"] == 20
    for flags, message in ((["--target", "speed=3"], "expected a loss (0.35 or loss=0.35) or an accuracy (acc=0.9)"),
                           (["--target", "acc=high"], "expected a number"),
                           (["--target", "acc=90"], "--target-accuracy must be a fraction 0 < A ≤ 1, got 90"),
                           (["--target", "acc=0.7", "--target-accuracy", "0.8"], "give one accuracy target")):
        code, out, err = report(capsys, path, *flags)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, err


def test_group_by_aggregates_runs_that_differ_only_in_that_key(tmp_path, capsys):
    seeds = [write_results(tmp_path / f"s{i}.h5", name="syn", seed=i, loss_shift=0.01 * i) for i in (1, 2, 3)]
    other = write_results(tmp_path / "other.h5", name="syn", seed=1, job_extra="[stragglers]\nmodel = 'none'\n"
                          "delay_mean_s = 0.5\n")
    runs = read_runs([str(p) for p in [*seeds, other]])
    groups = group_runs(runs, ["run.seed"])
    assert [len(g.runs) for g in groups] == [3, 1] and groups[0].values == {"run.seed": [1, 2, 3]}
    assert groups[0].label != groups[1].label
    with pytest.raises(ReportError, match="--group-by run.sed: no run's job has this key"):
        group_runs(runs, ["run.sed"])
    last = LOSS[-1]
    rows = list(csv.DictReader(io.StringIO(report(capsys, *seeds, other, "--group-by", "run.seed", "--csv")[1])))
    assert [r["runs"] for r in rows] == ["3", "1"] and rows[0]["run.seed"] == "1 2 3"
    assert float(rows[0]["avg_model_loss_mean"]) == pytest.approx(last + 0.02)
    assert float(rows[0]["avg_model_loss_min"]) == pytest.approx(last + 0.01)
    assert float(rows[0]["avg_model_loss_max"]) == pytest.approx(last + 0.03)
    assert float(rows[1]["avg_model_loss_min"]) == float(rows[1]["avg_model_loss_max"]) == pytest.approx(last)
    document = json.loads(report(capsys, *seeds, "--group-by", "run.seed", "--json")[1])
    assert len(document["runs"]) == 3 and document["groups"][0]["suboptimality"]["mean"] == pytest.approx(
        last + 0.02 - OPTIMUM)
    code, out, _ = report(capsys, *seeds, "--group-by", "run.seed", "--plot", tmp_path / "plots")
    assert code == 0 and "groups: runs that differ only in run.seed" in out
    line = next(x for x in out.splitlines() if x.startswith("syn ") and "1, 2, 3" in x)
    assert f"{last + 0.02:.6f} [{last + 0.01:.6f}–{last + 0.03:.6f}]" in line
    # The figures draw the group (mean line, min–max band) instead of three lines: a different picture.
    plain = write_plots(runs[:3], str(tmp_path / "plain"))
    grouped = write_plots(runs[:3], str(tmp_path / "grouped"), groups[:1])
    assert [Path(p).name for p in plain] == [Path(p).name for p in grouped]
    assert (tmp_path / "plain" / "loss_vs_step.png").read_bytes() != (tmp_path / "grouped" / "loss_vs_step.png").read_bytes()


def test_figures_without_information_are_not_written(tmp_path):
    zeros = np.zeros((4, 4))
    constant = np.full((4, 4), 2.5)
    varying = np.arange(16, dtype=np.float64).reshape(4, 4)
    path = write_results(tmp_path / "a.h5", extras={"version_violations": zeros, "flat": constant, "useful": varying},
                         events={"stragglers": np.zeros((30, 3), dtype=bool)})
    files = {Path(p).name for p in write_plots([read_run(str(path))], str(tmp_path / "plots"))}
    assert "extra_useful.png" in files and "extra_push_sum_weight.png" in files
    assert not {"extra_version_violations.png", "extra_flat.png", "stragglers.png"} & files
    with h5py.File(path, "r+") as f:  # a consensus distance of 0 at every log point (all-reduce): nothing to see
        f["metrics/global/consensus_distance"][...] = 0.0
    files = {Path(p).name for p in write_plots([read_run(str(path))], str(tmp_path / "plots2"))}
    assert "consensus_vs_step.png" not in files and "loss_vs_step.png" in files


def test_long_straggler_rasters_are_binned(tmp_path):
    rng = np.random.default_rng(1)
    events = rng.random((1500, 6)) < 0.3
    path = write_results(tmp_path / "gc.h5", events={"stragglers": events})
    figure = _stragglers_figure(str(tmp_path / "s.png"), [read_run(str(path))])
    assert figure and png_size(Path(figure)) == (800, 500)


def test_plot_removes_the_figures_of_an_earlier_report_only(tmp_path):
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "mine.png").write_bytes(b"someone else's figure")
    (folder / "notes.txt").write_text("keep me")
    varying = np.arange(16, dtype=np.float64).reshape(4, 4)
    with_extra = read_run(str(write_results(tmp_path / "a.h5", extras={"useful": varying})))
    first = {Path(p).name for p in write_plots([with_extra], str(folder))}
    assert "extra_useful.png" in first
    assert set((folder / MANIFEST).read_text().split()) == first
    plain = read_run(str(write_results(tmp_path / "b.h5", accuracy=False)))
    second = {Path(p).name for p in write_plots([plain], str(folder))}
    assert "extra_useful.png" not in second and "accuracy_vs_step.png" not in second
    assert {p.name for p in folder.glob("*.png")} == second | {"mine.png"}  # only this report's, and the stranger
    assert (folder / "notes.txt").read_text() == "keep me"
    assert set((folder / MANIFEST).read_text().split()) == second


def test_a_torus_is_drawn_as_a_grid(tmp_path, capsys):
    from mpidecent.topology.graphs import ring, torus

    assert torus_shape(9, torus(9, 3, 3).edges) == (3, 3)
    assert torus_shape(12, torus(12, 3, 4).edges) == (3, 4)
    assert torus_shape(9, ring(9).edges) is None
    grid, circle = tmp_path / "grid.png", tmp_path / "circle.png"
    job = str(ROOT / "jobs/syn1_q_sweep.toml")
    assert cli.main(["topology", job, "-n", "9", "--plot", str(grid)]) == 0
    assert cli.main(["topology", job, "-n", "9", "--set", "topology.kind=ring", "--plot", str(circle)]) == 0
    assert png_size(grid) == png_size(circle) == (700, 700)


# ---- progress -----------------------------------------------------------------------------------------


VALUES = {"avg_model_loss": 0.366981, "suboptimality": 1.651e-2, "consensus_distance": 0.986, "cumulative_bits": 241200}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_writes_plain_lines_when_not_a_terminal(capsys):
    clock = FakeClock()
    progress = Progress("quickstart", 500, quiet=False, clock=clock)
    progress.update(0, {**VALUES, "avg_model_loss": 0.693147})
    clock.now += 2.0
    progress.update(50, VALUES)
    progress.close()
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "[quickstart] step   0/500  avg-loss 0.693147  subopt 1.651e-02  consensus 9.86e-01  bits 2.412e+05",
        "[quickstart] step  50/500  avg-loss 0.366981  subopt 1.651e-02  consensus 9.86e-01  bits 2.412e+05"
        "    25.0 steps/s  ETA  18.0s",
    ]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal(capsys):
    clock, err = FakeClock(), FakeTerminal()
    progress = Progress("quickstart", 100, quiet=False, stderr=err, clock=clock)
    clock.now += 1.0
    progress.update(50, VALUES)
    clock.now += 1.0
    progress.update(100, VALUES)
    progress.close()
    assert capsys.readouterr().out == ""
    text = err.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "\x1b[K" in text
    first, second = text.split("\r")[1:]
    assert "50%" in first and "step 50/100" in first and "ETA 1.0s" in first and "50.0 steps/s" in first
    assert "100%" in second and "█" * Progress.BAR_WIDTH in second


def test_progress_quiet_prints_nothing(capsys):
    progress = Progress("q", 10, quiet=True, stderr=FakeTerminal())
    progress.update(5, VALUES)
    progress.close()
    assert capsys.readouterr() == ("", "")


def test_progress_after_resume_measures_from_the_first_step():
    clock = FakeClock()
    progress = Progress("q", 1000, quiet=False, first_step=400, clock=clock)
    clock.now += 10.0
    assert "10.0 steps/s  ETA  50.0s" in progress.line(500, VALUES)
    assert math.isclose(progress._speed(500)[0], 10.0)


def test_progress_shows_only_what_is_known():
    """No optimum (suboptimality NaN) and rows not evaluated ([run] eval_every / eval = "reduce": NaN loss and
    consensus) leave those fields out instead of printing nan."""
    progress = Progress("q", 100, quiet=False, clock=FakeClock())
    no_optimum = progress.line(0, {**VALUES, "suboptimality": math.nan})
    assert "nan" not in no_optimum and "subopt" not in no_optimum and "avg-loss 0.366981" in no_optimum
    skipped = {**VALUES, "avg_model_loss": math.nan, "suboptimality": math.nan, "consensus_distance": math.nan}
    assert progress.line(0, skipped) == "[q] step   0/100  bits 2.412e+05"
    bar = progress.bar(0, skipped, width=300)
    assert "nan" not in bar and "loss" not in bar and "cons" not in bar and "bits 2.412e+05" in bar
