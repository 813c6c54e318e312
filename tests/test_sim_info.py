"""The simulator as a node's info server (and the public API's stand-in), and its named users.

Every answer is checked against the simulator's own state (its books, its
fills) and against what it wrote to its files, read back independently.
"""

import json
import math
import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing

from hlbook.node.files import hourly_files
from hlbook.node.formats import Fill, Layout, Order, Stream, decode_snapshot, time_ms
from hlbook.numbers import SCALE, parse
from hlbook.sim import (
    FILLS_USER,
    NAMED_USERS,
    REJECTED_USER,
    REJECTION_KINDS,
    TRIGGER_USER,
    BlockGenerator,
    InfoError,
    Markets,
    SimConfig,
    SimHandle,
    run_simulator,
)
from hlbook.sim.config import coin_spec
from hlbook.sim.exchange import BlockEvents, Exchange
from hlbook.sim.info import frontend_open_order, open_order
from hlbook.sim.markets import sz_decimals
from hlbook.sim.users import NamedUsers

SPOT = ("PURR/USDC", "@1", "@107")
PERPS = ("BTC", "ETH", "SOL")


def _config(tmp_path: Path, **changes: Any) -> SimConfig:
    settings: dict[str, Any] = {
        "node_data": tmp_path / "node",
        "scale": 0.1,
        "info_port": 0,
        "fallback_port": 0,
        "record_history": 100,
        "record_fills": True,
        "seed": 3,
        "blocks_per_second": math.inf,
    }
    settings.update(changes)
    return SimConfig(**settings)


def _lines(handle: SimHandle, stream: Stream) -> list[dict[str, Any]]:
    out = []
    for path in hourly_files(handle.stream_dir(stream)):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


def _decimals(text: str) -> int:
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


# -- the listing ------------------------------------------------------------------------------


def test_the_listing_names_exactly_the_simulated_coins() -> None:
    config = SimConfig(node_data="/x")
    markets = Markets(config.coin_specs())
    meta = markets.meta()
    assert [(a["name"], a["szDecimals"]) for a in meta["universe"]] == [
        ("BTC", 5),
        ("ETH", 4),
        ("SOL", 2),
    ]
    tables = {table_id for table_id, _ in meta["marginTables"]}
    assert {a["marginTableId"] for a in meta["universe"]} <= tables
    assert meta["collateralToken"] == 0
    spot = markets.spot_meta()
    assert [(p["name"], p["index"]) for p in spot["universe"]] == [
        ("PURR/USDC", 0),
        ("@1", 1),
        ("@107", 107),
    ]
    tokens = spot["tokens"]
    # Clients index tokens by position: no gaps.
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    names = {t["index"]: t["name"] for t in tokens}
    pairs = {p["name"]: p for p in spot["universe"]}
    assert names[pairs["PURR/USDC"]["tokens"][0]] == "PURR"
    assert {names[p["tokens"][1]] for p in spot["universe"]} == {"USDC"}
    assert [p["isCanonical"] for p in spot["universe"]] == [True, False, False]
    for coin in SPOT:
        base = tokens[pairs[coin]["tokens"][0]]
        assert base["szDecimals"] == sz_decimals(coin_spec(coin).lot), coin
        assert len(base["tokenId"]) == 34
    dexes = markets.perp_dexs()
    assert dexes[0] is None
    assert [d["name"] for d in dexes[1:] if d] == ["xyz"]
    assert dexes[1] is not None
    assert dexes[1]["assetToStreamingOiCap"][0][0] == "xyz:XYZ100"
    assert [(a["name"], a["szDecimals"]) for a in markets.meta("xyz")["universe"]] == [
        ("xyz:XYZ100", 4)
    ]
    with pytest.raises(KeyError):
        markets.meta("nope")


