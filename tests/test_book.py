"""The L4 engine on hand-written blocks: order details, queue order, divergences, caching."""

from typing import Any

import pytest
from fixtures import (
    BASE_MS,
    OTHER,
    USER,
    block,
    book_state,
    index_state,
    new,
    order_obj,
    remove,
    status,
    update,
)

from hlbook.book.books import Books
from hlbook.book.l2 import bbo, l2_levels
from hlbook.book.l4 import ASK, BID, CoinBook, Level
from hlbook.errors import (
    BlockOrderError,
    DivergenceError,
    DuplicateOrderError,
    OrderMismatchError,
    SnapshotError,
    UnknownOrderError,
)
from hlbook.model import CoinFilter
from hlbook.node.formats import Order, decode_snapshot, encode_snapshot
from hlbook.numbers import parse

H = 100


def books_with(*diffs: dict[str, Any], statuses: tuple[dict[str, Any], ...] = ()) -> Books:
    """Books at height ``H`` after one block with ``diffs``."""
    books = Books(H - 1)
    books.apply(block(H, statuses=statuses, diffs=diffs))
    return books


def queue(books: Books, coin: str = "BTC", side: str = BID) -> list[tuple[str, list[int]]]:
    """``[(px, [oids in queue order]), …]`` best first."""
    book = books.book(coin)
    assert book is not None
    return [(level.px_str, list(level.oids)) for level in book.levels(side)]


def resting(books: Books, oid: int) -> Order:
    order = books.order(oid)
    assert order is not None
    return order


# -- order details -------------------------------------------------------------


def test_open_status_details_are_kept_and_diff_size_wins() -> None:
    books = books_with(
        new(1, side="A", px="81311.0", sz="0.5", user=USER),
        statuses=(
            status(
                1,
                "open",
                user=OTHER,
                time_ms=BASE_MS + 9,
                side="A",
                px="81311.0",
                sz="0.61488",
                origSz="0.61488",
                cloid="0x0e814d2ad8819d09b6716fe45d38bfd2",
                tif="Alo",
                reduceOnly=True,
                timestamp=BASE_MS - 1000,
            ),
        ),
    )
    order = resting(books, 1)
    assert order.user == OTHER  # details come from the status
    assert order.sz == "0.5"  # the diff's size wins
    assert order.origSz == "0.61488"
    assert order.limitPx == "81311.0"
    assert order.cloid == "0x0e814d2ad8819d09b6716fe45d38bfd2"
    assert order.tif == "Alo"
    assert order.reduceOnly is True
    assert order.timestamp == BASE_MS - 1000  # the order's own timestamp, not the status time
    assert order.isTrigger is False
    assert order.triggerCondition == "N/A"
    assert order.side == "A"
    book = books.book("BTC")
    assert book is not None
    assert bbo(book) == (None, ("81311.0", "0.5", 1))


def test_triggered_order_rests_at_diff_px_as_gtc() -> None:
    trigger_time = BASE_MS + 777
    books = books_with(
        new(7, side="B", px="81000.0", sz="1.5", user=USER),
        statuses=(
            status(
                7,
                "triggered",
                user=OTHER,
                time_ms=trigger_time,
                side="B",
                px="80000.0",
                sz="2.0",
                isTrigger=True,
                triggerCondition="Price above 80500",
                triggerPx="80500.0",
                tif=None,
                orderType="Stop Limit",
                timestamp=BASE_MS - 60_000,
            ),
        ),
    )
    order = resting(books, 7)
    assert order.limitPx == "81000.0"  # the diff's px, not the status's limitPx
    assert order.sz == "1.5"
    assert order.isTrigger is False
    assert order.triggerCondition == "Triggered"
    assert order.tif == "Gtc"
    assert order.timestamp == trigger_time
    assert order.user == OTHER
    assert order.triggerPx == "80500.0"
    assert queue(books) == [("81000.0", [7])]


