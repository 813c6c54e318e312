"""``openOrders``, ``frontendOpenOrders`` and ``orderStatus``, from the L4 book (and the history).

* ``openOrders`` / ``frontendOpenOrders`` (``user``, optional ``dex``): every order
  of the user resting in hlbook's books, newest first, in the official shapes.
  Trigger orders that have not triggered wait outside the book — a node's
  snapshot does not contain them — so they are not listed (the node's own
  ``openOrders`` lists them).
* ``orderStatus`` (``user`` and ``oid``, an order id or a cloid): a resting order
  from the book (``"open"``), a finished one from the history store, else
  ``{"status": "unknownOid"}``.

Answers are at the books' height and never built from orders still waiting
for their status's details: if the user has such an order (the status stream
lags the diff stream), the answer waits for the details (briefly, bounded).
"""

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from hlbook.book.books import Books
from hlbook.book.mids import dex_of
from hlbook.channels.allmids import parse_dex
from hlbook.channels.base import InvalidSubscription, user_address
from hlbook.history.queries import HistoryQueries
from hlbook.history.requests import HistoryRequestError, parse_order_status
from hlbook.history.wire import open_order_wire, order_status_wire, order_wire
from hlbook.info.base import InfoError, InfoHandler
from hlbook.info.l2book import books_or_error
from hlbook.node.formats import Order

__all__ = ["OrdersInfo"]

_DETAILS_WAIT = 2.0


class OrdersInfo(InfoHandler):
    """``openOrders``, ``frontendOpenOrders``, ``orderStatus``."""

    types = ("openOrders", "frontendOpenOrders", "orderStatus")

    def __init__(
        self,
        books: Callable[[], Books | None],
        wait_for_details: Callable[[int], Awaitable[None]],
        history: HistoryQueries,
    ) -> None:
        self._books = books
        self._wait_for_details = wait_for_details
        self._history = history

    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        kind = request["type"]
        if kind == "orderStatus":
            return await self._order_status(request)
        try:
            user = user_address(request)
            dex = parse_dex(request)
        except InvalidSubscription as exc:
            raise InfoError(422, "invalidRequest", f"{kind}: {exc}") from None
        orders = await self._orders_of(user)
        shape = open_order_wire if kind == "openOrders" else order_wire
        return orjson.dumps([shape(order) for order in orders if dex_of(order.coin) == dex])

    async def _ready_books(self, user: str) -> Books:
        """The books, once ``user``'s resting orders all have their details (bounded wait)."""
        books = books_or_error(self._books)
        return books if books.user_ready(user) else await self._caught_up(books)

    async def _caught_up(self, books: Books) -> Books:
        """The books once the statuses of ``books.height`` are attached (bounded wait)."""
        with trio.move_on_after(_DETAILS_WAIT):
            await self._wait_for_details(books.height)
        return books_or_error(self._books)

    async def _orders_of(self, user: str) -> list[Order]:
        return (await self._ready_books(user)).orders_of(user)

    async def _order_status(self, request: dict[str, Any]) -> bytes:
        try:
            parsed = parse_order_status(request)
        except HistoryRequestError as exc:
            raise InfoError(422, "invalidRequest", str(exc)) from None
        books = await self._ready_books(parsed.user)
        found: Order | None = None
        if parsed.oid is not None:
            order = books.order(parsed.oid)
            if order is not None and str(order.user).lower() == parsed.user:
                found = order
        else:
            found = next((o for o in books.orders_of(parsed.user) if o.cloid == parsed.cloid), None)
        if found is None and books.details_height < books.height:
            # An order whose last diff is applied but whose status is not attached yet is
            # in neither the book nor the history: wait (bounded) for the statuses, as
            # the orderUpdates push of that block does.
            await self._caught_up(books)
        if found is not None:
            return orjson.dumps(order_status_wire(found, "open", found.timestamp))
        return orjson.dumps((await self._history.finished_order(parsed)).data)
