"""The ``hlbook`` command line: ``serve``, ``simulate`` and ``demo``."""

import argparse
from collections.abc import Sequence

from hlbook.runner import configure_logging

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from hlbook.sim.cli import add_simulate_command

    parser = argparse.ArgumentParser(
        prog="hlbook",
        description=(
            "Exact per-order Hyperliquid order books from a node's files, "
            "served over WebSocket in Hyperliquid's API format."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_simulate_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hlbook`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    status: int = args.run(args)
    return status