def test_triggered_wins_over_open_for_the_same_oid() -> None:
    books = books_with(
        new(7, px="81000.0", sz="1.0"),
        statuses=(
            status(7, "open", user=USER, tif="Alo", px="81000.0"),
            status(7, "triggered", user=OTHER, time_ms=BASE_MS + 5, isTrigger=True),
        ),
    )
    order = resting(books, 7)
    assert (order.tif, order.triggerCondition, order.user) == ("Gtc", "Triggered", OTHER)


def test_order_without_status_gets_defaults_from_the_diff() -> None:
    protocol = "0xffffffffffffffffffffffffffffffffffffffff"
    books = Books(H - 1)
    books.apply(
        block(
            H,
            statuses=[status(99, "badAloPxRejected"), status(5, "canceled")],
            diffs=[new(5, side="A", px="0.0123450", sz="10", user=protocol)],
        )
    )
    order = resting(books, 5)
    assert order.user == protocol
    assert order.coin == "BTC"
    assert order.side == "A"
    assert order.limitPx == "0.012345"  # canonical
    assert order.sz == "10.0"
    assert order.origSz == "10.0"
    assert order.timestamp == block(H).time
    assert order.tif is None
    assert order.cloid is None
    assert order.isTrigger is False
    assert order.triggerCondition == "N/A"
    assert order.orderType == "Limit"
    assert order.reduceOnly is False


def test_diff_without_side_takes_it_from_the_status() -> None:
    books = books_with(new(3, side=None, px="100.0"), statuses=(status(3, side="A"),))
    assert resting(books, 3).side == "A"
    assert queue(books, side=ASK) == [("100.0", [3])]
    # update/remove without a side are accepted too
    books.apply(block(H + 1, diffs=[update(3, "1.0", "0.4", side=None)]))
    assert resting(books, 3).sz == "0.4"
    books.apply(block(H + 2, diffs=[remove(3, side=None)]))
    assert books.order(3) is None


def test_diff_without_side_or_status_is_a_divergence() -> None:
    books = Books(H - 1)
    with pytest.raises(OrderMismatchError) as info:
        books.apply(block(H, diffs=[new(3, side=None)]))
    assert info.value.oid == 3
    assert len(books) == 0
    assert books.height == H - 1


def test_spelled_out_sides() -> None:
    books = books_with(new(1, side="Bid", px="99.0"), new(2, side="Ask", px="101.0"))
    assert resting(books, 1).side == BID
    assert resting(books, 2).side == ASK


# -- queue order ---------------------------------------------------------------


def test_queue_order_and_insert_before() -> None:
    books = books_with(new(1), new(2), new(3), new(9, px="99.0"))
    books.apply(block(H + 1, diffs=[new(4, before=2)]))
    assert queue(books) == [("100.0", [1, 4, 2, 3]), ("99.0", [9])]
    # insertBefore an order that rests elsewhere or nowhere: the back of the level
    books.apply(block(H + 2, diffs=[new(5, before=9), new(6, before=12345), new(10, before=None)]))
    assert queue(books) == [("100.0", [1, 4, 2, 3, 5, 6, 10]), ("99.0", [9])]
    # in front of the first order, and in front of an order placed in the same block
    books.apply(
        block(H + 3, diffs=[new(7, before=1), new(8, px="99.0"), new(11, px="99.0", before=8)])
    )
    assert queue(books) == [("100.0", [7, 1, 4, 2, 3, 5, 6, 10]), ("99.0", [9, 11, 8])]
    # an order on the other side at the same price is not "there"
    books.apply(block(H + 4, diffs=[new(12, side="A", px="100.0", before=1)]))
    assert queue(books, side=ASK) == [("100.0", [12])]
    # update keeps the queue position
    books.apply(block(H + 5, diffs=[update(4, "1.0", "0.25")]))
    assert queue(books)[0] == ("100.0", [7, 1, 4, 2, 3, 5, 6, 10])


