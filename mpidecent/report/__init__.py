"""``mpidecent report RUN.h5 [RUN2.h5 ...]``: compare runs from their results files, query them,
plot them.

Pure (h5py, numpy, matplotlib; never mpi4py): runs serially anywhere, on finished, crashed or still
running runs. ``mpidecent.io.reader`` reads a file into a ``Run``, ``tables`` makes the comparison
table and the budget/target queries (text, CSV, JSON), ``plots`` writes the PNG figures. ``main`` is
the command (its flags are parsed by ``mpidecent.cli.report``).
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
from collections.abc import Sequence

from mpidecent.errors import EXIT_BAD_INPUT, EXIT_OK
from mpidecent.io.reader import ReportError, Run, read_run, read_runs

__all__ = ["ReportError", "Run", "main", "read_run", "read_runs"]


def _budgets(raw: Sequence[str] | None) -> list[float]:
    out: list[float] = []
    for item in raw or ():
        for part in str(item).split(","):
            try:
                value = float(part)
            except ValueError:
                raise ReportError(
                    f"--budget {item!r}: expected a number of bits such as 1e6 (several: "
                    "repeat --budget or separate them with commas)"
                ) from None
            if not math.isfinite(value) or value < 0:
                raise ReportError(f"--budget {item!r}: a bit budget must be a finite number ≥ 0")
            out.append(value)
    return out


CHECKPOINT_SUFFIX = (
    ".ckpt.h5"  # io/checkpoint.py: ``runs/x.h5`` → ``runs/x.ckpt.h5``; never a results file
)


def _results_files(paths: Sequence[str]) -> list[str]:
    """The *.h5 files among ``paths`` that are not checkpoints, sorted."""
    return sorted(
        p
        for p in paths
        if p.endswith(".h5") and not p.endswith(CHECKPOINT_SUFFIX) and os.path.isfile(p)
    )


def expand_files(items: Sequence[str]) -> list[str]:
    """The results files the report's arguments name, in order: a file as given; a folder: its *.h5
    files (sorted, not recursive); a pattern with * ? or [ ] that names no existing file (quoted, so
    the shell left it): its matching *.h5 files (sorted, ``**`` recursive). Checkpoints
    (``*.ckpt.h5``) are skipped. A folder or pattern without results files is a ``ReportError``."""
    out: list[str] = []
    for item in items:
        item = str(item)
        if os.path.isdir(item):
            found = _results_files(glob.glob(os.path.join(glob.escape(item), "*.h5")))
            if not found:
                raise ReportError(
                    f"{item}: no results files (*.h5, checkpoints *{CHECKPOINT_SUFFIX} aside) in "
                    "this folder"
                )
        elif glob.has_magic(item) and not os.path.exists(item):
            found = _results_files(glob.glob(os.path.expanduser(item), recursive=True))
            if not found:
                raise ReportError(
                    f"{item}: no results file (*.h5, checkpoints *{CHECKPOINT_SUFFIX} aside) "
                    "matches this pattern"
                )
        else:
            found = [item]
        out += found
    return out


def parse_targets(raw: Sequence[object] | None) -> tuple[float | None, float | None]:
    """``--target`` values → (loss target, accuracy target): ``0.35`` or ``loss=0.35`` is a loss,
    ``acc=0.9`` (or ``accuracy=0.9``) an accuracy, the same as ``--target-accuracy 0.9``. One of
    each at most."""
    found: dict[str, float] = {}
    for item in raw or ():
        text = str(item).strip()
        given, _, number = text.rpartition("=")
        kind = {"": "loss", "loss": "loss", "acc": "accuracy", "accuracy": "accuracy"}.get(
            given.strip().lower()
        )
        if kind is None:
            raise ReportError(
                f"--target {text!r}: expected a loss (0.35 or loss=0.35) or an accuracy (acc=0.9)"
            )
        try:
            value = float(number)
        except ValueError:
            raise ReportError(
                f"--target {text!r}: expected a number after {'the =' if '=' in text else 'it'}, "
                "e.g. --target 0.35 or --target acc=0.9"
            ) from None
        if kind in found and found[kind] != value:
            raise ReportError(
                f"--target: two {kind} targets ({found[kind]:g} and {value:g}); give one"
            )
        found[kind] = value
    return found.get("loss"), found.get("accuracy")


def _targets(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """(loss target, accuracy target) from ``--target`` (repeatable) and ``--target-accuracy``."""
    raw = getattr(args, "target", None)
    loss, accuracy = parse_targets(
        raw if isinstance(raw, (list, tuple)) else ([] if raw is None else [raw])
    )
    flag = getattr(args, "target_accuracy", None)
    if flag is not None and accuracy is not None and flag != accuracy:
        raise ReportError(
            f"--target acc={accuracy:g} and --target-accuracy {flag:g}: give one accuracy target"
        )
    return loss, accuracy if accuracy is not None else flag


def _check_flags(args: argparse.Namespace) -> None:
    bandwidth, latency = getattr(args, "bandwidth", None), getattr(args, "latency", None)
    target, accuracy = _targets(args)
    if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ReportError(
            f"--bandwidth must be a finite number of bits per second > 0, got {bandwidth:g}"
        )
    if latency is not None and not (math.isfinite(latency) and latency >= 0):
        raise ReportError(f"--latency must be a finite number of seconds ≥ 0, got {latency:g}")
    if target is not None and not math.isfinite(target):
        raise ReportError(f"--target must be a finite loss, got {target:g}")
    if accuracy is not None and not (math.isfinite(accuracy) and 0 < accuracy <= 1):
        percent = math.isfinite(accuracy) and 1 < accuracy <= 100
        hint = f" (for {accuracy:g}% give {accuracy / 100:g})" if percent else ""
        raise ReportError(f"--target-accuracy must be a fraction 0 < A ≤ 1, got {accuracy:g}{hint}")
    if getattr(args, "csv", False) and getattr(args, "json", False):
        raise ReportError("--csv and --json: give one of them")


def _group_keys(raw: Sequence[str] | None) -> list[str]:
    keys: list[str] = []
    for item in raw or ():
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if part.count(".") != 1 or not all(part.split(".")):
                raise ReportError(
                    f"--group-by {part!r}: expected a job key as section.key, e.g. run.seed"
                )
            keys.append(part)
    return keys


def _write_series(text: str, target: str) -> None:
    if target == "-":
        return
    try:
        with open(target, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as err:
        raise ReportError(f"--series {target!r}: cannot write it ({err.strerror or err})") from None


def main(args: argparse.Namespace) -> int:
    """Run the report for the parsed arguments of ``mpidecent report ...``
    (``mpidecent.cli.report``). Returns the exit status: 0, or 2 with one line on stderr for a file
    or flag it cannot use. Partial runs with at least one log row are reported (and marked); a file
    with none is refused."""
    try:
        _check_flags(args)
        budgets = _budgets(getattr(args, "budget", None))
        target, target_accuracy = _targets(args)
        group_by = _group_keys(getattr(args, "group_by", None))
        files = expand_files(list(args.files))
        runs = read_runs(
            files,
            getattr(args, "bandwidth", None),
            getattr(args, "latency", None),
            getattr(args, "shared_link", None),
            probe=True,
        )
        for run in runs:
            if run.rows == 0:
                raise ReportError(
                    f"{run.path}: a results file with no log rows (status {run.status!r}): the run "
                    "ended before logging step 0, so there is nothing to report; run it again"
                )
        from mpidecent.report import tables

        groups = tables.group_runs(runs, group_by) if group_by else None
        series_to = getattr(args, "series", None)
        machine = getattr(args, "csv", False) or getattr(args, "json", False) or series_to == "-"
        text = ""
        if series_to is not None:
            series_text = tables.render_series_csv(runs, groups)
            _write_series(series_text, series_to)
            if series_to == "-":
                text = series_text
        if series_to != "-":
            if getattr(args, "csv", False):
                text = tables.render_csv(runs, budgets, target, target_accuracy, groups)
            elif getattr(args, "json", False):
                text = tables.render_json(runs, budgets, target, target_accuracy, groups)
            else:
                text = tables.render_text(runs, budgets, target, target_accuracy, groups)
        figures: list[str] = []
        if getattr(args, "plot", None):
            from mpidecent.report.plots import write_plots

            try:
                figures = write_plots(runs, args.plot, groups)
            except OSError as err:
                raise ReportError(
                    f"--plot {args.plot!r}: cannot write figures there ({err.strerror or err})"
                ) from None
    except ReportError as err:
        sys.stderr.write(f"mpidecent: error: {err}\n")
        return EXIT_BAD_INPUT
    sys.stdout.write(text)
    notes: list[str] = []
    if series_to not in (None, "-"):
        rows = sum(r.rows for r in runs)
        notes.append(
            f"series: {rows} rows ({len(runs)} run{'s' if len(runs) != 1 else ''} × logged steps) "
            f"in {series_to}"
        )
    if figures:
        notes += [f"figures ({len(figures)}) in {args.plot}:", *(f"  {f}" for f in figures)]
    elif getattr(args, "plot", None):
        notes.append(f"figures (0) in {args.plot}: no run has data to draw")
    if notes:
        (sys.stderr if machine else sys.stdout).write(
            "\n".join([*([] if machine else [""]), *notes]) + "\n"
        )
    sys.stdout.flush()
    return EXIT_OK
