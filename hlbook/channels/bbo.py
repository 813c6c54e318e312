"""``bbo``: the best bid and offer at once and whenever either changes in a block."""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import orjson

from hlbook.book.books import Books
from hlbook.book.l2 import bbo
from hlbook.book.l4 import CoinBook, LevelView
from hlbook.channels.base import Channel, Policy, Shared, required_str
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["Bbo", "BboKey"]

_Best = tuple[LevelView | None, LevelView | None]


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class BboKey:
    """The ``bbo`` of one coin."""

    coin: str


class Bbo(Channel):
    """The ``bbo`` channel."""

    name = "bbo"
    stage = Stage.DIFFS
    policy = Policy.CONFLATE

    def __init__(self, shared: Shared) -> None:
        self._sent: dict[str, _Best] = {}

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return BboKey(required_str(raw, "coin"))

    def removed(self, key: Hashable) -> None:
        assert isinstance(key, BboKey)
        self._sent.pop(key.coin, None)

    def first(self, key: Hashable, books: Books) -> Message | None:
        assert isinstance(key, BboKey)
        book = books.book(key.coin)
        if book is None:
            return None
        best = self._sent[key.coin] = bbo(book)
        return _message(key.coin, books.time, best)

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        sent = self._sent
        for coin, book in touched.items():
            if coin not in sent:
                continue  # nobody subscribed (every subscribed coin got a first message)
            best = bbo(book)
            if sent[coin] == best:
                continue
            sent[coin] = best
            yield BboKey(coin), _message(coin, block.time, best)


def _level(view: LevelView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    px, sz, n = view
    return {"px": px, "sz": sz, "n": n}


def _message(coin: str, time: int, best: _Best) -> Message:
    data = {"coin": coin, "time": time, "bbo": [_level(best[0]), _level(best[1])]}
    return Message(orjson.dumps({"channel": "bbo", "data": data}))
