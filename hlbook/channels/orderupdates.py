"""``orderUpdates``: a user's order status changes of each block, from the node's statuses.

Subscription: ``user``. Data, per block with news for that user: a list of
``{"order": {coin, side, limitPx, sz, oid, timestamp, origSz[, cloid][, reduceOnly]},
"status": S, "statusTimestamp": ms}`` — every status the node wrote for the
user's orders, rejections included (the official feed shows them too). Users
nobody subscribed to cost nothing: the block's statuses are grouped by user
once, and only subscribed users' order objects are decoded (walking the smaller of
the block's users and the subscribed ones: :class:`~hlbook.channels.base.UserChannel`).
"""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import msgspec
import orjson

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.channels.base import Policy, UserChannel, user_address
from hlbook.history.wire import open_order_wire
from hlbook.model import Block
from hlbook.node.formats import StatusEvent, time_ms
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["OrderUpdates", "OrderUpdatesKey", "order_update"]


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class OrderUpdatesKey:
    """One user's order updates."""

    user: str


def order_update(event: StatusEvent, block_time: int) -> dict[str, Any] | None:
    """One status as the official ``orderUpdates`` entry (``None`` if its order is unreadable)."""
    try:
        order = event.parsed_order()
    except msgspec.DecodeError:
        return None
    try:
        when = time_ms(event.time)
    except ValueError:
        when = block_time
    return {"order": open_order_wire(order), "status": event.status, "statusTimestamp": when}


class OrderUpdates(UserChannel):
    """The ``orderUpdates`` channel."""

    name = "orderUpdates"
    stage = Stage.STATUSES
    policy = Policy.LOSSLESS

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return OrderUpdatesKey(user_address(raw))

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        if not block.statuses:
            return
        for key, events in self.with_news(block.statuses_by_user):
            updates = [u for e in events if (u := order_update(e, block.time)) is not None]
            if updates:
                yield key, Message(orjson.dumps({"channel": "orderUpdates", "data": updates}))
