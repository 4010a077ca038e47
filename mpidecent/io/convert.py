"""Conversion of a ``.npz`` file or MNIST-style IDX files into the layout the ``hdf5`` data kind
reads.

Layout written by ``write_dataset`` (one process, h5py's default driver, no MPI)::

    /features        (N, ...)  training samples, dtype kept (uint8 stays uint8, floats stay floats)
    /labels          (N,)      int64 class ids, or float64 for real-valued targets
    /test_features   (M, ...)  optional: the test samples (same sample shape)
    /test_labels     (M,)      optional
    root attrs: source, created (UTC, ISO 8601), converter = "mpidecent data"; each dataset:
    description

Datasets are chunked along the sample axis (whole samples, about 1 MiB a chunk) and not compressed,
so that ranks reading their rows with MPI-IO read only those rows, cheaply.

``read_npz`` and ``read_idx``/``idx_arrays`` read the inputs into ``Arrays``; ``write_dataset``
checks them (``check_arrays``) and writes the file atomically: to a temporary file in OUT's folder,
renamed onto OUT at the end, so a failure leaves no half-written file and an existing OUT is
replaced only with ``force``. Every problem is a ``JobError`` whose text is the complete one-line
message.

IDX (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte, a dimension count byte, that
many big-endian uint32 sizes, then the data, big-endian; optionally gzip-compressed (detected by its
magic bytes, whatever the file's name).
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import h5py
import numpy as np

from mpidecent.errors import JobError

CONVERTER = "mpidecent data"
CHUNK_BYTES = 2**20  # about this many bytes of whole samples per chunk

# IDX type byte → big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# npz key pairs tried in this order when --x/--y (--x-test/--y-test) are not given
TRAIN_KEYS = (
    ("x", "y"),
    ("x_train", "y_train"),
    ("X", "y"),
    ("X_train", "y_train"),
    ("features", "labels"),
)
TEST_KEYS = (("x_test", "y_test"), ("X_test", "y_test"), ("test_features", "test_labels"))

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Arrays:
    """What was read: the training arrays, optionally a test split, and where each came from."""

    features: np.ndarray
    labels: np.ndarray
    test_features: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    names: tuple[str, str, str, str] = (
        "features",
        "labels",
        "test features",
        "test labels",
    )  # for messages
    source: str = ""  # the root attribute: what was converted
    scaled: bool = False  # features were divided by 255 (scale_pixels)

    @property
    def has_test(self) -> bool:
        return self.test_features is not None


@dataclass(frozen=True)
class Summary:
    """What ``write_dataset`` wrote."""

    path: str
    train: int
    test: int  # 0: no test set written
    sample_shape: tuple[int, ...]
    dtype: str  # of the features
    labels_dtype: str  # int64 | float64
    train_classes: tuple[
        int, ...
    ]  # distinct class ids (integer labels); () for real-valued targets
    test_classes: tuple[int, ...]
    label_range: tuple[float, float]  # min, max over both sets
    integral: bool  # every label is a whole number (class ids)
    scaled: bool


# ---- small helpers -------------------------------------------------------------------------------


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text


def _readable(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise JobError(f"{what}: no such file {path!r}")
    if os.path.isdir(path):
        raise JobError(f"{what}: {path!r} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise JobError(f"{what}: cannot read {path!r} (permission denied)")


def _native(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy-if-needed in native byte order (bool → uint8)."""
    if array.dtype.kind == "b":
        return np.ascontiguousarray(array, dtype=np.uint8)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


# ---- npz -----------------------------------------------------------------------------------------


def _pick(
    keys: list[str], given: str | None, option: str, candidates: tuple[str, ...], name: str
) -> str | None:
    if given is not None:
        if given not in keys:
            raise JobError(
                f"{option} {given}: no array {given!r} in {name} (keys found: "
                f"{', '.join(keys) or 'none'})"
            )
        return given
    return next((k for k in candidates if k in keys), None)


