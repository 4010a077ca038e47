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


# ---- sizes too large for memory: refused from the job, before anything is allocated ------------------------

GiB = 1 << 30


def _share():
    """A machine of 22 GiB available shared by 4 ranks, whatever this machine has."""
    from mpidecent.machine import MemoryShare

    return MemoryShare(available=22 * GiB, ranks=4)


def _estimate_refusal(overrides, base=BASE, base_dir=None):
    from mpidecent.footprint import check_memory
    from mpidecent.plan import build_topology

    job = load_text(base, overrides=overrides)
    _, weights = build_topology(job, 4)
    with pytest.raises(JobError) as err:
        check_memory(job, weights, 1, base_dir, share=_share())
    return str(err.value)


@pytest.mark.parametrize("overrides, key", [
    (["data.samples=1000000000"], "[data] samples = 1000000000"),
    (["data.features=1000000000"], "[data] features = 1000000000"),
    (['model.name="mlp"', "model.hidden=[1000000000]"], "[model] hidden = [1000000000]"),
    (['model.name="mlp"', "model.hidden=[64, 3000000000]"], "[model] hidden = [64, 3000000000]"),
    (["data.batch_size=1000000000"], "[data] batch_size = 1000000000"),
    (['model.name="cnn1d"', "model.channels=1000000000"], "[model] channels = 1000000000"),
])
def test_sizes_too_large_for_memory_are_refused_with_the_numbers(overrides, key):
    message = _estimate_refusal(overrides)
    assert message.startswith(f"{key} needs about "), message
    assert "per rank (data " in message and "model " in message
    assert "but each of the 4 ranks on this machine has about 5.5 GiB (22 GiB available)" in message
    assert f"lower {key.split(' = ')[0]}" in message and "MPIDECENT_NO_MEMORY_CHECK=1" in message
    assert "\n" not in message


def test_a_data_file_too_large_for_memory_is_named_by_its_path(tmp_path, monkeypatch):
    import mpidecent.footprint as footprint
    from mpidecent.machine import MemoryShare

    with h5py.File(tmp_path / "big.h5", "w") as f:  # a small file; a smaller machine
        f["features"] = np.zeros((3000, 40))
        f["labels"] = np.arange(3000) % 2
    monkeypatch.setattr(footprint, "memory_share", lambda world: MemoryShare(1 << 20, 4))
    job = load_text(BASE + '[data]\nname = "hdf5"\npath = "big.h5"\ntask = "binary"\n[model]\nl2 = 0.0\n')
    from mpidecent.plan import build_topology

    with pytest.raises(JobError) as err:
        footprint.check_memory(job, build_topology(job, 4)[1], 0, str(tmp_path))
    assert str(err.value).startswith("[data] path = 'big.h5' (3000 samples of shape (40,)) needs about ")
    assert "use a smaller data file" in str(err.value)


def test_plan_refuses_before_generating_the_data(monkeypatch):
    """The check runs inside plan_job before the 373 GiB set is drawn (no MemoryError, no OOM killer)."""
    import mpidecent.footprint as footprint
    from mpidecent.plan import plan_job

    monkeypatch.setattr(footprint, "memory_share", lambda world: _share())
    with pytest.raises(JobError, match=r"^\[data\] samples = 1000000000 needs about \d+ GiB per rank"):
        plan_job(load_text(BASE, overrides=["data.samples=1000000000"]), 4)


def test_ordinary_jobs_fit_and_the_check_can_be_skipped(monkeypatch):
    from mpidecent.footprint import SKIP_ENV, check_memory
    from mpidecent.plan import build_topology

    job = load_text(BASE)
    weights = build_topology(job, 4)[1]
    footprint = check_memory(job, weights, 0, share=_share())
    assert footprint is not None and 0 < footprint.total < 64 << 20
    assert list(footprint.parts) == ["data", "model", "algorithm", "messages", "batch", "optimum"]
    big = load_text(BASE, overrides=["data.samples=1000000000"])
    monkeypatch.setenv(SKIP_ENV, "1")
    assert check_memory(big, weights, 0, share=_share()) is None


