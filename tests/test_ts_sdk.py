"""The official TypeScript SDK against hlbook: InfoClient over HTTP and WebSocket post, and
SubscriptionClient, on Node 20 with ``ws``, over loopback."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from node_support import run_ts_sdk
from server_support import (
    bootstrap_height,
    candle_numbers,
    expected_candles,
    expected_l2,
    expected_mids,
    fill_dicts,
    settle,
    sim_and_server,
    written_lines,
    written_trades,
)

from hlbook.node.formats import Stream
from hlbook.sim import FILLS_USER

pytestmark = pytest.mark.slow


async def test_l2book_over_http_post_and_subscription(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, node):
        plan = {
            "http": handle.http_url,
            "ws": handle.url,
            "subscribe": [
                ["l2Book", {"coin": "BTC"}, 3],
                ["l2Book", {"coin": "ETH", "nSigFigs": 3}, 2],
            ],
        }
        live = await run_ts_sdk(plan)
        assert live["errors"] == []
        events = live["events"]['l2Book:{"coin":"BTC"}']
        assert len(events) == 3
        assert all(event["coin"] == "BTC" for event in events)
        assert [event["time"] for event in events] == sorted(event["time"] for event in events)
        aggregated = live["events"]['l2Book:{"coin":"ETH","nSigFigs":3}'][0]
        assert all(float(level["px"]) % 10 == 0 for level in aggregated["levels"][0])

        await settle(handle, node)  # the books stop moving: HTTP and post must agree
        still = await run_ts_sdk(
            {"http": handle.http_url, "ws": handle.url, "info": [["l2Book", {"coin": "BTC"}]]}
        )
        assert still["errors"] == []
        key = 'l2Book:{"coin":"BTC"}'
        assert still["http"][key] == still["post"][key]
        books = handle.books
        assert books is not None
        book = books.book("BTC")
        assert book is not None
        best = book.best("B")
        assert best is not None
        assert still["http"][key]["levels"][0][0]["px"] == best.px_str
        assert still["http"][key]["time"] == books.time


async def test_channels_and_info_types_of_issue_10(tmp_path: Path) -> None:
    sim = {"start_time": datetime(2026, 5, 5, 17, 39, 57, tzinfo=UTC), "record_fills": True}
    async with sim_and_server(tmp_path, sim) as (handle, node):
        base = bootstrap_height(handle)
        # While the node writes: every channel fires, with what the files then say.
        live = await run_ts_sdk(
            {
                "http": handle.http_url,
                "ws": handle.url,
                "subscribe": [
                    ["l2Book", {"coin": "BTC"}, 2],
                    ["bbo", {"coin": "BTC"}, 2],
                    ["trades", {"coin": "BTC"}, 2],
                    ["allMids", None, 2],
                    ["candle", {"coin": "BTC", "interval": "1m"}, 2],
                    ["orderUpdates", {"user": FILLS_USER}, 2],
                    ["userFills", {"user": FILLS_USER}, 2],
                    ["openOrders", {"user": FILLS_USER}, 2],
                ],
            }
        )
        assert live["errors"] == []
        height = await settle(handle, node)
        statuses = {
            (event["order"]["oid"], event["status"])
            for line in written_lines(node, Stream.STATUSES)
            for event in line["events"]
            if event["user"] == FILLS_USER
        }
        resting = node.resting_orders(FILLS_USER)
        # A finished order hlbook saw finish: in a block after its bootstrap (the history
        # records only what hlbook read; earlier ones are rightly unknownOid).
        finished = next(
            event["order"]["oid"]
            for line in written_lines(node, Stream.STATUSES)
            if int(line["block_number"]) > base
            for event in line["events"]
            if event["user"] == FILLS_USER
            and event["status"] == "filled"
            and event["order"]["oid"] not in {o.oid for o in resting}
        )
        # The node paused: first messages and answers are the simulator's books exactly.
        still = await run_ts_sdk(
            {
                "http": handle.http_url,
                "ws": handle.url,
                "info": [
                    ["allMids", None],
                    ["openOrders", {"user": FILLS_USER}],
                    ["orderStatus", {"user": FILLS_USER, "oid": resting[0].oid}],
                    ["orderStatus", {"user": FILLS_USER, "oid": finished}],
                    ["orderStatus", {"user": FILLS_USER, "oid": 1}],
                ],
                "subscribe": [
                    ["l2Book", {"coin": "BTC"}, 1],
                    ["bbo", {"coin": "BTC"}, 1],
                    ["allMids", None, 1],
                    ["candle", {"coin": "BTC", "interval": "1m"}, 1],
                    ["openOrders", {"user": FILLS_USER}, 1],
                ],
            }
        )
        assert still["errors"] == []
        books = handle.books
        assert books is not None
        assert books.height == height
        bids, asks = node.coin_orders("BTC")
        open_orders = node.open_orders(FILLS_USER, triggers=False)
        frontend_orders = node.frontend_open_orders(FILLS_USER, triggers=False)
        mids = expected_mids(node)
        fills = fill_dicts(node.fills(FILLS_USER))[len(node.fills(FILLS_USER, base)) :]
        trades = {t["tid"]: t for t in written_trades(node, "BTC", after=base)}
        candles = {c["t"]: c for c in expected_candles(list(trades.values()), 60_000)}

    events = live["events"]
    for key, count in (
        ('l2Book:{"coin":"BTC"}', 2),
        ('bbo:{"coin":"BTC"}', 2),
        ('trades:{"coin":"BTC"}', 2),
        ("allMids:null", 2),
        ('candle:{"coin":"BTC","interval":"1m"}', 2),
        (f'orderUpdates:{{"user":"{FILLS_USER}"}}', 2),
        (f'userFills:{{"user":"{FILLS_USER}"}}', 2),
        (f'openOrders:{{"user":"{FILLS_USER}"}}', 2),  # the SDK drops another user's or dex's
    ):
        assert len(events[key]) == count, key
    for trade in (t for batch in events['trades:{"coin":"BTC"}'] for t in batch):
        truth = trades[trade["tid"]]
        assert (trade["px"], trade["sz"], trade["side"], trade["users"]) == (
            truth["px"], truth["sz"], truth["side"], truth["users"],
        )  # fmt: skip
    for candle in events['candle:{"coin":"BTC","interval":"1m"}']:
        final = candles[candle["t"]]  # the candle as it grew: its open never changes
        assert (candle["s"], candle["i"], Decimal(candle["o"])) == ("BTC", "1m", final["o"])
        assert candle["n"] <= final["n"]
    for updates in events[f'orderUpdates:{{"user":"{FILLS_USER}"}}']:
        assert updates != []
        assert {(u["order"]["oid"], u["status"]) for u in updates} <= statuses
    snapshot, push = events[f'userFills:{{"user":"{FILLS_USER}"}}']
    assert snapshot["isSnapshot"] is True
    assert "isSnapshot" not in push or push["isSnapshot"] is False
    assert all(fill in fills for fill in snapshot["fills"] + push["fills"])
    assert push["fills"] != []

    for answers in (still["http"], still["post"]):  # InfoClient over HTTP and WebSocket post
        assert {coin: Decimal(px) for coin, px in answers["allMids:null"].items()} == mids
        assert answers[f'openOrders:{{"user":"{FILLS_USER}"}}'] == open_orders != []
        by_oid = answers[f'orderStatus:{{"user":"{FILLS_USER}","oid":{resting[0].oid}}}']
        assert by_oid["status"] == "order"
        assert (by_oid["order"]["status"], by_oid["order"]["order"]["oid"]) == (
            "open",
            resting[0].oid,
        )
        done = answers[f'orderStatus:{{"user":"{FILLS_USER}","oid":{finished}}}']
        assert (done["order"]["status"], done["order"]["order"]["oid"]) == ("filled", finished)
        assert answers[f'orderStatus:{{"user":"{FILLS_USER}","oid":1}}'] == {"status": "unknownOid"}
    first = still["events"]
    [book] = first['l2Book:{"coin":"BTC"}']
    assert [(lv["px"], lv["sz"], lv["n"]) for lv in book["levels"][0]] == expected_l2(bids, "B")
    assert [(lv["px"], lv["sz"], lv["n"]) for lv in book["levels"][1]] == expected_l2(asks, "A")
    [bbo] = first['bbo:{"coin":"BTC"}']
    assert (bbo["bbo"][0]["px"], bbo["bbo"][1]["px"]) == (bids[0].limitPx, asks[0].limitPx)
    [all_mids] = first["allMids:null"]
    assert {coin: Decimal(px) for coin, px in all_mids["mids"].items()} == mids
    [candle] = first['candle:{"coin":"BTC","interval":"1m"}']
    assert candle_numbers(candle) == candles[max(candles)]
    [orders] = first[f'openOrders:{{"user":"{FILLS_USER}"}}']
    assert orders == {"dex": "", "user": FILLS_USER, "orders": frontend_orders}
    assert frontend_orders != []
