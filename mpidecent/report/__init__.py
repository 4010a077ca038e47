"""``mpidecent report RUN.h5 [RUN2.h5 ...]``: compare runs from their results files, query them, plot them.

Pure (h5py, numpy, matplotlib; never mpi4py): runs serially anywhere, on finished, crashed or still
running runs. ``mpidecent.io.reader`` reads a file into a ``Run``, ``tables`` makes the comparison table
and the budget/target queries (text, CSV, JSON), ``plots`` writes the PNG figures. ``main`` is the command
(its flags are parsed by ``mpidecent.cli.report``).
"""

from __future__ import annotations

import argparse
import math
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
                raise ReportError(f"--budget {item!r}: expected a number of bits such as 1e6 (several: "
                                  "repeat --budget or separate them with commas)") from None
            if not math.isfinite(value) or value < 0:
                raise ReportError(f"--budget {item!r}: a bit budget must be a finite number ≥ 0")
            out.append(value)
    return out


def _check_flags(args: argparse.Namespace) -> None:
    bandwidth, latency, target = getattr(args, "bandwidth", None), getattr(args, "latency", None), \
        getattr(args, "target", None)
    if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ReportError(f"--bandwidth must be a finite number of bits per second > 0, got {bandwidth:g}")
    if latency is not None and not (math.isfinite(latency) and latency >= 0):
        raise ReportError(f"--latency must be a finite number of seconds ≥ 0, got {latency:g}")
    if target is not None and not math.isfinite(target):
        raise ReportError(f"--target must be a finite loss, got {target:g}")
    accuracy = getattr(args, "target_accuracy", None)
    if accuracy is not None and not (math.isfinite(accuracy) and 0 < accuracy <= 1):
        percent = math.isfinite(accuracy) and 1 < accuracy <= 100
        hint = f" (for {accuracy:g}% give {accuracy / 100:g})" if percent else ""
        raise ReportError(f"--target-accuracy must be a fraction 0 < A ≤ 1, got {accuracy:g}{hint}")
    if getattr(args, "csv", False) and getattr(args, "json", False):
        raise ReportError("--csv and --json: give one of them")


def main(args: argparse.Namespace) -> int:
    """Run the report for the parsed arguments of ``mpidecent report ...`` (``mpidecent.cli.report``).
    Returns the exit status: 0, or 2 with one line on stderr for a file or flag it cannot use. Partial
    runs are reported (and marked), not refused."""
    try:
        _check_flags(args)
        budgets = _budgets(getattr(args, "budget", None))
        runs = read_runs(list(args.files), getattr(args, "bandwidth", None), getattr(args, "latency", None),
                         getattr(args, "shared_link", None))
        from mpidecent.report import tables

        target, target_accuracy = getattr(args, "target", None), getattr(args, "target_accuracy", None)
        machine = getattr(args, "csv", False) or getattr(args, "json", False)
        if getattr(args, "csv", False):
            text = tables.render_csv(runs, budgets, target, target_accuracy)
        elif getattr(args, "json", False):
            text = tables.render_json(runs, budgets, target, target_accuracy)
        else:
            text = tables.render_text(runs, budgets, target, target_accuracy)
        figures: list[str] = []
        if getattr(args, "plot", None):
            from mpidecent.report.plots import write_plots

            try:
                figures = write_plots(runs, args.plot)
            except OSError as err:
                raise ReportError(f"--plot {args.plot!r}: cannot write figures there ({err.strerror or err})") from None
    except ReportError as err:
        sys.stderr.write(f"mpidecent: error: {err}\n")
        return EXIT_BAD_INPUT
    sys.stdout.write(text)
    if figures:
        listing = [*([] if machine else [""]), f"figures ({len(figures)}) in {args.plot}:", *(f"  {f}" for f in figures)]
        (sys.stderr if machine else sys.stdout).write("\n".join(listing) + "\n")
    sys.stdout.flush()
    return EXIT_OK
