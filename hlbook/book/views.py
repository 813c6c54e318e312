"""L2 views shared by every subscriber and request: one computation per coin and aggregation.

A :class:`Ladder` is one coin's book at one aggregation (``nSigFigs`` and
``mantissa``, or none) as levels best first, up to :data:`MAX_LEVELS` per
side, each with its JSON rendered once. Every ``l2Book`` view of that coin
and aggregation — any ``nLevels``, ``fast`` or not, over WebSocket or HTTP —
is a slice of it, so a thousand views of one coin cost one computation and
a thousand byte joins.

Unaggregated ladders read the book's own cached top levels
(:meth:`~hlbook.book.l4.CoinBook.depth`). Aggregated ladders never walk the
book after they are built: they keep bucket totals up to date from the
book's level changes (:class:`~hlbook.book.l4.LevelWatcher`), so a coarse
aggregation of a deep book (``nSigFigs`` 2 on BTC spans the whole side)
costs one bucket update per changed level.
"""

from collections import OrderedDict
from itertools import islice

import orjson
from sortedcontainers import SortedDict

from hlbook.book.books import Books
from hlbook.book.l2 import MAX_LEVELS, bucket_price
from hlbook.book.l4 import ASK, BID, CoinBook, LevelView
from hlbook.numbers import fmt

__all__ = ["Aggregation", "Ladder", "Ladders", "first_change", "level_json"]

Aggregation = tuple[int | None, int]
"""``(nSigFigs or None, mantissa)``; mantissa is 1 when not given."""


def level_json(view: LevelView) -> bytes:
    """``{"px":…,"sz":…,"n":…}`` for one level."""
    px, sz, n = view
    return b'{"px":"%s","sz":"%s","n":%d}' % (px.encode(), sz.encode(), n)


def first_change(old: list[LevelView] | None, new: list[LevelView]) -> int:
    """How many leading levels ``old`` and ``new`` share (a view of ``n`` levels changed
    iff ``n`` exceeds this for either side)."""
    if old is None:
        return -1
    if old is new:
        return MAX_LEVELS
    for index, (a, b) in enumerate(zip(old, new, strict=False)):
        if a is not b and a != b:
            return index
    if len(old) == len(new):
        return MAX_LEVELS
    return min(len(old), len(new))


class _Buckets:
    """One side of one coin aggregated into buckets, kept current from level changes."""

    __slots__ = ("dirty", "mantissa", "n_sig_figs", "side", "totals", "views")

    def __init__(self, book: CoinBook, side: str, n_sig_figs: int, mantissa: int) -> None:
        self.side = side
        self.n_sig_figs = n_sig_figs
        self.mantissa = mantissa
        # bucket price -> [size, count, view or None], sorted: the best buckets come first.
        self.totals: SortedDict = SortedDict()
        for level in book.levels(side):
            self.level_changed(side, level.px, level.total, len(level.oids))
        self.dirty = True
        self.views: list[LevelView] = []

    def level_changed(self, side: str, px: int, size: int, count: int) -> None:
        if side != self.side:
            return
        bucket = bucket_price(px, side, self.n_sig_figs, self.mantissa)
        entry = self.totals.get(bucket)
        if entry is None:
            self.totals[bucket] = [size, count, None]
        else:
            entry[0] += size
            entry[1] += count
            entry[2] = None  # its view must be rendered again
            if entry[1] <= 0:
                del self.totals[bucket]
        self.dirty = True

    def top(self) -> list[LevelView]:
        if not self.dirty:
            return self.views
        totals = self.totals
        keys = reversed(totals) if self.side == BID else iter(totals)
        views = []
        for bucket in islice(keys, MAX_LEVELS):
            entry = totals[bucket]
            view = entry[2]
            if view is None:
                # Unchanged buckets keep their view object: renders and comparisons stay free.
                view = entry[2] = (fmt(bucket), fmt(entry[0]), entry[1])
            views.append(view)
        self.views = views
        self.dirty = False
        return views


