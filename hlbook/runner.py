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

from hlbook.errors import StartupError

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
    """Run ``main`` under Trio; SIGINT/SIGTERM cancel it and the exit status is 0.

    A :class:`~hlbook.errors.StartupError` (e.g. a port in use) is one line on
    stderr and exit status 1, not a traceback.
    """
    try:
        return trio.run(_until_signal, main)
    except (StartupError, BaseExceptionGroup) as exc:
        errors = _startup_errors(exc)
        if errors is None:
            raise
        for error in errors:
            log.error("%s", error)
        return 1


def _startup_errors(exc: BaseException) -> list[StartupError] | None:
    """The StartupErrors ``exc`` consists of (through nurseries' groups), or None."""
    if isinstance(exc, StartupError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        found: list[StartupError] = []
        for inner in exc.exceptions:
            errors = _startup_errors(inner)
            if errors is None:
                return None
            found += errors
        return found
    return None


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """The ``--log-level`` flag every subcommand has."""
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: %(default)s)",
    )
