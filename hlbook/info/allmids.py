"""``allMids`` answered from hlbook's books: ``{coin: mid}`` (optional ``dex``), the same
mids the ``allMids`` channel pushes."""

from collections.abc import Callable
from typing import Any

import orjson

from hlbook.book.books import Books
from hlbook.book.mids import mids
from hlbook.channels.allmids import parse_dex
from hlbook.channels.base import InvalidSubscription
from hlbook.info.base import InfoError, InfoHandler
from hlbook.info.l2book import books_or_error

__all__ = ["AllMidsInfo"]


class AllMidsInfo(InfoHandler):
    """``allMids``."""

    types = ("allMids",)

    def __init__(self, books: Callable[[], Books | None]) -> None:
        self._books = books

    async def answer(self, request: dict[str, Any], body: bytes) -> bytes:
        try:
            dex = parse_dex(request)
        except InvalidSubscription as exc:
            raise InfoError(422, "invalidRequest", f"allMids: {exc}") from None
        return orjson.dumps(mids(books_or_error(self._books), dex))
