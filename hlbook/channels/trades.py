"""``trades``: each block's trades of one coin, in the node's order, never with a gap."""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import msgspec

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.book.trades import trades_by_coin
from hlbook.channels.base import Channel, Policy, required_str
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["Trades", "TradesKey"]

_encoder = msgspec.json.Encoder()


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class TradesKey:
    """The trades of one coin."""

    coin: str


class Trades(Channel):
    """The ``trades`` channel: one message per coin per block with trades."""

    name = "trades"
    stage = Stage.FILLS
    policy = Policy.LOSSLESS

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return TradesKey(required_str(raw, "coin"))

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        if not block.fills:
            return
        for coin, trades in trades_by_coin(block.fills).items():
            key = TradesKey(coin)
            if key in keys:
                yield key, Message(_encoder.encode({"channel": "trades", "data": trades}))
