"""Async handlers for the info types the history store answers, in the official shapes.

``userFills``, ``userFillsByTime``, ``candleSnapshot`` and the finished half of
``orderStatus`` (a resting order is the book's to answer: render it with
:func:`~hlbook.history.wire.order_status_wire`). Each handler takes the
request body as the client sent it and returns an :class:`Answer`; a bad
request raises :class:`~hlbook.history.requests.HistoryRequestError` before
anything is read.

SQLite reads run in worker threads (``trio.to_thread.run_sync``, at most
``limiter`` at once), so the Trio thread never blocks on the disk; in WAL mode
they run alongside the writer.

Consistency with the pushes: what the store accepted but has not written yet
is captured when a handler is *called* — synchronously, before its first
checkpoint — and merged into the answer. So a channel that registers its
subscriber and calls the handler in the same step (no checkpoint between),
e.g. for the ``userFills`` snapshot, gets every block up to now in the
snapshot and every later block as a push: no gap, no duplicate.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs
import trio

from hlbook.history.requests import (
    FILLS_LIMIT,
    OrderStatusRequest,
    parse_candle_snapshot,
    parse_order_status,
    parse_user_fills,
    parse_user_fills_by_time,
)
from hlbook.history.store import STATUSES, Gap, HistoryStore
from hlbook.history.wire import unknown_oid

__all__ = ["Answer", "HistoryQueries"]

T = TypeVar("T")


@attrs.frozen
class Answer(Generic[T]):
    """An answer in the official shape (``data``), the height it agrees with, and known gaps.

    ``height`` is ``None`` when nothing was recorded yet. ``gaps`` are the
    store's known gaps that touch the answer's time window (the official
    shape has no place for them: log them, or put them in a header).
    """

    data: T
    height: int | None
    gaps: tuple[Gap, ...] = ()


class HistoryQueries:
    """The history's info handlers, bound to a store."""

    def __init__(self, store: HistoryStore, *, limiter: trio.CapacityLimiter | None = None) -> None:
        self.store = store
        self.limiter = limiter if limiter is not None else trio.CapacityLimiter(4)

    def handlers(self) -> dict[str, Callable[[Mapping[str, Any]], Awaitable[Answer[Any]]]]:
        """Info type → handler, for an info registry (``orderStatus`` here is history-only)."""
        return {
            "userFills": self.user_fills,
            "userFillsByTime": self.user_fills_by_time,
            "candleSnapshot": self.candle_snapshot,
            "orderStatus": self.order_status,
        }

    async def user_fills(self, body: Mapping[str, Any]) -> Answer[list[dict[str, Any]]]:
        """``userFills``: the user's most recent fills (at most 2000), newest first."""
        request = parse_user_fills(body)
        return await self.recent_fills(request.user, aggregate=request.aggregate_by_time)

    async def recent_fills(
        self, user: str, *, aggregate: bool = False, limit: int = FILLS_LIMIT
    ) -> Answer[list[dict[str, Any]]]:
        """``user``'s (lower case) most recent fills, newest first: ``userFills`` and the
        ``userFills`` channel's snapshot."""
        store = self.store
        view = store.pending_view()

        def run() -> Answer[list[dict[str, Any]]]:
            found = store.fills(user, limit=limit, aggregate=aggregate, view=view)
            return Answer(found.fills, found.height, found.gaps)

        return await trio.to_thread.run_sync(run, limiter=self.limiter)

    async def user_fills_by_time(self, body: Mapping[str, Any]) -> Answer[list[dict[str, Any]]]:
        """``userFillsByTime``: fills with ``startTime <= time <= endTime``, at most 2000,
        oldest first (``reversed``: newest first)."""
        request = parse_user_fills_by_time(body)
        store = self.store
        view = store.pending_view()
        if request.end_time is not None and request.end_time < request.start_time:
            return Answer([], view.heights.get("fills"))

        def run() -> Answer[list[dict[str, Any]]]:
            found = store.fills(
                request.user,
                start=request.start_time,
                end=request.end_time,
                newest_first=request.reversed,
                aggregate=request.aggregate_by_time,
                view=view,
            )
            return Answer(found.fills, found.height, found.gaps)

        return await trio.to_thread.run_sync(run, limiter=self.limiter)

    async def candle_snapshot(self, body: Mapping[str, Any]) -> Answer[list[dict[str, Any]]]:
        """``candleSnapshot``: the candles overlapping ``[startTime, endTime]``, oldest first,
        at most 5000 (the newest of the range)."""
        request = parse_candle_snapshot(body)
        store = self.store
        view = store.pending_view()
        if request.end_time is not None and request.end_time < request.start_time:
            return Answer([], view.heights.get("fills"))

        def run() -> Answer[list[dict[str, Any]]]:
            candles, height, gaps = store.candles(
                request.coin, request.interval, request.start_time, request.end_time, view=view
            )
            return Answer([candle.to_wire() for candle in candles], height, gaps)

        return await trio.to_thread.run_sync(run, limiter=self.limiter)

    async def order_status(self, body: Mapping[str, Any]) -> Answer[dict[str, Any]]:
        """``orderStatus`` from the history alone (finished orders; else ``unknownOid``).

        The full answer checks the book first for a resting order; see
        :meth:`finished_order`.
        """
        return await self.finished_order(parse_order_status(body))

    async def finished_order(self, request: OrderStatusRequest) -> Answer[dict[str, Any]]:
        """The official ``orderStatus`` answer for a finished order, or ``unknownOid``.

        Parse the request with :func:`~hlbook.history.requests.parse_order_status`,
        look in the book first (a resting order answers
        ``order_status_wire(order, "open", …)``), then call this.
        """
        store = self.store
        view = store.pending_view()

        def run() -> Answer[dict[str, Any]]:
            found, height = store.finished_order(
                request.user, oid=request.oid, cloid=request.cloid, view=view
            )
            gaps = () if found is not None else store.gaps(STATUSES)
            return Answer(unknown_oid() if found is None else found, height, gaps)

        return await trio.to_thread.run_sync(run, limiter=self.limiter)
