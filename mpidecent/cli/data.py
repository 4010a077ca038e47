"""``mpidecent data``: convert a ``.npz`` file, or MNIST-style IDX files, into the HDF5 layout of
the ``hdf5`` data kind (one process, no MPI); the conversion itself is ``mpidecent.io.convert``."""

from __future__ import annotations

import argparse
import os

from mpidecent.cli.common import fail
from mpidecent.errors import EXIT_OK, JobError
from mpidecent.params import toml_value

USAGE = (
    "%(prog)s FILE.npz OUT.h5 [--x KEY] [--y KEY] [--x-test KEY] [--y-test KEY] [--scale] "
    "[--force]\n       %(prog)s --idx TRAIN_IMAGES TRAIN_LABELS [TEST_IMAGES TEST_LABELS] OUT.h5 "
    "[--scale] [--force]"
)

_NPZ_OPTIONS = (("x", "--x"), ("y", "--y"), ("x_test", "--x-test"), ("y_test", "--y-test"))


def add_parser(sub) -> None:
    data = sub.add_parser(
        "data",
        usage=USAGE,
        help="convert a .npz file or MNIST-style IDX files into an HDF5 data file",
        description="Convert a .npz file, or MNIST-style IDX files (gzipped or not), into the HDF5 "
        "layout the hdf5 data kind reads: /features (N, ...), /labels (N,), and "
        "/test_features, /test_labels when a test split is given. Prints the [data] table to "
        "paste into a job file.",
    )
    data.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="FILE.npz OUT.h5, or with --idx: TRAIN_IMAGES TRAIN_LABELS [TEST_IMAGES TEST_LABELS] "
        "OUT.h5",
    )
    data.add_argument(
        "--idx",
        action="store_true",
        help="the inputs are IDX files (MNIST / Fashion-MNIST format, optionally .gz)",
    )
    data.add_argument(
        "--x",
        metavar="KEY",
        help="npz array of the training features (default: x, x_train, X, X_train or features)",
    )
    data.add_argument(
        "--y",
        metavar="KEY",
        help="npz array of the training labels (default: y, y_train or labels)",
    )
    data.add_argument(
        "--x-test",
        metavar="KEY",
        help="npz array of the test features (default: x_test, X_test or "
        "test_features when present)",
    )
    data.add_argument(
        "--y-test",
        metavar="KEY",
        help="npz array of the test labels (default: y_test or test_labels when present)",
    )
    data.add_argument(
        "--scale",
        action="store_true",
        help="divide the features (pixels 0..255) by 255 and store them as float32 in [0, 1]; "
        "models train much better on [0, 1] (default: keep them as they are, e.g. uint8)",
    )
    data.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")


def _task(summary) -> tuple[str, str]:
    """(suggested task, note) from what the labels hold."""
    low, high = summary.label_range
    if not summary.integral:
        return "regression", "labels are real numbers"
    if low < 0:
        return "regression", (
            "labels include negative values: classification needs class ids 0..C−1, so relabel "
            "them for a classifier"
        )
    if high < 1:
        return "multiclass", "labels hold only class 0: a classifier needs at least two classes"
    if high == 1:
        return "multiclass", 'labels are 0/1: task = "binary" suits a one-logit model (logistic)'
    return "multiclass", ""


def _classes_text(summary) -> str:
    if summary.labels_dtype != "int64":
        low, high = summary.label_range
        kind = "whole-number" if summary.integral else "real-valued"
        return f"labels float64, {kind} targets in [{low:g}, {high:g}]"
    classes = sorted(set(summary.train_classes) | set(summary.test_classes))
    text = (
        f"labels int64, {len(summary.train_classes)} classes in the training set "
        f"({summary.train_classes[0]}..{summary.train_classes[-1]})"
    )
    if summary.test:
        only = sorted(set(summary.test_classes) - set(summary.train_classes))
        text += f", {len(summary.test_classes)} in the test set"
        if only:
            text += (
                f" (test classes missing from the training set: {', '.join(map(str, only[:10]))}"
                f"{', …' if len(only) > 10 else ''})"
            )
    if len(classes) != classes[-1] - classes[0] + 1:
        text += "; some ids in between have no samples"
    return text


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _report(summary, source: str) -> str:
    if len(summary.sample_shape) == 1:
        shape = f"each a vector of {summary.sample_shape[0]} value{_s(summary.sample_shape[0])}"
    else:
        shape = "each of shape " + "×".join(map(str, summary.sample_shape))
    test = (
        f" and {summary.test} test sample{_s(summary.test)}"
        if summary.test
        else " (no test set: hold out part with test_fraction)"
    )
    dtype = summary.dtype
    if summary.scaled:
        dtype += " (scaled to [0, 1])"
    elif summary.dtype == "uint8":
        dtype += (
            " (stored as 0..255; --scale would store float32 in [0, 1], which models train much "
            "better on)"
        )
    task, note = _task(summary)
    lines = [
        f"wrote {summary.path} from {source}: {summary.train} training "
        f"sample{_s(summary.train)}{test}, {shape}, "
        f"{dtype}; {_classes_text(summary)}." + (f" Note: {note}." if note else ""),
        "",
        "Paste into the job file (a relative path is read from the job file's folder):",
        "",
        "[data]",
        'name = "hdf5"',
        f"path = {toml_value(summary.path)}",
    ]
    if summary.test:
        lines += ['test_features_dataset = "test_features"', 'test_labels_dataset = "test_labels"']
    lines.append(f"task = {toml_value(task)}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from mpidecent.io.convert import check_output, idx_arrays, read_npz, scale_pixels, write_dataset

    paths = list(args.paths)
    try:
        if args.idx:
            given = [opt for key, opt in _NPZ_OPTIONS if getattr(args, key) is not None]
            if given:
                raise JobError(
                    f"{', '.join(given)} name arrays of an .npz file; they do not apply to --idx"
                )
            if len(paths) not in (3, 5):
                raise JobError(
                    f"--idx takes TRAIN_IMAGES TRAIN_LABELS [TEST_IMAGES TEST_LABELS] OUT.h5, got "
                    f"{len(paths)} path(s) (see mpidecent data --help)"
                )
        elif len(paths) != 2:
            hint = "; IDX files need --idx" if len(paths) in (3, 5) else ""
            raise JobError(
                f"give FILE.npz OUT.h5, got {len(paths)} path(s){hint} (see mpidecent data --help)"
            )
        out, inputs = paths[-1], paths[:-1]
        for path in inputs:
            if not os.path.exists(path):
                raise JobError(f"input: no such file {path!r}")
        check_output(out, args.force)
        if args.idx:
            arrays = idx_arrays(*inputs)
        else:
            arrays = read_npz(inputs[0], args.x, args.y, args.x_test, args.y_test)
        if args.scale:
            arrays = scale_pixels(arrays)
        summary = write_dataset(out, arrays, args.force)
    except JobError as err:
        return fail(str(err))
    print(_report(summary, arrays.source))
    return EXIT_OK
