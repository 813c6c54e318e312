"""The real mainnet slice through real files, a real info server and real WebSocket clients."""

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from fixtures import MainnetSlice
from server_support import engine_books, order_keys, replay_server, send, subscribe
from trio_websocket import open_websocket_url

from hlbook.node.formats import Layout, Stream

pytestmark = pytest.mark.slow


def expected_trades(mainnet: MainnetSlice) -> set[int]:
    import orjson

    tids = set()
    for line in mainnet.lines[Stream.FILLS]:
        for _user, fill in orjson.loads(line)["events"]:
            tids.add(fill["tid"])
    return tids


@pytest.mark.parametrize(
    "layout", [Layout.BY_BLOCK, Layout.STREAMING], ids=["by-block", "streaming"]
)
async def test_replayed_slice_gives_the_engines_books_to_every_client(
    tmp_path: Path, mainnet: MainnetSlice, layout: Layout
) -> None:
    from l4_mirror import Checker

    reference = engine_books(mainnet)
    last = mainnet.heights[-1]
    async with replay_server(tmp_path, mainnet, layout) as (handle, node):
        assert handle.books is not None
        assert handle.books.height == mainnet.height
        async with open_websocket_url(handle.url, max_message_size=1 << 28) as ws:
            # l2Book messages do not say which parameters they are for (as in the
            # official API), so this connection has a single l2Book subscription.
            for kind in ("l4Book", "l2Book", "bbo", "trades"):
                await send(ws, subscribe("BTC", kind))
            checker = Checker(20)
            tids: list[int] = []
            bbos: list[Any] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node.replay)
                with trio.fail_after(30):
                    while checker.mirror.height < last:
                        message = json.loads(await ws.get_message())
                        channel, data = message["channel"], message.get("data")
                        if channel == "l4Book":
                            checker.on_l4(data)
                        elif channel == "l2Book":
                            checker.on_l2(data)
                        elif channel == "bbo":
                            bbos.append(data)
                        elif channel == "trades":
                            tids.extend(t["tid"] for t in data)
                        elif channel == "error":
                            raise AssertionError(data)
            await handle.wait_for_height(last)
            books = handle.books
            assert books is not None
            # The server's books are the engine's, order by order.
            assert order_keys(books, "BTC") == order_keys(reference, "BTC")
            # The client's own mirror (built from the wire alone) is the same book.
            mine = checker.mirror
            bids = sorted(mine.orders.items())
            ref_bids, ref_asks = order_keys(reference, "BTC")
            assert len(bids) == len(ref_bids) + len(ref_asks)
            for side, ref in (("B", ref_bids), ("A", ref_asks)):
                prices = sorted(mine.levels[side], reverse=side == "B")
                flat = [
                    (oid, str(mine.orders[oid][1]), mine.orders[oid][2])
                    for px in prices
                    for oid in mine.levels[side][px]
                ]
                assert [f[0] for f in flat] == [r[0] for r in ref]
            assert checker.checked > 0
            assert checker.mismatches == 0
            # The last bbo is the final book's best levels.
            final = checker.mirror
            assert bbos[-1]["bbo"] == [
                {"px": px, "sz": sz, "n": n}
                for px, sz, n in (final.top("B", 1)[0], final.top("A", 1)[0])
            ]
            # Every trade exactly once.
            assert sorted(tids) == sorted(expected_trades(mainnet))
    health = handle.health()
    assert health["pipeline"]["divergences"] == 0
    assert health["pipeline"]["bootstraps"] == 1


