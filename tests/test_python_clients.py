"""The official Python SDK's ``Info`` and ccxt against hlbook, and curl: real clients over HTTP."""

import asyncio
import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from server_support import (
    bootstrap_height,
    candle_numbers,
    canonical,
    expected_candles,
    expected_l2,
    expected_mids,
    fill_dicts,
    send,
    settle,
    sim_and_server,
    subscribe,
    written_lines,
    written_trades,
)
from trio_websocket import open_websocket_url

from hlbook.node.formats import Stream
from hlbook.sim import FILLS_USER, REJECTED_USER, TRIGGER_USER

pytestmark = pytest.mark.slow


async def test_sdk_info_constructs_and_its_l2_snapshot_equals_the_channel(tmp_path: Path) -> None:
    from hyperliquid.info import Info

    async with (
        sim_and_server(tmp_path) as (handle, node),
        open_websocket_url(handle.url) as ws,
    ):
        # The constructor asks for spotMeta and meta: the node answers, through hlbook.
        info = await trio.to_thread.run_sync(lambda: Info(base_url=handle.http_url, skip_ws=True))
        assert info.name_to_coin["BTC"] == "BTC"
        assert "PURR/USDC" in info.name_to_coin
        await send(ws, subscribe("BTC", "l2Book"))
        await settle(handle, node)
        last: dict[str, Any] = {}
        with trio.move_on_after(0.5):
            while True:
                message = json.loads(await ws.get_message())
                if message["channel"] == "l2Book":
                    last = message["data"]
        snapshot = await trio.to_thread.run_sync(info.l2_snapshot, "BTC")
        # The same book: the answer carries the books' time, the last push the time of the
        # last block that changed this view.
        assert snapshot["levels"] == last["levels"]
        books = handle.books
        assert books is not None
        assert snapshot["time"] == books.time >= last["time"]


async def test_ccxt_and_ccxt_pro_read_markets_books_candles_and_trades(tmp_path: Path) -> None:
    import ccxt
    import ccxt.pro

    symbol = "BTC/USDC:USDC"
    urls = {"api": {"public": "", "private": "", "ws": {"public": ""}}}

    async with sim_and_server(tmp_path, SIM_CLOCK, fallback=True) as (handle, node):
        urls["api"].update(public=handle.http_url, private=handle.http_url)
        urls["api"]["ws"]["public"] = handle.url  # type: ignore[index]
        base = bootstrap_height(handle)
        await node.wait_for_height(node.start_height + 80)
        settled = await settle(handle, node)
        books = handle.books
        assert books is not None
        books_time = books.time
        exchange = ccxt.hyperliquid({"urls": urls})

        def fetch() -> dict[str, Any]:
            return {
                "markets": exchange.load_markets(),
                "book": exchange.fetch_order_book(symbol),
                "ohlcv": exchange.fetch_ohlcv(symbol, "1m", since=0),
                "trades": exchange.fetch_trades(symbol, params={"user": FILLS_USER}),
            }

        got = await trio.to_thread.run_sync(fetch)
        bids, asks = node.coin_orders("BTC")
        candles = expected_candles(written_trades(node, "BTC", after=base), 60_000)

        async def watch() -> dict[str, Any]:
            pro = ccxt.pro.hyperliquid({"urls": urls})
            try:
                await pro.load_markets()
                # The node is paused: the first messages are the books and candle as they are.
                # (ccxt keeps updating the objects it returned: copies of them as they were.)
                book = await pro.watch_order_book(symbol)
                out: dict[str, Any] = {
                    "book": {
                        side: [list(level) for level in book[side]] for side in ("bids", "asks")
                    },
                }
                out["ohlcv"] = [list(row) for row in await pro.watch_ohlcv(symbol, "1m")]
                trio.from_thread.run_sync(node.resume)  # trades come with the next blocks
                out["trades"] = await pro.watch_trades(symbol)
                return out
            finally:
                await pro.close()

        watched = await trio.to_thread.run_sync(asyncio.run, watch())
        await settle(handle, node)
        written = {t["tid"]: t for t in written_trades(node, "BTC", after=base)}

    # load_markets: perps from meta, spot from spotMeta, contexts from the fallback.
    assert "BTC/USDC:USDC" in got["markets"]
    assert "PURR/USDC" in got["markets"]
    for book in (got["book"], watched["book"]):
        assert [level[:2] for level in book["bids"]] == [
            [float(px), float(sz)] for px, sz, _ in expected_l2(bids, "B")
        ]
        assert [level[:2] for level in book["asks"]] == [
            [float(px), float(sz)] for px, sz, _ in expected_l2(asks, "A")
        ]
    assert got["book"]["timestamp"] == books_time
    # fetch_ohlcv (candleSnapshot): the candles recomputed from the fill files.
    assert [row[0] for row in got["ohlcv"]] == [c["t"] for c in candles] != []
    assert got["ohlcv"] == [
        [c["t"], float(c["o"]), float(c["h"]), float(c["l"]), float(c["c"]), float(c["v"])]
        for c in candles
    ]
    assert watched["ohlcv"][-1] == got["ohlcv"][-1]  # the current candle, from the channel
    # fetch_trades (userFills of a user): that user's BTC fills, oldest first.
    # (at the first pause: the node wrote more blocks while ccxt.pro watched)
    seen = node.fills(FILLS_USER, settled)[len(node.fills(FILLS_USER, base)) :]
    mine = [f for f in seen if f.coin == "BTC"]
    assert [int(t["id"]) for t in got["trades"]] == [f.tid for f in mine] != []
    assert [t["price"] for t in got["trades"]] == [float(f.px) for f in mine]
    # watch_trades: trades the node wrote, with their prices, sizes and taker sides.
    assert watched["trades"] != []
    for trade in watched["trades"]:
        truth = written[int(trade["id"])]
        assert (trade["price"], trade["amount"]) == (float(truth["px"]), float(truth["sz"]))
        assert trade["side"] == ("buy" if truth["side"] == "B" else "sell")


