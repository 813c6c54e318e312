"""The in-process feed: per-block book updates for Trio programs, without WebSocket.

::

    async with handle.feed() as updates:
        async for update in updates:
            book = update.books.book("BTC")
            ...

Each :class:`BookUpdate` refers to the live books. A consumer that keeps up
sees them exactly as of ``update.height`` (until it next awaits); one that
has fallen behind sees a later state — ``update.books.height ==
update.height`` tells which, and ``update.block``/``update.trades`` always
hold that block's own events. The buffer is bounded: a consumer that falls
more than ``max_buffer`` blocks behind gets :class:`FeedOverflowError` (after
the updates it already had) instead of a silent gap; it can open a new feed
and re-read the books. When the server stops, iteration ends.
"""

from collections import deque
from collections.abc import AsyncIterator
from functools import cached_property
from types import TracebackType

import attrs
import trio

from hlbook.book.books import Books
from hlbook.book.trades import Trade, trades_by_coin
from hlbook.errors import HlbookError
from hlbook.model import Block

__all__ = ["BookUpdate", "Feed", "FeedOverflowError"]


class FeedOverflowError(HlbookError):
    """The feed's consumer fell too far behind; updates after this were not kept."""


@attrs.define(eq=False, slots=False)
class BookUpdate:
    """One applied block (or, with ``resync``, a fresh start after a re-bootstrap/repair).

    ``touched`` are the coins whose books changed; ``block`` is ``None`` for resyncs.
    """

    height: int
    time: int
    touched: frozenset[str]
    books: Books
    block: Block | None = None
    resync: bool = False

    @cached_property
    def trades(self) -> dict[str, list[Trade]]:
        """This block's trades by coin."""
        return trades_by_coin(self.block.fills) if self.block is not None else {}


class Feed:
    """A bounded, async-iterable stream of :class:`BookUpdate`; see the module docstring."""

    def __init__(self, registry: set["Feed"], max_buffer: int = 1000) -> None:
        self.max_buffer = max_buffer
        self._registry = registry
        self._buffer: deque[BookUpdate] = deque()
        self._event = trio.Event()
        self._overflowed = False
        self._closed = False
        registry.add(self)

    def push(self, update: BookUpdate) -> None:
        """Called by hlbook for every update; never blocks."""
        if self._closed or self._overflowed:
            return
        if len(self._buffer) >= self.max_buffer:
            self._overflowed = True
        else:
            self._buffer.append(update)
        self._event.set()

    def close(self) -> None:
        """Stop receiving updates; iteration ends after the buffered ones."""
        self._closed = True
        self._registry.discard(self)
        self._event.set()

    def __aiter__(self) -> AsyncIterator[BookUpdate]:
        return self

    async def __anext__(self) -> BookUpdate:
        while not self._buffer:
            if self._overflowed:
                self.close()
                raise FeedOverflowError(
                    f"feed consumer fell more than {self.max_buffer} updates behind"
                )
            if self._closed:
                raise StopAsyncIteration
            await self._event.wait()
            self._event = trio.Event()
        return self._buffer.popleft()

    async def __aenter__(self) -> "Feed":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
