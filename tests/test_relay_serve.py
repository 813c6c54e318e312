"""``serve --publish`` and ``serve --source`` (``hlbook relay``) end to end, real nats-server.

A relay's clients must get exactly what the primary's get, message for
message, at every height — l2Book, bbo, trades, l4Book (snapshot + updates)
and openOrders — in both node layouts; and after each fault (nats-server
killed, relay killed, relay late, two primaries, a primary replaced,
retention expiring blocks the relay needed) its books must be the primary's
again, with nothing lost (a gap is a visible re-bootstrap, never a hole).
"""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats_support import nats_server, options
from relay_support import (
    Running,
    at_height,
    primary_config,
    relay_config,
    same_as_node,
    same_books,
    settle_all,
    simulator,
    start_server,
)
from server_support import send, subscribe
from trio_websocket import WebSocketConnection, open_websocket_url

import hlbook
from hlbook.node.formats import Layout
from hlbook.relay import RelayNames, StreamSettings, open_nats
from hlbook.relay.publisher import ensure_stream

pytestmark = pytest.mark.slow

COINS = ["BTC", "@107", "xyz:XYZ100"]


async def _collect(
    url: str,
    into: list[Any],
    *,
    task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with open_websocket_url(url, max_message_size=1 << 28) as ws:
        for coin in COINS:
            for kind in ("l2Book", "bbo", "trades", "l4Book"):
                await send(ws, subscribe(coin, kind))
        await send(ws, subscribe(COINS[0], "l2Book", nSigFigs=3, nLevels=5))
        task_status.started(ws)
        while True:
            into.append(json.loads(await ws.get_message()))


def _conflated(handle: Any) -> int:
    """Views replaced before they were sent, for the test's subscribed client."""
    return sum(c["conflated"] for c in handle.client_stats() if c["subscriptions"])


def _same_views(mine: list[Any], theirs: list[Any], conflated: list[int]) -> None:
    def by_view(messages: list[Any]) -> dict[tuple[Any, ...], Any]:
        return {(m["coin"], m["time"], json.dumps(m).count("px")): m for m in messages}

    primary, relay = by_view(mine), by_view(theirs)
    assert all(primary[key] == relay[key] for key in primary.keys() & relay.keys())
    assert len(primary.keys() - relay.keys()) <= conflated[1]
    assert len(relay.keys() - primary.keys()) <= conflated[0]
    # Both ended on the same view of each coin.
    assert {m["coin"]: m for m in mine if "levels" not in m or len(m["levels"][0]) > 5} == {
        m["coin"]: m for m in theirs if "levels" not in m or len(m["levels"][0]) > 5
    }


def _by_channel(messages: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for message in messages:
        channel = message["channel"]
        if channel == "subscriptionResponse":
            continue
        assert channel != "error", message
        out.setdefault(channel, []).append(message["data"])
    return out


async def _info(client: httpx.AsyncClient, handle: hlbook.ServerHandle, body: Any) -> Any:
    response = await client.post(f"{handle.http_url}/info", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def _same_info(primary: hlbook.ServerHandle, relay: hlbook.ServerHandle) -> int:
    """openOrders of the busiest users and l2Book over HTTP: the relay answers as the primary."""
    books = primary.books
    assert books is not None
    counts: dict[str, int] = {}
    for coin in books.coins():
        for orders in books.coin_orders(coin):
            for order in orders:
                counts[str(order.user)] = counts.get(str(order.user), 0) + 1
    users = sorted(counts, key=lambda u: (-counts[u], u))[:5]
    checked = 0
    async with httpx.AsyncClient(timeout=10) as client:
        for user in users:
            for kind in ("openOrders", "frontendOpenOrders"):
                body = {"type": kind, "user": user}
                mine, theirs = await _info(client, primary, body), await _info(client, relay, body)
                assert mine == theirs, (kind, user)
                checked += len(mine)
        for coin in COINS:
            body = {"type": "l2Book", "coin": coin}
            assert await _info(client, primary, body) == await _info(client, relay, body)
    return checked


@pytest.mark.parametrize(
    "layout", [Layout.BY_BLOCK, Layout.STREAMING], ids=["by-block", "streaming"]
)
async def test_a_relays_clients_get_exactly_the_primarys_messages(
    tmp_path: Path, layout: Layout
) -> None:
    sim = {"layout": layout, "diff_ahead": 2 if layout is Layout.STREAMING else 0}
    async with (
        nats_server(tmp_path) as nats,
        simulator(tmp_path, **sim) as node,
        trio.open_nursery() as nursery,
    ):
        primary = await start_server(nursery, primary_config(tmp_path, node, nats))
        relay = await start_server(nursery, relay_config(tmp_path, nats))
        base = await settle_all(node, primary.handle, relay.handle)
        assert same_books(primary.handle, relay.handle) == []
        assert await _same_info(primary.handle, relay.handle) > 0

        got: dict[str, list[Any]] = {"primary": [], "relay": []}
        async with trio.open_nursery() as clients:
            await clients.start(_collect, primary.handle.url, got["primary"])
            await clients.start(_collect, relay.handle.url, got["relay"])
            await trio.sleep(0.3)  # every subscription answered, at ``base``
            for _round in range(2):
                node.resume()
                await node.wait_for_height(node.height + 25)
                final = await settle_all(node, primary.handle, relay.handle)
                assert same_books(primary.handle, relay.handle) == []
                assert same_as_node(relay.handle, node) == []
                assert await _same_info(primary.handle, relay.handle) > 0
            await trio.sleep(0.5)  # let both clients drain
            conflated = [_conflated(server.handle) for server in (primary, relay)]
            clients.cancel_scope.cancel()

        mine, theirs = _by_channel(got["primary"]), _by_channel(got["relay"])
        assert set(mine) == {"l2Book", "bbo", "trades", "l4Book"}
        for channel in mine:
            if channel in ("l2Book", "bbo") and any(conflated):
                # A view a client had not been sent yet was replaced by a newer one (the
                # conflating channels' policy), on one side only: every view both sent is
                # the same, and each side lacks at most what the other side replaced.
                _same_views(mine[channel], theirs[channel], conflated)
            else:
                assert mine[channel] == theirs[channel], channel
        l4 = mine["l4Book"]
        assert [m["Snapshot"]["height"] for m in l4 if "Snapshot" in m] == [base] * len(COINS)
        heights = {m["Updates"]["height"] for m in l4 if "Updates" in m}
        assert len(heights) > 20
        assert max(heights) <= final
        assert len(mine["trades"]) > 3
        assert len(mine["l2Book"]) > 40

        health = relay.handle.health()
        assert health["relay"]["gaps"] == 0
        assert health["relay"]["bootstraps"] == 1
        assert health["pipeline"]["divergences"] == 0
        published = primary.handle.health()["publish"]
        assert published["dropped"] == 0
        assert published["published"] >= final - base
        # The relay published l2Book and bbo from the early diffs, before the blocks.
        assert published["diffs_published"] >= final - base
        assert health["relay"]["diffs_delivered"] >= (final - base) // 2
        assert health["pipeline"]["diffs_first"] >= (final - base) // 2
        nursery.cancel_scope.cancel()


async def test_nats_server_killed_and_restarted_while_blocks_flow(tmp_path: Path) -> None:
    async with (
        nats_server(tmp_path, sync_always=True) as nats,
        simulator(tmp_path) as node,
        trio.open_nursery() as nursery,
    ):
        primary = await start_server(nursery, primary_config(tmp_path, node, nats))
        relay = await start_server(nursery, relay_config(tmp_path, nats))
        await at_height(relay.handle, await _height_soon(primary, 5))
        nats.kill()
        await nats.wait()
        before = primary.handle.books.height  # type: ignore[union-attr]
        with trio.fail_after(10):
            await primary.handle.wait_for_height(before + 15)  # the feed goes on without NATS
        assert primary.handle.health()["publish"]["buffered"] > 0
        await nats.start()
        final = await settle_all(node, primary.handle, relay.handle)
        assert same_books(primary.handle, relay.handle) == []
        relay_health = relay.handle.health()["relay"]
        assert relay_health["gaps"] == 0
        assert relay_health["bootstraps"] == 1
        assert relay_health["height"] == final
        assert primary.handle.health()["publish"]["dropped"] == 0
        nursery.cancel_scope.cancel()


async def _height_soon(server: Running, blocks: int) -> int:
    books = server.handle.books
    assert books is not None
    target = books.height + blocks
    with trio.fail_after(10):
        await server.handle.wait_for_height(target)
    return target


async def test_relay_killed_and_restarted_and_a_relay_started_late(tmp_path: Path) -> None:
    async with (
        nats_server(tmp_path) as nats,
        simulator(tmp_path) as node,
        trio.open_nursery() as nursery,
    ):
        primary = await start_server(
            nursery, primary_config(tmp_path, node, nats, publish_snapshot_every=0.5)
        )
        first_snapshot = primary.handle.books.height  # type: ignore[union-attr]
        await _height_soon(primary, 30)  # the late relay misses these (and snapshots follow)
        late = await start_server(nursery, relay_config(tmp_path, nats, "late"))
        assert late.handle.books is not None
        assert late.handle.books.height > first_snapshot
        await at_height(late.handle, await _height_soon(primary, 5))
        late.stop()  # "killed": its books, consumer and connection are gone
        await _height_soon(primary, 10)
        again = await start_server(nursery, relay_config(tmp_path, nats, "again"))
        await settle_all(node, primary.handle, again.handle)
        assert same_books(primary.handle, again.handle) == []
        assert again.handle.health()["relay"]["gaps"] == 0
        nursery.cancel_scope.cancel()


async def _stream_ids(nats_url: str) -> list[str]:
    """The ``Nats-Msg-Id`` of every message in the block stream, in stream order."""
    names = RelayNames()

    async def read(_nc: Client, js: JetStreamContext) -> list[str]:
        info = await js.stream_info(names.stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(names.stream, seq)
            out.append((msg.headers or {})["Nats-Msg-Id"])
        return out

    async with open_nats(hlbook.relay.NatsOptions(servers=(nats_url,))) as connection:
        with trio.fail_after(10):
            await connection.wait_connected()
        return await connection.call(read)


async def test_two_primaries_publishing_the_same_blocks_store_each_once(tmp_path: Path) -> None:
    async with (
        nats_server(tmp_path) as nats,
        simulator(tmp_path) as node,
        trio.open_nursery() as nursery,
    ):
        one = await start_server(nursery, primary_config(tmp_path, node, nats, "one"))
        two = await start_server(nursery, primary_config(tmp_path, node, nats, "two"))
        relay = await start_server(nursery, relay_config(tmp_path, nats))
        await _height_soon(one, 20)
        await settle_all(node, one.handle, two.handle, relay.handle)
        with trio.fail_after(10):
            while any(s.handle.health()["publish"]["buffered"] for s in (one, two)):
                await trio.sleep(0.05)
        ids = await _stream_ids(nats.url)
        heights = [int(i) for i in ids if i.isdigit()]
        early = [i for i in ids if not i.isdigit()]
        assert len(heights) == len(set(heights))
        assert heights == sorted(heights)
        # Each block's early diffs are de-duplicated the same way.
        assert all(i.endswith(".diffs") for i in early)
        assert len(early) == len(set(early))
        assert len(early) >= 15
        duplicates = sum(s.handle.health()["publish"]["duplicates"] for s in (one, two))
        assert duplicates >= 15
        assert same_books(one.handle, relay.handle) == []
        assert relay.handle.health()["relay"]["gaps"] == 0
        nursery.cancel_scope.cancel()


async def test_a_second_primary_takes_over_from_a_killed_one(tmp_path: Path) -> None:
    async with (
        nats_server(tmp_path) as nats,
        simulator(tmp_path) as node,
        trio.open_nursery() as nursery,
    ):
        first = await start_server(nursery, primary_config(tmp_path, node, nats, "first"))
        relay = await start_server(nursery, relay_config(tmp_path, nats))
        await at_height(relay.handle, await _height_soon(first, 10))
        first.stop()
        await trio.sleep(0.5)  # blocks the relay never gets from the first primary
        second = await start_server(nursery, primary_config(tmp_path, node, nats, "second"))
        await _height_soon(second, 10)
        await settle_all(node, second.handle, relay.handle)
        assert same_books(second.handle, relay.handle) == []
        assert same_as_node(relay.handle, node) == []
        health = relay.handle.health()["relay"]
        # The second primary starts from a newer snapshot: a visible gap, repaired.
        assert health["gaps"] == health["bootstraps"] - 1
        nursery.cancel_scope.cancel()


async def test_retention_expiring_blocks_the_relay_needed_means_a_re_bootstrap(
    tmp_path: Path,
) -> None:
    async with (
        nats_server(tmp_path) as nats,
        simulator(tmp_path) as node,
        trio.open_nursery() as nursery,
    ):
        # The operator's stream keeps only the last 20 blocks (and their early diffs).
        async with open_nats(options(nats)) as connection:
            await connection.wait_connected()
            settings = StreamSettings(max_msgs=40)

            async def create(_nc: Client, js: JetStreamContext) -> None:
                await ensure_stream(js, RelayNames(), settings)

            await connection.call(create)
        primary = await start_server(nursery, primary_config(tmp_path, node, nats))
        publishing = primary.handle.publishing
        assert publishing is not None
        with trio.fail_after(10):
            while publishing.publisher.stats.snapshots < 1:
                await trio.sleep(0.05)
        await _height_soon(primary, 40)  # the blocks after the only snapshot are gone
        relay = await start_server(nursery, relay_config(tmp_path, nats), ready=False)
        with trio.fail_after(20):
            while relay.handle.health()["relay"]["gaps"] < 1:
                await trio.sleep(0.05)
        assert relay.handle.health()["status"] != "live" or relay.handle.books is not None
        asked_at = primary.handle.books.height  # type: ignore[union-attr]
        publishing.snapshot_soon("test")  # at the primary's next block
        with trio.fail_after(10):
            while (publishing.publisher.stats.snapshot_height or 0) <= asked_at:
                await trio.sleep(0.05)
        await settle_all(node, primary.handle, relay.handle)
        assert same_books(primary.handle, relay.handle) == []
        health = relay.handle.health()["relay"]
        assert health["gaps"] == 1
        assert health["bootstraps"] == 2
        nursery.cancel_scope.cancel()
