"""One coin's exact per-order (L4) book.

Each side maps a scaled-integer price to a :class:`Level`, kept sorted by
``sortedcontainers.SortedDict``. A level keeps the oids of its resting orders
in queue order in a plain list, with a running size total so L2 views never
sum orders; the orders themselves live in the books' oid index. A list costs
a third of a dict's memory for the two or three orders a typical level holds
(mainnet BTC: 2.4), and removing an oid is a C-speed scan of a short list.
"""

from collections.abc import Iterator
from itertools import islice
from typing import Protocol, TypeAlias

import msgspec
from sortedcontainers import SortedDict

from hlbook.book.resting import Resting, full_order
from hlbook.node.formats import Order
from hlbook.numbers import fmt

__all__ = ["ASK", "BID", "CoinBook", "Level", "LevelView", "LevelWatcher"]

BID = "B"
ASK = "A"

LevelView: TypeAlias = tuple[str, str, int]
"""An L2 level as served: ``(px, sz, n)`` with canonical decimal strings."""


class Level(msgspec.Struct, gc=False):
    """All resting orders at one price on one side: their oids in queue order.

    A Struct without GC tracking: 16 bytes smaller than a slots class, and the
    collector never walks the ~10^5 levels of a mainnet book.
    """

    px: int
    px_str: str
    total: int = 0
    oids: list[int] = []
    _view: LevelView | None = None

    def __len__(self) -> int:
        return len(self.oids)

    def append(self, oid: int, sz: int) -> None:
        """Add an order at the back of the queue."""
        self.oids.append(oid)
        self.total += sz
        self._view = None

    def insert_before(self, before: int, oid: int, sz: int) -> None:
        """Add an order directly in front of resting order ``before`` (or at the back)."""
        oids = self.oids
        try:
            oids.insert(oids.index(before), oid)
        except ValueError:
            oids.append(oid)
        self.total += sz
        self._view = None

    def resize(self, delta: int) -> None:
        """Account for a resting order's size changing by ``delta``."""
        self.total += delta
        self._view = None

    def remove(self, oid: int, sz: int) -> None:
        """Remove a resting order of size ``sz``."""
        self.oids.remove(oid)
        self.total -= sz
        self._view = None

    def view(self) -> LevelView:
        """``(px, sz, n)`` for L2 output; cached until the level changes."""
        view = self._view
        if view is None:
            view = self._view = (self.px_str, fmt(self.total), len(self.oids))
        return view

    def __repr__(self) -> str:
        return f"Level({self.px_str}, total={fmt(self.total)}, n={len(self.oids)})"


class LevelWatcher(Protocol):
    """Something kept up to date level change by level change (e.g. an aggregated ladder)."""

    def level_changed(self, side: str, px: int, size: int, count: int) -> None:
        """The level at ``px`` on ``side`` changed by ``size`` (scaled) and ``count`` orders."""


class CoinBook:
    """Both sides of one coin. Bids and asks are keyed by scaled price."""

    __slots__ = (
        "_ask_depth",
        "_ask_edge",
        "_bid_depth",
        "_bid_edge",
        "_watchers",
        "asks",
        "bids",
        "coin",
        "index",
    )

    def __init__(self, coin: str, index: dict[int, Resting] | None = None) -> None:
        self.coin = coin
        self.index: dict[int, Resting] = {} if index is None else index
        """oid -> resting order record (shared by all coins of a :class:`~hlbook.Books`)."""
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        # Cached top-n views per side (n -> views), and the deepest price they
        # reach (None: some view holds the whole side, so any change matters).
        self._bid_depth: dict[int, list[LevelView]] = {}
        self._ask_depth: dict[int, list[LevelView]] = {}
        self._bid_edge: int | None = None
        self._ask_edge: int | None = None
        self._watchers: list[LevelWatcher] | None = None

    def side(self, side: str) -> SortedDict:
        """The price → :class:`Level` map of ``side`` (``"B"`` or ``"A"``)."""
        return self.bids if side == BID else self.asks

    def best(self, side: str) -> Level | None:
        """The best level of ``side``, or ``None`` if that side is empty."""
        levels = self.side(side)
        if not levels:
            return None
        level: Level = levels.peekitem(-1 if side == BID else 0)[1]
        return level

    def levels(self, side: str) -> Iterator[Level]:
        """Levels of ``side`` best first (bids descending, asks ascending)."""
        # Not reversed(levels.values()): that view reverses by index, O(log n) per
        # level through Sequence.__reversed__ (~50x slower on a 10k-level side).
        levels = self.side(side)
        return map(levels.__getitem__, reversed(levels) if side == BID else levels)

    def top(self, side: str, n: int) -> list[Level]:
        """The best ``n`` levels of ``side``, best first."""
        # Walking the keys lazily is ~30% cheaper than slicing the values view
        # (benchmarks/synthetic.py), and n=0 gives no level (values[-0:] gave all).
        return list(islice(self.levels(side), n))

    def orders(self, side: str) -> Iterator[Order]:
        """Every resting order of ``side``: best price first, queue order within a price
        (rebuilt from the records: new objects)."""
        index = self.index
        for level in self.levels(side):
            for oid in level.oids:
                yield full_order(oid, index[oid])

    def order_count(self) -> int:
        """How many orders rest in this book."""
        return sum(
            len(level.oids) for levels in (self.bids, self.asks) for level in levels.values()
        )

    def is_crossed(self) -> bool:
        """True if the best bid is at or above the best ask."""
        bid, ask = self.best(BID), self.best(ASK)
        return bid is not None and ask is not None and bid.px >= ask.px

    def is_empty(self) -> bool:
        """True if no order rests on either side."""
        return not self.bids and not self.asks

    def depth(self, side: str, n: int) -> list[LevelView]:
        """L2 view of the best ``n`` levels without aggregation.

        Cached until a change lands within those levels (see :meth:`changed`):
        most changes of a busy book are deeper than the top 20, and then the
        same list object is returned again.
        """
        bid = side == BID
        cache = self._bid_depth if bid else self._ask_depth
        views = cache.get(n)
        if views is not None:
            return views
        levels = self.top(side, n)
        views = [level._view or level.view() for level in levels]
        edge = levels[-1].px if n and len(levels) == n else None
        if cache:
            # The cache's edge is the deepest of its views' (None if one holds a whole side).
            old = self._bid_edge if bid else self._ask_edge
            if old is None or edge is None:
                edge = None
            else:
                edge = min(edge, old) if bid else max(edge, old)
        if bid:
            self._bid_edge = edge
        else:
            self._ask_edge = edge
        cache[n] = views
        return views

    def watch(self, watcher: "LevelWatcher") -> None:
        """Tell ``watcher`` about every level change from now on (see :meth:`changed`)."""
        if self._watchers is None:
            self._watchers = []
        self._watchers.append(watcher)

    def unwatch(self, watcher: "LevelWatcher") -> None:
        """Stop telling ``watcher``."""
        if self._watchers is not None and watcher in self._watchers:
            self._watchers.remove(watcher)
            if not self._watchers:
                self._watchers = None

    def changed(self, side: str, px: int, size: int = 0, count: int = 0) -> None:
        """The level at ``px`` on ``side`` changed by ``size`` (scaled) and ``count`` orders
        (or appeared, or went away)."""
        watchers = self._watchers
        if watchers is not None:
            for watcher in watchers:
                watcher.level_changed(side, px, size, count)
        if side == BID:
            if self._bid_depth and (self._bid_edge is None or px >= self._bid_edge):
                self._bid_depth = {}
        elif self._ask_depth and (self._ask_edge is None or px <= self._ask_edge):
            self._ask_depth = {}
