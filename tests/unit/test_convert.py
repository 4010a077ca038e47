"""``mpidecent data``: .npz and IDX files → the HDF5 layout of the ``hdf5`` data kind (mpidecent.io.convert)."""

import gzip
import os
import struct
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from mpidecent.cli import main
from mpidecent.errors import JobError
from mpidecent.io import convert
from mpidecent.io.datasets import check_data, load_node_data
from mpidecent.learning.sources import resolve_data

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written by hand: 00 00, type, ndim, big-endian sizes, big-endian data."""
    header = b"\0\0" + bytes([IDX_CODES[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray, gz: bool = False):
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


def run(capsys, *argv):
    rc = main(["data", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mpidecent: error: "), err
    return lines[0]


def no_temp_files(folder) -> bool:
    return not [name for name in os.listdir(folder) if name.endswith(".tmp")]


# ---- npz ----------------------------------------------------------------------------------------------------


def test_npz_default_keys_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    xt, yt = rng.normal(size=(7, 3, 4)).astype(np.float32), rng.integers(0, 3, size=7).astype(np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=yt)
    out = tmp_path / "d.h5"
    rc, stdout, err = run(capsys, tmp_path / "d.npz", out)
    assert rc == 0, err
    with h5py.File(out, "r") as f:
        assert set(f) == {"features", "labels", "test_features", "test_labels"}
        assert f["features"].dtype == np.float32 and f["features"].shape == (40, 3, 4)
        assert f["labels"].dtype == np.int64 and f["test_labels"].dtype == np.int64
        np.testing.assert_array_equal(f["features"][()], x)
        np.testing.assert_array_equal(f["labels"][()], y)
        np.testing.assert_array_equal(f["test_features"][()], xt)
        np.testing.assert_array_equal(f["test_labels"][()], yt)
        assert f.attrs["converter"] == "mpidecent data"
        assert "d.npz" in f.attrs["source"] and "x_test" in f.attrs["source"]
        assert f.attrs["created"].endswith("+00:00")  # UTC ISO time
        for name in f:
            dset = f[name]
            assert dset.attrs["description"]
            assert dset.chunks is not None and dset.chunks[1:] == dset.shape[1:]  # whole samples per chunk
            assert dset.compression is None
    assert "40 training samples and 7 test samples" in stdout and "3×4" in stdout and "float32" in stdout
    assert "[data]\nname = \"hdf5\"\n" in stdout and f'path = "{out}"' in stdout
    assert 'test_features_dataset = "test_features"' in stdout and 'test_labels_dataset = "test_labels"' in stdout
    assert 'task = "multiclass"' in stdout
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("keys", [("x_train", "y_train", "x_test", "y_test"), ("X", "y", None, None),
                                  ("features", "labels", "test_features", "test_labels")])
def test_npz_common_names(tmp_path, capsys, keys):
    x, y = images(30)
    arrays = {keys[0]: x, keys[1]: y, "unrelated": np.arange(4)}
    if keys[2]:
        arrays |= {keys[2]: x[:6], keys[3]: y[:6]}
    np.savez(tmp_path / "d.npz", **arrays)
    rc, stdout, err = run(capsys, tmp_path / "d.npz", tmp_path / "d.h5")
    assert rc == 0, err
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert f["features"].dtype == np.uint8 and f["features"].shape == (30, 28, 28)
        np.testing.assert_array_equal(f["features"][()], x)
        assert ("test_features" in f) == bool(keys[2])
        assert "ignored unrelated" in f.attrs["source"]
    assert ("test_features_dataset" in stdout) == bool(keys[2])


def test_npz_keys_given_by_flags(tmp_path, capsys):
    x, y = images(20)
    np.savez(tmp_path / "d.npz", imgs=x, targets=y, vimgs=x[:4], vtargets=y[:4])
    rc, _, err = run(capsys, tmp_path / "d.npz", tmp_path / "d.h5", "--x", "imgs", "--y", "targets",
                     "--x-test", "vimgs", "--y-test", "vtargets")
    assert rc == 0, err
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert f["test_features"].shape == (4, 28, 28)
        np.testing.assert_array_equal(f["test_labels"][()], y[:4])


def test_npz_real_valued_targets(tmp_path, capsys):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "r.npz", x=rng.normal(size=(25, 5)), y=rng.normal(size=25))
    rc, stdout, err = run(capsys, tmp_path / "r.npz", tmp_path / "r.h5")
    assert rc == 0, err
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["labels"].dtype == np.float64 and f["features"].dtype == np.float64
    assert 'task = "regression"' in stdout and "test_features_dataset" not in stdout


# ---- IDX ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("with_test", [False, True])
def test_idx_round_trip(tmp_path, capsys, gz, with_test):
    x, y = images(50)
    xt, yt = images(12, seed=3)
    suffix = ".gz" if gz else ""
    paths = [write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x, gz),
             write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y, gz)]
    if with_test:
        paths += [write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", xt, gz),
                  write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", yt, gz)]
    out = tmp_path / "mnist.h5"
    rc, stdout, err = run(capsys, "--idx", *paths, out)
    assert rc == 0, err
    with h5py.File(out, "r") as f:
        assert f["features"].dtype == np.uint8 and f["features"].shape == (50, 28, 28)
        assert f["labels"].dtype == np.int64 and f["labels"].shape == (50,)
        np.testing.assert_array_equal(f["features"][()], x)
        np.testing.assert_array_equal(f["labels"][()], y)
        assert f["features"].chunks == (50, 28, 28)
        assert "train-images-idx3-ubyte" in f.attrs["source"]
        assert "pixels 0..255" in f["features"].attrs["description"]
        if with_test:
            np.testing.assert_array_equal(f["test_features"][()], xt)
            np.testing.assert_array_equal(f["test_labels"][()], yt)
        else:
            assert "test_features" not in f
    assert "28×28" in stdout and "uint8" in stdout and "--scale" in stdout


def test_idx_gzip_is_detected_by_its_magic_bytes_not_its_name(tmp_path):
    x, y = images(9)
    zipped = write_idx(tmp_path / "images", x, gz=True)  # gzipped, no .gz
    plain = write_idx(tmp_path / "labels.gz", y, gz=False)  # .gz, not gzipped
    np.testing.assert_array_equal(convert.read_idx(zipped), x)
    np.testing.assert_array_equal(convert.read_idx(plain), y)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_every_type_in_native_byte_order(tmp_path, dtype):
    a = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    got = convert.read_idx(write_idx(tmp_path / "a.idx", a))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.shape == (2, 3, 5)
    np.testing.assert_array_equal(got, a)


def test_idx_float32_images(tmp_path, capsys):
    rng = np.random.default_rng(4)
    x = rng.random(size=(16, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, size=16).astype(np.int32)
    paths = [write_idx(tmp_path / "x", x, gz=True), write_idx(tmp_path / "y", y)]
    rc, stdout, err = run(capsys, "--idx", *paths, tmp_path / "f.h5")
    assert rc == 0, err
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["features"].dtype == np.float32
        np.testing.assert_array_equal(f["features"][()], x)
        np.testing.assert_array_equal(f["labels"][()], y)
    assert '"binary"' in stdout  # 0/1 labels: the summary mentions the one-logit option


def test_scale_divides_pixels_by_255_into_float32(tmp_path, capsys):
    x, y = images(10)
    paths = [write_idx(tmp_path / "x", x), write_idx(tmp_path / "y", y),
             write_idx(tmp_path / "xt", x[:3]), write_idx(tmp_path / "yt", y[:3])]
    rc, stdout, err = run(capsys, "--idx", *paths, tmp_path / "s.h5", "--scale")
    assert rc == 0, err
    with h5py.File(tmp_path / "s.h5", "r") as f:
        for name, want in (("features", x), ("test_features", x[:3])):
            assert f[name].dtype == np.float32
            np.testing.assert_allclose(f[name][()], want.astype(np.float32) / 255, rtol=1e-7)
            assert "[0, 1]" in f[name].attrs["description"]
    assert "scaled to [0, 1]" in stdout


# ---- the file is accepted by the hdf5 data kind ---------------------------------------------------------------


def test_converted_file_is_read_by_the_hdf5_data_kind(tmp_path, capsys):
    x, y = images(40)
    y[:2] = [0, 9]  # ten classes for certain
    paths = [write_idx(tmp_path / "x.gz", x, gz=True), write_idx(tmp_path / "y.gz", y, gz=True)]
    assert run(capsys, "--idx", *paths, tmp_path / "m.h5")[0] == 0
    values = resolve_data({"name": "hdf5", "path": "m.h5", "task": "multiclass"})  # relative to base_dir
    info = check_data(values, 2, str(tmp_path))
    assert info.input_shape == (28, 28) and info.num_classes == 10
    data = load_node_data(values, 2, 0, base_dir=str(tmp_path))  # serial read of uint8 rows → float64
    assert data.train.features.shape[1:] == (28, 28)
    rows = data.train.indices
    np.testing.assert_array_equal(data.train.features, x[rows].astype(np.float64))
    np.testing.assert_array_equal(data.train.targets, y[rows])


def test_converted_test_split_is_accepted_by_the_hdf5_data_kind(tmp_path, capsys):
    x, y = images(40)
    y[:2] = [0, 9]
    paths = [write_idx(tmp_path / "x", x), write_idx(tmp_path / "y", y),
             write_idx(tmp_path / "xt", x[:8]), write_idx(tmp_path / "yt", y[:8])]
    assert run(capsys, "--idx", *paths, tmp_path / "m.h5")[0] == 0
    table = {"name": "hdf5", "path": "m.h5", "test_features_dataset": "test_features",
             "test_labels_dataset": "test_labels", "task": "multiclass"}
    try:
        values = resolve_data(table)
    except JobError as err:
        if "test_features_dataset" in str(err) or "test_labels_dataset" in str(err):
            pytest.skip(f"[data] test_features_dataset / test_labels_dataset are not keys of the hdf5 kind yet: {err}")
        raise
    info = check_data(values, 2, str(tmp_path))
    assert info.input_shape == (28, 28) and info.num_classes == 10
    data = load_node_data(values, 2, 1, base_dir=str(tmp_path))
    assert data.num_train == 40 and data.num_test == 8
    np.testing.assert_array_equal(data.test_all.features, x[:8].astype(np.float64))
    np.testing.assert_array_equal(data.test_all.targets, y[:8])


# ---- bad inputs: one line, exit status 2, an existing OUT untouched, no temporary file left -------------------


def _npz(tmp_path, **arrays):
    path = tmp_path / "in.npz"
    np.savez(path, **arrays)
    return [path]


def _idx(tmp_path, x, y, *test):
    paths = [write_idx(tmp_path / "x.idx", x), write_idx(tmp_path / "y.idx", y)]
    if test:
        paths += [write_idx(tmp_path / "xt.idx", test[0]), write_idx(tmp_path / "yt.idx", test[1])]
    return ["--idx", *paths]


def _raw(tmp_path, data: bytes, name="x.idx"):
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def _bad_magic(tmp_path):
    x, y = images(5)
    return ["--idx", _raw(tmp_path, b"\x00\x01" + idx_bytes(x)[2:]), write_idx(tmp_path / "y.idx", y)]


def _unknown_type(tmp_path):
    x, y = images(5)
    return ["--idx", _raw(tmp_path, b"\x00\x00\x07" + idx_bytes(x)[3:]), write_idx(tmp_path / "y.idx", y)]


def _truncated_idx(tmp_path):
    x, y = images(5)
    return ["--idx", _raw(tmp_path, idx_bytes(x)[:-100]), write_idx(tmp_path / "y.idx", y)]


def _extra_bytes_idx(tmp_path):
    x, y = images(5)
    return ["--idx", write_idx(tmp_path / "x.idx", x), _raw(tmp_path, idx_bytes(y) + b"\0\0", "y.idx")]


def _truncated_header(tmp_path):
    x, y = images(5)
    return ["--idx", _raw(tmp_path, idx_bytes(x)[:9]), write_idx(tmp_path / "y.idx", y)]


def _truncated_gzip(tmp_path):
    x, y = images(5)
    return ["--idx", _raw(tmp_path, gzip.compress(idx_bytes(x))[:-30], "x.gz"), write_idx(tmp_path / "y.idx", y)]


def _truncated_npz(tmp_path):
    path = _npz(tmp_path, x=np.zeros((50, 4)), y=np.zeros(50))[0]
    path.write_bytes(path.read_bytes()[:-200])
    return [path]


def _corrupt_npz_member(tmp_path):
    path = tmp_path / "in.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"not an npy file at all")
        z.writestr("y.npy", b"nor this")
    return [path]


def _not_a_zip(tmp_path):
    return [_raw(tmp_path, b"hello, this is text\n", "in.npz")]


def _object_array(tmp_path):
    path = tmp_path / "in.npz"
    np.savez(path, x=np.array([[1, "a"], [2, None]], dtype=object), y=np.zeros(2))
    return [path]


BAD = {
    "missing input": (lambda p: [p / "nope.npz"], "no such file"),
    "missing IDX input": (lambda p: ["--idx", p / "a", p / "b"], "no such file"),
    "IDX wrong magic": (_bad_magic, "not an IDX file"),
    "IDX unknown type byte": (_unknown_type, "not an IDX file"),
    "IDX truncated data": (_truncated_idx, "is truncated"),
    "IDX truncated header": (_truncated_header, "truncated"),
    "IDX bytes after the data": (_extra_bytes_idx, "bytes after its data"),
    "IDX truncated gzip": (_truncated_gzip, "gzip"),
    "npz truncated": (_truncated_npz, "corrupt or truncated"),
    "npz corrupt member": (_corrupt_npz_member, "corrupt or truncated"),
    "npz not a zip": (_not_a_zip, "not a zip archive"),
    "npz without known keys": (lambda p: _npz(p, a=np.zeros((3, 2)), b=np.zeros(3)), "keys found: a, b"),
    "npz --x key missing": (lambda p: ["--x", "z"] + _npz(p, x=np.zeros((3, 2)), y=np.zeros(3)), "keys found: x, y"),
    "npz test features without labels": (lambda p: _npz(p, x=np.zeros((3, 2)), y=np.zeros(3), x_test=np.zeros((1, 2))),
                                         "x_test"),
    "npz x/y lengths": (lambda p: _npz(p, x=np.zeros((5, 2)), y=np.zeros(4)), "4 labels but x in in.npz has 5"),
    "IDX x/y lengths": (lambda p: _idx(p, images(6)[0], images(5)[1]), "5 labels but x.idx has 6 samples"),
    "labels not 1-D": (lambda p: _npz(p, x=np.zeros((5, 2)), y=np.zeros((5, 1))), "must be 1-D"),
    "one-hot labels": (lambda p: _npz(p, x=np.zeros((5, 2)), y=np.eye(5)), "argmax"),
    "features 1-D": (lambda p: _npz(p, x=np.zeros(5), y=np.zeros(5)), "one row per sample"),
    "empty features": (lambda p: _npz(p, x=np.zeros((0, 3)), y=np.zeros(0)), "no samples"),
    "test sample shape": (lambda p: _idx(p, *images(6), np.zeros((2, 27, 28), np.uint8), np.zeros(2, np.uint8)),
                          "samples of shape (27, 28)"),
    "npz test sample shape": (lambda p: _npz(p, x=np.zeros((5, 3)), y=np.zeros(5), x_test=np.zeros((2, 4)),
                                             y_test=np.zeros(2)), "samples of shape (4,)"),
    "test labels length": (lambda p: _idx(p, *images(6), *images(3)[:1], images(2)[1]), "2 labels but xt.idx"),
    "string features": (lambda p: _npz(p, x=np.array([["a", "b"]] * 3), y=np.zeros(3)), "must hold numbers"),
    "string labels": (lambda p: _npz(p, x=np.zeros((3, 2)), y=np.array(["a", "b", "c"])), "must hold numbers"),
    "complex features": (lambda p: _npz(p, x=np.zeros((3, 2), complex), y=np.zeros(3)), "must hold numbers"),
    "object arrays": (_object_array, "Python objects"),
    "NaN features": (lambda p: _npz(p, x=np.array([[0.0, np.nan]] * 3), y=np.zeros(3)), "NaN or infinite"),
    "inf labels": (lambda p: _npz(p, x=np.zeros((3, 2)), y=np.array([0.0, np.inf, 1.0])), "NaN or infinite"),
    "NaN in float32 IDX": (lambda p: _idx(p, np.full((4, 2, 2), np.nan, np.float32), np.zeros(4, np.uint8)),
                           "NaN or infinite"),
    "NaN test features": (lambda p: _npz(p, x=np.zeros((3, 2)), y=np.zeros(3), x_test=np.full((1, 2), np.inf),
                                         y_test=np.zeros(1)), "x_test in in.npz holds NaN"),
    "--scale on floats": (lambda p: ["--scale"] + _npz(p, x=np.zeros((3, 2)), y=np.zeros(3)), "--scale"),
    "--scale beyond 255": (lambda p: ["--scale"] + _npz(p, x=np.full((3, 2), 300), y=np.zeros(3)), "0..300"),
    "npz keys with --idx": (lambda p: ["--x", "a"] + _idx(p, *images(3)), "do not apply to --idx"),
    "IDX without --idx": (lambda p: [write_idx(p / "x.gz", images(3)[0], gz=True)], "IDX files with --idx"),
    "--idx with 3 inputs": (lambda p: _idx(p, *images(3)) + [p / "x.idx"], "--idx takes"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_with_status_2_and_leaves_out_untouched(tmp_path, capsys, case):
    make, words = BAD[case]
    argv = make(tmp_path)
    out = tmp_path / "out.h5"
    out.write_bytes(b"the user's precious file\n")
    rc, stdout, err = run(capsys, *argv, out, "--force")
    assert rc == 2, (stdout, err)
    line = one_error_line(err)
    assert words in line, line
    assert out.read_bytes() == b"the user's precious file\n"
    assert no_temp_files(tmp_path)
    # and without an existing OUT, nothing appears
    out.unlink()
    rc, _, err = run(capsys, *argv, out, "--force")
    assert rc == 2 and not out.exists() and no_temp_files(tmp_path)


def test_existing_out_needs_force(tmp_path, capsys):
    x, y = images(5)
    argv = _idx(tmp_path, x, y)
    out = tmp_path / "out.h5"
    out.write_bytes(b"keep me")
    rc, _, err = run(capsys, *argv, out)
    assert rc == 2 and "exists; pass --force" in one_error_line(err)
    assert out.read_bytes() == b"keep me"
    rc, _, err = run(capsys, *argv, out, "--force")
    assert rc == 0, err
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["features"][()], x)


def test_out_folder_missing_or_not_writable(tmp_path, capsys, monkeypatch):
    argv = _idx(tmp_path, *images(5))
    rc, _, err = run(capsys, *argv, tmp_path / "no" / "such" / "out.h5")
    assert rc == 2 and "does not exist" in one_error_line(err)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if os.path.abspath(path) == str(locked)
                        and mode & os.W_OK else real_access(path, mode))  # root ignores chmod
    rc, _, err = run(capsys, *argv, locked / "out.h5")
    assert rc == 2 and "not writable" in one_error_line(err)
    assert os.listdir(locked) == []
    rc, _, err = run(capsys, *argv, tmp_path)
    assert rc == 2 and "is a folder" in one_error_line(err)


def test_a_failure_while_writing_leaves_no_half_file(tmp_path, capsys, monkeypatch):
    argv = _idx(tmp_path, *images(5))
    out = tmp_path / "out.h5"
    out.write_bytes(b"old")
    real_write = convert._write

    def failing(f, name, data, description):
        if name == "labels":
            raise OSError("disk full")
        real_write(f, name, data, description)

    monkeypatch.setattr(convert, "_write", failing)
    rc, _, err = run(capsys, *argv, out, "--force")
    assert rc == 2 and "disk full" in one_error_line(err)
    assert out.read_bytes() == b"old" and no_temp_files(tmp_path)

    def interrupted(f, name, data, description):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["data", *map(str, argv), str(tmp_path / "new.h5")])
    assert not (tmp_path / "new.h5").exists() and no_temp_files(tmp_path)


def test_the_command_never_imports_mpi4py_or_torch(tmp_path):
    x, y = images(5)
    argv = _idx(tmp_path, x, y) + [str(tmp_path / "out.h5")]
    code = ("import sys; from mpidecent.cli import main; rc = main(sys.argv[1:]); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mpi4py', 'torch')); "
            "assert rc == 0 and not heavy, heavy")
    subprocess.run([sys.executable, "-c", code, "data", *map(str, argv)], check=True, capture_output=True)