def test_update_and_remove_keep_level_totals() -> None:
    books = books_with(new(1, sz="0.61488"), new(2, sz="0.0175"), new(3, px="99.5", sz="3.0"))
    book = books.book("BTC")
    assert book is not None
    assert [lv.view() for lv in book.levels(BID)] == [("100.0", "0.63238", 2), ("99.5", "3.0", 1)]
    books.apply(block(H + 1, diffs=[update(1, "0.61488", "0.6", px="100.0")]))
    assert book.levels(BID).__next__().view() == ("100.0", "0.6175", 2)
    assert resting(books, 1).sz == "0.6"
    books.apply(block(H + 2, diffs=[remove(2), remove(3, px="99.5")]))
    assert [lv.view() for lv in book.levels(BID)] == [("100.0", "0.6", 1)]
    assert 99_500_000_000_000 not in book.bids  # empty levels disappear
    assert len(books) == 1


def test_new_update_remove_of_one_oid_within_a_block() -> None:
    books = Books(H - 1)
    books.apply(
        block(
            H,
            diffs=[
                new(1, sz="2.0"),
                update(1, "2.0", "1.5"),
                update(1, "1.5", "1.0"),
                remove(1),
                new(1, px="101.0", side="A", sz="0.3"),  # the oid may come back
                new(2),
            ],
        )
    )
    assert resting(books, 1).limitPx == "101.0"
    assert queue(books, side=ASK) == [("101.0", [1])]
    assert queue(books) == [("100.0", [2])]
    book = books.book("BTC")
    assert book is not None
    best = book.best(BID)
    assert best is not None
    assert best.view() == ("100.0", "1.0", 1)


def test_same_oid_numbers_on_different_coins_are_one_index() -> None:
    books = books_with(new(1, coin="ETH"))
    with pytest.raises(DuplicateOrderError):
        books.apply(block(H + 1, diffs=[new(1, coin="BTC")]))


# -- divergences ---------------------------------------------------------------

BASE_DIFFS = (
    new(1, px="100.0", sz="1.0"),
    new(2, px="100.0", sz="2.0"),
    new(3, side="A", px="101.0", sz="3.0"),
    new(4, coin="ETH", side="A", px="2000.0", sz="5.0"),
)


@pytest.mark.parametrize(
    ("diffs", "error", "oid"),
    [
        ([update(50, "1.0", "0.5")], UnknownOrderError, 50),
        ([remove(50)], UnknownOrderError, 50),
        ([remove(1), remove(1)], UnknownOrderError, 1),
        ([remove(1), update(1, "1.0", "0.5")], UnknownOrderError, 1),
        ([new(1)], DuplicateOrderError, 1),
        ([new(5), new(5)], DuplicateOrderError, 5),
        ([new(4, coin="BTC")], DuplicateOrderError, 4),
        ([update(1, "0.9", "0.5")], OrderMismatchError, 1),
        ([update(1, "1.0", "0.5"), update(1, "1.0", "0.4")], OrderMismatchError, 1),
        ([remove(1, px="100.5")], OrderMismatchError, 1),
        ([update(1, "1.0", "0.5", px="99.0")], OrderMismatchError, 1),
        ([remove(1, side="A")], OrderMismatchError, 1),
        ([remove(3, side="B", px="101.0")], OrderMismatchError, 3),
        ([remove(1, coin="ETH")], OrderMismatchError, 1),
        ([remove(4, coin="BTC", side="A", px="2000.0")], OrderMismatchError, 4),
        ([new(6, side=None)], OrderMismatchError, 6),
    ],
)
def test_divergence_leaves_the_book_exactly_as_before(
    diffs: list[dict[str, Any]], error: type[DivergenceError], oid: int
) -> None:
    books = books_with(*BASE_DIFFS)
    before = book_state(books)
    oids = range(60)
    index_before = index_state(books, oids)
    # Valid work first, so that a partial apply would be visible.
    prefix = [new(20, px="100.0"), remove(2), update(3, "3.0", "1.0", side="A", px="101.0")]
    with pytest.raises(error) as info:
        books.apply(block(H + 1, diffs=[*prefix, *diffs]))
    assert type(info.value) is error
    assert info.value.height == H + 1
    assert info.value.oid == oid
    assert f"block {H + 1}" in str(info.value)
    assert book_state(books) == before
    assert index_state(books, oids) == index_before
    assert books.height == H
    assert len(books) == 4
    # The same books still take the next good block.
    books.apply(block(H + 1, diffs=prefix))
    assert queue(books) == [("100.0", [1, 20])]


