"""Bad input ends with one line naming the field and the fix (issue 15, item 3): checks that need no MPI."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from mpidecent.config import load_text
from mpidecent.errors import JobError
from mpidecent.report.plots import tex_safe, write_plots
from mpidecent.runner.launch import check_output, results_file
from mpidecent.topology.graphs import from_file

from test_report import report, write_results

BASE = "[algorithm]\nname = \"dpsgd\"\n[topology]\nkind = \"ring\"\n"


@pytest.mark.parametrize("name, ok", [
    ("../../x", False), ("a/b", False), ("a\\\\b", False), (".hidden", False), ("a b", False), ("", True),
    ("run_1.v2+x-y", True), ("Q10", True),
])
def test_run_name_must_be_a_plain_file_name(name, ok):
    text = f'[run]\nname = "{name}"\n' + BASE
    if ok:
        job = load_text(text, default_name="dflt")
        assert job.run["out"] == f"runs/{name or 'dflt'}.h5"
        return
    with pytest.raises(JobError) as err:
        load_text(text)
    message = str(err.value)
    assert "[run] name" in message and "letters, digits" in message and "\n" not in message


def test_results_file_is_resolved_once():
    job = load_text('[run]\nout = "runs/./a/../q.h5"\n' + BASE)
    assert results_file(job, None) == os.path.join("runs", "q.h5")
    assert results_file(job, "nosuch/../x.h5") == "x.h5"


def test_check_output_accepts_a_path_through_a_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = load_text(BASE)
    out = results_file(job, "nosuch/../x.h5")
    check_output(out, False)  # the same string the writer opens
    assert not os.path.exists("nosuch")


def _plain(path):
    path.write_text("precious\n")


def _checkpoint(path):
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "mpidecent-checkpoint"
        f.attrs["format_version"] = 1
        f.create_dataset("state/x", data=np.zeros((2, 3)))


def _other_hdf5(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))


@pytest.mark.parametrize("make, said", [
    (_plain, "not an HDF5 file"), (_checkpoint, "a checkpoint"), (_other_hdf5, "without the results format"),
])
def test_force_overwrites_only_results_files(tmp_path, make, said):
    target = tmp_path / "victim.h5"
    make(target)
    before = target.read_bytes()
    with pytest.raises(JobError) as err:
        check_output(str(target), True)
    message = str(err.value)
    assert "--force" in message and said in message and "left untouched" in message and "\n" not in message
    assert target.read_bytes() == before


def test_force_overwrites_a_results_file(tmp_path):
    check_output(str(write_results(tmp_path / "r.h5")), True)


@pytest.mark.parametrize("lines, directed, edge", [
    ("0 1\n1 2\n0 1\n", False, "0 1"), ("0 1\n1 0\n", False, "1 0"), ("0 1\n1 2\n2 0\n2 0\n", True, "2 0"),
])
def test_file_topology_refuses_duplicate_edges(tmp_path, lines, directed, edge):
    path = tmp_path / "edges.txt"
    path.write_text(lines)
    with pytest.raises(JobError) as err:
        from_file(3, path, directed=directed)
    assert f"duplicate edge {edge}" in str(err.value) and "line" in str(err.value)


def test_file_topology_takes_both_directions_when_directed(tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text("0 1\n1 0\n1 2\n2 1\n2 0\n0 2\n")
    assert len(from_file(3, path, directed=True).edges) == 6


def test_report_refuses_a_checkpoint(tmp_path, capsys):
    target = tmp_path / "run.ckpt.h5"
    _checkpoint(target)
    code, out, err = report(capsys, target)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mpidecent: error: ") and "checkpoint" in err


def test_report_refuses_a_results_file_without_rows(tmp_path, capsys):
    code, out, err = report(capsys, write_results(tmp_path / "empty.h5", rows=0, status="running"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no log rows" in err


@pytest.mark.parametrize("text", [r"$\frac{a$", "a $ b", "$x$ and $", "plain"])
def test_plot_labels_from_user_data_are_drawn_as_typed(tmp_path, text):
    from mpidecent.io.reader import read_runs

    runs = read_runs([str(write_results(tmp_path / "a.h5"))])
    runs[0].label = text
    files = write_plots(runs, str(tmp_path / "fig"))
    assert files and runs[0].label == text  # restored
    assert "$" not in tex_safe(text).replace(r"\$", "")
