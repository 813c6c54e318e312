"""Validating live books against a node snapshot taken some blocks earlier."""

import orjson
import pytest
from fixtures import MainnetSlice
from msgspec import UNSET
from server_support import engine_books, slice_block

from hlbook.book.books import Books
from hlbook.book.validate import MovedSnapshot, compare_moved
from hlbook.errors import DivergenceError
from hlbook.node.formats import RawDiff, SnapshotSide, decode_snapshot


def snapshot_coins(data: bytes) -> tuple[int, dict[str, tuple[SnapshotSide, SnapshotSide]]]:
    height, coins = decode_snapshot(data)
    return height, {coin: (bids, asks) for coin, bids, asks in coins}


def test_a_snapshot_moved_forward_matches_books_at_the_same_height(mainnet: MainnetSlice) -> None:
    books = engine_books(mainnet)  # the books 51 blocks after the snapshot
    height, coins = snapshot_coins(mainnet.snapshot)
    moved = MovedSnapshot(height, coins)
    moved.advance([slice_block(mainnet, i) for i in range(len(mainnet.heights))])
    assert moved.height == books.height
    assert moved.moved == {"BTC"}
    result = compare_moved(books, moved)
    assert result.matches, result.summary()
    assert result.orders_compared == len(books)


def test_moving_in_steps_is_the_same_as_at_once(mainnet: MainnetSlice) -> None:
    books = engine_books(mainnet, 30)
    height, coins = snapshot_coins(mainnet.snapshot)
    moved = MovedSnapshot(height, coins)
    blocks = [slice_block(mainnet, i) for i in range(30)]
    moved.advance(blocks[:10])
    moved.advance(blocks[5:])  # overlapping: heights already replayed are skipped
    assert compare_moved(books, moved).matches


def test_a_wrong_snapshot_is_found_either_way(mainnet: MainnetSlice) -> None:
    books = engine_books(mainnet)
    blocks = [slice_block(mainnet, i) for i in range(len(mainnet.heights))]
    height, body = orjson.loads(mainnet.snapshot)
    bids = body[0][1][0]
    # A resting order the blocks never touch, with a different size: a plain mismatch.
    touched = {d.oid for b in blocks for d in b.diffs}
    quiet = next(entry for entry in bids if entry[1]["oid"] not in touched)
    quiet[1]["sz"] = "123.0"
    _, coins = snapshot_coins(orjson.dumps([height, body]))
    moved = MovedSnapshot(height, coins)
    moved.advance(blocks)
    result = compare_moved(books, moved)
    assert not result.matches
    assert result.coins == ("BTC",)
    assert [(d.kind, d.oid) for d in result.first] == [("size", quiet[1]["oid"])]
    # An order the blocks update, with a different size: the blocks do not fit it.
    target = next(
        d.oid
        for b in blocks
        for d in b.diffs
        if isinstance(d.raw_book_diff, RawDiff) and d.raw_book_diff.update is not UNSET
    )
    height, body = orjson.loads(mainnet.snapshot)
    for side in body[0][1]:
        for entry in side:
            if entry[1]["oid"] == target:
                entry[1]["sz"] = "999.0"
    _, coins = snapshot_coins(orjson.dumps([height, body]))
    with pytest.raises(DivergenceError):
        MovedSnapshot(height, coins).advance(blocks)


def test_books_and_snapshot_must_be_at_the_same_height(mainnet: MainnetSlice) -> None:
    height, coins = snapshot_coins(mainnet.snapshot)
    books = Books.load(mainnet.snapshot)
    books.apply(slice_block(mainnet, 0))
    with pytest.raises(ValueError, match="moved to"):
        compare_moved(books, MovedSnapshot(height, coins))
