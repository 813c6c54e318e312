"""``userEvents`` (data on channel ``user``): a user's fills of each block, ``{"fills": [...]}``.

The official feed also carries funding payments, liquidations and non-user
cancels; a node's files have none of them (funding and liquidation events are
not in the order status, diff or fill streams), so hlbook sends the fills.
"""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import orjson

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.channels.base import Policy, UserChannel, user_address
from hlbook.history.wire import fill_wire
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["UserEvents", "UserEventsKey"]


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class UserEventsKey:
    """One user's events."""

    user: str


class UserEvents(UserChannel):
    """The ``userEvents`` channel (its messages say ``"channel": "user"``)."""

    name = "userEvents"
    stage = Stage.FILLS
    policy = Policy.LOSSLESS

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return UserEventsKey(user_address(raw))

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        if not block.fills:
            return
        for key, events in self.with_news(block.fills_by_user):
            data = {"fills": [fill_wire(fill) for _, fill in events]}
            yield key, Message(orjson.dumps({"channel": "user", "data": data}))
