"""``candle``: the current candle of a coin and interval, whenever a block's trades change it.

Subscription: ``coin``, ``interval`` (1m 3m 5m 15m 30m 1h 2h 4h 8h 12h 1d 3d 1w
1M). Data: ``{t, T, s, i, o, c, h, l, v, n}`` (open and close time, coin,
interval, open/close/high/low price, base volume, trade count), built from the
node's trades by the history recorder, which runs just before the channels at
each block's fills. First message: the current candle, if the coin traded in
it. A slow client gets the newest candle (conflated).
"""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import orjson

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.channels.base import Channel, InvalidSubscription, Policy, Shared, required_str
from hlbook.history.candles import INTERVALS, Candle
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["CandleChannel", "CandleKey"]


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class CandleKey:
    """One coin's candles at one interval."""

    coin: str
    interval: str


class CandleChannel(Channel):
    """The ``candle`` channel."""

    name = "candle"
    stage = Stage.FILLS
    policy = Policy.CONFLATE

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        coin = required_str(raw, "coin")
        interval = raw.get("interval")
        if interval not in INTERVALS:
            raise InvalidSubscription(f"interval must be one of {', '.join(INTERVALS)}")
        return CandleKey(coin, interval)

    def first(self, key: Hashable, books: Books) -> Message | None:
        assert isinstance(key, CandleKey)
        recorder = self.shared.recorder
        current = recorder.current_candle(key.coin, key.interval) if recorder else None
        return _message(current) if current is not None else None

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        recorder = self.shared.recorder
        if recorder is None or recorder.changed_height != block.height:
            return
        for candle in recorder.changed_candles:
            key = CandleKey(candle.coin, candle.interval)
            if key in keys:
                yield key, _message(candle)


def _message(candle: Candle) -> Message:
    return Message(orjson.dumps({"channel": "candle", "data": candle.to_wire()}))
