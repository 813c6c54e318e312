"""The real mainnet slice: 51 BTC blocks applied to the real snapshot, in both layouts."""

from typing import Any

import orjson
import pytest
from fixtures import MainnetSlice

from hlbook.book.books import Books
from hlbook.book.compare import compare
from hlbook.book.l2 import bbo, l2_levels
from hlbook.book.l4 import ASK, BID
from hlbook.book.trades import trades_by_coin
from hlbook.model import Block
from hlbook.node.formats import (
    DiffEvent,
    Layout,
    RawDiff,
    Stream,
    decode_line,
    decode_snapshot,
    encode,
    encode_snapshot,
    time_ms,
)
from hlbook.node.join import BlockJoiner
from hlbook.numbers import canonical, parse
from hlbook.source import Output

# Feeding order within a block: diffs first (the diff stream runs ahead on mainnet).
ORDER = (Stream.DIFFS, Stream.STATUSES, Stream.FILLS)


def load_books(mainnet: MainnetSlice) -> Books:
    height, coins = decode_snapshot(mainnet.snapshot)
    return Books.from_snapshot(height, coins)


def by_block_blocks(mainnet: MainnetSlice) -> list[Block]:
    """Every block of the slice through the by-block joiner, released at the snapshot height."""
    joiner = BlockJoiner(Layout.BY_BLOCK)
    assert joiner.release(mainnet.height) == []
    out: list[Output] = []
    for index in range(len(mainnet.heights)):
        for stream in ORDER:
            out += joiner.feed(stream, decode_line(stream, mainnet.lines[stream][index]))
    blocks = [item for item in out if isinstance(item, Block)]
    assert blocks == out, out
    return blocks


def check_updates_match_resting_sizes(books: Books, diffs: list[DiffEvent]) -> int:
    """Every ``update``'s origSz equals the size the order rests with (as of that diff)."""
    sizes: dict[int, int | None] = {}
    checked = 0
    for event in diffs:
        raw = event.raw_book_diff
        if isinstance(raw, str):
            sizes[event.oid] = None
        elif raw.new:
            sizes[event.oid] = parse(raw.new.sz)
        elif raw.update:
            if event.oid in sizes:
                size = sizes[event.oid]
            else:
                order = books.order(event.oid)
                size = None if order is None else parse(order.sz)
            assert size == parse(raw.update.origSz), event
            sizes[event.oid] = parse(raw.update.newSz)
            checked += 1
    return checked


def test_slice_shape(mainnet: MainnetSlice) -> None:
    assert mainnet.height == 985148181
    assert mainnet.heights[0] == 985148182
    assert mainnet.heights[-1] == 985148232
    assert all(len(lines) == 51 for lines in mainnet.lines.values())


def test_all_blocks_apply_without_divergence(mainnet: MainnetSlice) -> None:
    books = load_books(mainnet)
    assert len(books) == 51351
    assert books.height == mainnet.height
    blocks = by_block_blocks(mainnet)
    assert [b.height for b in blocks] == mainnet.heights
    first_ms = blocks[0].time
    counts = {"new": 0, "update": 0, "remove": 0}
    updates = 0
    trades = 0
    for blk in blocks:
        updates += check_updates_match_resting_sizes(books, blk.diffs)
        applied = books.apply(blk)
        assert books.height == blk.height
        assert set(applied.touched) == {e.coin for e in blk.diffs}
        for event in blk.diffs:
            raw = event.raw_book_diff
            kind = "remove" if isinstance(raw, str) else "new" if raw.new else "update"
            counts[kind] += 1
        book = books.book("BTC")
        assert book is not None
        assert not book.is_crossed(), blk.height
        best_bid, best_ask = bbo(book)
        assert best_bid is not None
        assert best_ask is not None
        assert parse(best_bid[0]) < parse(best_ask[0])
        for side in (BID, ASK):
            top = l2_levels(book, side, 20)
            assert len(top) == 20
            assert all(n > 0 and parse(sz) > 0 for _, sz, n in top)
        trades += sum(len(t) for t in trades_by_coin(blk.fills).values())
    assert counts == {"new": 653, "update": 11, "remove": 668}
    assert updates == 11
    assert trades == 11
    assert len(books) == 51351 + 653 - 668
    # The slice spans 3.4 s of block time (what the benchmark compares against).
    assert blocks[-1].time - first_ms == pytest.approx(3400, abs=200)


def test_new_orders_carry_their_status_details(mainnet: MainnetSlice) -> None:
    books = load_books(mainnet)
    checked = 0
    for blk in by_block_blocks(mainnet):
        books.apply(blk)
        opens = {e.parsed_order().oid: e for e in blk.statuses if e.status == "open"}
        for event in blk.diffs:
            raw = event.raw_book_diff
            if not isinstance(raw, RawDiff) or not raw.new:
                continue
            order = books.order(event.oid)
            if order is None:
                continue  # removed again
            status = opens[event.oid]
            assert order.user == status.user
            assert order.cloid == status.parsed_order().cloid
            assert order.tif == status.parsed_order().tif
            assert order.timestamp == status.parsed_order().timestamp
            assert order.limitPx == canonical(event.px)
            checked += 1
    assert checked > 100
    # The first block's new ask rests with the status's details.
    order = books.order(412036451270)
    assert order is None or order.cloid == "0x000000000000000018ab2cd67dbb0c60"