class Ladder:
    """One coin at one aggregation: both sides' top levels and their JSON, best first."""

    def __init__(self, book: CoinBook, aggregation: Aggregation) -> None:
        self.book = book
        self.aggregation = aggregation
        n_sig_figs, mantissa = aggregation
        self._buckets: tuple[_Buckets, _Buckets] | None = None
        if n_sig_figs is not None:
            buckets = (
                _Buckets(book, BID, n_sig_figs, mantissa),
                _Buckets(book, ASK, n_sig_figs, mantissa),
            )
            for side in buckets:
                book.watch(side)
            self._buckets = buckets
        self._json: dict[LevelView, bytes] = {}
        self._json_of: tuple[list[LevelView], list[LevelView]] | None = None

    def close(self) -> None:
        """Stop following the book (the ladder is no longer used)."""
        if self._buckets is not None:
            for side in self._buckets:
                self.book.unwatch(side)

    def sides(self) -> tuple[list[LevelView], list[LevelView]]:
        """Bids and asks, best first, at most :data:`MAX_LEVELS` each.

        The same list objects come back while nothing changed.
        """
        if self._buckets is None:
            return self.book.depth(BID, MAX_LEVELS), self.book.depth(ASK, MAX_LEVELS)
        return self._buckets[0].top(), self._buckets[1].top()

    def levels_json(self, n_levels: int) -> bytes:
        """``[[bids…],[asks…]]`` with at most ``n_levels`` per side."""
        bids, asks = self.sides()
        if self._json_of is None or self._json_of[0] is not bids or self._json_of[1] is not asks:
            # Keep the renders of levels still shown, drop the others (bounded by 2 * MAX).
            old, fresh = self._json, {}
            for view in (*bids, *asks):
                fresh[view] = old.get(view) or level_json(view)
            self._json = fresh
            self._json_of = (bids, asks)
        rendered = self._json
        return b"[[%s],[%s]]" % (
            b",".join([rendered[view] for view in bids[:n_levels]]),
            b",".join([rendered[view] for view in asks[:n_levels]]),
        )

    def data_json(self, coin: str, time: int, n_levels: int, *, fast: bool = False) -> bytes:
        """The ``l2Book`` data object: ``{"coin","time","levels"[,"fast"]}``."""
        tail = b',"fast":true}' if fast else b"}"
        levels = self.levels_json(n_levels)
        return b'{"coin":%s,"time":%d,"levels":%s' % (orjson.dumps(coin), time, levels) + tail


class Ladders:
    """The ladders in use, one per (coin, aggregation), rebuilt when a coin's book is replaced.

    Ladders used by subscriptions are pinned (:meth:`pin`); others (HTTP
    requests) are kept in a small LRU so that repeated requests stay cheap.
    """

    def __init__(self, spare: int = 64) -> None:
        self._ladders: dict[tuple[str, Aggregation], Ladder] = {}
        self._pins: dict[tuple[str, Aggregation], int] = {}
        self._spare: OrderedDict[tuple[str, Aggregation], None] = OrderedDict()
        self._spare_limit = spare

    def __len__(self) -> int:
        return len(self._ladders)

    def get(self, books: Books, coin: str, aggregation: Aggregation) -> Ladder | None:
        """The ladder of ``coin`` at ``aggregation`` (``None`` if hlbook has no such book)."""
        book = books.book(coin)
        if book is None:
            return None
        key = (coin, aggregation)
        ladder = self._ladders.get(key)
        if ladder is None or ladder.book is not book:
            if ladder is not None:
                ladder.close()
            ladder = self._ladders[key] = Ladder(book, aggregation)
        if key not in self._pins:
            self._spare[key] = None
            self._spare.move_to_end(key)
            while len(self._spare) > self._spare_limit:
                old, _ = self._spare.popitem(last=False)
                self._ladders.pop(old).close()
        return ladder

    def pin(self, coin: str, aggregation: Aggregation) -> None:
        """A subscription uses this ladder: keep it."""
        key = (coin, aggregation)
        self._pins[key] = self._pins.get(key, 0) + 1
        self._spare.pop(key, None)

    def unpin(self, coin: str, aggregation: Aggregation) -> None:
        """A subscription stopped using it."""
        key = (coin, aggregation)
        left = self._pins.get(key, 0) - 1
        if left > 0:
            self._pins[key] = left
            return
        self._pins.pop(key, None)
        ladder = self._ladders.pop(key, None)
        if ladder is not None:
            ladder.close()
