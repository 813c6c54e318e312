"""The in-process feed: per-block book updates for Trio programs, without WebSocket.

::

    async with handle.feed() as updates:
        async for update in updates:
            book = update.books.book("BTC")
            ...

There is one update per block, once every stream of it is applied (the
:attr:`~hlbook.stages.Stage.BLOCK` stage). Each :class:`BookUpdate` refers to
the live books, which may already hold the diffs of later blocks (the diff
stream runs ahead of the status stream) or, for a consumer that has fallen
behind, later blocks altogether — ``update.books.height == update.height``
says the books are exactly as of this block; ``update.block`` and
``update.trades`` always hold that block's own events. The buffer is bounded: a consumer that falls
more than ``max_buffer`` blocks behind gets :class:`FeedOverflowError` (after
the updates it already had) instead of a silent gap; it can open a new feed
and re-read the books. When the server stops, iteration ends.
"""

from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from functools import cached_property
from types import TracebackType

import attrs
import trio

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.book.trades import Trade, trades_by_coin
from hlbook.errors import HlbookError
from hlbook.model import Block
from hlbook.stages import Stage

__all__ = ["BookUpdate", "Feed", "FeedOverflowError", "FeedSink"]


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
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
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


class FeedSink:
    """The data path's sink for in-process feeds: one :class:`BookUpdate` per whole block
    (:attr:`~hlbook.stages.Stage.BLOCK`) and per resync."""

    def __init__(self, registry: set[Feed]) -> None:
        self.registry = registry

    def publish(
        self, stage: Stage, block: Block, books: Books, touched: Mapping[str, CoinBook]
    ) -> None:
        """See :class:`~hlbook.stages.BlockSink`."""
        if stage is not Stage.BLOCK or not self.registry:
            return
        update = BookUpdate(block.height, block.time, frozenset(touched), books, block)
        for feed in list(self.registry):
            feed.push(update)

    def resync(self, books: Books, coins: Iterable[str] | None = None) -> None:
        """See :class:`~hlbook.stages.BlockSink`."""
        if not self.registry:
            return
        wanted = frozenset(books.coins() if coins is None else coins)
        update = BookUpdate(books.height, books.time, wanted, books, None, True)
        for feed in list(self.registry):
            feed.push(update)

    def notify(self, text: str) -> None:
        """See :class:`~hlbook.stages.BlockSink` (feeds see staleness in health)."""
