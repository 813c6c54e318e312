"""Compare hlbook's books with a node snapshot at the same height, order by order."""

from collections.abc import Iterable
from typing import TypeAlias

import attrs

from hlbook.book.books import Books
from hlbook.book.l4 import ASK, BID
from hlbook.node.formats import Order, SnapshotSide
from hlbook.numbers import fmt, parse

__all__ = ["Comparison", "Difference", "Key", "compare", "compare_keys"]

Key: TypeAlias = tuple[int, int, int]
"""``(oid, px, sz)`` of one order, scaled integers."""


@attrs.frozen
class Difference:
    """One way in which a coin's side differs from the snapshot.

    ``kind`` is ``missing`` (in the snapshot, not in hlbook), ``extra`` (in
    hlbook, not in the snapshot), ``price``, ``size`` or ``queue`` (same
    orders, different queue order within the level).
    """

    coin: str
    side: str
    kind: str
    oid: int
    ours: str | None = None
    theirs: str | None = None

    def __str__(self) -> str:
        detail = ""
        if self.ours is not None or self.theirs is not None:
            detail = f": hlbook {self.ours}, node {self.theirs}"
        return f"{self.coin} {self.side} oid {self.oid} {self.kind}{detail}"


@attrs.frozen
class Comparison:
    """The result of :func:`compare`: counts, the differing coins, the first differences."""

    height: int
    coins_compared: int
    orders_compared: int
    differences: int
    coins: tuple[str, ...]
    first: tuple[Difference, ...]

    @property
    def matches(self) -> bool:
        """True if every order agrees."""
        return self.differences == 0

    def summary(self) -> str:
        """One line for the log."""
        if self.matches:
            return (
                f"books match the node at height {self.height} "
                f"({self.orders_compared} orders, {self.coins_compared} coins)"
            )
        shown = "; ".join(str(d) for d in self.first[:5])
        return (
            f"{self.differences} difference(s) with the node at height {self.height} "
            f"in {len(self.coins)} coin(s) {list(self.coins[:10])}: {shown}"
        )


def _keys(orders: Iterable[Order]) -> list[Key]:
    return [(o.oid, parse(o.limitPx), parse(o.sz)) for o in orders]


def _side_differences(coin: str, side: str, ours: list[Key], theirs: list[Key]) -> list[Difference]:
    mine = {key[0]: key for key in ours}
    node = {key[0]: key for key in theirs}
    found: list[Difference] = []
    for oid, (_, px, sz) in node.items():
        have = mine.get(oid)
        if have is None:
            found.append(Difference(coin, side, "missing", oid, None, f"{fmt(sz)}@{fmt(px)}"))
        elif have[1] != px:
            found.append(Difference(coin, side, "price", oid, fmt(have[1]), fmt(px)))
        elif have[2] != sz:
            found.append(Difference(coin, side, "size", oid, fmt(have[2]), fmt(sz)))
    found.extend(
        Difference(coin, side, "extra", oid, f"{fmt(sz)}@{fmt(px)}", None)
        for oid, (_, px, sz) in mine.items()
        if oid not in node
    )
    common_mine = [key[0] for key in ours if key[0] in node]
    common_node = [key[0] for key in theirs if key[0] in mine]
    for position, (a, b) in enumerate(zip(common_mine, common_node, strict=True)):
        if a != b:
            found.append(Difference(coin, side, "queue", b, f"oid {a} at {position}", f"oid {b}"))
            break
    return found


def compare(
    books: Books,
    snapshot: Iterable[tuple[str, SnapshotSide, SnapshotSide]],
    *,
    limit: int = 20,
) -> Comparison:
    """Compare ``books`` with a snapshot taken at ``books.height``.

    Checks every order's oid, side, price, size and queue position. Coins the
    coin filter drops are skipped. At most ``limit`` differences are kept in
    detail; all are counted.
    """
    expected = (
        (coin, _keys(o for _, o in bids), _keys(o for _, o in asks))
        for coin, bids, asks in snapshot
    )
    return compare_keys(books, expected, limit=limit)


def compare_keys(
    books: Books,
    expected: Iterable[tuple[str, list[Key], list[Key]]],
    *,
    limit: int = 20,
) -> Comparison:
    """Compare ``books`` with the expected ``(oid, px, sz)`` of every order of every coin.

    ``expected`` yields ``(coin, bids, asks)``, best first, queue order. Coins
    the books hold but ``expected`` does not mention must be empty.
    """
    seen: set[str] = set()
    differences = 0
    orders = 0
    coins: list[str] = []
    first: list[Difference] = []
    for coin, bids, asks in expected:
        if not books.accepts(coin):
            continue
        seen.add(coin)
        ours_b, ours_a = books.coin_keys(coin) if coin in books else ([], [])
        coin_diffs = 0
        for side, mine, node in ((BID, ours_b, bids), (ASK, ours_a, asks)):
            orders += len(node)
            if mine == node:
                continue
            found = _side_differences(coin, side, mine, node)
            coin_diffs += len(found)
            first.extend(found[: max(0, limit - len(first))])
        if coin_diffs:
            coins.append(coin)
            differences += coin_diffs
    for coin in books.coins():
        if coin in seen:
            continue
        extra_b, extra_a = books.coin_orders(coin)
        if not (extra_b or extra_a):
            continue
        coins.append(coin)
        for side, extra in ((BID, extra_b), (ASK, extra_a)):
            differences += len(extra)
            first.extend(
                Difference(coin, side, "extra", o.oid, f"{o.sz}@{o.limitPx}", None)
                for o in extra[: max(0, limit - len(first))]
            )
    return Comparison(
        height=books.height,
        coins_compared=len(seen),
        orders_compared=orders,
        differences=differences,
        coins=tuple(coins),
        first=tuple(first),
    )
