"""Info types answered from the history store: ``userFills``, ``userFillsByTime``,
``candleSnapshot`` — the same fills and candles the ``userFills`` and ``candle``
channels push, read in worker threads (:class:`~hlbook.history.HistoryQueries`).
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from hlbook.history.queries import Answer, HistoryQueries
from hlbook.history.requests import HistoryRequestError
from hlbook.info.base import InfoError, InfoHandler

__all__ = ["HistoryInfo", "answer_or_error"]


async def answer_or_error(
    handler: Callable[[Mapping[str, Any]], Awaitable[Answer[Any]]], request: Mapping[str, Any]
) -> bytes:
    """Run a history handler; a request it cannot answer as sent is a 422 with its reason."""
    try:
        answer = await handler(request)
    except HistoryRequestError as exc:
        raise InfoError(422, "invalidRequest", str(exc)) from None
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