@pytest.mark.parametrize("height", [H, H - 1, 0])
def test_block_out_of_order(height: int) -> None:
    books = books_with(*BASE_DIFFS)
    before = book_state(books)
    with pytest.raises(BlockOrderError) as info:
        books.apply(block(height, diffs=[new(30)]))
    assert info.value.height == height
    assert book_state(books) == before
    assert books.order(30) is None


def test_heights_may_skip() -> None:
    # Streaming files skip empty blocks; the joiner, not the books, detects gaps.
    books = books_with(*BASE_DIFFS)
    books.apply(block(H + 5))
    assert books.height == H + 5


def test_coin_filter_skips_other_coins_entirely() -> None:
    books = Books(H - 1, coin_filter=CoinFilter(markets=frozenset({"perp", "hip3"})))
    applied = books.apply(
        block(
            H,
            diffs=[
                new(1),
                new(2, coin="@107", px="0.5"),
                remove(3, coin="PURR/USDC"),  # unknown oid, but not our coin
                new(4, coin="xyz:XYZ100"),
            ],
        )
    )
    assert set(applied.touched) == {"BTC", "xyz:XYZ100"}
    assert books.coins() == ["BTC", "xyz:XYZ100"]
    assert books.order(2) is None
    assert "@107" not in books


# -- compute only what changed -------------------------------------------------


def test_touched_reports_exactly_the_changed_coins_and_views_are_cached() -> None:
    books = books_with(*BASE_DIFFS, new(5, px="99.0"), new(6, coin="SOL", px="150.0"))
    btc, eth, sol = books.book("BTC"), books.book("ETH"), books.book("SOL")
    assert btc is not None
    assert eth is not None
    assert sol is not None
    eth_views = [lv.view() for lv in eth.levels(ASK)]
    eth_levels = list(eth.levels(ASK))
    eth_bbo = bbo(eth)
    sol_depth = l2_levels(sol, BID)
    btc_99 = btc.bids[parse("99.0")]
    btc_99_view = btc_99.view()
    btc_100_view = btc.bids[parse("100.0")].view()

    applied = books.apply(block(H + 1, diffs=[update(1, "1.0", "0.5")]))
    assert applied.touched == {"BTC": btc}
    assert applied.block.height == H + 1
    # Untouched coins: same Level objects, same cached view tuples (not recomputed).
    assert list(eth.levels(ASK)) == eth_levels
    assert all(a is b for a, b in zip(eth.levels(ASK), eth_levels, strict=True))
    assert all(lv.view() is v for lv, v in zip(eth.levels(ASK), eth_views, strict=True))
    assert bbo(eth)[1] is eth_bbo[1]
    assert all(a is b for a, b in zip(l2_levels(sol, BID), sol_depth, strict=True))
    # Within the touched coin, only the changed level is recomputed.
    assert btc.bids[parse("99.0")] is btc_99
    assert btc_99.view() is btc_99_view
    changed = btc.bids[parse("100.0")].view()
    assert changed is not btc_100_view
    assert changed == ("100.0", "2.5", 2)

    applied = books.apply(
        block(
            H + 2,
            diffs=[remove(6, coin="SOL", px="150.0"), new(7, coin="ETH", side="A", px="2001.0")],
        )
    )
    assert set(applied.touched) == {"SOL", "ETH"}
    assert eth.levels(ASK).__next__().view() is eth_views[0]
    assert sol.is_empty()

    applied = books.apply(block(H + 3, statuses=[status(8, "badAloPxRejected")]))
    assert applied.touched == {}


