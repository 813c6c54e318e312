"""Info types answered from the history store: ``userFills``, ``userFillsByTime``,
``candleSnapshot`` — the same fills and candles the ``userFills`` and ``candle``
channels push, read in worker threads (:class:`~hlbook.history.HistoryQueries`).
"""

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import orjson

from hlbook.errors import HistoryError
from hlbook.history.queries import Answer, HistoryQueries
from hlbook.history.requests import HistoryRequestError
from hlbook.info.base import InfoError, InfoHandler

__all__ = ["UNAVAILABLE", "HistoryInfo", "answer_or_error", "history_unavailable"]

log = logging.getLogger("hlbook.history")

UNAVAILABLE: Final = "the history store cannot be read right now (the server log says why)"
"""What a client is told when a query fails in the store (no path: remote clients)."""

_LOG_EVERY: Final = 60.0
_logged: dict[str, float] = {}  # reason -> when it was last logged


def history_unavailable(exc: HistoryError, now: float | None = None) -> str:
    """Log a store that cannot answer (one line per reason a minute, not a traceback per
    request: a damaged file fails every query); the text for the client."""
    now = time.monotonic() if now is None else now
    if now - _logged.get(exc.reason, -_LOG_EVERY) >= _LOG_EVERY:
        _logged[exc.reason] = now
        log.error("%s (queries fail until it is repaired or replaced)", exc)
    return UNAVAILABLE


async def answer_or_error(
    handler: Callable[[Mapping[str, Any]], Awaitable[Answer[Any]]], request: Mapping[str, Any]
) -> bytes:
    """Run a history handler; a request it cannot answer as sent is a 422 with its reason."""
    try:
        answer = await handler(request)
    except HistoryRequestError as exc:
        raise InfoError(422, "invalidRequest", str(exc)) from None
    except HistoryError as exc:
        raise InfoError(503, "historyUnavailable", history_unavailable(exc)) from None
    return orjson.dumps(answer.data)


class HistoryInfo(InfoHandler):
    """``userFills``, ``userFillsByTime``, ``candleSnapshot``."""

    types = ("userFills", "userFillsByTime", "candleSnapshot")

    def __init__(self, queries: HistoryQueries) -> None:
        self._handlers = {
            "userFills": queries.user_fills,
            "userFillsByTime": queries.user_fills_by_time,
            "candleSnapshot": queries.candle_snapshot,
        }

    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        return await answer_or_error(self._handlers[request["type"]], request)
