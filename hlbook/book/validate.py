"""Checking live books against a node snapshot taken a few blocks ago (sans I/O).

On a live node the snapshot hlbook asks for is at some height S, and by the
time it has been written, read and decoded hlbook has applied blocks after S.
Books cannot be rewound, so the snapshot is moved forward instead: every coin
those later blocks touched is rebuilt from the snapshot as bare order keys
(oid, side, price, size, queue position) and the blocks' diffs are replayed
on it; coins they did not touch are the same at S and now. Both are then
compared with the live books at the same height, order by order.
"""

from collections.abc import Iterable, Mapping, Sequence

from msgspec import UNSET

from hlbook.book.books import Books
from hlbook.book.compare import Comparison, Key, compare_keys
from hlbook.errors import OrderMismatchError, UnknownOrderError
from hlbook.model import Block
from hlbook.node.formats import RawDiff, SnapshotSide, normalize_side
from hlbook.numbers import parse

__all__ = ["MovedSnapshot", "compare_moved", "touched_coins"]

SnapshotCoins = Mapping[str, tuple[SnapshotSide, SnapshotSide]]


class _KeyBook:
    """One coin as bare keys: enough to replay diffs and compare, nothing else."""

    __slots__ = ("orders", "queues")

    def __init__(self, bids: SnapshotSide, asks: SnapshotSide) -> None:
        self.orders: dict[int, tuple[str, int, int]] = {}  # oid -> (side, px, sz)
        self.queues: dict[tuple[str, int], list[int]] = {}  # (side, px) -> oids
        for side, entries in (("B", bids), ("A", asks)):
            for _user, order in entries:
                px, sz = parse(order.limitPx), parse(order.sz)
                self.orders[order.oid] = (side, px, sz)
                self.queues.setdefault((side, px), []).append(order.oid)

    def apply(self, block: Block, coin: str) -> None:
        height = block.height
        for diff in block.diffs:
            if diff.coin != coin:
                continue
            oid, px, raw = diff.oid, parse(diff.px), diff.raw_book_diff
            if isinstance(raw, RawDiff) and raw.new is not UNSET:
                side = normalize_side(diff.side) or "?"
                if side == "?":  # no side on the diff: take it from the block's status
                    for status in block.statuses:
                        if status.status in ("open", "triggered"):
                            order = status.parsed_order()
                            if order.oid == oid:
                                side = normalize_side(order.side) or "?"
                queue = self.queues.setdefault((side, px), [])
                before = raw.new.insertBefore
                if before is not UNSET and before is not None and before in queue:
                    queue.insert(queue.index(before), oid)
                else:
                    queue.append(oid)
                self.orders[oid] = (side, px, parse(raw.new.sz))
                continue
            resting = self.orders.get(oid)
            if resting is None:
                raise UnknownOrderError(
                    "not in the moved snapshot", height=height, coin=coin, oid=oid
                )
            side, at, size = resting
            if raw == "remove":
                del self.orders[oid]
                queue = self.queues[(side, at)]
                queue.remove(oid)
                if not queue:
                    del self.queues[(side, at)]
                continue
            assert isinstance(raw, RawDiff)
            assert raw.update is not UNSET
            if parse(raw.update.origSz) != size:
                raise OrderMismatchError(
                    f"update origSz {raw.update.origSz} does not fit the moved snapshot",
                    height=height,
                    coin=coin,
                    oid=oid,
                )
            self.orders[oid] = (side, at, parse(raw.update.newSz))

    def keys(self, side: str) -> list[Key]:
        """``(oid, px, sz)`` of ``side``, best first, queue order."""
        prices = sorted((px for s, px in self.queues if s == side), reverse=side == "B")
        orders = self.orders
        return [(oid, px, orders[oid][2]) for px in prices for oid in self.queues[(side, px)]]


def touched_coins(blocks: Iterable[Block]) -> set[str]:
    """Coins with at least one diff in ``blocks``."""
    return {diff.coin for block in blocks for diff in block.diffs}


class MovedSnapshot:
    """A node snapshot at ``height`` moved forward through the blocks after it."""

    def __init__(self, height: int, coins: SnapshotCoins) -> None:
        self.snapshot_height = height
        self.height = height
        self._coins = coins
        self._moved: dict[str, _KeyBook] = {}

    @property
    def moved(self) -> set[str]:
        """Coins that blocks after the snapshot touched."""
        return set(self._moved)

    def advance(self, blocks: Sequence[Block]) -> None:
        """Replay ``blocks`` (consecutive, above :attr:`height`).

        Raises :class:`~hlbook.errors.DivergenceError` if they do not fit the
        snapshot: the node's snapshot and its files disagree.
        """
        for block in blocks:
            if block.height <= self.height:
                continue
            for coin in touched_coins([block]) - set(self._moved):
                # First touched now: its state before this block is the snapshot's.
                bids, asks = self._coins.get(coin, ([], []))
                self._moved[coin] = _KeyBook(bids, asks)
            for coin in {diff.coin for diff in block.diffs}:
                self._moved[coin].apply(block, coin)
            self.height = block.height

    def snapshot_coin(self, coin: str) -> tuple[SnapshotSide, SnapshotSide]:
        """The snapshot's own ``(bids, asks)`` of ``coin`` (empty if it had none)."""
        return self._coins.get(coin, ([], []))

    def expected(self, books: Books) -> Iterable[tuple[str, list[Key], list[Key]]]:
        """Every coin the filter keeps, as it should be at :attr:`height`."""
        for coin in set(self._coins) | set(self._moved):
            if not books.accepts(coin):
                continue
            moved = self._moved.get(coin)
            if moved is not None:
                yield coin, moved.keys("B"), moved.keys("A")
            else:
                bids, asks = self._coins[coin]
                yield coin, _keys(bids), _keys(asks)


def _keys(entries: SnapshotSide) -> list[Key]:
    return [(o.oid, parse(o.limitPx), parse(o.sz)) for _user, o in entries]


def compare_moved(books: Books, moved: MovedSnapshot, *, limit: int = 20) -> Comparison:
    """Compare ``books`` with ``moved`` at the same height (see :func:`compare_keys`)."""
    if books.height != moved.height:
        raise ValueError(f"books at {books.height}, snapshot moved to {moved.height}")
    return compare_keys(books, moved.expected(books), limit=limit)