def test_level_view_cache_is_invalidated_by_every_mutation() -> None:
    level = Level(parse("100.0"), "100.0")
    views = [level.view()]
    level.append(1, parse("1.0"))
    views.append(level.view())
    level.insert_before(1, 2, parse("2.0"))
    views.append(level.view())
    level.resize(parse("0.5"))
    views.append(level.view())
    level.remove(1, parse("1.5"))
    views.append(level.view())
    assert views == [
        ("100.0", "0.0", 0),
        ("100.0", "1.0", 1),
        ("100.0", "3.0", 2),
        ("100.0", "3.5", 2),
        ("100.0", "2.0", 1),
    ]
    assert level.view() is views[-1]
    assert list(level.oids) == [2]
    assert "total=2.0" in repr(level)


# -- coin book helpers ---------------------------------------------------------


def test_coin_book_helpers() -> None:
    books = books_with(
        new(1, px="100.0"),
        new(2, px="99.0"),
        new(3, px="98.0"),
        new(4, side="A", px="101.0"),
        new(5, side="A", px="102.0"),
    )
    book = books.book("BTC")
    assert isinstance(book, CoinBook)
    assert [lv.px_str for lv in book.top(BID, 2)] == ["100.0", "99.0"]
    assert [lv.px_str for lv in book.top(ASK, 5)] == ["101.0", "102.0"]
    assert book.top(BID, 0) == []  # regression: values[-0:] used to return every level
    assert book.top(ASK, 0) == []
    assert [o.oid for o in book.orders(BID)] == [1, 2, 3]
    assert book.order_count() == 5
    assert not book.is_crossed()
    assert not book.is_empty()
    assert book.depth(ASK, 1) == [("101.0", "1.0", 1)]
    bids, asks = books.coin_orders("BTC")
    assert [o.oid for o in bids] == [1, 2, 3]
    assert [o.oid for o in asks] == [4, 5]
    assert "BTC" in books
    assert books.book("ETH") is None
    # a crossed book is reported (the mainnet test relies on this)
    books.apply(block(H + 1, diffs=[new(6, px="101.0")]))
    assert book.is_crossed()


# -- loading snapshots ---------------------------------------------------------


def _snapshot(*coins: tuple[str, list[Any], list[Any]]) -> bytes:
    return encode_snapshot_json(H, coins)


def encode_snapshot_json(height: int, coins: Any) -> bytes:
    import orjson

    return orjson.dumps([height, [[c, [b, a]] for c, b, a in coins]])


def test_from_snapshot_keeps_queue_order_and_details() -> None:
    data = _snapshot(
        (
            "BTC",
            [
                [USER, order_obj(1, px="100.0", sz="1.00")],
                [OTHER, order_obj(2, px="100.0", sz="2.0", cloid="0x2")],
                [USER, order_obj(3, px="99.0", sz="0.1")],
            ],
            [[OTHER, order_obj(4, side="A", px="101.0", sz="3.0")]],
        ),
        ("ETH", [], []),
    )
    progress: list[tuple[int, str]] = []
    height, coins = decode_snapshot(data)
    books = Books.from_snapshot(height, coins, progress=lambda n, c: progress.append((n, c)))
    assert progress == [(1, "BTC"), (2, "ETH")]
    assert books.height == H
    assert books.coins() == ["BTC", "ETH"]
    assert queue(books) == [("100.0", [1, 2]), ("99.0", [3])]
    assert resting(books, 1).sz == "1.0"  # canonical
    assert resting(books, 2).user == OTHER
    assert resting(books, 2).cloid == "0x2"
    assert len(books) == 4
    book = books.book("BTC")
    assert book is not None
    assert bbo(book) == (("100.0", "3.0", 2), ("101.0", "3.0", 1))
    # the books continue from the snapshot
    books.apply(block(H + 1, diffs=[update(2, "2.0", "1.0"), remove(4, side="A", px="101.0")]))
    assert bbo(book) == (("100.0", "2.0", 2), None)