def test_a_user_model_or_loader_that_runs_out_of_memory_is_one_line():
    from mpidecent.footprint import memory_guard

    with pytest.raises(JobError) as err:
        with memory_guard("[model] name = 'nets.py:Huge'", 4):
            raise MemoryError("Unable to allocate 373. GiB for an array with shape (50000000000,) and data type "
                              "float64")
    message = str(err.value)
    assert message.startswith("[model] name = 'nets.py:Huge' ran out of memory (Unable to allocate 373. GiB")
    assert "\n" not in message and "fewer ranks" in message
    with pytest.raises(JobError, match=r"^\[data\] name = 'l.py:load' ran out of memory \(can't allocate memory"):
        with memory_guard("[data] name = 'l.py:load'", 4):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 200000000000 bytes.")
    with pytest.raises(RuntimeError, match="something else"):
        with memory_guard("[model] name = 'mlp'", 4):
            raise RuntimeError("something else")


@pytest.mark.parametrize("env, world, ranks", [
    ({}, 4, 4),
    ({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 4, 2),
    ({"MPI_LOCALNRANKS": "3"}, 8, 3),
    ({"SLURM_STEP_TASKS_PER_NODE": "4(x2),3", "SLURM_NODEID": "2"}, 11, 3),
    ({"SLURM_TASKS_PER_NODE": "16", "SLURM_NODEID": "0"}, 1, 1),  # a lone process inside an allocation
    ({"OMPI_COMM_WORLD_LOCAL_SIZE": "junk"}, 4, 4),
])
def test_ranks_sharing_the_machine_come_from_the_launcher(env, world, ranks):
    from mpidecent.machine import ranks_on_this_machine

    assert ranks_on_this_machine(world, env) == ranks


def test_available_memory_and_sizes_in_words():
    from mpidecent.footprint import size_text
    from mpidecent.machine import available_memory

    if os.path.exists("/proc/meminfo"):
        assert available_memory() > 0
    assert [size_text(n) for n in (512, 200 << 10, int(5.6 * GiB), 186 * GiB, 3 << 40)] == [
        "512 B", "200 KiB", "5.6 GiB", "186 GiB", "3.0 TiB"]


# ---- NaN or infinite features: one line naming the first bad sample ---------------------------------------


def test_nan_features_in_an_hdf5_file_name_the_first_bad_sample(tmp_path):
    from mpidecent.io.datasets import load_node_data
    from mpidecent.learning.sources import resolve_data

    x = np.ones((40, 3))
    x[13, 2], x[30, 0] = np.nan, -np.inf
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["features"], f["labels"] = x, np.arange(40) % 2
    values = resolve_data({"name": "hdf5", "path": "data.h5", "task": "binary"})
    with pytest.raises(JobError) as err:
        load_node_data(values, 1, 0, base_dir=str(tmp_path))
    message = str(err.value)
    assert message == ("[data] features_dataset = 'features' in 'data.h5' holds NaN or infinite values (first at "
                       "sample 13); every feature must be finite")
    firsts = set()
    for node in range(2):  # each node names the first bad file row among its own rows
        with pytest.raises(JobError, match=r"first at sample (13|30)\)") as err:
            load_node_data(values, 2, node, base_dir=str(tmp_path))
        firsts.add(int(str(err.value).split("first at sample ")[1].split(")")[0]))
    assert 13 in firsts


def test_nan_features_in_an_npz_file_name_the_first_bad_sample(tmp_path):
    from mpidecent.io.convert import check_arrays, read_npz

    x = np.zeros((6, 2))
    x[4, 1] = np.inf
    np.savez(tmp_path / "in.npz", x=x, y=np.arange(6) % 2)
    with pytest.raises(JobError) as err:
        check_arrays(read_npz(str(tmp_path / "in.npz")))
    assert str(err.value) == "x in in.npz holds NaN or infinite values (e.g. inf, first at sample 4); every value must be finite"


def test_a_user_loader_too_large_for_memory_is_one_line_before_any_collective(tmp_path):
    """A loader's size is only known once it has run: its arrays (here 7 TiB, broadcast from one number)
    fail to be copied, and plan_job says so in one line instead of a MemoryError deep inside."""
    from mpidecent.config import load_job
    from mpidecent.plan import plan_job

    (tmp_path / "huge.py").write_text("import numpy as np\n\ndef load():\n"
                                      "    return np.broadcast_to(np.ones(1), (1_000_000, 1_000_000)), "
                                      "np.arange(1_000_000) % 2\n")
    (tmp_path / "job.toml").write_text(BASE + '[data]\nname = "huge.py:load"\ntask = "binary"\n')
    with pytest.raises(JobError) as err:
        plan_job(load_job(tmp_path / "job.toml"), 4)
    message = str(err.value)
    assert message.startswith("[data] name = 'huge.py:load' ran out of memory (Unable to allocate"), message
    assert "\n" not in message
