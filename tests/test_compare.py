"""Comparing books with a node snapshot: matches, and bounded, useful differences."""

from typing import Any

import orjson
import pytest
from fixtures import OTHER, USER, MainnetSlice, block, new, order_obj
from hypothesis import given
from hypothesis import strategies as st

from hlbook.book.books import Books
from hlbook.book.compare import Comparison, Difference, compare
from hlbook.model import CoinFilter
from hlbook.node.formats import decode_snapshot, encode_snapshot

H = 10


def make_books() -> Books:
    books = Books(H - 1)
    books.apply(
        block(
            H,
            diffs=[
                new(1, px="100.0", sz="1.0"),
                new(2, px="100.0", sz="2.0"),
                new(3, px="100.0", sz="3.0"),
                new(4, px="99.0", sz="4.0"),
                new(5, side="A", px="101.0", sz="5.0"),
                new(6, coin="ETH", side="A", px="2000.0", sz="6.0"),
            ],
        )
    )
    return books


def node_snapshot(books: Books) -> list[Any]:
    """The books as the node's JSON, to be perturbed."""
    return list(orjson.loads(encode_snapshot(books.height, books.snapshot()))[1])


def run(books: Books, body: list[Any], **kwargs: Any) -> Comparison:
    _, coins = decode_snapshot(orjson.dumps([books.height, body]))
    return compare(books, coins, **kwargs)


def bids(body: list[Any], coin: str = "BTC") -> list[Any]:
    found: list[Any] = next(c for c in body if c[0] == coin)[1][0]
    return found


def test_identical_books_match() -> None:
    books = make_books()
    result = run(books, node_snapshot(books))
    assert result.matches
    assert result.differences == 0
    assert result.orders_compared == 6
    assert result.coins_compared == 2
    assert result.height == H
    assert result.summary() == "books match the node at height 10 (6 orders, 2 coins)"


def test_missing_order() -> None:
    books = make_books()
    body = node_snapshot(books)
    bids(body).append([USER, order_obj(7, px="99.0", sz="0.5")])
    result = run(books, body)
    assert not result.matches
    assert result.first == (Difference("BTC", "B", "missing", 7, None, "0.5@99.0"),)
    assert result.coins == ("BTC",)
    assert "BTC B oid 7 missing: hlbook None, node 0.5@99.0" in result.summary()


def test_extra_order() -> None:
    books = make_books()
    body = node_snapshot(books)
    del bids(body)[1]
    result = run(books, body)
    assert result.first == (Difference("BTC", "B", "extra", 2, "2.0@100.0", None),)


def test_size_difference() -> None:
    books = make_books()
    body = node_snapshot(books)
    bids(body)[0][1]["sz"] = "0.75"
    result = run(books, body)
    assert result.first == (Difference("BTC", "B", "size", 1, "1.0", "0.75"),)


def test_price_difference() -> None:
    books = make_books()
    body = node_snapshot(books)
    bids(body)[3][1]["limitPx"] = "98.5"
    result = run(books, body)
    assert result.first == (Difference("BTC", "B", "price", 4, "99.0", "98.5"),)


def test_queue_difference() -> None:
    books = make_books()
    body = node_snapshot(books)
    level = bids(body)
    level[0], level[2] = level[2], level[0]
    result = run(books, body)
    assert result.differences == 1
    (diff,) = result.first
    assert diff.kind == "queue"
    assert (diff.coin, diff.side, diff.oid) == ("BTC", "B", 3)
    assert diff.ours == "oid 1 at 0"


def test_side_difference_shows_as_missing_and_extra() -> None:
    books = make_books()
    body = node_snapshot(books)
    order = bids(body).pop(3)
    order[1]["side"] = "A"
    body[0][1][1].append(order)
    result = run(books, body)
    assert {(d.side, d.kind, d.oid) for d in result.first} == {
        ("B", "extra", 4),
        ("A", "missing", 4),
    }


def test_coin_missing_from_the_snapshot_is_extra() -> None:
    books = make_books()
    body = [c for c in node_snapshot(books) if c[0] != "ETH"]
    result = run(books, body)
    assert result.coins == ("ETH",)
    assert result.first == (Difference("ETH", "A", "extra", 6, "6.0@2000.0", None),)
    assert result.coins_compared == 1


