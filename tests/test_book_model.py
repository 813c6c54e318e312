"""Property tests: the engine against a naive model of the book.

Random blocks of ``new`` (with and without ``insertBefore``), ``update`` and
``remove`` diffs over several coins are applied to :class:`Books` and to a
model of a few lines (coin -> side -> list of orders in arrival order; a
stable sort by price gives the book). They must agree order by order after
every block. Blocks with one divergent diff must raise the right error and
leave the engine exactly as it was.
"""

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from fixtures import OTHER, USER, block, book_state, index_state, new, remove, status, update
from hypothesis import given
from hypothesis import strategies as st

from hlbook.book.books import Books
from hlbook.book.compare import compare
from hlbook.book.l2 import bbo, l2_levels
from hlbook.errors import (
    BlockOrderError,
    DivergenceError,
    DuplicateOrderError,
    OrderMismatchError,
    UnknownOrderError,
)
from hlbook.node.formats import decode_snapshot, encode_snapshot

PRICES = {
    "BTC": ["106217.0", "106216.0", "106210.0", "81311.0"],
    "@107": ["0.012345", "0.01235", "0.0123"],
    "xyz:XYZ100": ["25.5", "25.0"],
    "PURR/USDC": ["0.2", "0.21", "1.0"],
}
COINS = list(PRICES)
SIZES = ["0.00033", "0.5", "1.0", "2.25", "10.0", "1096.0", "0.61488"]


# -- the naive model -----------------------------------------------------------

Row = list[Any]  # [oid, px, sz, user] with Decimal px and sz


class Naive:
    """coin -> side -> orders in arrival order; queue order = stable sort by price."""

    def __init__(self) -> None:
        self.book: dict[str, dict[str, list[Row]]] = {}

    def find(self, oid: int) -> tuple[str, str, Row] | None:
        for coin, sides in self.book.items():
            for side, rows in sides.items():
                for row in rows:
                    if row[0] == oid:
                        return coin, side, row
        return None

    def new(self, coin: str, side: str, row: Row, before: int | None) -> None:
        rows = self.book.setdefault(coin, {"B": [], "A": []})[side]
        at = next((i for i, r in enumerate(rows) if r[0] == before and r[1] == row[1]), len(rows))
        rows.insert(at, row)

    def remove(self, oid: int) -> None:
        found = self.find(oid)
        assert found is not None
        self.book[found[0]][found[1]].remove(found[2])

    def orders(self, coin: str, side: str) -> list[tuple[int, Decimal, Decimal, str]]:
        rows = self.book.get(coin, {}).get(side, [])
        ordered = sorted(rows, key=lambda r: -r[1] if side == "B" else r[1])
        return [(r[0], r[1], r[2], r[3]) for r in ordered]

    def levels(self, coin: str, side: str) -> list[tuple[Decimal, Decimal, int]]:
        out: list[tuple[Decimal, Decimal, int]] = []
        for _, px, sz, _ in self.orders(coin, side):
            if out and out[-1][0] == px:
                out[-1] = (px, out[-1][1] + sz, out[-1][2] + 1)
            else:
                out.append((px, sz, 1))
        return out

    def count(self) -> int:
        return sum(len(rows) for sides in self.book.values() for rows in sides.values())


# -- drawing blocks ------------------------------------------------------------


