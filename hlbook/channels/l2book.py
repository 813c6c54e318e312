"""``l2Book``: aggregated levels at once and after every block that changes the view.

Subscription: ``coin``; ``nSigFigs`` 2–5 or null; ``mantissa`` 1, 2 or 5,
only with ``nSigFigs`` 5; the official ``fast`` flag (5 levels, echoed as
``"fast": true`` in the data); hlbook's ``nLevels`` 1–100 (default 20, or 5
with ``fast``). All views of one coin and aggregation are slices of one
shared :class:`~hlbook.book.views.Ladder`, and a view is rebuilt only when a
level within its depth changed.
"""

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

import attrs

from hlbook.book.books import Books
from hlbook.book.l2 import DEFAULT_LEVELS, MAX_LEVELS
from hlbook.book.l4 import CoinBook, LevelView
from hlbook.book.views import Aggregation, Ladder, first_change
from hlbook.channels.base import (
    Channel,
    InvalidSubscription,
    Policy,
    Shared,
    optional_int,
    required_str,
)
from hlbook.model import Block
from hlbook.server.frames import Message
from hlbook.stages import Stage

__all__ = ["FAST_LEVELS", "L2Book", "L2Key"]

FAST_LEVELS = 5


@attrs.frozen(cache_hash=True)  # hashed several times per message offered
class L2Key:
    """One ``l2Book`` view."""

    coin: str
    n_sig_figs: int | None = None
    mantissa: int | None = None
    n_levels: int = DEFAULT_LEVELS
    fast: bool = False

    @property
    def aggregation(self) -> Aggregation:
        """What the view shares with others of its coin."""
        if self.n_sig_figs is None:
            return (None, 1)
        return (self.n_sig_figs, self.mantissa or 1)


def parse_l2(raw: Mapping[str, Any]) -> L2Key:
    """An ``l2Book`` subscription (or info request) object's view."""
    coin = required_str(raw, "coin")
    n_sig_figs = optional_int(raw, "nSigFigs", (2, 3, 4, 5))
    mantissa = optional_int(raw, "mantissa", (1, 2, 5))
    if mantissa is not None and n_sig_figs != 5:
        raise InvalidSubscription("mantissa is only allowed with nSigFigs 5")
    fast = raw.get("fast", False)
    if fast is None:
        fast = False
    if type(fast) is not bool:
        raise InvalidSubscription("fast must be true or false")
    n_levels = optional_int(raw, "nLevels", range(1, MAX_LEVELS + 1))
    if n_levels is None:
        n_levels = FAST_LEVELS if fast else DEFAULT_LEVELS
    return L2Key(coin, n_sig_figs, mantissa, n_levels, fast)


class L2Book(Channel):
    """The ``l2Book`` channel."""

    name = "l2Book"
    stage = Stage.DIFFS
    policy = Policy.CONFLATE

    def __init__(self, shared: Shared) -> None:
        self.ladders = shared.ladders
        self._keys: dict[str, dict[Aggregation, set[L2Key]]] = {}
        # What subscribers of each ladder were last sent: views change when a level
        # within their depth differs from this.
        self._sent: dict[tuple[str, Aggregation], tuple[list[LevelView], list[LevelView]]] = {}

    def parse(self, raw: Mapping[str, Any]) -> Hashable:
        return parse_l2(raw)

    def echo(self, raw: Mapping[str, Any], key: Hashable) -> dict[str, Any]:
        echo = dict(raw)
        echo.setdefault("nSigFigs", None)
        echo.setdefault("mantissa", None)
        return echo

    def added(self, key: Hashable) -> None:
        assert isinstance(key, L2Key)
        self._keys.setdefault(key.coin, {}).setdefault(key.aggregation, set()).add(key)
        self.ladders.pin(key.coin, key.aggregation)

    def removed(self, key: Hashable) -> None:
        assert isinstance(key, L2Key)
        self.ladders.unpin(key.coin, key.aggregation)
        by_aggregation = self._keys.get(key.coin, {})
        keys = by_aggregation.get(key.aggregation, set())
        keys.discard(key)
        if not keys:
            by_aggregation.pop(key.aggregation, None)
            self._sent.pop((key.coin, key.aggregation), None)
            if not by_aggregation:
                self._keys.pop(key.coin, None)

    def first(self, key: Hashable, books: Books) -> Message | None:
        assert isinstance(key, L2Key)
        ladder = self.ladders.get(books, key.coin, key.aggregation)
        if ladder is None:
            return None
        # Nothing changed since the last publication (it runs after every block), so
        # this is also what every other subscriber of the ladder holds.
        self._sent[(key.coin, key.aggregation)] = ladder.sides()
        return _message(ladder, key, books.time)

    def publish(
        self,
        block: Block,
        books: Books,
        touched: Mapping[str, CoinBook],
        keys: Collection[Hashable],
    ) -> Iterable[tuple[Hashable, Message]]:
        subscribed = self._keys
        for coin in touched:
            by_aggregation = subscribed.get(coin)
            if not by_aggregation:
                continue
            for aggregation, views in by_aggregation.items():
                ladder = self.ladders.get(books, coin, aggregation)
                if ladder is None:
                    continue
                bids, asks = sides = ladder.sides()
                sent = self._sent.get((coin, aggregation))
                if sent is None:
                    same = -1
                else:
                    same = min(first_change(sent[0], bids), first_change(sent[1], asks))
                if same >= MAX_LEVELS:
                    continue
                self._sent[(coin, aggregation)] = sides
                for key in views:
                    if key.n_levels > same:
                        yield key, _message(ladder, key, block.time)


def _message(ladder: Ladder, key: L2Key, time: int) -> Message:
    data = ladder.data_json(key.coin, time, key.n_levels, fast=key.fast)
    return Message(b'{"channel":"l2Book","data":%s}' % data)
