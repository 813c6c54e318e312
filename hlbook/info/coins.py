"""``hlbookCoins`` (hlbook extension): every coin hlbook keeps a book for.

Answer: ``[{"coin": "BTC", "market": "perp"}, {"coin": "@107", "market": "spot"},
{"coin": "xyz:XYZ100", "market": "hip3"}, …]``, sorted by market then coin —
what the live page's coin picker lists. The official ``meta``/``spotMeta``
come from the node; this one is hlbook's own view.
"""

from collections.abc import Callable
from typing import Any

import orjson

from hlbook.book.books import Books
from hlbook.info.base import InfoHandler
from hlbook.info.l2book import books_or_error
from hlbook.model import MARKETS, market_of

__all__ = ["CoinsInfo"]


class CoinsInfo(InfoHandler):
    """``hlbookCoins``."""

    types = ("hlbookCoins",)

    def __init__(self, books: Callable[[], Books | None]) -> None:
        self._books = books

    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        books = books_or_error(self._books)
        coins = sorted(books.coins(), key=lambda coin: (MARKETS.index(market_of(coin)), coin))
        return orjson.dumps([{"coin": coin, "market": market_of(coin)} for coin in coins])
