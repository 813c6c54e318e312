"""The simulator's pure core: matching engine, traders, generator, rendering."""

import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from msgspec import UNSET

from hlbook.book.books import Books
from hlbook.book.compare import compare
from hlbook.model import Block
from hlbook.node.formats import (
    DiffEvent,
    Layout,
    NewDiff,
    RawDiff,
    Stream,
    UpdateDiff,
    decode_line,
    decode_snapshot,
    time_ms,
)
from hlbook.node.join import BlockJoiner
from hlbook.numbers import parse
from hlbook.sim import PROTOCOL_USER, BlockEvents, BlockGenerator, LineRenderer, SimConfig
from hlbook.sim.config import coin_spec
from hlbook.sim.exchange import Exchange
from hlbook.sim.render import hour_path, node_time
from hlbook.sim.users import NAMED_USERS

T0 = 1_778_002_753_024_084_407  # 2026-05-05T17:39:13.024084407


def _exchange() -> Exchange:
    exchange = Exchange([coin_spec("BTC")], random.Random(1), first_oid=100)
    exchange.begin_block(BlockEvents(10, T0, node_time(T0)))
    return exchange


def _submit(exchange: Exchange, user: str, side: str, px: str, sz: str, tif: str | None) -> object:
    order = exchange.new_order("BTC", side, parse(px), parse(sz), tif=tif)
    return exchange.submit(user, order, parse(px), parse(sz))