class Draw:
    """Draws diffs against a working copy of the model (the block's own effect so far)."""

    def __init__(self, data: st.DataObject, model: Naive, next_oid: list[int]) -> None:
        self.data = data
        self.work = copy.deepcopy(model)
        self.next_oid = next_oid
        self.diffs: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.coins: set[str] = set()
        self.removed: list[int] = []
        self.with_status: set[int] = set()  # oids with an ``open`` status in this block

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def fresh(self) -> int:
        self.next_oid[0] += 1
        return self.next_oid[0]

    def resting(self) -> list[tuple[str, str, Row]]:
        return [
            (coin, side, row)
            for coin, sides in sorted(self.work.book.items())
            for side, rows in sorted(sides.items())
            for row in rows
        ]

    def valid(self) -> None:
        kinds = ["new", "new", "before"] + (["update", "remove"] if self.resting() else [])
        kind = self.draw(st.sampled_from(kinds))
        if kind in ("new", "before"):
            coin = self.draw(st.sampled_from(COINS))
            side = self.draw(st.sampled_from(["A", "B"]))
            px = self.draw(st.sampled_from(PRICES[coin]))
            before: int | None = None
            if kind == "before":
                same = [
                    r[0] for c, s, r in self.resting() if (c, s, r[1]) == (coin, side, Decimal(px))
                ]
                others = [r[0] for _, _, r in self.resting()] + [10**9]
                before = self.draw(st.sampled_from(same or others))
            self.place(coin, side, px, before)
        else:
            coin, side, row = self.draw(st.sampled_from(self.resting()))
            wire_side = self.draw(st.sampled_from([side, None, "Ask" if side == "A" else "Bid"]))
            px = str(row[1])
            if kind == "update":
                new_sz = self.draw(st.sampled_from(SIZES))
                self.diffs.append(
                    update(row[0], str(row[2]), new_sz, coin=coin, side=wire_side, px=px)
                )
                row[2] = Decimal(new_sz)
            else:
                self.diffs.append(remove(row[0], coin=coin, side=wire_side, px=px))
                self.work.remove(row[0])
                self.removed.append(row[0])
        self.coins.add(coin)

    def place(self, coin: str, side: str, px: str, before: int | None) -> None:
        reuse = self.removed and self.draw(st.booleans())
        oid = self.removed.pop() if reuse else self.fresh()
        sz = self.draw(st.sampled_from(SIZES))
        # The first ``open`` status of an oid in the block gives its details (user).
        had_status = oid in self.with_status
        if not had_status and self.draw(st.booleans()):
            self.statuses.append(
                status(oid, "open", user=OTHER, coin=coin, side=side, px=px, sz="99.0")
            )
            self.with_status.add(oid)
        if self.draw(st.booleans()):
            self.statuses.append(status(oid + 10**6, "badAloPxRejected", coin=coin))
        user = OTHER if oid in self.with_status else USER
        side_from_status = oid in self.with_status and not had_status
        wire_side = self.draw(st.sampled_from([side, None])) if side_from_status else side
        self.diffs.append(
            new(oid, coin=coin, side=wire_side, px=px, sz=sz, user=USER, before=before)
        )
        self.work.new(coin, side, [oid, Decimal(px), Decimal(sz), user], before)

    def divergent(self) -> type[DivergenceError]:
        """Append one diff that cannot apply; return the error it must raise."""
        kinds = ["unknown_update", "unknown_remove", "new_without_side"]
        if self.resting():
            kinds += ["orig_mismatch", "duplicate_new", "wrong_px", "wrong_coin", "wrong_side"]
        kind = self.draw(st.sampled_from(kinds))
        if kind == "unknown_update":
            self.diffs.append(update(self.fresh(), "1.0", "0.5"))
            return UnknownOrderError
        if kind == "unknown_remove":
            oid = self.draw(st.sampled_from(self.removed)) if self.removed else self.fresh()
            self.diffs.append(remove(oid, coin="BTC", px="106217.0"))
            return UnknownOrderError
        if kind == "new_without_side":
            self.diffs.append(new(self.fresh(), side=None, coin="BTC", px="81311.0"))
            return OrderMismatchError
        coin, side, row = self.draw(st.sampled_from(self.resting()))
        oid, px = row[0], str(row[1])
        if kind == "orig_mismatch":
            self.diffs.append(
                update(oid, str(row[2] + Decimal("0.001")), "1.0", coin=coin, side=side, px=px)
            )
            return OrderMismatchError
        if kind == "duplicate_new":
            other = self.draw(st.sampled_from(COINS))
            self.diffs.append(new(oid, coin=other, side="B", px=PRICES[other][0]))
            return DuplicateOrderError
        if kind == "wrong_px":
            bad = self.draw(st.sampled_from([p for p in PRICES[coin] if Decimal(p) != row[1]]))
            make: Callable[..., dict[str, Any]] = self.draw(
                st.sampled_from([_remove_sz, _update_same])
            )
            self.diffs.append(make(oid, coin=coin, side=side, px=bad, sz=str(row[2])))
            return OrderMismatchError
        if kind == "wrong_coin":
            other = self.draw(st.sampled_from([c for c in COINS if c != coin]))
            self.diffs.append(remove(oid, coin=other, side=side, px=px))
            return OrderMismatchError
        self.diffs.append(remove(oid, coin=coin, side="B" if side == "A" else "A", px=px))
        return OrderMismatchError


def _update_same(oid: int, *, coin: str, side: str, px: str, sz: str) -> dict[str, Any]:
    return update(oid, sz, "0.5", coin=coin, side=side, px=px)


def _remove_sz(oid: int, *, coin: str, side: str, px: str, sz: str) -> dict[str, Any]:
    return remove(oid, coin=coin, side=side, px=px)


# -- checking ------------------------------------------------------------------


