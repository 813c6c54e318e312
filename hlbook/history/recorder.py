"""The recorder: a :class:`~hlbook.stages.BlockSink` that feeds the history store.

Called from the book task, it never blocks and never raises into it:

* at :attr:`~hlbook.stages.Stage.FILLS` it pairs the block's fills into
  trades, updates the current candles (:class:`CandleBuilder`), and submits
  the fills, trades and changed candles as one batch;
* at :attr:`~hlbook.stages.Stage.STATUSES` it submits the statuses the store
  keeps (:func:`~hlbook.history.wire.is_recorded`), their orders decoded (a
  copy: the node's line buffer is not kept alive by the queue).

It keeps what the channels need for first messages and pushes: the current
candle of every (coin, interval) (:meth:`current_candle`) and the candles the
latest block changed (:attr:`changed_candles`). A block at or below the
height already recorded is ignored (nothing is recorded twice); a jump after
a restart or a re-bootstrap is recorded as a gap.
"""

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import msgspec

from hlbook.book.trades import Trade, trades_by_coin
from hlbook.history.candles import INTERVALS, Candle, CandleBuilder
from hlbook.history.rows import FinishedOrder
from hlbook.history.store import FILLS, STATUSES, FillsBatch, Gap, HistoryStore, StatusesBatch
from hlbook.history.wire import is_recorded, is_rejection
from hlbook.node.formats import time_ms
from hlbook.stages import Stage

if TYPE_CHECKING:
    from hlbook.book.books import Books
    from hlbook.book.l4 import CoinBook
    from hlbook.model import Block

__all__ = ["HistoryRecorder"]

log = logging.getLogger("hlbook.history")

_NOT_TRIGGER = b'"isTrigger":false'
_FAR_BELOW = 1000
"""Blocks below what the store holds that are not a restart's overlap (~70 s of mainnet)."""
_REJECTIONS: set[str] = {"rejected", "badAloPxRejected", "perpMarginRejected", "iocCancelRejected"}


class HistoryRecorder:
    """Records each block's fills, trades, candles and finished statuses into ``store``.

    Implements :class:`~hlbook.stages.BlockSink`. On creation it resumes the
    candles that were current when the store was last written.
    """

    def __init__(self, store: HistoryStore, *, intervals: Iterable[str] = INTERVALS) -> None:
        self.store = store
        self.candles = CandleBuilder(intervals)
        self.candles.restore(store.latest_candles())
        self.changed_candles: list[Candle] = []
        """The candles changed by the latest block's fills (empty for a block without trades)."""
        self.changed_height: int | None = None
        """The height :attr:`changed_candles` belong to."""
        self.errors = 0
        """Blocks that could not be recorded because of a bug (each logged with its traceback)."""
        self.bad_statuses = 0
        """Statuses skipped because their order object could not be decoded."""
        self._last: dict[str, tuple[int, int] | None] = {
            FILLS: store.last_seen(FILLS),
            STATUSES: store.last_seen(STATUSES),
        }
        # A height jump is a gap only at the first block after starting or after a
        # re-bootstrap: in steady state the streaming layout skips empty blocks' heights.
        self._gap_reason: dict[str, str | None] = {FILLS: "offline", STATUSES: "offline"}
        self._far_below_logged: set[str] = set()

    # -- BlockSink ---------------------------------------------------------------

    def publish(
        self, stage: Stage, block: "Block", books: "Books", touched: Mapping[str, "CoinBook"]
    ) -> None:
        """Record ``stage`` of ``block`` (only FILLS and STATUSES carry anything to keep)."""
        try:
            if stage is Stage.FILLS:
                self.record_fills(block)
            elif stage is Stage.STATUSES:
                self.record_statuses(block)
        except Exception:  # a bug here must not stop the feed
            self.errors += 1
            log.exception("history: cannot record block %d (%s)", block.height, stage.value)

    def resync(self, books: "Books", coins: Iterable[str] | None = None) -> None:
        """A re-bootstrap (``coins is None``) may skip blocks: a jump after it is a gap."""
        if coins is None:
            self._gap_reason = {FILLS: "resync", STATUSES: "resync"}

    def notify(self, text: str) -> None:
        """Feed notices concern subscribers, not the store."""

    # -- recording ---------------------------------------------------------------

    def _is_new(self, stream: str, block: "Block") -> bool:
        last = self._last[stream]
        if last is not None and block.height <= last[0]:
            if last[0] - block.height > _FAR_BELOW and stream not in self._far_below_logged:
                # Not the overlap of a restart: a restored node, or another chain, on a
                # store that is ahead of it. Nothing would say why history stands still.
                self._far_below_logged.add(stream)
                log.warning(
                    "history: the node is at block %d, the store already holds %s up to"
                    " block %d: nothing is recorded until the node passes it (a restored"
                    " node or another chain? then give this one another --history)",
                    block.height,
                    stream,
                    last[0],
                )
            return False
        self._far_below_logged.discard(stream)
        reason = self._gap_reason[stream]
        if reason is not None and last is not None and block.height > last[0] + 1:
            self.store.add_gap(
                Gap(stream, reason, last[0] + 1, block.height - 1, last[1], block.time)
            )
        self._gap_reason[stream] = None
        self._last[stream] = (block.height, block.time)
        self.store.note_seen(stream, block.height, block.time)
        return True

    def record_fills(self, block: "Block") -> list[Candle]:
        """Record ``block``'s fills, trades and candle changes; return the changed candles."""
        if not self._is_new(FILLS, block):
            return []
        if not block.fills:
            self.changed_candles = []
            self.changed_height = block.height
            return []
        trades: list[Trade] = [t for group in trades_by_coin(block.fills).values() for t in group]
        trades.sort(key=_trade_time)
        changed = self.candles.add(trades)
        self.changed_candles = changed
        self.changed_height = block.height
        self.store.submit(FillsBatch(block.height, block.time, block.fills, trades, changed))
        return changed

    def record_statuses(self, block: "Block") -> None:
        """Record ``block``'s statuses that the store keeps."""
        if not self._is_new(STATUSES, block):
            return
        kept: list[FinishedOrder] = []
        rejections = _REJECTIONS
        for event in block.statuses:
            status = event.status
            # ~95% of statuses: a set lookup each (each distinct status is classified once).
            if status in rejections:
                continue
            if is_rejection(status):
                if len(rejections) < 1024:
                    rejections.add(status)
                continue
            if status == "open" and _NOT_TRIGGER in bytes(event.order):
                continue  # resting in the book (the book answers for it): no need to decode
            try:
                order = event.parsed_order()
            except msgspec.DecodeError:
                self.bad_statuses += 1
                continue
            if not is_recorded(status, order):
                continue
            try:
                when = time_ms(event.time)
            except ValueError:
                when = block.time
            kept.append(FinishedOrder(event.user, status, when, order))
        if kept:
            self.store.submit(StatusesBatch(block.height, block.time, kept))

    # -- for the channels ----------------------------------------------------------

    def current_candle(self, coin: str, interval: str) -> Candle | None:
        """The current candle of ``coin`` at ``interval`` (``None`` before its first trade)."""
        return self.candles.current(coin, interval)


def _trade_time(trade: Trade) -> int:
    return trade.time
