"""``openOrders``: a user's resting orders at once, then again after each block that changed them.

Subscription: ``user``, optional ``dex`` (``""`` or absent: the main dex). Data:
``{"dex": D, "user": U, "orders": [...]}`` with every order of that user resting in
the books on that dex, newest first, in the ``frontendOpenOrders`` shape — the
whole list each time, as the public API pushes it (``@nktkas/hyperliquid`` types it
so and drops an event whose ``user`` or ``dex`` is not the one subscribed: both are
always present, the user in lower case).

A user's resting orders change only through book diffs (an order added, resized or
removed), so the block's diffs say whose lists to send again. The list is built at
the statuses stage, once the order details are attached; if the diff stream is
already further on and one of the user's orders waits for its details, that user's
list is sent after a later block instead, when it is whole. A user with a new order in
every block would never be whole while the statuses lag: after
:data:`CATCH_UP_AFTER_MS` of block time held back, the channel asks the data path to
let the details catch up (briefly holding the diffs, as a first ``l4Book`` snapshot
does), and the list goes out with the block that completes. Conflated: a slow client
gets the newest list.

A list is the user's whole state, sent again for each change: each order's JSON is kept
per subscribed key and made again only for an order that changed (a new record when
its details attach, a new size as it fills), so a list of thousands of orders costs
the book task a sort and a join, not an order object and a dict per order.
"""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import orjson

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.book.mids import dex_of
from hlbook.book.resting import Resting, full_order
from hlbook.channels.allmids import parse_dex
from hlbook.channels.base import Policy, Shared, UserChannel, user_address
from hlbook.history.wire import order_wire
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["CATCH_UP_AFTER_MS", "OpenOrders", "OpenOrdersKey"]

CATCH_UP_AFTER_MS = 2000
"""How long (block time) a changed list may wait for its orders' details before the data
path is asked to catch up (the ``openOrders`` answer waits as long)."""


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class OpenOrdersKey:
    """One user's resting orders on one dex."""

    user: str
    dex: str = ""


class OpenOrders(UserChannel):
    """The ``openOrders`` channel."""

    name = "openOrders"
    stage = Stage.STATUSES
    policy = Policy.CONFLATE

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self._late: dict[OpenOrdersKey, int] = {}
        """Keys whose change could not be sent yet (an order waited for its details),
        with the block time they were first held back at."""
        self._wire: dict[OpenOrdersKey, dict[int, tuple[Resting, str, bytes]]] = {}
        """Per key, each listed order's record and size when its JSON was made, and it."""

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return OpenOrdersKey(user_address(raw), parse_dex(raw))

    def ready(self, key: Hashable, books: Books) -> bool:
        assert isinstance(key, OpenOrdersKey)
        return books.user_ready(key.user)

    def waiting(self, books: Books) -> None:
        books.request_catch_up()

    def first(self, key: Hashable, books: Books) -> Message | None:
        assert isinstance(key, OpenOrdersKey)
        return self._message(key, books)

    def removed(self, key: Hashable) -> None:
        super().removed(key)
        assert isinstance(key, OpenOrdersKey)
        self._late.pop(key, None)
        self._wire.pop(key, None)

    def repaired(self, key: Hashable, coins: Collection[str]) -> bool:
        # A repaired coin's orders changed without diffs: every list on its dex may have.
        assert isinstance(key, OpenOrdersKey)
        return any(dex_of(coin) == key.dex for coin in coins)

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        held, self._late = self._late, {}
        due = dict(held)
        if block.diffs:
            for key, diffs in self.with_news(block.diffs_by_user):
                assert isinstance(key, OpenOrdersKey)
                if any(dex_of(diff.coin) == key.dex for diff in diffs):
                    due.setdefault(key, block.time)
        starved = False
        for key, since in due.items():
            if books.user_ready(key.user):
                yield key, self._message(key, books)
            else:
                self._late[key] = since
                starved = starved or block.time - since >= CATCH_UP_AFTER_MS
        if starved:
            books.request_catch_up()

    def _message(self, key: OpenOrdersKey, books: Books) -> Message:
        kept = self._wire.get(key, {})
        fresh: dict[int, tuple[Resting, str, bytes]] = {}
        parts = []
        for oid, record in books.resting_of(key.user):
            if dex_of(record.coin) != key.dex:
                continue
            entry = kept.get(oid)
            if entry is None or entry[0] is not record or entry[1] != record.sz:
                entry = (record, record.sz, orjson.dumps(order_wire(full_order(oid, record))))
            fresh[oid] = entry
            parts.append(entry[2])
        self._wire[key] = fresh  # only the orders listed now: bounded by the user's orders
        orders = orjson.Fragment(b"[%s]" % b",".join(parts))  # the kept JSON, as it is
        data = {"dex": key.dex, "user": key.user, "orders": orders}
        return Message(orjson.dumps({"channel": "openOrders", "data": data}))
