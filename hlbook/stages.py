"""What the data path hands to whoever publishes: one call per block and completed stage.

A block's three streams complete at different times (the status stream is
5–10x larger than the diff stream and routinely lags it), and each view
depends on one of them only. So the data path tells its sinks, in height
order per stage, as soon as each part of a block is complete:

* :attr:`Stage.DIFFS` — block ``H``'s diffs are applied to the levels (after
  ``H - 1``'s): ``l2Book``, ``bbo``, ``allMids``. ``touched`` holds the coins
  whose levels changed;
* :attr:`Stage.FILLS` — ``H``'s fills are complete: ``trades``, fills channels;
* :attr:`Stage.STATUSES` — ``H``'s statuses are complete and their order
  details attached (always after ``H``'s ``DIFFS``): ``l4Book`` updates, order
  channels;
* :attr:`Stage.BLOCK` — every stream of ``H`` is complete and applied: the
  in-process feed, publishers of whole blocks.

At a stage, only the event lists of the stages already announced for that
block are final (``block.statuses`` is not, at ``DIFFS``).
"""

import enum
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hlbook.book.books import Books
    from hlbook.book.l4 import CoinBook
    from hlbook.model import Block

__all__ = ["BlockSink", "Sinks", "Stage"]


class Stage(enum.Enum):
    """Which part of a block became complete (see the module docstring)."""

    DIFFS = "diffs"
    FILLS = "fills"
    STATUSES = "statuses"
    BLOCK = "block"


class BlockSink(Protocol):
    """Receives the data path's output. Called from the book task: must never block."""

    def publish(
        self, stage: Stage, block: "Block", books: "Books", touched: Mapping[str, "CoinBook"]
    ) -> None:
        """``stage`` of ``block`` is complete (see :class:`Stage`)."""

    def resync(self, books: "Books", coins: Iterable[str] | None = None) -> None:
        """The books were re-bootstrapped (``coins`` is ``None``) or ``coins`` repaired:
        subscribers need fresh views."""

    def notify(self, text: str) -> None:
        """Tell every subscriber something went wrong with the feed (e.g. it is stale)."""


class Sinks:
    """Several sinks as one (called in order)."""

    def __init__(self, *sinks: BlockSink) -> None:
        self.sinks = sinks

    def publish(
        self, stage: Stage, block: "Block", books: "Books", touched: Mapping[str, "CoinBook"]
    ) -> None:
        """See :meth:`BlockSink.publish`."""
        for sink in self.sinks:
            sink.publish(stage, block, books, touched)

    def resync(self, books: "Books", coins: Iterable[str] | None = None) -> None:
        """See :meth:`BlockSink.resync`."""
        wanted = None if coins is None else list(coins)
        for sink in self.sinks:
            sink.resync(books, wanted)

    def notify(self, text: str) -> None:
        """See :meth:`BlockSink.notify`."""
        for sink in self.sinks:
            sink.notify(text)
