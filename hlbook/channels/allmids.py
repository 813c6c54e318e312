"""``allMids``: every coin's mid at once, then the coins whose mid changed in each block.

Subscription: optional ``dex`` (``""`` or absent: the main dex, perps and spot;
a HIP-3 dex name: its ``dex:COIN`` books). Data: ``{"mids": {coin: px}}``, and for
a HIP-3 dex ``{"dex": name, "mids": {...}}`` as the public API sends it (clients
route by it: ``@nktkas/hyperliquid`` drops an event whose ``dex`` is not the one
subscribed, ccxt.pro resolves ``tickers:<dex>`` by it). A coin whose book lost a
side has no mid and is left out (its last mid stands).
"""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import orjson

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.book.mids import dex_of, mid, mids
from hlbook.channels.base import Channel, InvalidSubscription, Policy, Shared
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["AllMids", "AllMidsKey", "parse_dex"]


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class AllMidsKey:
    """The mids of one dex."""

    dex: str = ""


def parse_dex(raw: Mapping[str, Any]) -> str:
    """The optional ``dex`` field (``""`` when absent or null)."""
    dex = raw.get("dex")
    if dex is None:
        return ""
    if type(dex) is not str or ":" in dex or len(dex) > 64:
        raise InvalidSubscription("dex must be a dex name")
    return dex


class AllMids(Channel):
    """The ``allMids`` channel."""

    name = "allMids"
    stage = Stage.DIFFS
    policy = Policy.CONFLATE

    def __init__(self, shared: Shared) -> None:
        self._sent: dict[str, str] = {}  # coin -> the mid subscribers hold

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return AllMidsKey(parse_dex(raw))

    def first(self, key: Hashable, books: Books) -> Message | None:
        assert isinstance(key, AllMidsKey)
        now = mids(books, key.dex)
        self._sent.update(now)
        return _message(now, key.dex)

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        changed: dict[str, dict[str, str]] = {}
        sent = self._sent
        for coin, book in touched.items():
            value = mid(book)
            if value is None or sent.get(coin) == value:
                continue
            sent[coin] = value
            changed.setdefault(dex_of(coin), {})[coin] = value
        for key in keys:
            assert isinstance(key, AllMidsKey)
            found = changed.get(key.dex)
            if found:
                yield key, _message(found, key.dex)


def _message(values: dict[str, str], dex: str) -> Message:
    data: dict[str, object] = {"dex": dex, "mids": values} if dex else {"mids": values}
    return Message(orjson.dumps({"channel": "allMids", "data": data}))