async def test_curl_reads_health(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for this test"
    async with sim_and_server(tmp_path) as (handle, _node):
        result = await trio.run_process(
            [curl, "-s", "-i", f"{handle.http_url}/health"], capture_stdout=True
        )
        head, _, body = result.stdout.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200 OK")
        assert "content-type: application/json" in head.lower()
        assert json.loads(body)["status"] == "live"


# -- the official Python SDK's Info, every call hlbook answers, against the simulator's truth --

# The simulated clock starts 3 s before a minute ends, so the runs below cross a 1m candle.
SIM_CLOCK = {"start_time": datetime(2026, 5, 5, 17, 39, 57, tzinfo=UTC), "record_fills": True}


def written_statuses(node: Any, user: str, after: int) -> list[tuple[int, str, str]]:
    """``(oid, status, coin)`` of every status line event of ``user`` above height ``after``."""
    return [
        (event["order"]["oid"], event["status"], event["order"]["coin"])
        for line in written_lines(node, Stream.STATUSES)
        if int(line["block_number"]) > after
        for event in line["events"]
        if event["user"] == user
    ]


async def test_sdk_info_calls_equal_the_simulators_truth(tmp_path: Path) -> None:
    from hyperliquid.info import Info
    from hyperliquid.utils.types import Cloid

    async with sim_and_server(tmp_path, SIM_CLOCK) as (handle, node):
        base = bootstrap_height(handle)
        await node.wait_for_height(node.start_height + 100)  # 5 s: a candle closes meanwhile
        height = await settle(handle, node)
        meta = await node.info({"type": "meta"})
        spot_meta = await node.info({"type": "spotMeta"})

        def ask() -> dict[str, Any]:
            info = Info(base_url=handle.http_url, skip_ws=True)
            resting = node.resting_orders(FILLS_USER)
            with_cloid = next(o for o in resting if o.cloid)
            statuses = written_statuses(node, FILLS_USER, base)
            filled = next(oid for oid, kind, _ in statuses if kind == "filled")
            return {
                "l2": info.l2_snapshot("BTC"),
                "mids": info.all_mids(),
                "open": info.open_orders(FILLS_USER),
                "frontend": info.frontend_open_orders(FILLS_USER),
                "trigger_open": info.open_orders(TRIGGER_USER),
                "by_oid": info.query_order_by_oid(FILLS_USER, resting[0].oid),
                "by_cloid": info.query_order_by_cloid(FILLS_USER, Cloid.from_str(with_cloid.cloid)),
                "filled": (filled, info.query_order_by_oid(FILLS_USER, filled)),
                "unknown": info.query_order_by_oid(FILLS_USER, 1),
                "resting": (resting[0], with_cloid),
                "fills": info.user_fills(FILLS_USER),
                "fills_by_time": info.user_fills_by_time(FILLS_USER, 0),
                "candles": info.candles_snapshot("BTC", "1m", 0, 2**62),
                "meta": info.meta(),
                "spot_meta": info.spot_meta(),
            }

        got = await trio.to_thread.run_sync(ask)
        books = handle.books
        assert books is not None
        assert books.height == height

    bids, asks = node.coin_orders("BTC")
    assert [(lv["px"], lv["sz"], lv["n"]) for lv in got["l2"]["levels"][0]] == expected_l2(
        bids, "B"
    )
    assert [(lv["px"], lv["sz"], lv["n"]) for lv in got["l2"]["levels"][1]] == expected_l2(
        asks, "A"
    )
    assert {coin: Decimal(px) for coin, px in got["mids"].items()} == expected_mids(node)

    # The resting orders, newest first; trigger orders wait outside the book, which a
    # node's files and snapshots do not show: the node itself would list them too.
    assert got["open"] == node.open_orders(FILLS_USER, triggers=False) != []
    assert got["frontend"] == node.frontend_open_orders(FILLS_USER, triggers=False)
    assert got["trigger_open"] == node.open_orders(TRIGGER_USER, triggers=False)
    assert len(node.open_orders(TRIGGER_USER)) > len(got["trigger_open"])

    resting, with_cloid = got["resting"]
    assert got["by_oid"]["status"] == "order"
    assert got["by_oid"]["order"]["status"] == "open"
    assert got["by_oid"]["order"]["order"]["oid"] == resting.oid
    assert got["by_oid"]["order"]["order"]["limitPx"] == resting.limitPx
    assert got["by_cloid"]["order"]["order"]["oid"] == with_cloid.oid
    assert got["by_cloid"]["order"]["order"]["cloid"] == with_cloid.cloid
    filled_oid, filled = got["filled"]
    assert (filled["order"]["order"]["oid"], filled["order"]["status"]) == (filled_oid, "filled")
    assert got["unknown"] == {"status": "unknownOid"}

    # hlbook's history holds what happened after it started (above its snapshot).
    fills = fill_dicts(node.fills(FILLS_USER))[len(node.fills(FILLS_USER, base)) :]
    assert len(fills) > 20
    assert got["fills"] == fills[::-1]  # newest first
    assert got["fills_by_time"] == fills  # oldest first from startTime

    trades = written_trades(node, "BTC", after=base)
    candles = expected_candles(trades, 60_000)
    assert len(candles) >= 2  # the run crossed a minute
    assert [candle_numbers(c) for c in got["candles"]] == candles
    assert {(c["s"], c["i"]) for c in got["candles"]} == {("BTC", "1m")}

    assert got["meta"] == meta  # passed to the node's info server, answered unchanged
    assert got["spot_meta"] == spot_meta


async def test_sdk_subscriptions_fire_with_the_simulators_data(tmp_path: Path) -> None:
    from hyperliquid.info import Info

    got: dict[str, list[Any]] = {}

    def collect(name: str) -> Any:
        return lambda message: got.setdefault(name, []).append(message)

    async with sim_and_server(tmp_path, SIM_CLOCK) as (handle, node):
        base = bootstrap_height(handle)
        await node.wait_for_height(node.start_height + 20)
        paused = await settle(handle, node)
        before_candle = expected_candles(written_trades(node, "BTC", after=base), 60_000)

        def connect() -> list[Info]:
            # orderUpdates and userEvents: once per connection in the SDK, so two of them.
            first = Info(base_url=handle.http_url, skip_ws=False)
            second = Info(base_url=handle.http_url, skip_ws=False)
            subscriptions: list[tuple[Info, dict[str, Any], str]] = [
                (first, {"type": "l2Book", "coin": "BTC"}, "l2Book"),
                (first, {"type": "bbo", "coin": "BTC"}, "bbo"),
                (first, {"type": "trades", "coin": "BTC"}, "trades"),
                (first, {"type": "allMids"}, "allMids"),
                (first, {"type": "candle", "coin": "BTC", "interval": "1m"}, "candle"),
                (first, {"type": "orderUpdates", "user": TRIGGER_USER}, "orderUpdates"),
                (first, {"type": "userFills", "user": FILLS_USER}, "userFills"),
                (first, {"type": "userEvents", "user": FILLS_USER}, "userEvents"),
                (second, {"type": "orderUpdates", "user": REJECTED_USER}, "rejected"),
            ]
            for info, subscription, name in subscriptions:
                info.subscribe(subscription, collect(name))
            return [first, second]

        clients = await trio.to_thread.run_sync(connect)
        try:
            # While the node is paused, every first message arrives: then all later blocks.
            await until(lambda: {"l2Book", "bbo", "allMids", "candle", "userFills"} <= set(got))
            assert got["userFills"][0]["data"]["isSnapshot"] is True
            node.resume()
            await node.wait_for_height(paused + 80)
            height = await settle(handle, node)
            trades = written_trades(node, "BTC", after=paused)
            new_fills = fill_dicts(list(node.fills(FILLS_USER, height)))[
                len(node.fills(FILLS_USER, paused)) :
            ]
            bids, asks = node.coin_orders("BTC")
            candles = expected_candles(written_trades(node, "BTC", after=base), 60_000)
            await until(
                lambda: (
                    sum(len(m["data"]) for m in got.get("trades", [])) == len(trades)
                    and candle_numbers(got["candle"][-1]["data"]) == candles[-1]
                    and got["l2Book"][-1]["data"]["levels"][0][0]["px"] == bids[0].limitPx
                    and sum(len(m["data"]["fills"]) for m in got["userFills"][1:]) == len(new_fills)
                )
            )
        finally:
            for info in clients:
                await trio.to_thread.run_sync(info.disconnect_websocket)

    # l2Book and bbo: the last push is the simulator's book.
    levels = got["l2Book"][-1]["data"]["levels"]
    assert [(lv["px"], lv["sz"], lv["n"]) for lv in levels[0]] == expected_l2(bids, "B")
    assert [(lv["px"], lv["sz"], lv["n"]) for lv in levels[1]] == expected_l2(asks, "A")
    bid, ask = got["bbo"][-1]["data"]["bbo"]
    assert (bid["px"], ask["px"]) == (bids[0].limitPx, asks[0].limitPx)
    assert bid["sz"] == canonical(
        sum((Decimal(o.sz) for o in bids if o.limitPx == bid["px"]), Decimal())
    )

    # trades: every trade written after the pause, in order, with the taker's side.
    pushed = [trade for message in got["trades"] for trade in message["data"]]
    assert [(t["tid"], t["px"], t["sz"], t["side"], t["users"]) for t in pushed] == [
        (t["tid"], t["px"], t["sz"], t["side"], t["users"]) for t in trades
    ]

    # allMids: the first message and the changes after it add up to the simulator's mids.
    merged: dict[str, str] = {}
    for message in got["allMids"]:
        merged.update(message["data"]["mids"])
    assert {coin: Decimal(px) for coin, px in merged.items()} == expected_mids(node)

    # candle: recomputed from the trades in the fill files (before and after subscribing).
    assert candle_numbers(got["candle"][0]["data"]) == before_candle[-1]
    assert candle_numbers(got["candle"][-1]["data"]) == candles[-1]
    assert len(candles) >= 2
    assert got["candle"][-1]["data"]["t"] > got["candle"][0]["data"]["t"]

    # orderUpdates: exactly the statuses the files hold for that user after the pause,
    # triggered orders and rejections included.
    for name, user, kinds in (
        ("orderUpdates", TRIGGER_USER, {"triggered"}),
        ("rejected", REJECTED_USER, set()),
    ):
        updates = [
            (u["order"]["oid"], u["status"], u["order"]["coin"])
            for m in got[name]
            for u in m["data"]
        ]
        assert updates == written_statuses(node, user, paused) != []
        assert kinds <= {status for _, status, _ in updates}
    assert all(
        status.endswith("Rejected")
        for _, status, _ in written_statuses(node, REJECTED_USER, paused)
    )

    # userFills: the snapshot is the fills until the pause, newest first; then the new ones.
    snapshot = got["userFills"][0]["data"]
    assert snapshot["user"] == FILLS_USER
    seen = fill_dicts(node.fills(FILLS_USER, paused))[len(node.fills(FILLS_USER, base)) :]
    assert snapshot["fills"] == seen[::-1]
    assert [f for m in got["userFills"][1:] for f in m["data"]["fills"]] == new_fills != []
    # userEvents (channel "user"): the same fills, as {"fills": [...]}.
    assert [f for m in got["userEvents"] for f in m["data"]["fills"]] == new_fills


async def until(condition: Any, limit: float = 15.0) -> None:
    """Wait until ``condition()`` holds (what an SDK callback thread delivers arrives later)."""
    with trio.move_on_after(limit):
        while not condition():
            await trio.sleep(0.05)
