"""Command line: ``mpidecent run | report | topology | simulate-gossip | bench | info`` (thin:
parse, validate, hand over). One module per command; this one parses and dispatches.

``run`` is started on every rank by ``mpirun``/``srun``; the other commands run in one process.

Exit statuses (``mpidecent.errors``): 0 success, 1 internal error, 2 bad input (job file, CLI flag,
existing results file, unusable checkpoint), 3 the run diverged (results so far are kept), 4 stopped
by SIGUSR1/SIGTERM after writing a checkpoint (continue with --resume).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

import mpidecent
from mpidecent.errors import EXIT_BAD_INPUT

# subcommand → module of this package (its add_parser and main)
COMMANDS = {
    "run": "run",
    "topology": "topology",
    "report": "report",
    "simulate-gossip": "simulate_gossip",
    "info": "info",
    "data": "data",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, only on rank 0, with status 2."""

    def error(self, message: str) -> NoReturn:
        from mpidecent.comm.world import launcher_rank

        if launcher_rank() in (None, 0):
            command = " ".join(
                self.prog.split()[1:2]
            )  # "mpidecent run" → run; the top level has none
            sys.stderr.write(
                f"mpidecent: error: {message} (see {' '.join(['mpidecent', command]).strip()} "
                "--help)\n"
            )
        raise SystemExit(EXIT_BAD_INPUT)


def _command(name: str):
    return importlib.import_module(f"mpidecent.cli.{COMMANDS[name]}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mpidecent", description="Decentralized, communication-compressed learning on MPI."
    )
    parser.add_argument("--version", action="version", version=f"mpidecent {mpidecent.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in ("run", "topology", "report", "simulate-gossip"):
        _command(name).add_parser(sub)
    from mpidecent.bench import add_parser as add_bench

    add_bench(sub)
    _command("info").add_parser(sub)
    _command("data").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "bench":
        from mpidecent.bench import main as bench

        return bench(args)
    return _command(args.command).main(args)