def _npz_keys(
    keys: list[str], name: str, x: str | None, y: str | None, x_test: str | None, y_test: str | None
) -> tuple[str, str, str | None, str | None]:
    found = ", ".join(keys) or "none"
    if x is None and y is None:
        pair = next(((a, b) for a, b in TRAIN_KEYS if a in keys and b in keys), None)
        if pair is None:
            tried = ", ".join(f"{a}/{b}" for a, b in TRAIN_KEYS)
            raise JobError(
                f"{name} has no training arrays under the usual names ({tried}); keys found: "
                f"{found}; name them with --x KEY --y KEY"
            )
        x, y = pair
    else:
        x = _pick(keys, x, "--x", tuple(a for a, _ in TRAIN_KEYS), name)
        y = _pick(keys, y, "--y", tuple(b for _, b in TRAIN_KEYS), name)
        if x is None or y is None:
            missing = "--x" if x is None else "--y"
            raise JobError(
                f"{name}: cannot tell which array holds the training "
                f"{'features' if x is None else 'labels'}; keys found: {found}; name it with "
                f"{missing} KEY"
            )
    if x_test is None and y_test is None:
        pair = next(((a, b) for a, b in TEST_KEYS if a in keys and b in keys), None)
        if pair is None:
            lone = [k for pair in TEST_KEYS for k in pair if k in keys and k not in (x, y)]
            if lone:
                raise JobError(
                    f"{name} has {lone[0]!r} but not its partner (keys found: {found}); name the "
                    "test arrays with --x-test KEY --y-test KEY"
                )
            return x, y, None, None
        return x, y, pair[0], pair[1]
    x_test = _pick(keys, x_test, "--x-test", tuple(a for a, _ in TEST_KEYS), name)
    y_test = _pick(keys, y_test, "--y-test", tuple(b for _, b in TEST_KEYS), name)
    if x_test is None or y_test is None:
        missing = "--x-test" if x_test is None else "--y-test"
        raise JobError(
            f"{name}: cannot tell which array holds the test "
            f"{'features' if x_test is None else 'labels'}; keys found: {found}; name it with "
            f"{missing} KEY"
        )
    return x, y, x_test, y_test


def _looks_like(head: bytes) -> str:
    if head[:2] == _GZIP_MAGIC:
        return "; it is gzip-compressed: convert IDX files with --idx, gunzip anything else first"
    if len(head) >= 4 and head[:2] == b"\0\0" and head[2] in IDX_TYPES:
        return "; it looks like an IDX file: convert IDX files with --idx"
    if head.startswith(b"\x89HDF"):
        return "; it is an HDF5 file already"
    if head.startswith(b"\x93NUMPY"):
        return (
            "; it is a .npy file holding one array: save features and labels together with np.savez"
        )
    return ""