def test_more_dexes_and_named_pairs() -> None:
    coins = ("abc:FOO", "ETH", "@5", "xyz:BAR", "abc:BAZ", "FOO/BAR", "PURR/USDC")
    markets = Markets(SimConfig(node_data="/x", coins=coins).coin_specs())
    assert [d["name"] for d in markets.perp_dexs()[1:] if d] == ["abc", "xyz"]
    assert [a.name for a in markets.perps("abc")] == ["abc:FOO", "abc:BAZ"]
    assert [(p.name, p.index) for p in markets.pairs] == [
        ("PURR/USDC", 0),
        ("@5", 5),
        ("FOO/BAR", 6),
    ]
    foo_bar = markets.pairs[2]
    assert (markets.tokens[foo_bar.base].name, markets.tokens[foo_bar.quote].name) == ("FOO", "BAR")
    assert markets.dex_coins("") == {"ETH", "PURR/USDC", "@5", "FOO/BAR"}
    assert markets.dex_coins("abc") == {"abc:FOO", "abc:BAZ"}


@pytest.mark.parametrize("coin", ["@0", "@x", "@01", "@"])
def test_spot_pairs_are_named_by_their_index(coin: str) -> None:
    with pytest.raises(ValueError, match="@"):
        SimConfig(node_data="/x", coins=(coin,))


def test_sz_decimals_are_the_lots() -> None:
    assert [sz_decimals(lot) for lot in ("1.0", "0.1", "0.00001")] == [0, 1, 5]
    for lot in ("10.0", "0.025", "0.3"):
        with pytest.raises(ValueError, match="power of ten"):
            sz_decimals(lot)


# -- the named users -------------------------------------------------------------------------


def _run(config: SimConfig, blocks: int) -> tuple[BlockGenerator, list[Any]]:
    generator = BlockGenerator(config)
    return generator, [generator.step() for _ in range(blocks)]


@pytest.fixture(scope="module")
def named_run() -> tuple[BlockGenerator, list[Any], list[tuple[int, int, int]]]:
    """300 blocks at scale 0.1, and after each: the named users' open order counts."""
    generator = BlockGenerator(SimConfig(node_data="/x", scale=0.1, seed=21))
    blocks = []
    counts = []
    for _ in range(300):
        blocks.append(generator.step())
        resting, _ = generator.user_orders(FILLS_USER)
        _, pending = generator.user_orders(TRIGGER_USER)
        rejected = sum(map(len, generator.user_orders(REJECTED_USER)))
        counts.append((len(resting), len(pending), rejected))
    return generator, blocks, counts


def _statuses(blocks: list[Any], user: str) -> list[Any]:
    return [s for b in blocks for s in b.statuses if s.user == user]


def _fills(blocks: list[Any], user: str) -> list[Fill]:
    return [f for b in blocks for u, f in b.fills if u == user]


def test_the_trigger_user_triggers(named_run: Any) -> None:
    _generator, blocks, counts = named_run
    statuses = _statuses(blocks, TRIGGER_USER)
    kinds = Counter(s.status for s in statuses)
    placed = [s for s in statuses if s.status == "open" and s.parsed_order().isTrigger]
    assert len(placed) > 50
    assert kinds["triggered"] > 30, kinds
    assert kinds["canceled"] > 5, kinds
    assert {s.parsed_order().orderType for s in placed} == {
        "Stop Market",
        "Stop Limit",
        "Take Profit Market",
        "Take Profit Limit",
    }
    assert all(s.parsed_order().coin in (*PERPS, "xyz:XYZ100") for s in statuses)
    # Triggered orders trade (or rest, then get canceled by their owner).
    assert _fills(blocks, TRIGGER_USER)
    # Almost always some of its trigger orders wait untriggered.
    assert sum(pending > 0 for _, pending, _ in counts) > 0.9 * len(counts)