async def test_a_stalled_event_loop_does_not_make_a_busy_stream_look_quiet(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    """Streaming: the process stalls (GC, a busy CPU) just after the node wrote a block's
    diffs, longer than --stream-quiet-after, while the status lines were already read.
    When it resumes, the joiner must not take the diff stream's earlier silence for
    quiet before its reader has run."""
    import time

    from recorded_node import streaming_lines

    by_height: dict[int, list[tuple[Stream, bytes]]] = {}
    for stream, line, height in streaming_lines(mainnet):
        by_height.setdefault(height, []).append((stream, line))
    async with replay_server(tmp_path, mainnet, Layout.STREAMING, stream_quiet_after=0.1) as (
        handle,
        node,
    ):
        blocks = sorted(by_height)[:20]
        for height in blocks:
            lines = by_height[height]
            for stream, line in lines:  # statuses and fills first: they are read at once
                if stream is not Stream.DIFFS:
                    node._append(stream, line + b"\n", False)
            await trio.sleep(0.05)
            for stream, line in lines:
                if stream is Stream.DIFFS:
                    node._append(stream, line + b"\n", False)
            time.sleep(0.2)  # the whole process stalls before the diff reader runs
            await trio.sleep(0.3)
            node.height = height
        with trio.fail_after(20):
            await handle.wait_for_height(blocks[-2])
        assert handle.health()["pipeline"]["gaps"] == 0
        assert handle.health()["pipeline"]["bootstraps"] == 1


# -- per-user answers on the real slice, expected values computed here from the files --------


def real_open_orders(mainnet: MainnetSlice, user: str) -> list[dict[str, Any]]:
    """``user``'s resting orders after the slice: the snapshot's, moved forward by the
    blocks' raw diffs (details of new orders from their ``open`` statuses), newest first."""
    import orjson

    orders: dict[int, dict[str, Any]] = {}
    _height, coins = orjson.loads(mainnet.snapshot)
    for _coin, sides in coins:
        for side in sides:
            for owner, order in side:
                if owner == user:
                    orders[order["oid"]] = dict(order)
    for diff_raw, status_raw in zip(
        mainnet.lines[Stream.DIFFS], mainnet.lines[Stream.STATUSES], strict=True
    ):
        details = {
            e["order"]["oid"]: e["order"]
            for e in orjson.loads(status_raw)["events"]
            if e["user"] == user and e["status"] == "open"
        }
        for diff in orjson.loads(diff_raw)["events"]:
            if diff["user"] != user:
                continue
            change = diff["raw_book_diff"]
            if change == "remove":
                del orders[diff["oid"]]
            elif "new" in change:
                orders[diff["oid"]] = {**details[diff["oid"]], "sz": change["new"]["sz"]}
            else:
                orders[diff["oid"]]["sz"] = change["update"]["newSz"]
    out = []
    for order in sorted(orders.values(), key=lambda o: (o["timestamp"], o["oid"]), reverse=True):
        wire = {k: order[k] for k in ("coin", "side", "limitPx", "sz", "oid", "timestamp")}
        wire["origSz"] = order["origSz"]
        if order.get("cloid"):
            wire["cloid"] = order["cloid"]
        if order.get("reduceOnly"):
            wire["reduceOnly"] = True
        out.append(wire)
    return out


def busiest(mainnet: MainnetSlice, stream: Stream, among: set[str] | None = None) -> str:
    """The user with the most events of ``stream`` in the slice (optionally among some)."""
    import collections

    import orjson

    counts: collections.Counter[str] = collections.Counter()
    for raw in mainnet.lines[stream]:
        for event in orjson.loads(raw)["events"]:
            user = event[0] if stream is Stream.FILLS else event["user"]
            if among is None or user in among:
                counts[user] += 1
    return counts.most_common(1)[0][0]


async def test_real_users_open_orders_order_updates_and_fills(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    import httpx
    import orjson

    _height, coins = orjson.loads(mainnet.snapshot)
    resting = {owner for _coin, sides in coins for side in sides for owner, _order in side}
    maker = busiest(mainnet, Stream.DIFFS, among=resting)  # in the snapshot, and active
    trader = busiest(mainnet, Stream.FILLS)
    statuses = [
        (e["order"]["oid"], e["status"], e["order"]["limitPx"], e["order"]["sz"])
        for raw in mainnet.lines[Stream.STATUSES]
        for e in orjson.loads(raw)["events"]
        if e["user"] == maker
    ]
    fills = [
        fill
        for raw in mainnet.lines[Stream.FILLS]
        for user, fill in orjson.loads(raw)["events"]
        if user == trader
    ]
    expected_open = real_open_orders(mainnet, maker)
    assert expected_open
    assert statuses
    assert fills
    assert len({s for _, s, _, _ in statuses}) >= 2  # more than one kind of status
    last = mainnet.heights[-1]
    async with replay_server(tmp_path, mainnet) as (handle, node):
        updates: list[Any] = []
        pushed_fills: list[Any] = []
        async with open_websocket_url(handle.url, max_message_size=1 << 24) as ws:
            for subscription in (
                {"type": "orderUpdates", "user": maker},
                {"type": "userFills", "user": trader},
            ):
                await send(ws, {"method": "subscribe", "subscription": subscription})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node.replay)
                with trio.fail_after(30):
                    while len(pushed_fills) < len(fills) or len(updates) < len(statuses):
                        message = json.loads(await ws.get_message())
                        if message["channel"] == "orderUpdates":
                            updates.extend(message["data"])
                        elif message["channel"] == "userFills":
                            if message["data"].get("isSnapshot"):
                                assert message["data"]["fills"] == []  # nothing seen before
                            else:
                                pushed_fills.extend(message["data"]["fills"])
                        elif message["channel"] == "error":
                            raise AssertionError(message)
        await handle.wait_for_height(last)
        async with httpx.AsyncClient(base_url=handle.http_url) as client:

            async def info(body: dict[str, Any]) -> Any:
                response = await client.post("/info", json=body)
                assert response.status_code == 200, response.text
                return response.json()

            open_orders = await info({"type": "openOrders", "user": maker})
            frontend = await info({"type": "frontendOpenOrders", "user": maker})
            user_fills = await info({"type": "userFills", "user": trader})

    assert open_orders == expected_open
    assert [o["oid"] for o in frontend] == [o["oid"] for o in expected_open]
    assert [
        (u["order"]["oid"], u["status"], u["order"]["limitPx"], u["order"]["sz"]) for u in updates
    ] == statuses
    assert user_fills == fills[::-1]  # newest first, every field as the node wrote it
    assert pushed_fills == fills
