"""Running hlbook's commands under Trio with clean Ctrl-C / SIGTERM handling, and logging.

Only the command line uses this: library code never calls ``trio.run``,
installs signal handlers or configures logging.
"""

import argparse
import gc
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

import attrs
import trio

from hlbook.config import LOGGING, options, setting
from hlbook.errors import StartupError

if TYPE_CHECKING:
    from hlbook.app import ServerHandle

__all__ = [
    "JsonFormatter",
    "LogSettings",
    "add_log_level",
    "configure_logging",
    "freeze_gc_when_ready",
    "run",
]

log = logging.getLogger("hlbook")

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


@attrs.frozen(kw_only=True)
class LogSettings:
    """How the command line logs: settings like :class:`~hlbook.config.Config`'s
    (flag, config-file key, environment variable), kept out of ``Config`` because
    the library never configures logging."""

    log_level: LogLevel = attrs.field(
        default="info",
        validator=attrs.validators.in_(get_args(LogLevel)),
        metadata=setting("log verbosity on stderr", group=LOGGING),
    )
    log_format: LogFormat = attrs.field(
        default="text",
        validator=attrs.validators.in_(get_args(LogFormat)),
        metadata=setting(
            "text (one line per event) or json (one object per line: time in UTC, level, "
            "logger, message, the fields passed with extra= and the exception)",
            group=LOGGING,
        ),
    )


# What every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, the record's ``extra=`` fields, and ``exception``/``stack`` text."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (newlines in the message are escaped)."""
        moment = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key if key not in entry else f"extra_{key}"] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``: one line per event, as text or as JSON.

    Like :func:`logging.basicConfig`, this does nothing if the root logger
    already has handlers (a program that embeds the CLI configured its own).
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if level != "debug":
        # httpx logs every request it makes at INFO: one line per info type passed on to
        # the node. hlbook logs what goes wrong with them itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)


async def _until_signal(main: Callable[[], Awaitable[int | None]]) -> int:
    result: int | None = 0
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            # SIGHUP too (a closed terminal, an operator's "reload"): there is nothing to
            # reload, and dying of it left clients without a close frame and no log line.
            stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
            with trio.open_signal_receiver(*stops) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        log.warning(
                            "received SIGHUP, shutting down (hlbook reloads nothing: start it"
                            " again to take new settings)"
                        )
                    else:
                        log.info("received %s, shutting down", name)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch_signals)
        result = await main()
        nursery.cancel_scope.cancel()
    return result or 0


def run(main: Callable[[], Awaitable[int | None]]) -> int:
    """Run ``main`` under Trio; SIGINT/SIGTERM/SIGHUP cancel it and the exit status is 0.

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
    """``--log-level`` and ``--log-format``, for a command without a config file.

    ``serve`` and ``demo`` get them (with their keys and environment
    variables) from :class:`LogSettings` through the CLI's generic flags.
    """
    group = parser.add_argument_group(LOGGING)
    for option in options(LogSettings):
        group.add_argument(
            option.flag,
            dest=option.field,
            default=option.default,
            choices=option.choices,
            help=option.help.replace("%", "%%") + " (default: %(default)s)",
        )


async def freeze_gc_when_ready(handle: "ServerHandle") -> None:
    """Once the books are loaded, exempt everything alive from the garbage collector.

    A full collection walks every tracked object: with hlbook's modules and a
    7k-order book loaded (60k objects) that took 22-30 ms on this project's
    2-core test machine, paid by whichever block was being applied (one
    collection every few tens of seconds lands on a block's ``l2Book``).
    After ``gc.freeze()`` collections walk only what was allocated since. The
    process configures this, like logging: ``serve`` itself leaves the
    collector alone (``hlbook serve``, each of its ``--workers`` and ``hlbook
    relay`` call this).
    """
    await handle.wait_ready()
    gc.freeze()
    log.info("books ready: %d objects exempted from garbage collection", gc.get_freeze_count())