def test_from_snapshot_with_filter() -> None:
    data = _snapshot(
        ("BTC", [[USER, order_obj(1)]], []),
        ("@107", [[USER, order_obj(2, coin="@107")]], []),
    )
    height, coins = decode_snapshot(data)
    books = Books.from_snapshot(height, coins, coin_filter=CoinFilter(coins=frozenset({"@107"})))
    assert books.coins() == ["@107"]
    assert books.order(1) is None


def test_from_snapshot_duplicate_oid() -> None:
    data = _snapshot(
        ("BTC", [[USER, order_obj(1)]], []),
        ("ETH", [], [[USER, order_obj(1, coin="ETH", side="A")]]),
    )
    height, coins = decode_snapshot(data)
    with pytest.raises(DuplicateOrderError):
        Books.from_snapshot(height, coins)


def test_set_coin_replaces_one_coin() -> None:
    books = books_with(new(1), new(2, coin="ETH"))
    _, coins = decode_snapshot(_snapshot(("BTC", [[USER, order_obj(3, px="90.0")]], [])))
    _, bids, asks = next(coins)
    books.set_coin("BTC", bids, asks)
    assert books.order(1) is None
    assert resting(books, 3).limitPx == "90.0"
    assert resting(books, 2).coin == "ETH"
    assert queue(books) == [("90.0", [3])]
    assert len(books) == 2


def test_snapshot_of_books_round_trips() -> None:
    books = books_with(*BASE_DIFFS, statuses=(status(2, cloid="0xabc", user=OTHER),))
    data = encode_snapshot(books.height, books.snapshot())
    height, coins = decode_snapshot(data)
    again = Books.from_snapshot(height, coins)
    assert book_state(again) == book_state(books)
    assert resting(again, 2).cloid == "0xabc"
    assert resting(again, 2).user == OTHER


# -- replacing a coin (load and repair) ------------------------------------------


def _entry(oid: int, px: str, sz: str, side: str = "B") -> tuple[str, Order]:
    return USER, Order(coin="BTC", side=side, limitPx=px, sz=sz, oid=oid, timestamp=BASE_MS)


def test_set_coin_replaces_a_coins_orders_in_the_index() -> None:
    books = books_with(new(1, px="100.0"), new(2, px="99.0"), new(3, coin="ETH", px="10.0"))
    books.set_coin("BTC", [_entry(5, "98.0", "2.0")], [_entry(6, "101.0", "1.0", "A")])
    assert books.order(1) is None
    assert books.order(2) is None
    assert books.order(3) is not None  # other coins untouched
    order = books.order(5)
    assert order is not None
    assert (order.limitPx, order.sz, order.user) == ("98.0", "2.0", USER)
    assert len(books) == 3
    book = books.book("BTC")
    assert book is not None
    assert book.depth(BID, 5) == [("98.0", "2.0", 1)]


def test_set_coin_is_all_or_nothing() -> None:
    books = books_with(new(1, px="100.0"), new(3, coin="ETH", px="10.0"))
    before = book_state(books)
    # An oid that rests on another coin, then a duplicate within the snapshot, then a bad size.
    for bids in (
        [_entry(7, "98.0", "1.0"), _entry(3, "97.0", "1.0")],
        [_entry(7, "98.0", "1.0"), _entry(7, "97.0", "1.0")],
        [_entry(7, "98.0", "1.0"), _entry(8, "97.0", "1e3")],
    ):
        with pytest.raises((DuplicateOrderError, SnapshotError)):
            books.set_coin("BTC", bids, [])
        assert book_state(books) == before
        assert books.order(7) is None
        assert books.order(1) is not None