def assert_agree(books: Books, model: Naive, oids: range) -> None:
    """Engine and model agree order by order, level by level, and in the oid index."""
    for coin in set(books.coins()) | set(model.book):
        book = books.book(coin)
        assert book is not None, coin
        for side in ("B", "A"):
            ours = [(o.oid, Decimal(o.limitPx), Decimal(o.sz), o.user) for o in book.orders(side)]
            assert ours == model.orders(coin, side), (coin, side)
            levels = [(Decimal(px), Decimal(sz), n) for px, sz, n in l2_levels(book, side, 100)]
            assert levels == model.levels(coin, side)
            # Small depths are cached until a change lands within them: check the cache.
            for n in (1, 2, 3):
                top = [(Decimal(px), Decimal(sz), c) for px, sz, c in l2_levels(book, side, n)]
                assert top == model.levels(coin, side)[:n], (coin, side, n)
            for level in book.levels(side):
                assert Decimal(level.px_str) * 10**12 == level.px
                assert level.oids, "empty levels must not linger"
            best = bbo(book)[0 if side == "B" else 1]
            expected = model.levels(coin, side)[:1]
            got = [] if best is None else [(Decimal(best[0]), Decimal(best[1]), best[2])]
            assert got == expected
    assert len(books) == model.count()
    for oid in oids:
        order = books.order(oid)
        found = model.find(oid)
        if found is None:
            assert order is None, oid
        else:
            assert order is not None, oid
            coin, side, row = found
            assert (order.coin, order.side, Decimal(order.limitPx), Decimal(order.sz)) == (
                coin,
                side,
                row[1],
                row[2],
            )


def assert_round_trip(books: Books) -> None:
    """books -> node snapshot bytes -> books gives identical books, and compare() agrees."""
    data = encode_snapshot(books.height, books.snapshot())
    height, coins = decode_snapshot(data)
    again = Books.from_snapshot(height, coins)
    assert again.height == books.height
    assert book_state(again) == book_state(books)
    result = compare(books, decode_snapshot(data)[1])
    assert result.matches, result.summary()
    assert result.orders_compared == len(books)


@given(st.data())
def test_valid_blocks_agree_with_the_model(data: st.DataObject) -> None:
    books, model, next_oid = Books(0), Naive(), [0]
    height = 0
    for _ in range(data.draw(st.integers(1, 8), label="blocks")):
        draw = Draw(data, model, next_oid)
        for _ in range(data.draw(st.integers(0, 10), label="diffs")):
            draw.valid()
        height += data.draw(st.integers(1, 3))
        applied = books.apply(block(height, statuses=draw.statuses, diffs=draw.diffs))
        model = draw.work
        assert set(applied.touched) == draw.coins
        assert books.height == height
        assert_agree(books, model, range(next_oid[0] + 2))
    assert_round_trip(books)


@given(st.data())
def test_divergent_blocks_change_nothing(data: st.DataObject) -> None:
    books, model, next_oid = Books(0), Naive(), [0]
    height = 0
    for _ in range(data.draw(st.integers(1, 6), label="blocks")):
        draw = Draw(data, model, next_oid)
        for _ in range(data.draw(st.integers(0, 6), label="diffs")):
            draw.valid()
        kind = data.draw(st.sampled_from(["valid", "divergent", "out_of_order"]))
        if kind == "valid":
            height += 1
            books.apply(block(height, statuses=draw.statuses, diffs=draw.diffs))
            model = draw.work
            assert_agree(books, model, range(next_oid[0] + 2))
            continue
        if kind == "divergent":
            expected: type[DivergenceError] = draw.divergent()
            for _ in range(data.draw(st.integers(0, 2), label="after")):
                draw.valid()
            target = height + 1
        else:
            expected = BlockOrderError
            target = data.draw(st.integers(0, height))
        oids = range(next_oid[0] + 2)
        before, index_before, count = book_state(books), index_state(books, oids), len(books)
        with pytest.raises(DivergenceError) as info:
            books.apply(block(target, statuses=draw.statuses, diffs=draw.diffs))
        assert type(info.value) is expected, (info.value, expected)
        assert info.value.height == target
        assert book_state(books) == before
        assert index_state(books, oids) == index_before
        assert len(books) == count
        assert books.height == height
        assert_agree(books, model, oids)
    assert_round_trip(books)


@given(st.data())
def test_snapshot_then_blocks_then_snapshot(data: st.DataObject) -> None:
    """Books reloaded from their own snapshot evolve exactly like the originals."""
    books, model, next_oid = Books(0), Naive(), [0]
    height = 0
    for _ in range(data.draw(st.integers(1, 3))):
        draw = Draw(data, model, next_oid)
        for _ in range(data.draw(st.integers(1, 10))):
            draw.valid()
        height += 1
        books.apply(block(height, statuses=draw.statuses, diffs=draw.diffs))
        model = draw.work
    height_, coins = decode_snapshot(encode_snapshot(books.height, books.snapshot()))
    again = Books.from_snapshot(height_, coins)
    for _ in range(data.draw(st.integers(1, 3))):
        draw = Draw(data, model, next_oid)
        for _ in range(data.draw(st.integers(1, 10))):
            draw.valid()
        height += 1
        for target in (books, again):
            target.apply(block(height, statuses=draw.statuses, diffs=draw.diffs))
        model = draw.work
        assert book_state(again) == book_state(books)
        assert_agree(again, model, range(next_oid[0] + 2))
    assert_round_trip(again)