def test_snapshot_after_the_slice_round_trips(mainnet: MainnetSlice) -> None:
    books = load_books(mainnet)
    for blk in by_block_blocks(mainnet):
        books.apply(blk)
    data = encode_snapshot(books.height, books.snapshot())
    height, coins = decode_snapshot(data)
    assert height == mainnet.heights[-1]
    again = Books.from_snapshot(height, coins)
    assert encode_snapshot(again.height, again.snapshot()) == data
    result = compare(books, decode_snapshot(data)[1])
    assert result.matches
    assert result.orders_compared == len(books)
    # and the book differs from the starting snapshot in a bounded, reported way
    start = compare(books, decode_snapshot(mainnet.snapshot)[1], limit=10)
    assert not start.matches
    assert len(start.first) == 10
    assert start.differences > 100


def fingerprint(books: Books, diffs: list[DiffEvent]) -> list[Any]:
    """The levels ``diffs`` may have changed as ``(px, total, (oids in queue order))``,
    with the height, order count and number of levels per side."""
    out: list[Any] = [books.height, len(books)]
    for event in diffs:
        book = books.book(event.coin)
        assert book is not None
        out.append([len(book.bids), len(book.asks)])
        for levels in (book.bids, book.asks):
            level = levels.get(parse(event.px))
            out.append(level and (level.px, level.total, tuple(level.oids)))
    return out


def streaming_lines(mainnet: MainnetSlice) -> list[tuple[Stream, bytes, float]]:
    """The slice rewritten in the streaming layout: one event per line, empty blocks
    dropped, a block's diff lines before its status lines; with a ``now`` per line."""
    out: list[tuple[Stream, bytes, float]] = []
    for index in range(len(mainnet.heights)):
        for stream in ORDER:
            body: dict[str, Any] = orjson.loads(mainnet.lines[stream][index])
            now = (time_ms(body["block_time"]) - 1778002753000) / 1000 + 0.35
            for position, event in enumerate(body["events"]):
                single = dict(body, events=[event])
                out.append((stream, orjson.dumps(single), now + position * 1e-6))
    return out


def test_streaming_layout_gives_the_same_book_after_every_block(mainnet: MainnetSlice) -> None:
    reference = load_books(mainnet)
    by_block = iter(by_block_blocks(mainnet))
    books = load_books(mainnet)
    joiner = BlockJoiner(Layout.STREAMING)
    lines = streaming_lines(mainnet)
    # The reader saw the end of the snapshot's block too (dropped at release), so
    # the first block after the snapshot is known to be read from its start.
    for stream in (Stream.DIFFS, Stream.STATUSES):
        pre = orjson.loads(mainnet.lines[stream][0])
        pre["block_number"] = mainnet.height
        joiner.feed(stream, decode_line(stream, orjson.dumps(pre)), 0.0)
    assert joiner.release(mainnet.height) == []

    applied: list[int] = []

    def apply(items: list[Output]) -> None:
        for item in items:
            assert isinstance(item, Block), item
            books.apply(item)
            applied.append(item.height)
            while reference.height < item.height:
                reference.apply(next(by_block))
            assert reference.height == item.height
            # Identical books: the price, total and queue of oids of every level and
            # every field of every order this block changed (the rest is unchanged
            # since the previous check), and in full every 10th block.
            assert fingerprint(books, item.diffs) == fingerprint(reference, item.diffs)
            for event in item.diffs:
                mine, theirs = books.order(event.oid), reference.order(event.oid)
                assert (mine and encode(mine)) == (theirs and encode(theirs))
            if len(applied) % 10 == 0:
                assert encode_snapshot(None, books.snapshot()) == encode_snapshot(
                    None, reference.snapshot()
                )
            book = books.book("BTC")
            assert book is not None
            assert not book.is_crossed()

    # A reader is caught up whenever its stream's next line is not written yet.
    next_time: dict[Stream, list[float]] = {stream: [] for stream in Stream}
    for stream, _raw, when in lines:
        next_time[stream].append(when)
    for stream in Stream:
        next_time[stream].reverse()
        if not next_time[stream] or next_time[stream][-1] > 0.0:
            apply(joiner.caught_up(stream, 0.0))
    now = 0.0
    for stream, raw, now in lines:
        apply(joiner.feed(stream, decode_line(stream, raw), now))
        next_time[stream].pop()
        if not next_time[stream] or next_time[stream][-1] > now:
            apply(joiner.caught_up(stream, now))
        deadline = joiner.next_deadline()
        if deadline is not None and deadline <= now:
            apply(joiner.poll(now))
    apply(joiner.poll(now + 1.0))
    non_empty = [
        h
        for i, h in enumerate(mainnet.heights)
        if any(orjson.loads(mainnet.lines[s][i])["events"] for s in Stream)
    ]
    assert applied == non_empty
    assert len(non_empty) < len(mainnet.heights)  # some blocks were empty: heights skipped
    assert books.height == non_empty[-1]
    stats = joiner.stats()
    assert (stats.gaps, stats.late_lines, stats.pending) == (0, 0, 0)
    for blk in by_block:
        assert blk.is_empty()
        reference.apply(blk)
    data = encode_snapshot(reference.height, reference.snapshot())
    result = compare(books, decode_snapshot(data)[1])
    assert result.matches, result.summary()
