"""``l2Book`` answered from hlbook's own books, with the channel's aggregation.

Request: ``{"type":"l2Book","coin":…,"nSigFigs":…,"mantissa":…}`` (also
``nLevels``, as on the channel); answer ``{"coin","time","levels":[bids, asks]}``
with 20 levels per side by default, from the same shared ladders the
``l2Book`` channel sends, so that an HTTP answer and a push of the same
``time`` agree.

A coin with no book is ``null``, as Hyperliquid answers for a market that does not
exist (the official SDKs type the answer ``… | null`` and test it so); but a coin
that ``--coins``/``--markets`` leave out is a 422 naming the filter: ``null`` would
say the market does not exist.
"""

from collections.abc import Callable
from typing import Any

from hlbook.book.books import Books
from hlbook.book.views import Ladders
from hlbook.channels.base import InvalidSubscription
from hlbook.channels.l2book import parse_l2
from hlbook.info.base import InfoError, InfoHandler

__all__ = ["L2BookInfo", "books_or_error"]


def books_or_error(books: Callable[[], Books | None]) -> Books:
    """The live books, or a 503 while they are still loading."""
    found = books()
    if found is None:
        raise InfoError(503, "notReady", "hlbook is still loading its books; retry shortly")
    return found


class L2BookInfo(InfoHandler):
    """``l2Book``."""

    types = ("l2Book",)

    def __init__(self, books: Callable[[], Books | None], ladders: Ladders) -> None:
        self._books = books
        self._ladders = ladders

    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        try:
            key = parse_l2(request)
        except InvalidSubscription as exc:
            raise InfoError(422, "invalidRequest", f"l2Book: {exc}") from None
        books = books_or_error(self._books)
        ladder = self._ladders.get(books, key.coin, key.aggregation)
        if ladder is None:
            if not books.coin_filter.accepts(key.coin):
                raise InfoError(
                    422, "notServed", f"l2Book: {key.coin!r} is left out by --coins/--markets"
                )
            return b"null"
        return ladder.data_json(key.coin, books.time, key.n_levels, fast=key.fast)
