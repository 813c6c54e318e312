"""``userFills``: a user's recent fills at once (``isSnapshot``), then each block's new ones.

Subscription: ``user``, optional ``aggregateByTime``. First message
``{"isSnapshot": true, "user": U, "fills": [...]}`` with the user's most recent
fills from the history store (newest first, at most 2000; read in a worker
thread, and exactly up to where the pushes take over), then per block with
fills of that user ``{"user": U, "fills": [...]}``, in the node's order. Fills
are the node's own fill objects in the official shape.
"""

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs
import orjson

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.channels.base import Policy, Shared, UserChannel, optional_bool, user_address
from hlbook.history.requests import FILLS_LIMIT
from hlbook.history.wire import aggregate_by_time, fill_wire
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["UserFills", "UserFillsKey"]


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class UserFillsKey:
    """One user's fills, aggregated or not."""

    user: str
    aggregate: bool = False


class UserFills(UserChannel):
    """The ``userFills`` channel."""

    name = "userFills"
    stage = Stage.FILLS
    policy = Policy.LOSSLESS

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self.shared = shared

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return UserFillsKey(user_address(raw), optional_bool(raw, "aggregateByTime"))

    def first_later(self, key: Hashable, books: Books) -> Callable[[], Message | None] | None:
        assert isinstance(key, UserFillsKey)
        store = self.shared.history
        if store is None:
            return lambda: _message(key.user, [], snapshot=True)
        view = store.pending_view()  # now: the pushes take over from exactly here

        def read() -> Message | None:
            found = store.fills(key.user, limit=FILLS_LIMIT, aggregate=key.aggregate, view=view)
            return _message(key.user, found.fills, snapshot=True)

        return read

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
            assert isinstance(key, UserFillsKey)
            fills = [fill_wire(fill) for _, fill in events]
            if key.aggregate:
                fills = aggregate_by_time(fills, newest_first=False)
            yield key, _message(key.user, fills, snapshot=False)


def _message(user: str, fills: list[dict[str, Any]], *, snapshot: bool) -> Message:
    data: dict[str, Any] = {"isSnapshot": True} if snapshot else {}
    data["user"] = user
    data["fills"] = fills
    return Message(orjson.dumps({"channel": "userFills", "data": data}))