def test_the_rejected_user_only_gets_rejections(named_run: Any) -> None:
    _generator, blocks, counts = named_run
    kinds = Counter(s.status for s in _statuses(blocks, REJECTED_USER))
    assert set(kinds) <= set(REJECTION_KINDS)
    assert len(kinds) >= 6, kinds
    assert sum(kinds.values()) > 100
    assert not _fills(blocks, REJECTED_USER)
    assert all(rejected == 0 for _, _, rejected in counts)
    tick_rejected = [s for s in _statuses(blocks, REJECTED_USER) if s.status == "tickRejected"]
    for status in tick_rejected:
        order = status.parsed_order()
        assert parse(order.limitPx) % parse(coin_spec(order.coin).tick) != 0


def test_the_fills_user_trades_rests_and_sets_some_cloids(named_run: Any) -> None:
    _generator, blocks, counts = named_run
    fills = _fills(blocks, FILLS_USER)
    assert len(fills) > 150
    assert {f.crossed for f in fills} == {True, False}  # taker and maker
    assert {f.coin for f in fills} >= {*PERPS, *SPOT}
    # Never both sides of a trade.
    sides = Counter((f.tid, u) for b in blocks for u, f in b.fills)
    assert all(n == 1 for (_tid, user), n in sides.items() if user == FILLS_USER)
    assert min(resting for resting, _, _ in counts) >= 3  # at every height
    placed = [s.parsed_order() for s in _statuses(blocks, FILLS_USER) if s.status == "open"]
    with_cloid = sum(o.cloid is not None for o in placed)
    assert 0.3 * len(placed) < with_cloid < 0.7 * len(placed)
    kinds = Counter(s.status for s in _statuses(blocks, FILLS_USER))
    assert kinds["canceled"] > 20, kinds
    assert kinds["filled"] > 20, kinds
    assert "selfTradeCanceled" not in kinds


def test_only_their_owners_cancel_the_named_users_orders(named_run: Any) -> None:
    generator, _blocks, _counts = named_run
    for book in generator.exchange.books.values():
        assert all(rest.user not in NAMED_USERS for rest in book._cancellable)


def test_the_named_users_are_deterministic_per_seed() -> None:
    def trace(seed: int) -> list[tuple[str, str, int]]:
        _, blocks = _run(SimConfig(node_data="/x", scale=0.05, seed=seed), 40)
        return [
            (s.user, s.status, s.parsed_order().oid)
            for b in blocks
            for s in b.statuses
            if s.user in NAMED_USERS
        ]

    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


def test_a_self_trade_cancels_the_resting_order() -> None:
    exchange = Exchange(
        [coin_spec("BTC")], random.Random(1), first_oid=100, managed=frozenset(NAMED_USERS)
    )
    exchange.begin_block(BlockEvents(10, 0, "2026-05-05T17:39:13.0"))
    px, sz = parse("100.0"), parse("1.0")
    other = exchange.submit("0xother", exchange.new_order("BTC", "A", px, sz, tif="Alo"), px, sz)
    mine = exchange.submit(FILLS_USER, exchange.new_order("BTC", "A", px, sz, tif="Alo"), px, sz)
    assert other is not None
    assert mine is not None
    assert list(exchange.resting_of[FILLS_USER]) == [mine.oid]
    assert exchange.books["BTC"].cancellable_count() == 1  # only the other user's order
    taker = exchange.new_order("BTC", "B", px, 2 * sz, tif="Ioc")
    exchange.submit(FILLS_USER, taker, px, 2 * sz)
    assert exchange.books["BTC"].orders == {}
    assert exchange.resting_of[FILLS_USER] == {}
    statuses = [(s.parsed_order().oid, s.status) for s in exchange.block.statuses]
    assert statuses[-3:] == [
        (other.oid, "filled"),
        (mine.oid, "selfTradeCanceled"),
        (taker.oid, "canceled"),  # the IOC's remainder: nothing else to trade with
    ]
    assert [(u, f.oid) for u, f in exchange.block.fills] == [
        (FILLS_USER, taker.oid),
        ("0xother", other.oid),
    ]