def _diff_kinds(events: list[DiffEvent]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for event in events:
        raw = event.raw_book_diff
        if isinstance(raw, str):
            out.append((event.oid, raw))
        elif raw.new is not UNSET:
            out.append((event.oid, "new"))
        else:
            out.append((event.oid, "update"))
    return out


# -- the matching engine ------------------------------------------------------------


def test_price_time_priority_and_partial_fill() -> None:
    exchange = _exchange()
    first = _submit(exchange, "0xa", "A", "100.0", "0.5", "Alo")
    second = _submit(exchange, "0xb", "A", "100.0", "0.5", "Alo")
    cheaper = _submit(exchange, "0xc", "A", "99.0", "0.2", "Gtc")
    assert first is not None
    assert second is not None
    assert cheaper is not None
    block = exchange.block
    block.statuses.clear()
    block.diffs.clear()

    left = _submit(exchange, "0xt", "B", "100.0", "0.4", "Ioc")

    assert left is None
    # The better price first, then the older order at 100; 0.2 of it remains.
    assert _diff_kinds(block.diffs) == [(102, "remove"), (100, "update")]
    update = block.diffs[1].raw_book_diff
    assert isinstance(update, RawDiff)
    assert update.update == UpdateDiff(origSz="0.5", newSz="0.3")
    assert [(s.user, s.status) for s in block.statuses] == [
        ("0xt", "open"),
        ("0xc", "filled"),
        ("0xt", "filled"),
    ]
    assert block.statuses[-1].parsed_order().sz == "0.0"
    assert block.statuses[0].hash is not None
    assert block.statuses[1].hash is None
    # Two fills per trade sharing a tid, buyer first, crossed on the taker.
    fills = block.fills
    assert len(fills) == 4
    for buyer, seller in (fills[0:2], fills[2:4]):
        assert buyer[1].tid == seller[1].tid
        assert (buyer[1].side, seller[1].side) == ("B", "A")
        assert (buyer[0], buyer[1].crossed, seller[1].crossed) == ("0xt", True, False)
    assert [f.px for _, f in fills] == ["99.0", "99.0", "100.0", "100.0"]
    assert fills[0][1].tid != fills[2][1].tid
    book = exchange.books["BTC"]
    assert [(r.oid, r.sz) for r in book.side_orders("A")] == [
        (100, parse("0.3")),
        (101, parse("0.5")),
    ]
    assert book.orders[100].order.sz == "0.3"


def test_alo_that_would_cross_is_rejected_and_ioc_that_cannot_trade_too() -> None:
    exchange = _exchange()
    _submit(exchange, "0xa", "A", "100.0", "1.0", "Alo")
    exchange.block.statuses.clear()
    exchange.block.diffs.clear()
    assert _submit(exchange, "0xb", "B", "100.0", "1.0", "Alo") is None
    assert _submit(exchange, "0xc", "B", "99.0", "1.0", "Ioc") is None
    assert [s.status for s in exchange.block.statuses] == ["badAloPxRejected", "iocCancelRejected"]
    assert exchange.block.diffs == []
    assert exchange.block.fills == []


def test_gtc_that_crosses_rests_what_is_left() -> None:
    exchange = _exchange()
    _submit(exchange, "0xa", "A", "100.0", "0.25", "Alo")
    block = exchange.block
    block.statuses.clear()
    block.diffs.clear()
    rest = _submit(exchange, "0xb", "B", "101.0", "1.0", "Gtc")
    assert rest is not None
    assert [s.status for s in block.statuses] == ["open", "filled"]
    assert block.statuses[0].parsed_order().sz == "1.0"  # open carries the size as placed
    new = block.diffs[-1]
    assert new.px == "101.0"
    assert new.raw_book_diff == RawDiff(new=NewDiff(sz="0.75"))
    book = exchange.books["BTC"]
    assert book.best_bid() == parse("101.0")
    assert book.best_ask() is None
    assert book.orders[new.oid].order.origSz == "1.0"


def test_ioc_remainder_is_canceled() -> None:
    exchange = _exchange()
    _submit(exchange, "0xa", "A", "100.0", "0.25", "Alo")
    exchange.block.statuses.clear()
    assert _submit(exchange, "0xb", "B", "101.0", "1.0", "Ioc") is None
    statuses = exchange.block.statuses
    assert [s.status for s in statuses] == ["open", "filled", "canceled"]
    assert statuses[-1].parsed_order().sz == "0.75"


def test_modify_keeping_its_place_uses_insert_before() -> None:
    exchange = _exchange()
    rests = [_submit(exchange, f"0x{i}", "B", "90.0", "1.0", "Alo") for i in range(3)]
    middle = rests[1]
    assert middle is not None
    exchange.block.diffs.clear()
    replaced = exchange.modify(middle, parse("90.0"), parse("0.5"), keep_place=True)  # type: ignore[arg-type]
    assert replaced is not None
    remove, new = exchange.block.diffs
    assert (remove.oid, remove.raw_book_diff) == (101, "remove")
    assert new.raw_book_diff == RawDiff(new=NewDiff(sz="0.5", insertBefore=102))
    order = [r.oid for r in exchange.books["BTC"].side_orders("B")]
    assert order == [100, replaced.oid, 102]


def test_triggered_order_rests_as_the_node_snapshot_shows_it() -> None:
    exchange = _exchange()
    trigger = exchange.new_order(
        "BTC",
        "B",
        parse("110.0"),
        parse("1.0"),
        tif=None,
        order_type="Stop Market",
        trigger_px=parse("100.0"),
        trigger_condition="Price above 100.0",
    )
    assert trigger.isTrigger
    later = T0 + 5_000_000_000
    exchange.begin_block(BlockEvents(11, later, node_time(later)))
    rest = exchange.trigger("0xu", trigger, parse("101.0"))
    assert rest is not None
    status = exchange.block.statuses[0]
    assert (status.status, status.parsed_order().limitPx, status.parsed_order().isTrigger) == (
        "triggered",
        "110.0",
        True,
    )
    order = rest.order
    assert (order.limitPx, order.sz, order.isTrigger, order.triggerCondition, order.tif) == (
        "101.0",
        "1.0",
        False,
        "Triggered",
        "Gtc",
    )
    assert order.timestamp == time_ms(status.time) != trigger.timestamp
    assert (order.orderType, order.triggerPx, order.origSz) == ("Stop Market", "100.0", "1.0")


def test_protocol_orders_have_no_status() -> None:
    exchange = _exchange()
    rest = exchange.protocol_place("BTC", "A", parse("120.0"), parse("1.0"))
    assert rest is not None
    assert rest.user == PROTOCOL_USER
    exchange.protocol_remove(rest)
    assert exchange.block.statuses == []
    assert _diff_kinds(exchange.block.diffs) == [(rest.oid, "new"), (rest.oid, "remove")]


# -- times and files ------------------------------------------------------------------------


def test_node_time_and_hour_path() -> None:
    assert node_time(T0) == "2026-05-05T17:39:13.024084407"
    assert time_ms(node_time(T0)) == T0 // 1_000_000
    midnight = int(datetime(2026, 5, 6, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert hour_path(midnight - 1) == "20260505/23"
    assert hour_path(midnight) == "20260506/0"  # the hour is not zero-padded
    assert hour_path(midnight + 7 * 3600 * 10**9) == "20260506/7"


# -- the generator --------------------------------------------------------------------------------


def _config(**changes: object) -> SimConfig:
    return SimConfig(node_data="/nonexistent", scale=0.2, **changes)  # type: ignore[arg-type]


def _render_all(config: SimConfig, blocks: int) -> list[dict[Stream, list[tuple[str, bytes]]]]:
    generator = BlockGenerator(config)
    renderer = LineRenderer(config.layout, random.Random(7))
    return [renderer.render(generator.step()) for _ in range(blocks)]


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = _render_all(_config(seed=3), 30)
    assert first == _render_all(_config(seed=3), 30)
    assert first != _render_all(_config(seed=4), 30)


def test_layout_changes_the_lines_not_the_trading() -> None:
    events: dict[Layout, list[tuple[int, int, int]]] = {}
    for layout in Layout:
        seen = []
        for segments in _render_all(_config(layout=layout), 20):
            counts = []
            for stream in Stream:
                lines = [ln for _, data in segments[stream] for ln in data.splitlines()]
                counts.append(sum(len(decode_line(stream, ln).events) for ln in lines))
            seen.append((counts[0], counts[1], counts[2]))
        events[layout] = seen
    assert events[Layout.BY_BLOCK] == events[Layout.STREAMING]
    assert any(statuses for statuses, _, _ in events[Layout.BY_BLOCK])


def test_streaming_layout_writes_no_line_for_an_empty_stream() -> None:
    config = SimConfig(node_data="/x", scale=0.01, layout=Layout.STREAMING, coins=("SOL",))
    generator = BlockGenerator(config)
    renderer = LineRenderer(Layout.STREAMING, random.Random(1))
    empty = 0
    for _ in range(50):
        block = generator.step()
        segments = renderer.render(block)
        for stream, items in ((Stream.FILLS, block.fills), (Stream.DIFFS, block.diffs)):
            assert bool(segments[stream]) == bool(items)
        empty += not block.fills
    assert empty > 0


def test_snapshot_at_a_height_is_the_books_at_that_height() -> None:
    generator = BlockGenerator(_config(record_history=5))
    first = generator.snapshot_bytes()
    for _ in range(8):
        generator.step()
    assert generator.heights() == list(range(generator.height - 4, generator.height + 1))
    assert generator.snapshot_bytes_at(generator.height) == generator.snapshot_bytes()
    with pytest.raises(KeyError):
        generator.snapshot_bytes_at(generator.height - 5)
    height, _coins = decode_snapshot(first)
    assert height == generator.config.start_height - 1


def test_books_are_busy_at_mainnet_scale() -> None:
    generator = BlockGenerator(SimConfig(node_data="/x"))
    statuses = diffs = 0
    for _ in range(20):
        block = generator.step()
        statuses += len(block.statuses)
        diffs += len(block.diffs)
    # Near mainnet's ≈700 statuses + ≈400 diffs per block.
    assert 550 < statuses / 20 < 900
    assert 300 < diffs / 20 < 520
    depth = {coin: len(generator.book(coin)) for coin in generator.coins()}
    assert 1000 < depth["BTC"] < 5000
    assert 1000 < depth["ETH"] < 5000
    assert all(count >= 100 for count in depth.values()), depth
    assert not any(generator.book(coin).is_crossed() for coin in generator.coins())


@pytest.mark.parametrize("layout", list(Layout))
def test_engine_rebuilds_the_books_after_every_block(layout: Layout) -> None:
    """Every line decoded, joined and applied: hlbook's books equal the simulator's, order
    for order (every field, not only oid/px/sz), in queue order, after each block."""
    generator = BlockGenerator(_config(layout=layout, seed=11))
    renderer = LineRenderer(layout, random.Random(2))
    joiner = BlockJoiner(layout)
    snapshot = generator.snapshot_bytes()
    books: Books | None = None
    kinds: Counter[str] = Counter()
    for step in range(60):
        block = generator.step()
        if step == 0 and layout is Layout.STREAMING:
            # The first streaming block read might be partial: the joiner starts after it.
            snapshot = generator.snapshot_bytes()
        outputs = []
        for stream, segments in renderer.render(block).items():
            for _hour, data in segments:
                for line in data.splitlines():
                    outputs += joiner.feed(stream, decode_line(stream, line), now=step)
        for stream in Stream:
            outputs += joiner.caught_up(stream, now=step)  # everything written was read
        outputs += joiner.poll(now=step + 1.0)  # every stream quiet since: the block is whole
        if books is None:
            height, coins = decode_snapshot(snapshot)
            books = Books.from_snapshot(height, coins)
            outputs += joiner.release(height)
        for item in outputs:
            assert isinstance(item, Block), item
            books.apply(item)
        assert books.height == generator.height
        for coin in generator.coins():
            assert books.coin_orders(coin) == generator.coin_orders(coin), coin
        kinds.update(kind for _oid, kind in _diff_kinds(block.diffs))
        kinds.update("insertBefore" for d in block.diffs if _inserts(d))
    assert books is not None
    result = compare(books, decode_snapshot(generator.snapshot_bytes())[1])
    assert result.matches, result.summary()
    assert result.orders_compared > 1000
    # The run exercised every kind of diff the engine knows.
    assert min(kinds["new"], kinds["update"], kinds["remove"], kinds["insertBefore"]) > 0, kinds


def _inserts(event: DiffEvent) -> bool:
    raw = event.raw_book_diff
    return isinstance(raw, RawDiff) and raw.new is not UNSET and raw.new.insertBefore is not UNSET


def test_canceled_trigger_orders_do_not_pile_up() -> None:
    generator = BlockGenerator(SimConfig(node_data="/x", coins=("ETH",), scale=0.1))
    traders = generator.traders
    market = traders.markets[0]
    generator.step()
    for _ in range(3000):
        traders._place_trigger(market)
        traders._cancel_trigger(market)
    assert len(market.triggers) <= 1
    live = len(market.triggers) + len(market.own_triggers)  # the named users' too
    assert len(market.above) + len(market.below) <= 4 * live + 65
    statuses = Counter(
        s.status
        for s in generator.exchange.block.statuses
        if s.parsed_order().isTrigger and s.user not in NAMED_USERS
    )
    assert statuses["open"] >= 2900
    assert statuses["canceled"] == statuses["open"] - len(market.triggers)