def test_coin_only_in_the_snapshot_is_missing() -> None:
    books = make_books()
    body = [*node_snapshot(books), ["SOL", [[[OTHER, order_obj(9, coin="SOL", px="150.0")]], []]]]
    result = run(books, body)
    assert result.first == (Difference("SOL", "B", "missing", 9, None, "1.0@150.0"),)


def test_filtered_coins_are_skipped() -> None:
    books = Books(H, coin_filter=CoinFilter(coins=frozenset({"BTC"})))
    body = [["ETH", [[[OTHER, order_obj(9, coin="ETH")]], []]]]
    result = run(books, body)
    assert result.matches
    assert result.coins_compared == 0


def test_differences_are_counted_but_bounded() -> None:
    books = make_books()
    body = node_snapshot(books)
    for i in range(50):
        bids(body).append([USER, order_obj(100 + i, px="98.0", sz="1.0")])
    bids(body)[0][1]["sz"] = "9.0"
    body = [c for c in body if c[0] != "ETH"]
    result = run(books, body, limit=5)
    assert result.differences == 52
    assert len(result.first) == 5
    assert result.coins == ("BTC", "ETH")
    summary = result.summary()
    assert summary.startswith("52 difference(s) with the node at height 10 in 2 coin(s)")
    assert summary.count("oid") == 5
    assert len(summary) < 600


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_limit(limit: int) -> None:
    books = make_books()
    body = node_snapshot(books)
    for entry in bids(body):
        entry[1]["sz"] = "7.0"
    result = run(books, body, limit=limit)
    assert result.differences == 4
    assert len(result.first) == limit


def test_mainnet_snapshot_matches_itself(mainnet: MainnetSlice) -> None:
    height, coins = decode_snapshot(mainnet.snapshot)
    books = Books.from_snapshot(height, coins)
    result = compare(books, decode_snapshot(mainnet.snapshot)[1])
    assert result.matches
    assert result.orders_compared == 51351
    # one order's size off in the middle of the book
    body = orjson.loads(mainnet.snapshot)
    body[1][0][1][1][500][1]["sz"] = "123.0"
    _, coins = decode_snapshot(orjson.dumps(body))
    result = compare(books, coins)
    assert result.differences == 1
    assert result.first[0].kind == "size"
    assert result.first[0].theirs == "123.0"


@given(
    st.lists(
        st.tuples(st.sampled_from(["B", "A"]), st.integers(1, 4), st.integers(1, 9)),
        min_size=3,
        max_size=25,
    ),
    st.sampled_from(["missing", "extra", "size", "price", "queue"]),
    st.data(),
)
def test_any_single_perturbation_is_found(
    orders: list[tuple[str, int, int]], kind: str, data: st.DataObject
) -> None:
    books = Books(H - 1)
    diffs = [
        new(oid, side=side, px=f"{100 + tick if side == 'A' else 100 - tick}.0", sz=f"{sz}.0")
        for oid, (side, tick, sz) in enumerate(orders, 1)
    ]
    books.apply(block(H, diffs=diffs))
    body = node_snapshot(books)
    sides = body[0][1]
    entries = [(s, i) for s in (0, 1) for i in range(len(sides[s]))]
    if kind == "queue":
        # two orders of one level swap places
        pairs = [
            (s, i)
            for s, i in entries
            if i + 1 < len(sides[s]) and sides[s][i][1]["limitPx"] == sides[s][i + 1][1]["limitPx"]
        ]
        if not pairs:
            return
        s, i = data.draw(st.sampled_from(pairs))
        sides[s][i], sides[s][i + 1] = sides[s][i + 1], sides[s][i]
        oid = sides[s][i][1]["oid"]
    elif kind == "missing":
        s, i = data.draw(st.sampled_from(entries))
        oid = 999
        sides[s].insert(i, [USER, order_obj(oid, side="BA"[s], px=sides[s][i][1]["limitPx"])])
    else:
        s, i = data.draw(st.sampled_from(entries))
        oid = sides[s][i][1]["oid"]
        if kind == "extra":
            del sides[s][i]
        elif kind == "size":
            sides[s][i][1]["sz"] = "0.5"
        else:
            sides[s][i][1]["limitPx"] = "1.5"
    result = run(books, body, limit=3)
    assert not result.matches
    assert result.differences == 1
    (diff,) = result.first
    assert (diff.kind, diff.oid, diff.side) == (kind, oid, "BA"[s])
    assert result.coins == ("BTC",)