def test_named_users_work_on_a_single_spot_coin() -> None:
    generator, blocks = _run(SimConfig(node_data="/x", coins=("@1",), scale=0.2), 60)
    assert isinstance(generator.named, NamedUsers)
    assert _fills(blocks, FILLS_USER)
    assert {s.parsed_order().coin for s in _statuses(blocks, TRIGGER_USER)} == {"@1"}


# -- open orders -------------------------------------------------------------------------------


def _snapshot_orders(data: bytes, user: str) -> list[Order]:
    _height, coins = decode_snapshot(data)
    found = [
        msgspec.structs.replace(order, user=owner)
        for _coin, bids, asks in coins
        for side in (bids, asks)
        for owner, order in side
        if owner == user
    ]
    return sorted(found, key=lambda order: order.oid)


async def _post(client: httpx.AsyncClient, url: str, body: Any) -> Any:
    response = await client.post(url, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def test_open_orders_are_the_simulators_own(tmp_path: Path) -> None:
    config = _config(tmp_path, blocks=30)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        handle: SimHandle = await nursery.start(run_simulator, config)
        height = await handle.wait_idle()
        snapshot = tmp_path / "snap.json"
        request = {
            "type": "fileSnapshot",
            "request": {"type": "l4Snapshots", "includeUsers": True, "includeTriggerOrders": False},
            "outPath": str(snapshot),
            "includeHeightInOutput": True,
        }
        assert (await _post(client, handle.info_url, request))["height"] == height
        data = snapshot.read_bytes()
        random_maker = next(
            o.user
            for o in handle.coin_orders("ETH")[0]
            if o.user not in NAMED_USERS and o.user != "0x" + "f" * 40
        )
        assert isinstance(random_maker, str)
        for user in (*NAMED_USERS, random_maker):
            resting = handle.resting_orders(user)
            triggers = handle.trigger_orders(user)
            assert resting == _snapshot_orders(data, user)  # the book part is the snapshot
            assert all(o.isTrigger for o in triggers)
            assert not any(o.isTrigger for o in resting)
            main: list[dict[str, Any]] = []
            for dex in ("", "xyz"):
                body = {"type": "openOrders", "user": user, "dex": dex}
                answer = await _post(client, handle.info_url, body)
                assert answer == handle.open_orders(user, dex), (user, dex)
                front = await _post(client, handle.info_url, {**body, "type": "frontendOpenOrders"})
                assert front == handle.frontend_open_orders(user, dex)
                assert [o["oid"] for o in front] == [o["oid"] for o in answer]
                main += answer
            by_oid = {o.oid: o for o in (*resting, *triggers)}
            assert sorted(o["oid"] for o in main) == sorted(by_oid), user
            for entry in main:
                order = by_oid[entry["oid"]]
                assert (entry["coin"], entry["side"], entry["limitPx"], entry["sz"]) == (
                    order.coin,
                    order.side,
                    order.limitPx,
                    order.sz,
                )
                assert entry.get("cloid") == order.cloid
                assert entry.get("reduceOnly", False) == order.reduceOnly
            # Newest first.
            keys = [(o["timestamp"], o["oid"]) for o in main if o["coin"] != "xyz:XYZ100"]
            assert keys == sorted(keys, reverse=True)
        # What a node's files can tell: the resting orders only.
        resting = [o for o in handle.resting_orders(TRIGGER_USER) if o.coin != "xyz:XYZ100"]
        newest = sorted(resting, key=lambda o: (o.timestamp, o.oid), reverse=True)
        assert handle.open_orders(TRIGGER_USER, triggers=False) == [open_order(o) for o in newest]
        front = handle.frontend_open_orders(TRIGGER_USER, triggers=False)
        assert front == [frontend_open_order(o) for o in newest]
        # The named users have what tests follow them for.
        assert handle.trigger_orders(TRIGGER_USER)
        assert len(handle.resting_orders(FILLS_USER)) >= 3
        assert any(o.cloid for o in handle.resting_orders(FILLS_USER))
        assert handle.open_orders(REJECTED_USER) == []
        # Checksummed (mixed case) addresses are the same user.
        mixed = "0x" + FILLS_USER[2:].upper()
        answer = await _post(client, handle.info_url, {"type": "openOrders", "user": mixed})
        assert answer == handle.open_orders(FILLS_USER)
        nursery.cancel_scope.cancel()


async def test_answers_wait_for_the_block_in_flight(tmp_path: Path) -> None:
    # A real clock: the HTTP client's timeouts must not be jumped over.
    config = _config(tmp_path, blocks=80, blocks_per_second=40.0, partial_writes=True, diff_ahead=2)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        handle: SimHandle = await nursery.start(run_simulator, config)
        seen_ahead = 0
        checked = 0
        while not handle.done:
            before = handle.height
            seen_ahead += handle.generated_height > before
            body = {"type": "openOrders", "user": FILLS_USER}
            answer = await _post(client, handle.info_url, body)
            after = handle.height
            # The answer is that of a written height, never of a block still in flight.
            assert any(
                answer == handle.open_orders(FILLS_USER, height=h) for h in range(before, after + 1)
            )
            checked += 1
            await trio.sleep(0.01)
        # Enough answers, and enough taken while a block was in flight, to mean something
        # (fewer on a loaded machine: each request takes longer).
        assert seen_ahead > 5
        assert checked > 20
        nursery.cancel_scope.cancel()


# -- the listing against the files --------------------------------------------------------------


async def test_meta_covers_what_the_files_hold(tmp_path: Path) -> None:
    config = _config(tmp_path, blocks=40)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        handle: SimHandle = await nursery.start(run_simulator, config)
        await handle.wait_done()
        url = handle.info_url
        meta = await _post(client, url, {"type": "meta"})
        assert meta == await _post(client, url, {"type": "meta", "dex": ""})
        assert meta == handle.markets.meta()
        xyz = await _post(client, url, {"type": "meta", "dex": "xyz"})
        spot = await _post(client, url, {"type": "spotMeta"})
        dexes = await _post(client, url, {"type": "perpDexs"})
        status = await _post(client, url, {"type": "exchangeStatus"})
        sz_of = {a["name"]: a["szDecimals"] for a in (*meta["universe"], *xyz["universe"])}
        tokens = spot["tokens"]
        for pair in spot["universe"]:
            sz_of[pair["name"]] = tokens[pair["tokens"][0]]["szDecimals"]
        # Every coin the node's files and snapshot name is listed, and nothing else.
        seen: set[str] = set()
        for line in _lines(handle, Stream.STATUSES):
            for event in line["events"]:
                order = event["order"]
                seen.add(order["coin"])
                for key in ("sz", "origSz"):
                    assert _decimals(order[key]) <= sz_of[order["coin"]], order
        for line in _lines(handle, Stream.FILLS):
            for _user, fill in line["events"]:
                assert _decimals(fill["sz"]) <= sz_of[fill["coin"]], fill
        for line in _lines(handle, Stream.DIFFS):
            for event in line["events"]:
                raw = event["raw_book_diff"]
                if isinstance(raw, dict) and "new" in raw:
                    assert _decimals(raw["new"]["sz"]) <= sz_of[event["coin"]]
        snapshot = tmp_path / "snap.json"
        request = {
            "type": "fileSnapshot",
            "request": {"type": "l4Snapshots", "includeUsers": True, "includeTriggerOrders": False},
            "outPath": str(snapshot),
            "includeHeightInOutput": True,
        }
        await _post(client, url, request)
        snapshot_coins = {coin for coin, _b, _a in decode_snapshot(snapshot.read_bytes())[1]}
        assert seen == snapshot_coins == set(handle.coins()) == set(sz_of)
        assert {p["name"] for p in spot["universe"]} == {c for c in seen if c in SPOT}
        assert [a["name"] for a in meta["universe"]] == list(PERPS)
        assert dexes[0] is None
        assert [d["name"] for d in dexes[1:]] == ["xyz"]
        last = _lines(handle, Stream.STATUSES)[-1]
        assert status == {
            "time": time_ms(last["block_time"]),
            "specialStatuses": None,
        }
        nursery.cancel_scope.cancel()


# -- the fallback role -----------------------------------------------------------------------------


async def test_the_fallback_answers_asset_contexts_from_the_books(tmp_path: Path) -> None:
    config = _config(tmp_path, blocks=80)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        handle: SimHandle = await nursery.start(run_simulator, config)
        await handle.wait_done()
        assert handle.fallback_url is not None
        assert handle.fallback_port != handle.info_port
        url = handle.fallback_url
        meta, ctxs = await _post(client, url, {"type": "metaAndAssetCtxs"})
        assert meta == handle.markets.meta()
        xyz_meta, xyz_ctxs = await _post(client, url, {"type": "metaAndAssetCtxs", "dex": "xyz"})
        assert xyz_meta == handle.markets.meta("xyz")
        spot_meta, spot_ctxs = await _post(client, url, {"type": "spotMetaAndAssetCtxs"})
        assert spot_meta == handle.markets.spot_meta()
        assert [c["coin"] for c in spot_ctxs] == [p["name"] for p in spot_meta["universe"]]
        perp_ctxs = dict(zip([a["name"] for a in meta["universe"]], ctxs, strict=True))
        perp_ctxs["xyz:XYZ100"] = xyz_ctxs[0]
        fills = [f for line in _lines(handle, Stream.FILLS) for f in line["events"]]
        baseline = BlockGenerator(config).exchange  # the state before the first written block
        for coin, ctx in [*perp_ctxs.items(), *((c["coin"], c) for c in spot_ctxs)]:
            bids, asks = handle.coin_orders(coin)
            bid, ask = parse(bids[0].limitPx), parse(asks[0].limitPx)
            assert parse(ctx["midPx"]) * 2 == bid + ask, coin
            assert bid <= parse(ctx["markPx"]) <= ask, coin
            for key, value in ctx.items():
                if isinstance(value, str) and key != "coin":
                    assert Decimal(value) == Decimal(value)  # plain decimals, no exponents
                    assert "e" not in value.lower(), (key, value)
            # Volumes: every trade written, plus those before the first block.
            trades = {f["tid"]: f for _user, f in fills if f["coin"] == coin}
            written = sum(parse(f["px"]) * parse(f["sz"]) // SCALE for f in trades.values())
            before = baseline.stats[coin].day(baseline.time_ms)[0]
            assert parse(ctx["dayNtlVlm"]) == written + before, coin
        for coin, ctx in perp_ctxs.items():
            assert ctx["impactPxs"] is not None
            impact_bid, impact_ask = map(parse, ctx["impactPxs"])
            assert impact_bid <= parse(ctx["midPx"]) <= impact_ask
            tick = parse(coin_spec(coin).tick)
            assert parse(ctx["oraclePx"]) % tick == 0
            assert abs(Decimal(ctx["funding"])) <= Decimal("0.04")
            # Open interest: the sum of long positions, recomputed from the fills.
            positions = {u: p for (u, c), p in baseline.positions.items() if c == coin}
            for user, fill in fills:
                if fill["coin"] == coin:
                    start, sz = parse(fill["startPosition"]), parse(fill["sz"])
                    positions[user] = start + sz if fill["side"] == "B" else start - sz
            assert parse(ctx["openInterest"]) == sum(max(p, 0) for p in positions.values())
            assert sum(positions.values()) == 0  # every long is someone's short
        # What a node answers, the fallback answers the same way.
        for body in ({"type": "spotMeta"}, {"type": "openOrders", "user": FILLS_USER}):
            assert await _post(client, url, body) == await _post(client, handle.info_url, body)
        # And each refuses what the other one plays.
        refused = await client.post(handle.info_url, json={"type": "metaAndAssetCtxs"})
        assert refused.status_code == 422
        assert "unknown variant" in refused.text
        refused = await client.post(url, json={"type": "fileSnapshot", "outPath": "/tmp/x"})
        assert refused.status_code == 422
        assert "unknown variant" in refused.text
        counts = handle.info_requests()
        assert counts["fallback", "metaAndAssetCtxs"] == 2
        assert counts["node", "metaAndAssetCtxs"] == 1
        assert counts["fallback", "fileSnapshot"] == 1
        nursery.cancel_scope.cancel()


async def test_no_fallback_unless_asked(tmp_path: Path) -> None:
    config = _config(tmp_path, blocks=1, fallback_port=None)
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, config)
        assert handle.fallback_url is None
        assert handle.fallback_base_url is None
        with pytest.raises(InfoError) as refused:
            await handle.info({"type": "spotMetaAndAssetCtxs"})
        assert refused.value.status == 422
        answer = await handle.info({"type": "spotMetaAndAssetCtxs"}, role="fallback")
        assert answer[0] == handle.markets.spot_meta()
        nursery.cancel_scope.cancel()


# -- fills ---------------------------------------------------------------------------------------


async def test_fills_per_user_are_the_written_ones(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = _config(tmp_path, blocks=50, record_fills=False, layout=Layout.STREAMING)
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, config)
        await handle.wait_for_height(handle.start_height + 20)
        handle.skip_block(Stream.FILLS)
        await handle.wait_done()
        by_user: dict[str, list[dict[str, Any]]] = {}
        for line in _lines(handle, Stream.FILLS):
            for user, fill in line["events"]:
                by_user.setdefault(user, []).append(fill)
        skipped = [height for height, _streams in handle.skipped]
        assert len(skipped) == 1
        for user in NAMED_USERS:
            mine = [json.loads(msgspec.json.encode(f)) for f in handle.fills(user)]
            assert mine == by_user.get(user, []), user
        assert len(handle.fills(FILLS_USER)) > 20
        assert handle.fills(REJECTED_USER) == []
        other = next(u for u in by_user if u not in NAMED_USERS)
        assert handle.fills(other) == []  # only the named users' without record_fills
        early = handle.fills(FILLS_USER, height=handle.start_height + 10)
        assert early == handle.fills(FILLS_USER)[: len(early)]
        assert all(f.time <= _block_time(handle, handle.start_height + 10) for f in early)
        nursery.cancel_scope.cancel()


def _block_time(handle: SimHandle, height: int) -> int:
    for line in _lines(handle, Stream.STATUSES):
        if line["block_number"] == height:
            return time_ms(line["block_time"])
    raise AssertionError(height)


# -- real clients -------------------------------------------------------------------------------


async def test_the_official_sdk_against_the_node_role(tmp_path: Path) -> None:
    from hyperliquid.info import Info
    from hyperliquid.utils.error import ClientError

    config = _config(tmp_path, blocks=60)
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, config)
        await handle.wait_done()

        def use_sdk() -> dict[str, Any]:
            info = Info(base_url=handle.info_base_url, skip_ws=True)
            every_dex = Info(base_url=handle.info_base_url, skip_ws=True, perp_dexs=["", "xyz"])
            try:
                info.post("/info", {"type": "candleSnapshot"})
            except ClientError as exc:
                refused = (exc.status_code, exc.error_message)
            return {
                "info": info,
                "every_dex": every_dex,
                "meta": info.meta(),
                "xyz": info.meta(dex="xyz"),
                "spot_meta": info.spot_meta(),
                "open": {u: info.open_orders(u) for u in NAMED_USERS},
                "front": {u: info.frontend_open_orders(u) for u in NAMED_USERS},
                "xyz_open": info.open_orders(TRIGGER_USER, dex="xyz"),
                "refused": refused,
            }

        got = await trio.to_thread.run_sync(use_sdk)
        info = got["info"]
        assert got["meta"] == handle.markets.meta()
        assert got["xyz"] == handle.markets.meta("xyz")
        assert got["spot_meta"] == handle.markets.spot_meta()
        for user in NAMED_USERS:
            assert got["open"][user] == handle.open_orders(user)
            assert got["front"][user] == handle.frontend_open_orders(user)
        assert got["xyz_open"] == handle.open_orders(TRIGGER_USER, "xyz")
        assert any(o["isTrigger"] for o in got["front"][TRIGGER_USER])
        # The SDK's own maps: asset ids, names and size decimals.
        assert {c: info.coin_to_asset[c] for c in (*PERPS, *SPOT)} == {
            "BTC": 0,
            "ETH": 1,
            "SOL": 2,
            "PURR/USDC": 10000,
            "@1": 10001,
            "@107": 10107,
        }
        assert info.name_to_coin["HYPE/USDC"] == "@107"
        assert got["every_dex"].coin_to_asset["xyz:XYZ100"] == 110000
        for coin in (*PERPS, *SPOT):
            decimals = info.asset_to_sz_decimals[info.coin_to_asset[coin]]
            assert decimals == sz_decimals(coin_spec(coin).lot)
        # A node's refusal is text the SDK reports, not a crash in its error handling.
        status, message = got["refused"]
        assert status == 422
        assert "unknown variant `candleSnapshot`" in message
        nursery.cancel_scope.cancel()


