"""Data kinds, train/test split, partitions and the hdf5 kind read serially (learning/data.py, io/datasets.py)."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from mpidecent.errors import JobError
from mpidecent.io.datasets import check_data, load_node_data
from mpidecent.learning.data import TASKS, NodeData, Shard, digits, partition, syn_regression, syn_truth
from mpidecent.learning.sources import COMMON_PARAMS, DATASETS, data_task, resolve_data


def load_all(values, nodes, base_dir=None):
    return [load_node_data(values, nodes, node, base_dir=base_dir) for node in range(nodes)]


def assert_cover(parts, n):
    """``parts`` are increasing, disjoint and cover 0..n−1."""
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def entropy(labels, classes):
    p = np.bincount(labels, minlength=classes) / labels.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


# ---- registry and resolution -----------------------------------------------------------------------


def test_registry_and_defaults():
    assert set(DATASETS) == {"synthetic_logistic", "syn1", "syn2", "digits", "mnist1d", "hdf5"}
    assert [p.name for p in COMMON_PARAMS] == ["partition", "alpha", "batch_size", "seed"]
    values = resolve_data({})
    assert values["name"] == "synthetic_logistic" and values["samples"] == 4000 and values["features"] == 50
    assert values["test_fraction"] == 0.0 and values["partition"] == "iid" and values["alpha"] == 0.5
    assert values["batch_size"] == 32 and values["seed"] == 0
    syn1 = resolve_data({"name": "syn1"})
    assert (syn1["samples"], syn1["features"], syn1["noise"], syn1["test_fraction"]) == (2000, 200, 0.05, 0.0)
    dig = resolve_data({"name": "digits"})
    assert dig["classes"] == [] and dig["test_fraction"] == 0.2
    h5 = resolve_data({"name": "hdf5", "path": "x.h5"})
    assert (h5["features_dataset"], h5["labels_dataset"], h5["task"]) == ("features", "labels", "multiclass")
    for kind in DATASETS.values():
        table = {"name": kind.name, **({"path": "x.h5"} if kind.name == "hdf5" else {})}
        assert kind.task(resolve_data(table)) in TASKS


def test_data_task():
    assert data_task(resolve_data({})) == "binary"
    assert data_task(resolve_data({"name": "syn2"})) == "regression"
    assert data_task(resolve_data({"name": "digits"})) == "multiclass"
    assert data_task(resolve_data({"name": "digits", "classes": [3, 8]})) == "binary"
    assert data_task(resolve_data({"name": "digits", "classes": [3, 8, 1]})) == "multiclass"
    assert data_task(resolve_data({"name": "hdf5", "path": "x.h5", "task": "regression"})) == "regression"


@pytest.mark.parametrize("table, message", [
    ({"name": "mnist"}, "[data] name must be one of"),
    ({"samples": 10, "colour": 1}, "[data] unknown key 'colour' for synthetic_logistic"),
    ({"partition": "random"}, "[data] partition must be one of 'iid', 'sorted', 'dirichlet'"),
    ({"partition": "dirichlet", "alpha": 0}, "[data] alpha must be > 0, got 0"),
    ({"test_fraction": 1.0}, "[data] test_fraction must be < 1"),
    ({"test_fraction": -0.1}, "[data] test_fraction must be ≥ 0"),
    ({"batch_size": -1}, "[data] batch_size must be ≥ 0"),
    ({"name": "hdf5"}, "[data] missing required key 'path' for hdf5"),
    ({"name": "hdf5", "path": "x.h5", "task": "ranking"}, "[data] task must be one of"),
    ({"name": "syn1", "partition": "dirichlet"}, "[data] partition = 'dirichlet' needs class labels, but syn1"),
    ({"name": "hdf5", "path": "x.h5", "task": "regression", "partition": "dirichlet"},
     "[data] partition = 'dirichlet' needs class labels, but hdf5"),
])
def test_resolve_errors(table, message):
    with pytest.raises(JobError) as err:
        resolve_data(table)
    assert str(err.value).startswith(message), str(err.value)


def test_importing_the_data_module_needs_no_h5py_mpi_or_sklearn():
    code = ("import sys, mpidecent.learning.data, mpidecent.config; "
            "bad = [m for m in ('h5py', 'mpi4py', 'sklearn') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- generators --------------------------------------------------------------------------------------


@pytest.mark.parametrize("relu", [False, True])
def test_syn_regression_follows_its_formula(relu):
    n, d, noise = 3000, 20, 0.05
    data = syn_regression(n, d, noise, seed=5, relu=relu)
    a = syn_truth(d, 5)
    assert data.task == "regression" and data.num_classes == 0 and data.targets.dtype == np.float64
    assert data.features.shape == (n, d)
    # A: entries N(1, 1)/√(d/2) → mean √(2/d), ‖A‖² ≈ 4
    assert abs(a.mean() * np.sqrt(d / 2) - 1) < 0.6 and 2 < a @ a < 7
    x, y = data.features, data.targets
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02
    if relu:
        assert y.min() >= -5 * noise
        active = x @ a > 0.5  # the ReLU is the identity here: A·x + ε with ε ≪ 0.5
        residual = y - np.maximum(x @ a, 0)
        x, y = x[active], y[active]
    else:
        residual = y - x @ a
    assert abs(residual.std() - noise) < 0.1 * noise and abs(residual.mean()) < 5 * noise / np.sqrt(n)
    estimate, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert np.max(np.abs(estimate - a)) < 10 * noise / np.sqrt(len(y))


def test_syn1_and_syn2_share_inputs_and_truth_and_depend_on_seed():
    s1 = syn_regression(100, 5, 0.0, seed=1, relu=False)
    s2 = syn_regression(100, 5, 0.0, seed=1, relu=True)
    np.testing.assert_array_equal(s1.features, s2.features)
    np.testing.assert_array_equal(np.maximum(s1.targets, 0), s2.targets)
    other = syn_regression(100, 5, 0.0, seed=2, relu=False)
    assert not np.array_equal(s1.features, other.features)
    assert not np.array_equal(syn_truth(5, 1), syn_truth(5, 2))


@pytest.mark.parametrize("name, extra", [
    ("synthetic_logistic", {"samples": 300, "features": 7, "test_fraction": 0.1}),
    ("syn1", {"samples": 300, "features": 7}),
    ("syn2", {"samples": 300, "features": 7, "partition": "sorted"}),
    ("digits", {"classes": [1, 7]}),
])
def test_node_data_is_deterministic_and_seeded(name, extra):
    values = resolve_data({"name": name, **extra})
    first, again = load_node_data(values, 3, 1), load_node_data(values, 3, 1)
    for a, b in [(first.train, again.train), (first.test, again.test)]:
        if a is None:
            assert b is None
            continue
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.targets, b.targets)
    other = load_node_data(resolve_data({"name": name, **extra, "seed": 1}), 3, 1)
    assert not (np.array_equal(first.train.indices, other.train.indices)
                and np.array_equal(first.train.features, other.train.features))


def test_generated_node_data_shapes_and_types():
    values = resolve_data({"name": "synthetic_logistic", "samples": 103, "features": 4, "test_fraction": 0.25})
    nodes = load_all(values, 4)
    for node, data in enumerate(nodes):
        assert isinstance(data, NodeData) and isinstance(data.train, Shard)
        assert (data.name, data.task, data.num_features, data.num_classes) == ("synthetic_logistic", "binary", 4, 2)
        assert (data.num_train, data.num_test) == (103 - 25, 25)
        assert data.train.node == node and data.train.features.shape == (data.train.num_samples, 4)
        assert data.train.features.dtype == np.float64 and data.train.targets.dtype == np.int64
    assert_cover([d.train.indices for d in nodes], 78)
    assert_cover([d.test.indices for d in nodes], 25)
    # test slices are contiguous and near-equal: node i evaluates slice i
    assert [d.test.indices.tolist() for d in nodes] == [list(range(0, 7)), list(range(7, 13)),
                                                         list(range(13, 19)), list(range(19, 25))]
    # the union of all shards is the whole data set, each sample exactly once
    whole = load_node_data(values, 1, 0)
    rows = np.vstack([whole.train.features, whole.test.features])
    assert rows.shape == (103, 4) and np.unique(rows, axis=0).shape[0] == 103
    for data in nodes:
        np.testing.assert_array_equal(data.train.features, whole.train.features[data.train.indices])
        np.testing.assert_array_equal(data.test.targets, whole.test.targets[data.test.indices])


def test_no_test_set_without_test_fraction():
    data = load_node_data(resolve_data({"name": "syn1", "samples": 50, "features": 3}), 2, 0)
    assert data.test is None and data.num_test == 0 and data.num_train == 50
    assert data.train.targets.dtype == np.float64 and data.num_classes == 0


# ---- digits ------------------------------------------------------------------------------------------


def test_digits_all_ten_classes():
    data = digits()
    assert data.features.shape == (1797, 64) and data.num_classes == 10 and data.task == "multiclass"
    assert data.features.min() == 0 and data.features.max() == 1
    assert np.bincount(data.targets).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    values = resolve_data({"name": "digits"})
    nodes = load_all(values, 5)
    assert all(d.num_classes == 10 and d.task == "multiclass" and d.num_features == 64 for d in nodes)
    assert nodes[0].num_test == 359 and nodes[0].num_train == 1797 - 359
    assert sum(d.test.num_samples for d in nodes) == 359
    assert sum(d.train.num_samples for d in nodes) == 1438


def test_digits_binary_relabelling():
    four_nine = digits([4, 9])
    raw = digits()
    assert four_nine.task == "binary" and four_nine.num_classes == 2
    assert four_nine.num_samples == 181 + 180
    assert np.bincount(four_nine.targets).tolist() == [181, 180]
    np.testing.assert_array_equal(four_nine.features[four_nine.targets == 0], raw.features[raw.targets == 4])
    np.testing.assert_array_equal(four_nine.features[four_nine.targets == 1], raw.features[raw.targets == 9])
    nine_four = digits([9, 4])
    np.testing.assert_array_equal(nine_four.targets, 1 - four_nine.targets)
    three = digits([7, 0, 3])
    assert three.task == "multiclass" and three.num_classes == 3
    np.testing.assert_array_equal(three.features[three.targets == 0], raw.features[raw.targets == 7])
    np.testing.assert_array_equal(three.features[three.targets == 2], raw.features[raw.targets == 3])
    values = resolve_data({"name": "digits", "classes": [4, 9], "test_fraction": 0.5})
    nodes = load_all(values, 3)
    assert nodes[0].num_test == 180 and nodes[0].num_train == 181
    assert all(d.task == "binary" and d.num_classes == 2 for d in nodes)
    assert sum(np.bincount(d.train.targets, minlength=2) + np.bincount(d.test.targets, minlength=2)
               for d in nodes).tolist() == [181, 180]


@pytest.mark.parametrize("classes, message", [
    ([4, 4], "[data] classes must list distinct digits, got [4, 4]"),
    ([3], "[data] classes must list at least 2 digits (or be empty for all ten), got [3]"),
    ([1, 10], "[data] classes must list digits between 0 and 9, got [1, 10]"),
    ([-1, 2], "[data] classes must list digits between 0 and 9"),
    ([1, "2"], "[data] classes must list integer digits 0..9"),
    ([1, 2.0], "[data] classes must list integer digits 0..9"),
    ("4,9", "[data] classes must be a list"),
])
def test_digits_classes_errors(classes, message):
    with pytest.raises(JobError) as err:
        resolve_data({"name": "digits", "classes": classes})
    assert str(err.value).startswith(message), str(err.value)


# ---- sizes -------------------------------------------------------------------------------------------


def test_too_few_samples_for_the_nodes():
    with pytest.raises(JobError, match=r"^\[data\] samples = 3 is fewer than the 4 nodes"):
        check_data(resolve_data({"samples": 3}), 4)
    with pytest.raises(JobError, match=r"^\[data\] test_fraction = 0.5 leaves 5 of 10 samples for training, "
                                       r"fewer than the 6 nodes"):
        check_data(resolve_data({"name": "syn1", "samples": 10, "test_fraction": 0.5}), 6)
    with pytest.raises(JobError, match=r"^\[data\] test_fraction = 0.5 leaves 5 of 10 samples"):
        load_node_data(resolve_data({"name": "syn1", "samples": 10, "test_fraction": 0.5}), 6, 0)
    with pytest.raises(JobError, match=r"^\[data\] test_fraction = 0.9 leaves 37 of 361 samples"):
        check_data(resolve_data({"name": "digits", "classes": [4, 9], "test_fraction": 0.9}), 40)
    check_data(resolve_data({"samples": 4}), 4)
    with pytest.raises(JobError, match=r"^\[data\] name must be one of"):
        check_data({"name": "nope"}, 2)


# ---- partitions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["iid", "sorted"])
def test_iid_and_sorted_sizes_and_coverage(scheme):
    targets = np.random.default_rng(0).integers(0, 3, size=103)
    parts = partition(targets, 7, scheme, seed=0)
    sizes = [p.size for p in parts]
    assert len(parts) == 7 and max(sizes) - min(sizes) <= 1
    assert_cover(parts, 103)


def test_iid_depends_on_seed_only():
    targets = np.zeros(50, dtype=np.int64)
    a, b, c = (partition(targets, 4, "iid", seed=s) for s in (1, 1, 2))
    assert [p.tolist() for p in a] == [p.tolist() for p in b]
    assert [p.tolist() for p in a] != [p.tolist() for p in c]


def test_sorted_partition_is_label_pure():
    targets = np.repeat(np.arange(5), 40)[np.random.default_rng(1).permutation(200)]
    parts = partition(targets, 10, "sorted", seed=0)
    assert all(np.unique(targets[p]).size == 1 for p in parts)  # 40 per class = exactly 2 shards each
    pure = sum(np.unique(targets[p]).size == 1 for p in partition(targets, 7, "sorted", seed=0))
    assert pure >= 7 - 4  # only the shards holding a class boundary mix labels


def test_sorted_partition_of_regression_targets_is_monotone():
    targets = np.random.default_rng(2).standard_normal(101)
    parts = partition(targets, 6, "sorted", seed=0)
    assert_cover(parts, 101)
    for left, right in zip(parts, parts[1:]):
        assert targets[left].max() <= targets[right].min()
    values = resolve_data({"name": "syn2", "samples": 120, "features": 3, "partition": "sorted",
                           "test_fraction": 0.2})
    shards = [d.train.targets for d in load_all(values, 4)]
    for left, right in zip(shards, shards[1:]):
        assert left.max() <= right.min()


def test_dirichlet_partition_nonempty_deterministic_and_skewed():
    targets = digits().targets
    parts = partition(targets, 8, "dirichlet", seed=3, alpha=0.5)
    assert_cover(parts, targets.size)
    assert all(p.size > 0 for p in parts)
    assert [p.tolist() for p in parts] == [p.tolist() for p in partition(targets, 8, "dirichlet", seed=3, alpha=0.5)]
    assert [p.tolist() for p in parts] != [p.tolist() for p in partition(targets, 8, "dirichlet", seed=4, alpha=0.5)]

    def mean_entropy(alpha):
        return np.mean([entropy(targets[p], 10) for p in partition(targets, 8, "dirichlet", seed=0, alpha=alpha)])

    low, high = mean_entropy(0.1), mean_entropy(10.0)
    assert low < high - 0.5, (low, high)
    assert high > 0.9 * np.log(10)  # large α: nearly the global label mix
    # through the job keys: classification kinds accept it
    values = resolve_data({"name": "digits", "partition": "dirichlet", "alpha": 0.2})
    check_data(values, 6)
    assert_cover([d.train.indices for d in load_all(values, 6)], 1438)


def test_dirichlet_needs_classes_and_a_large_enough_alpha():
    with pytest.raises(JobError, match=r"^\[data\] partition = 'dirichlet' needs class labels"):
        partition(np.linspace(0, 1, 20), 2, "dirichlet", seed=0)
    with pytest.raises(JobError, match=r"^\[data\] partition = 'dirichlet' needs class labels, but syn1"):
        check_data({**resolve_data({"name": "syn1"}), "partition": "dirichlet"}, 2)
    # two classes, each concentrated on one or two of 8 nodes: every redraw leaves a node empty
    targets = np.repeat([0, 1], 50)
    with pytest.raises(JobError) as err:
        partition(targets, 8, "dirichlet", seed=0, alpha=0.01)
    assert str(err.value).startswith("[data] alpha = 0.01 leaves a node without samples; raise alpha")
    values = resolve_data({"samples": 100, "partition": "dirichlet", "alpha": 0.01})
    with pytest.raises(JobError, match=r"^\[data\] alpha = 0.01 leaves a node without samples; raise alpha"):
        check_data(values, 8)
    with pytest.raises(JobError, match=r"^\[data\] alpha = 0.01 leaves a node without samples"):
        load_node_data(values, 8, 3)
    check_data({**values, "alpha": 5.0}, 8)


# ---- hdf5 (serial) -----------------------------------------------------------------------------------


def write_h5(path, features, labels, **extra):
    with h5py.File(path, "w") as f:
        if features is not None:
            f["features"] = features
        if labels is not None:
            f["labels"] = labels
        for name, value in extra.items():
            f[name] = value
    return path


@pytest.fixture
def h5file(tmp_path):
    rng = np.random.default_rng(7)
    features = rng.standard_normal((57, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=57).astype(np.int32)
    write_h5(tmp_path / "data.h5", features, labels, group_x=np.zeros(2))
    return tmp_path, features.astype(np.float64), labels.astype(np.int64)


@pytest.mark.parametrize("scheme", ["iid", "sorted", "dirichlet"])
@pytest.mark.parametrize("test_fraction", [0.0, 0.3])
def test_hdf5_shards_cover_the_file_rows(h5file, scheme, test_fraction):
    folder, features, labels = h5file
    values = resolve_data({"name": "hdf5", "path": str(folder / "data.h5"), "partition": scheme,
                           "alpha": 5.0, "test_fraction": test_fraction})
    check_data(values, 4)
    nodes = load_all(values, 4)
    n_test = int(57 * test_fraction)
    assert all((d.num_train, d.num_test) == (57 - n_test, n_test) for d in nodes)
    assert all((d.name, d.task, d.num_features, d.num_classes) == ("hdf5", "multiclass", 5, 3) for d in nodes)
    assert_cover([d.train.indices for d in nodes], 57 - n_test)
    whole = load_node_data(values, 1, 0)
    rows = [whole.train] if whole.test is None else [whole.train, whole.test]
    # the global training + test sets are exactly the file's rows
    all_features = np.vstack([s.features for s in rows])
    all_targets = np.concatenate([s.targets for s in rows])
    order = np.lexsort(all_features.T[::-1])
    np.testing.assert_array_equal(all_features[order], features[np.lexsort(features.T[::-1])])
    assert sorted(all_targets.tolist()) == sorted(labels.tolist())
    # each shard is its rows of the global sets, and each row its row of the file
    for data in nodes:
        np.testing.assert_array_equal(data.train.features, whole.train.features[data.train.indices])
        np.testing.assert_array_equal(data.train.targets, whole.train.targets[data.train.indices])
        assert data.train.targets.dtype == np.int64 and data.train.features.dtype == np.float64
        for shard in (data.train, data.test):
            if shard is None:
                continue
            for row, target in zip(shard.features, shard.targets):
                match = np.flatnonzero(np.all(features == row, axis=1))
                assert match.size == 1 and labels[match[0]] == target
    if test_fraction:
        assert_cover([d.test.indices for d in nodes], n_test)
    else:
        assert all(d.test is None for d in nodes)
    # the same layout as generated data with the same targets would get
    np.testing.assert_array_equal(whole.train.features, features[np.sort(_train_rows(57, test_fraction, 0))])


def _train_rows(n, test_fraction, seed):
    from mpidecent.learning.data import split_train_test
    return split_train_test(n, test_fraction, seed)[0]


def test_hdf5_relative_path_binary_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 3))
    write_h5(tmp_path / "bin.h5", x, (x[:, 0] > 0).astype(np.float64))  # integral floats are class ids
    values = resolve_data({"name": "hdf5", "path": "bin.h5", "task": "binary"})
    check_data(values, 2, base_dir=str(tmp_path))
    nodes = load_all(values, 2, base_dir=str(tmp_path))
    assert all(d.task == "binary" and d.num_classes == 2 and d.train.targets.dtype == np.int64 for d in nodes)
    np.testing.assert_array_equal(np.vstack([d.train.features for d in nodes])[np.argsort(
        np.concatenate([d.train.indices for d in nodes]))], x)
    y = rng.standard_normal(20)
    write_h5(tmp_path / "reg.h5", x, y)
    values = resolve_data({"name": "hdf5", "path": "reg.h5", "task": "regression", "partition": "sorted"})
    nodes = load_all(values, 3, base_dir=str(tmp_path))
    assert all(d.task == "regression" and d.num_classes == 0 and d.train.targets.dtype == np.float64 for d in nodes)
    assert sorted(np.concatenate([d.train.targets for d in nodes]).tolist()) == sorted(y.tolist())
    for left, right in zip(nodes, nodes[1:]):
        assert left.train.targets.max() <= right.train.targets.min()
    # integer features are converted; absolute paths ignore base_dir
    write_h5(tmp_path / "int.h5", np.arange(12, dtype=np.int16).reshape(6, 2), np.array([0, 1, 1, 0, 1, 0]))
    values = resolve_data({"name": "hdf5", "path": str(tmp_path / "int.h5")})
    data = load_node_data(values, 1, 0, base_dir="/nonexistent")
    np.testing.assert_array_equal(data.train.features, np.arange(12.0).reshape(6, 2))


def hdf5_error(tmp_path, nodes=2, features=None, labels=None, extra=None, **keys):
    if features is not None or labels is not None or extra:
        write_h5(tmp_path / "data.h5", features, labels, **(extra or {}))
    values = resolve_data({"name": "hdf5", "path": "data.h5", **keys})
    with pytest.raises(JobError) as err:
        check_data(values, nodes, base_dir=str(tmp_path))
    return str(err.value)


def test_hdf5_errors(tmp_path):
    x = np.zeros((10, 3))
    y = np.arange(10) % 3
    message = hdf5_error(tmp_path)
    assert message.startswith("[data] path: no such file 'data.h5'"), message
    values = resolve_data({"name": "hdf5", "path": "x.h5"})
    with pytest.raises(JobError) as err:
        check_data(values, 2)
    assert str(err.value) == "[data] path: no such file 'x.h5'"
    (tmp_path / "data.h5").write_text("not hdf5")
    assert hdf5_error(tmp_path).startswith("[data] path: cannot read 'data.h5' as an HDF5 file")

    message = hdf5_error(tmp_path, features=x, labels=y, extra={"other/b": np.zeros(2)}, features_dataset="X")
    assert message == "[data] features_dataset = 'X' not found in 'data.h5' (datasets there: features, labels, other/b)"
    message = hdf5_error(tmp_path, features=x, labels=None, extra={"a": y})
    assert message == "[data] labels_dataset = 'labels' not found in 'data.h5' (datasets there: a, features)"
    message = hdf5_error(tmp_path, features=x, labels=y, extra={"g/a": y}, labels_dataset="g")
    assert message.startswith("[data] labels_dataset = 'g' in 'data.h5' is a group, not a dataset")

    message = hdf5_error(tmp_path, features=np.zeros(10), labels=y)
    assert message == ("[data] features_dataset = 'features' in 'data.h5' must have one row per sample, "
                       "(samples, ...) such as (N, p) vectors or (N, C, H, W) images, got shape (10,)")
    message = hdf5_error(tmp_path, features=x, labels=y.reshape(10, 1))
    assert message == "[data] labels_dataset = 'labels' in 'data.h5' must be 1-D (samples,), got shape (10, 1)"
    message = hdf5_error(tmp_path, features=x, labels=y[:9])
    assert message == ("[data] labels_dataset = 'labels' in 'data.h5' has 9 rows but features_dataset = "
                       "'features' has 10; they must match")
    message = hdf5_error(tmp_path, features=np.array([[b"a"], [b"b"]]), labels=[0, 1])
    assert message.startswith("[data] features_dataset = 'features' in 'data.h5' must hold numbers")
    message = hdf5_error(tmp_path, features=x, labels=y + 0.5)
    assert message.startswith("[data] labels_dataset = 'labels' in 'data.h5' holds non-integer values (e.g. 0.5)")
    message = hdf5_error(tmp_path, features=x, labels=y - 1)
    assert message.startswith("[data] labels_dataset = 'labels' in 'data.h5' holds negative labels (e.g. -1)")
    message = hdf5_error(tmp_path, features=x, labels=y, task="binary")
    assert message.startswith("[data] labels_dataset = 'labels' in 'data.h5' holds labels outside 0 and 1 (e.g. 2)")
    message = hdf5_error(tmp_path, features=x, labels=np.zeros(10, dtype=int))
    assert message.startswith("[data] labels_dataset = 'labels' in 'data.h5' holds only class 0")
    message = hdf5_error(tmp_path, features=x, labels=np.full(10, np.nan), task="regression")
    assert message.startswith("[data] labels_dataset = 'labels' in 'data.h5' holds NaN or infinite values")
    message = hdf5_error(tmp_path, nodes=11, features=x, labels=y)
    assert message == "[data] path: 'data.h5' has 10 samples, fewer than the 11 nodes; every node needs a sample"
    message = hdf5_error(tmp_path, nodes=4, features=x, labels=y, test_fraction=0.7)
    assert message.startswith("[data] test_fraction = 0.7 leaves 3 of 10 samples for training, fewer than the 4")
    message = hdf5_error(tmp_path, nodes=8, features=np.zeros((20, 3)), labels=np.arange(20) % 2,
                         partition="dirichlet", alpha=0.01)
    assert message.startswith("[data] alpha = 0.01 leaves a node without samples; raise alpha")

    bad = x.copy()
    bad[4, 1] = np.inf
    write_h5(tmp_path / "data.h5", bad, y)
    values = resolve_data({"name": "hdf5", "path": "data.h5"})
    check_data(values, 2, base_dir=str(tmp_path))  # the features are never read whole by check
    with pytest.raises(JobError, match=r"^\[data\] features_dataset = 'features' in 'data.h5' holds NaN"):
        load_all(values, 2, base_dir=str(tmp_path))


def test_read_rows_uses_several_calls_for_many_runs(tmp_path, monkeypatch):
    import mpidecent.io.datasets as ds

    monkeypatch.setattr(ds, "RUNS_PER_READ", 3)
    x = np.arange(60.0).reshape(30, 2)
    write_h5(tmp_path / "d.h5", x, np.arange(30) % 2)
    rows = np.array([0, 1, 2, 5, 7, 8, 11, 20, 21, 29])
    assert ds.read_calls(rows) == 2 and ds.read_calls(rows[:0]) == 1
    with h5py.File(tmp_path / "d.h5", "r") as f:
        np.testing.assert_array_equal(ds.read_rows(f["features"], rows), x[rows])
        np.testing.assert_array_equal(ds.read_rows(f["features"], rows, calls=5), x[rows])
        assert ds.read_rows(f["features"], rows[:0], calls=2).shape == (0, 2)
        with pytest.raises(ValueError):
            ds.read_rows(f["features"], rows, calls=1)
    values = resolve_data({"name": "hdf5", "path": str(tmp_path / "d.h5"), "task": "binary"})
    nodes = load_all(values, 3)
    for d in nodes:
        np.testing.assert_array_equal(d.train.features, x[d.train.indices])
