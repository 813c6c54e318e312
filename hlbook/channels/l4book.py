"""``l4Book``: every resting order of a coin, then the node's own events of each block.

The first message is a ``Snapshot`` (every order in queue order, with its
``user``), built once per coin and height for all new subscribers; then per
block ``Updates`` with the coin's ``order_statuses`` and ``book_diffs``. A
client that applies the diffs to the snapshot holds exactly hlbook's book. A
client that falls behind gets its backlog replaced by a fresh snapshot.

Updates follow the statuses (:attr:`~hlbook.stages.Stage.STATUSES`), which may
lag the diffs: a snapshot is labelled with the books' ``details_height`` and
built only when the coin is :meth:`~hlbook.book.books.Books.details_ready` (no
diff above that height touched it). Until then the subscriber waits — the data
path is asked to let the details catch up — and gets no updates.
"""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import msgspec

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.channels.base import Channel, Policy, Shared, required_str
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["L4Book", "L4Key"]

_encoder = msgspec.json.Encoder()


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class L4Key:
    """The L4 book of one coin."""

    coin: str


class L4Book(Channel):
    """The ``l4Book`` channel (hlbook's and the reference server's extension)."""

    name = "l4Book"
    stage = Stage.STATUSES
    policy = Policy.RESNAPSHOT

    def __init__(self, shared: Shared) -> None:
        self._snapshots: dict[str, tuple[int, Message]] = {}
        self.snapshots_built = 0

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return L4Key(required_str(raw, "coin"))

    def removed(self, key: Hashable) -> None:
        assert isinstance(key, L4Key)
        self._snapshots.pop(key.coin, None)

    def forget(self, coins: Iterable[str] | None) -> None:
        """Cached snapshots of ``coins`` (default: all) are stale (a repair or re-bootstrap
        changed the book without a new height)."""
        if coins is None:
            self._snapshots.clear()
        else:
            for coin in coins:
                self._snapshots.pop(coin, None)

    def ready(self, key: Hashable, books: Books) -> bool:
        assert isinstance(key, L4Key)
        return books.details_ready(key.coin)

    def waiting(self, books: Books) -> None:
        books.request_catch_up()

    def first(self, key: Hashable, books: Books) -> Message | None:
        assert isinstance(key, L4Key)
        coin = key.coin
        # Ready: the coin's book is that of details_height, where the updates continue.
        height = books.details_height
        cached = self._snapshots.get(coin)
        if cached is not None and cached[0] == height:
            return cached[1]
        if coin not in books:
            return None
        bids, asks = books.coin_orders(coin)
        snapshot = {
            "coin": coin,
            "time": books.details_time,
            "height": height,
            "levels": (bids, asks),
        }
        message = Message(_encoder.encode({"channel": "l4Book", "data": {"Snapshot": snapshot}}))
        self._snapshots[coin] = (height, message)
        self.snapshots_built += 1
        return message

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        statuses_by_coin = block.statuses_by_coin
        diffs_by_coin = block.diffs_by_coin
        for key in keys:
            assert isinstance(key, L4Key)
            statuses = statuses_by_coin.get(key.coin, ())
            diffs = diffs_by_coin.get(key.coin, ())
            if statuses or diffs:
                updates = {
                    "time": block.time,
                    "height": block.height,
                    "order_statuses": statuses,
                    "book_diffs": diffs,
                }
                payload = _encoder.encode({"channel": "l4Book", "data": {"Updates": updates}})
                yield key, Message(payload)
