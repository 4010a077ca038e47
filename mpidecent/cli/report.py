"""``mpidecent report RUN.h5 ...``: the command's flags; the report itself is ``mpidecent.report``
(no MPI)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    report = sub.add_parser(
        "report",
        help="compare runs from their results files: table, queries, plots",
        description="Compare runs from their HDF5 results files (no MPI needed): "
        "mpidecent report runs/quickstart.h5 runs/sgp.h5 --plot plots/",
    )
    report.add_argument(
        "files",
        nargs="+",
        metavar="RUN.h5",
        help="results files (partial runs are marked), folders (their *.h5 files) or quoted "
        "patterns such as 'runs/sweep/*.h5' (checkpoints *.ckpt.h5 are skipped)",
    )
    report.add_argument("--plot", metavar="DIR", help="write PNG figures into this folder")
    report.add_argument(
        "--budget",
        action="append",
        metavar="BITS",
        help="loss of each run when the network had sent BITS bits in total (repeatable, or "
        "comma-separated)",
    )
    report.add_argument(
        "--target",
        action="append",
        metavar="LOSS|acc=A",
        help="first logged step, bits and time at which avg-model loss <= LOSS; acc=A: at which "
        "avg-model accuracy >= A, the same as --target-accuracy A (repeatable: one of each)",
    )
    report.add_argument(
        "--target-accuracy",
        type=float,
        metavar="A",
        help="first logged step, bits and time at which avg-model accuracy >= A (a fraction, "
        "0 < A <= 1; test accuracy, or training accuracy for runs without a test set)",
    )
    report.add_argument(
        "--group-by",
        action="append",
        metavar="KEY",
        help="aggregate runs that differ only in this job key (section.key, e.g. run.seed; "
        "repeatable): mean and min–max over them in the tables and figures",
    )
    report.add_argument(
        "--series",
        nargs="?",
        const="-",
        metavar="FILE.csv",
        help="write every run's logged series as a tidy CSV (one row per run × logged step, with "
        "the job's keys as columns) to FILE.csv; without FILE: to stdout, instead of the table",
    )
    fmt = report.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="machine-readable: CSV, one row per run")
    fmt.add_argument("--json", action="store_true", help="machine-readable: JSON")
    report.add_argument(
        "--bandwidth",
        type=float,
        metavar="BPS",
        help="link bandwidth in bits/s for the modelled time (default: the job's [link])",
    )
    report.add_argument(
        "--latency",
        type=float,
        metavar="S",
        help="per-message latency in seconds for the modelled time (default: the job's [link])",
    )
    report.add_argument(
        "--shared-link",
        action="store_const",
        const=True,
        default=None,
        help="model one link shared by all ranks (every rank's bytes queue on it together), as "
        "nodes behind one slow uplink or mpidecent bench's emulated link (default: the "
        "job's [link] shared, else one link per rank)",
    )


def main(args: argparse.Namespace) -> int:
    """Hand the parsed flags to ``mpidecent.report.main`` (imported here: other commands need not
    load it)."""
    from mpidecent.report import main as report

    return report(args)