async def test_ccxt_loads_its_markets_from_the_fallback(tmp_path: Path) -> None:
    import ccxt

    config = _config(tmp_path, blocks=40)
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, config)
        await handle.wait_done()
        base = handle.fallback_base_url

        def load() -> dict[str, Any]:
            exchange = ccxt.hyperliquid({"urls": {"api": {"public": base, "private": base}}})
            markets: dict[str, Any] = exchange.load_markets()
            return markets

        markets = await trio.to_thread.run_sync(load)
        by_id = {m["id"]: m for m in markets.values()}
        assert by_id["0"]["symbol"] == "BTC/USDC:USDC"
        assert by_id["@107"]["symbol"] == "HYPE/USDC"
        assert by_id["PURR/USDC"]["type"] == "spot"
        assert by_id["110000"]["swap"]
        for coin, market_id in (
            ("BTC", "0"),
            ("ETH", "1"),
            ("SOL", "2"),
            ("PURR/USDC", "PURR/USDC"),
        ):
            spec = coin_spec(coin)
            precision = by_id[market_id]["precision"]
            assert Decimal(str(precision["amount"])) == Decimal(spec.lot), coin
            # ccxt derives the price precision from the context's price: the coin's tick.
            assert Decimal(str(precision["price"])) == Decimal(spec.tick), coin
        counts = handle.info_requests()
        assert counts["fallback", "metaAndAssetCtxs"] >= 1
        assert counts["fallback", "spotMetaAndAssetCtxs"] >= 1
        nursery.cancel_scope.cancel()


def test_a_random_trader_is_not_a_named_user() -> None:
    generator = BlockGenerator(SimConfig(node_data="/x", scale=0.05))
    traders = generator.traders
    everyone = {*traders.makers, *traders.takers, *traders.spammers}
    assert not everyone & set(NAMED_USERS)


async def test_made_up_request_types_are_counted_in_bounded_space(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path, blocks=1))
        for index in range(400):
            with pytest.raises(InfoError):
                await handle.info({"type": f"madeUp{index}"})
        await handle.info({"type": "meta"})
        counts = handle.info_requests()
        assert len(counts) == 256 + 2  # 256 made-up types, then "(other)"; and meta
        assert counts["node", "(other)"] > 100
        assert counts["node", "meta"] == 1  # known types are always counted by name
        assert sum(counts.values()) == 401
        nursery.cancel_scope.cancel()
