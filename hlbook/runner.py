"""Running hlbook's commands under Trio with clean Ctrl-C / SIGTERM handling.

Only the command line uses this: library code never calls ``trio.run`` or
installs signal handlers.
"""

import argparse
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import trio

__all__ = ["add_log_level", "configure_logging", "run"]

log = logging.getLogger("hlbook")


def configure_logging(level: str) -> None:
    """One line per event on stderr."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


async def _until_signal(main: Callable[[], Awaitable[int | None]]) -> int:
    result: int | None = 0
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch_signals)
        result = await main()
        nursery.cancel_scope.cancel()
    return result or 0


def run(main: Callable[[], Awaitable[int | None]]) -> int:
    """Run ``main`` under Trio; SIGINT/SIGTERM cancel it and the exit status is 0."""
    return trio.run(_until_signal, main)


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """The ``--log-level`` flag every subcommand has."""
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: %(default)s)",
    )