def read_npz(
    path: str,
    x: str | None = None,
    y: str | None = None,
    x_test: str | None = None,
    y_test: str | None = None,
) -> Arrays:
    """The arrays of an ``.npz`` file: training features/labels under ``x``/``y`` (default: the
    first of ``TRAIN_KEYS`` present), a test split under ``x_test``/``y_test`` (default: the first
    of ``TEST_KEYS`` present, else none). Pickled (object) arrays are refused."""
    _readable(path, "input")
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise JobError(f"cannot read {path!r} ({_reason(err)})") from None
    if not head.startswith(_ZIP_MAGIC):
        raise JobError(
            f"cannot read {path!r} as an .npz file (it is not a zip archive{_looks_like(head)})"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            chosen = _npz_keys(keys, name, x, y, x_test, y_test)
            arrays: list[np.ndarray | None] = []
            for key in chosen:
                if key is None:
                    arrays.append(None)
                    continue
                try:
                    array = npz[key]
                    if not isinstance(array, np.ndarray):  # a member that is not an .npy file
                        raise JobError(
                            f"cannot read {path!r} as an .npz file (corrupt or truncated: {key!r} "
                            "is not a numpy array)"
                        )
                    arrays.append(array)
                except ValueError as err:
                    if "allow_pickle" in str(err) or "pickle" in str(err).lower():
                        raise JobError(
                            f"{key} in {name} holds Python objects, not numbers; store a numeric "
                            "array"
                        ) from None
                    raise
    except JobError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise JobError(
            f"cannot read {path!r} as an .npz file (corrupt or truncated: {_reason(err)})"
        ) from None
    used = [k for k in chosen if k is not None]
    ignored = [k for k in keys if k not in used]
    source = (
        f"npz file {name} (arrays {', '.join(used)}"
        + (f"; ignored {', '.join(ignored)}" if ignored else "")
        + ")"
    )
    n0, n1, n2, n3 = (f"{k} in {name}" if k else "" for k in chosen)
    features, labels = arrays[0], arrays[1]
    assert features is not None and labels is not None  # chosen[0] and chosen[1] are keys
    return Arrays(features, labels, arrays[2], arrays[3], (n0, n1, n2, n3), source)


# ---- IDX -----------------------------------------------------------------------------------------


def read_idx(path: str) -> np.ndarray:
    """One IDX file (gzip-compressed or not) as a native-byte-order array of the shape its header
    gives."""
    _readable(path, "input")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise JobError(f"cannot read {path!r} ({_reason(err)})") from None
    packed = ""
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise JobError(
                f"cannot read {path!r}: corrupt or truncated gzip data ({_reason(err)})"
            ) from None
        packed = " (after gunzip)"
    if len(raw) < 4:
        raise JobError(
            f"{path!r} is not an IDX file: {len(raw)} bytes{packed}, shorter than the 4-byte header"
        )
    zero, kind, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\0\0" or kind not in IDX_TYPES:
        shown = " ".join(f"{b:02x}" for b in raw[:4])
        raise JobError(
            f"{path!r} is not an IDX file{packed}: it starts with {shown}, but an IDX file starts "
            "with 00 00, a type byte (08 uint8, 09 int8, 0b int16, 0c int32, 0d float32, 0e "
            "float64) and the number of dimensions"
        )
    if ndim < 1:
        raise JobError(
            f"{path!r}: IDX header gives 0 dimensions; it needs at least one (the samples)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise JobError(
            f"{path!r} is truncated{packed}: {len(raw)} bytes, shorter than its {header}-byte "
            f"header ({ndim} dimensions)"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[kind])
    expected = math.prod(dims) * dtype.itemsize
    held = len(raw) - header
    if held != expected:
        what = "is truncated" if held < expected else f"has {held - expected} bytes after its data"
        raise JobError(
            f"{path!r} {what}{packed}: its header says {' × '.join(map(str, dims))} {dtype.name} "
            f"values = {expected} bytes of data, the file holds {held}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a native, writable copy


def idx_arrays(
    train_images: str,
    train_labels: str,
    test_images: str | None = None,
    test_labels: str | None = None,
) -> Arrays:
    """Training (and optionally test) images and labels from IDX files."""
    if (test_images is None) != (test_labels is None):
        raise JobError("give the test images and the test labels together (or neither)")
    for path in (train_images, train_labels, test_images, test_labels):  # all missing files first
        if path is not None:
            _readable(path, "input")
    features, labels = read_idx(train_images), read_idx(train_labels)
    test_features = read_idx(test_images) if test_images is not None else None
    test_labels_ = read_idx(test_labels) if test_labels is not None else None
    n0, n1, n2, n3 = (
        os.path.basename(p) if p else ""
        for p in (train_images, train_labels, test_images, test_labels)
    )
    source = "IDX files " + ", ".join(n for n in (n0, n1, n2, n3) if n)
    return Arrays(features, labels, test_features, test_labels_, (n0, n1, n2, n3), source)


# ---- checks and scaling --------------------------------------------------------------------------


def _check_numeric(array: np.ndarray, name: str) -> None:
    if array.dtype.kind not in "iufb":
        raise JobError(f"{name} must hold numbers (integers or floats), got type {array.dtype}")


def _check_finite(array: np.ndarray, name: str) -> None:
    if array.dtype.kind != "f":
        return
    row_bytes = max(1, array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64)))
    step = max(1, 16 * CHUNK_BYTES // row_bytes)  # bounded temporary memory
    for start in range(0, len(array), step):
        part = array[start : start + step]
        finite = np.isfinite(part)
        if not finite.all():
            bad = part[~finite].flat[0]
            sample = start + int(np.flatnonzero(~finite.reshape(len(part), -1).all(axis=1))[0])
            raise JobError(
                f"{name} holds NaN or infinite values (e.g. {bad}, first at sample {sample}); "
                "every value must be finite"
            )


def _check_labels(labels: np.ndarray, name: str, samples: int, features_name: str) -> None:
    if labels.ndim != 1:
        hint = ""
        if labels.ndim == 2 and labels.shape[1] == 1:
            hint = " (flatten it: y.reshape(-1))"
        elif labels.ndim == 2:
            hint = " (one-hot? store class ids: y.argmax(axis=1))"
        raise JobError(f"{name} must be 1-D (samples,), got shape {_shape(labels.shape)}{hint}")
    if labels.shape[0] != samples:
        raise JobError(
            f"{name} has {labels.shape[0]} labels but {features_name} has {samples} samples; "
            "they must match"
        )
    if labels.dtype.kind == "u" and labels.size and int(labels.max()) > np.iinfo(np.int64).max:
        raise JobError(f"{name} holds labels too large for int64 (e.g. {labels.max()})")


def check_arrays(arrays: Arrays) -> None:
    """Raise ``JobError`` unless the arrays make a valid data set (see the module docstring)."""
    x_name, y_name, xt_name, yt_name = arrays.names
    x, y = arrays.features, arrays.labels
    for array, name in (
        (x, x_name),
        (y, y_name),
        (arrays.test_features, xt_name),
        (arrays.test_labels, yt_name),
    ):
        if array is not None:
            _check_numeric(array, name)
    if x.ndim < 2:
        raise JobError(
            f"{x_name} must have one row per sample, (samples, ...) such as (N, p) vectors or "
            f"(N, 28, 28) images, got shape {_shape(x.shape)}"
            + (" (one feature per sample? reshape it to (N, 1))" if x.ndim == 1 else "")
        )
    if x.shape[0] < 1:
        raise JobError(f"{x_name} holds no samples (shape {_shape(x.shape)})")
    if min(x.shape[1:]) < 1:
        raise JobError(f"{x_name} has empty samples (shape {_shape(x.shape)})")
    _check_labels(y, y_name, x.shape[0], x_name)
    if arrays.has_test:
        xt, yt = arrays.test_features, arrays.test_labels
        assert xt is not None and yt is not None
        if xt.shape[1:] != x.shape[1:]:
            raise JobError(
                f"{xt_name} has samples of shape {_shape(xt.shape[1:])}, the training samples "
                f"({x_name}) {_shape(x.shape[1:])}; they must be the same"
            )
        if xt.shape[0] < 1:
            raise JobError(f"{xt_name} holds no samples (shape {_shape(xt.shape)})")
        _check_labels(yt, yt_name, xt.shape[0], xt_name)
    for array, name in (
        (x, x_name),
        (y, y_name),
        (arrays.test_features, xt_name),
        (arrays.test_labels, yt_name),
    ):
        if array is not None:
            _check_finite(array, name)


def scale_pixels(arrays: Arrays) -> Arrays:
    """Features divided by 255 and stored as float32 (pixels 0..255 → [0, 1]); integer pixels
    only."""
    features = _scaled_pixels(arrays.features, arrays.names[0])
    test = arrays.test_features
    test_features = _scaled_pixels(test, arrays.names[2]) if test is not None else None
    return replace(arrays, features=features, test_features=test_features, scaled=True)


def _scaled_pixels(array: np.ndarray, name: str) -> np.ndarray:
    _check_numeric(array, name)
    if array.dtype.kind not in "uib":
        raise JobError(
            f"--scale divides pixels 0..255 by 255, but {name} holds {array.dtype} values "
            "(already scaled?); leave out --scale"
        )
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise JobError(
            f"--scale divides pixels 0..255 by 255, but {name} holds values in "
            f"{int(array.min())}..{int(array.max())}; leave out --scale"
        )
    return array.astype(np.float32) / np.float32(255.0)


# ---- writing -------------------------------------------------------------------------------------


def check_output(path: str, force: bool = False) -> None:
    """Raise ``JobError`` if ``path`` cannot be written: it exists (without ``force``), is a folder,
    or its folder is missing or not writable."""
    if os.path.isdir(path):
        raise JobError(
            f"output {path!r} is a folder; give a file name such as "
            f"{os.path.join(path, 'data.h5')!r}"
        )
    if os.path.lexists(path) and not force:
        raise JobError(f"output {path!r} exists; pass --force to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise JobError(f"output {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JobError(f"output {path!r}: folder {folder!r} is not writable")


def _chunk_rows(samples: int, sample_bytes: int) -> int:
    return min(samples, max(1, CHUNK_BYTES // max(1, sample_bytes)))


def _write(f: h5py.File, name: str, data: np.ndarray, description: str) -> None:
    rows = _chunk_rows(
        data.shape[0], int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize
    )
    dset = f.create_dataset(name, data=data, chunks=(rows, *data.shape[1:]))
    dset.attrs["description"] = description


def _labels_out(arrays: Arrays) -> tuple[np.ndarray, np.ndarray | None]:
    floats = any(a is not None and a.dtype.kind == "f" for a in (arrays.labels, arrays.test_labels))
    dtype = np.float64 if floats else np.int64
    test = (
        None
        if arrays.test_labels is None
        else np.ascontiguousarray(arrays.test_labels, dtype=dtype)
    )
    return np.ascontiguousarray(arrays.labels, dtype=dtype), test


def _classes(labels: np.ndarray | None) -> tuple[int, ...]:
    if labels is None or labels.dtype.kind != "i":
        return ()
    return tuple(int(c) for c in np.unique(labels))


def _feature_words(dtype: np.dtype, scaled: bool) -> str:
    if scaled:
        return "float32, pixels scaled to [0, 1] (divided by 255)"
    if dtype == np.uint8:
        return "uint8 (pixels 0..255 as stored; --scale stores them as float32 in [0, 1])"
    return str(dtype)


def _label_words(labels: np.ndarray) -> str:
    if labels.dtype.kind == "i":
        classes = _classes(labels)
        return f"int64 class ids, {len(classes)} distinct ({classes[0]}..{classes[-1]})"
    return f"float64 targets in [{labels.min():g}, {labels.max():g}]"


def write_dataset(path: str, arrays: Arrays, force: bool = False) -> Summary:
    """Check ``arrays`` and write them to ``path`` in the layout of the module docstring; returns
    what was written. Atomic: a temporary file in the same folder, renamed onto ``path``."""
    check_arrays(arrays)
    check_output(path, force)
    x = _native(arrays.features)
    xt = None if arrays.test_features is None else _native(arrays.test_features)
    if xt is not None and xt.dtype != x.dtype:
        common = np.result_type(x.dtype, xt.dtype)
        x, xt = x.astype(common, copy=False), xt.astype(common, copy=False)
    y, yt = _labels_out(arrays)
    x_name, y_name, xt_name, yt_name = arrays.names
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise JobError(
            f"output {path!r}: cannot create a file in {folder!r} ({_reason(err)})"
        ) from None
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 → what a plainly created file would get
        with h5py.File(tmp, "w") as f:
            f.attrs["source"] = arrays.source
            f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
            f.attrs["converter"] = CONVERTER
            words = _feature_words(x.dtype, arrays.scaled)
            _write(
                f,
                "features",
                x,
                f"training samples from {x_name}: {x.shape[0]} of shape "
                f"{_shape(x.shape[1:])}, {words}",
            )
            _write(
                f, "labels", y, f"labels of the training samples from {y_name}: {_label_words(y)}"
            )
            if xt is not None and yt is not None:
                _write(
                    f,
                    "test_features",
                    xt,
                    f"test samples from {xt_name}: {xt.shape[0]} of shape "
                    f"{_shape(xt.shape[1:])}, {words}",
                )
                _write(
                    f,
                    "test_labels",
                    yt,
                    f"labels of the test samples from {yt_name}: {_label_words(yt)}",
                )
        os.replace(tmp, path)
    except OSError as err:
        raise JobError(
            f"output {path!r}: writing failed ({_reason(err)}); nothing was written"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    both = y if yt is None else np.concatenate([y, yt])
    return Summary(
        path,
        int(x.shape[0]),
        0 if xt is None else int(xt.shape[0]),
        tuple(int(s) for s in x.shape[1:]),
        str(x.dtype),
        str(y.dtype),
        _classes(y),
        _classes(yt),
        (float(both.min()), float(both.max())),
        bool(np.all(both == np.round(both))),
        arrays.scaled,
    )
