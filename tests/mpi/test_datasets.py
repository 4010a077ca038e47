"""The hdf5 data kind read in parallel (driver="mpio"): every rank gets exactly the shard a serial read gives.

Run: mpirun -n 4 python -m pytest --with-mpi -p no:cacheprovider tests/mpi/test_datasets.py
"""

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import mpidecent.io.datasets as datasets
from mpidecent.errors import JobError
from mpidecent.io.datasets import check_data, load_node_data
from mpidecent.learning.data import split_train_test
from mpidecent.learning.sources import resolve_data


def everywhere(condition: bool) -> bool:
    """True on every rank iff ``condition`` holds on every rank (so a failure fails all ranks)."""
    return bool(MPI.COMM_WORLD.allreduce(bool(condition), op=MPI.LAND))


def shared_file(folder, name, features, labels) -> str:
    """Rank 0 writes the file; every rank returns its path after a barrier."""
    comm = MPI.COMM_WORLD
    path = folder / name
    if comm.rank == 0:
        with h5py.File(path, "w") as f:
            f["x/features"] = features
            f["x/labels"] = labels
    comm.Barrier()
    return str(path)


def same_shard(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (a.node == b.node and np.array_equal(a.indices, b.indices) and a.features.dtype == b.features.dtype
            and np.array_equal(a.features, b.features) and a.targets.dtype == b.targets.dtype
            and np.array_equal(a.targets, b.targets))


def same_node_data(a, b) -> bool:
    return (same_shard(a.train, b.train) and same_shard(a.test, b.test)
            and (a.name, a.task, a.num_features, a.num_classes, a.num_train, a.num_test)
            == (b.name, b.task, b.num_features, b.num_classes, b.num_train, b.num_test))


@pytest.fixture
def record_drivers(monkeypatch):
    """Records the ``driver`` of every h5py.File opened by mpidecent.io.datasets."""
    drivers = []
    real = h5py.File

    def opener(*args, **kwargs):
        drivers.append(kwargs.get("driver"))
        return real(*args, **kwargs)

    monkeypatch.setattr(h5py, "File", opener)  # datasets imports h5py inside its functions: the module itself
    return drivers


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("keys", [
    {"partition": "iid"},
    {"partition": "sorted", "test_fraction": 0.25},
    {"partition": "dirichlet", "alpha": 1.0, "test_fraction": 0.1, "seed": 3},
    {"partition": "iid", "task": "regression", "test_fraction": 0.015},  # 2 test rows: some ranks get none
])
def test_parallel_shards_equal_serial_shards(mpi_tmp_path, record_drivers, keys):
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(11)
    n = 40 * comm.size + 3
    features = rng.standard_normal((n, 6)).astype(np.float32)
    labels = rng.integers(0, 4, size=n).astype(np.int16)
    if keys.get("task") == "regression":
        labels = rng.standard_normal(n)
    path = shared_file(mpi_tmp_path, "data.h5", features, labels)
    values = resolve_data({"name": "hdf5", "path": "data.h5", "features_dataset": "x/features",
                           "labels_dataset": "x/labels", **keys})
    base_dir = str(mpi_tmp_path)
    check_data(values, comm.size, base_dir)
    parallel = load_node_data(values, comm.size, comm.rank, comm=comm, base_dir=base_dir)
    assert everywhere("mpio" in record_drivers) == bool(h5py.get_config().mpi)
    serial = load_node_data(values, comm.size, comm.rank, base_dir=base_dir)
    ok = same_node_data(parallel, serial)
    # and the rows are the file's rows: the whole training set read serially, indexed by the shard
    whole = load_node_data(values, 1, 0, base_dir=base_dir)
    ok = ok and np.array_equal(parallel.train.features, whole.train.features[parallel.train.indices])
    rows = _train_rows(values, n)[parallel.train.indices]
    ok = ok and np.array_equal(parallel.train.features, features.astype(np.float64)[rows])
    # the shards of all ranks cover the training set exactly once
    counts = comm.allreduce(np.bincount(parallel.train.indices, minlength=parallel.num_train))
    ok = ok and np.all(counts == 1)
    if parallel.test is not None:
        counts = comm.allreduce(np.bincount(parallel.test.indices, minlength=parallel.num_test))
        ok = ok and np.all(counts == 1)
    assert everywhere(ok)


def _train_rows(values, n):
    return split_train_test(n, values["test_fraction"], values["seed"])[0]


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(60)
def test_uneven_numbers_of_collective_reads(mpi_tmp_path, monkeypatch):
    """Ranks whose rows form more runs make more read calls; the others join with empty selections."""
    comm = MPI.COMM_WORLD
    monkeypatch.setattr(datasets, "RUNS_PER_READ", 2)
    n = 30 * comm.size
    features = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    labels = (np.arange(n) % 3).astype(np.int64)
    shared_file(mpi_tmp_path, "runs.h5", features, labels)
    values = resolve_data({"name": "hdf5", "path": str(mpi_tmp_path / "runs.h5"), "features_dataset": "x/features",
                           "labels_dataset": "x/labels", "partition": "dirichlet", "alpha": 0.5, "seed": 1})
    data = load_node_data(values, comm.size, comm.rank, comm=comm)
    calls = datasets.read_calls(data.train.indices)
    assert everywhere(np.array_equal(data.train.features, features[data.train.indices]))
    assert comm.allreduce(calls, op=MPI.MAX) > 1


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(60)
def test_non_finite_features_fail_every_rank(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    n = 10 * comm.size
    features = np.zeros((n, 2))
    features[n - 1, 0] = np.nan  # in one rank's rows only
    shared_file(mpi_tmp_path, "nan.h5", features, np.arange(n) % 2)
    values = resolve_data({"name": "hdf5", "path": str(mpi_tmp_path / "nan.h5"), "features_dataset": "x/features",
                           "labels_dataset": "x/labels", "task": "binary"})
    try:
        load_node_data(values, comm.size, comm.rank, comm=comm)
        message = ""
    except JobError as err:
        message = str(err)
    assert everywhere(message.startswith("[data] features_dataset = 'x/features' in"))
    assert everywhere("holds NaN or infinite values (first at sample" in message)
