"""HTTP on the one port, over real sockets: routes, errors, keep-alive, and hostile clients."""

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from fixtures import MainnetSlice
from server_support import receive_until, replay_server, send, settle, sim_and_server, subscribe
from trio_websocket import WebSocketConnection, open_websocket_url

import hlbook
from hlbook.node.formats import Stream

pytestmark = pytest.mark.slow

BIG = 1 << 26  # the l4Book snapshot of the real BTC book is several MB


async def post(client: httpx.AsyncClient, payload: Any) -> httpx.Response:
    return await client.post("/info", content=json.dumps(payload))


async def raw_exchange(port: int, data: bytes, *, limit: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(limit):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def last_height(mainnet: MainnetSlice) -> int:
    return mainnet.height + len(mainnet.lines[Stream.DIFFS])


def btc_heights(mainnet: MainnetSlice) -> list[int]:
    """Heights of the slice with BTC events: one l4Book update each."""
    heights = []
    for index in range(len(mainnet.lines[Stream.DIFFS])):
        lines = [json.loads(mainnet.lines[s][index]) for s in (Stream.DIFFS, Stream.STATUSES)]
        if any(line["events"] for line in lines):
            heights.append(mainnet.height + index + 1)
    return heights


async def updates_until(ws: WebSocketConnection, height: int) -> list[int]:
    """Heights of the l4Book updates received up to ``height``."""
    heights: list[int] = []
    with trio.fail_after(20):
        while not heights or heights[-1] < height:
            message = json.loads(await ws.get_message())
            if message["channel"] == "l4Book" and "Updates" in message["data"]:
                heights.append(message["data"]["Updates"]["height"])
    return heights


async def test_health_is_200_when_live_and_tells_no_paths(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with (
        replay_server(tmp_path, mainnet) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        response = await client.get("/health")
        assert response.status_code == 200
        health = response.json()
        assert health["status"] == "live"
        assert handle.books is not None
        assert health["height"] == handle.books.height
        assert str(tmp_path) not in response.text  # no file paths for remote clients
        assert "127.0.0.1:" not in response.text.replace(handle.http_url, "")  # nor the info URL
        assert "detail" not in health
        assert "streams" not in health
        assert handle.health()["streams"]  # the operator's in-process view keeps them


async def test_health_is_503_while_not_live(tmp_path: Path) -> None:
    config = hlbook.Config(
        node_data=tmp_path / "nothing", info_url="http://127.0.0.1:9/info", port=0
    )
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(hlbook.serve, config)
        async with httpx.AsyncClient(base_url=handle.http_url) as client:
            response = await client.get("/health")
            assert response.status_code == 503
            assert response.json()["status"] in ("starting", "waiting_for_node")
            # Local info types need the books: a clear 503 meanwhile.
            response = await post(client, {"type": "l2Book", "coin": "BTC"})
            assert response.status_code == 503
            assert response.json()["code"] == "notReady"
        nursery.cancel_scope.cancel()


async def test_l2book_info_equals_the_channel_at_the_same_time(tmp_path: Path) -> None:
    async with (
        sim_and_server(tmp_path) as (handle, node),
        open_websocket_url(handle.url) as ws,
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        views = [{}, {"nSigFigs": 2}, {"nSigFigs": 5, "mantissa": 5}, {"nLevels": 3}]
        for view in views:
            await send(ws, subscribe("BTC", "l2Book", **view))
        with trio.move_on_after(1.0):
            while True:
                await ws.get_message()
        await settle(handle, node)
        latest: dict[str, Any] = {}
        with trio.move_on_after(0.5):  # drain what the last blocks sent
            while True:
                message = json.loads(await ws.get_message())
                if message["channel"] == "l2Book":
                    latest[json.dumps(_view_of(message, views))] = message["data"]
        for view in views:
            response = await post(client, {"type": "l2Book", "coin": "BTC", **view})
            assert response.status_code == 200
            answer = response.json()
            pushed = latest.get(json.dumps(view))
            if pushed is None:  # that view did not change in the drained window
                continue
            assert answer["levels"] == pushed["levels"]
            assert answer["time"] >= pushed["time"]  # the books' time: the same or a later block
        plain = (await post(client, {"type": "l2Book", "coin": "BTC"})).json()
        books = handle.books
        assert books is not None
        assert plain["time"] == books.time
        assert len(plain["levels"][0]) <= 20


def _view_of(message: dict[str, Any], views: list[dict[str, Any]]) -> dict[str, Any]:
    """Which subscribed view an l2Book message belongs to (by its bucket spacing and depth)."""
    bids = message["data"]["levels"][0]
    if len(bids) == 3:
        return {"nLevels": 3}
    pxs = [float(level["px"]) for level in bids]
    if all(px % 10000 == 0 for px in pxs):
        return {"nSigFigs": 2}
    if all(px % 5 == 0 for px in pxs) and len(pxs) > 3:
        return {"nSigFigs": 5, "mantissa": 5}
    return {}


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"type": "l2Book", "coin": "BTC", "nSigFigs": 9}, 422, "invalidRequest"),
        ({"type": "l2Book"}, 422, "invalidRequest"),
        ({"coin": "BTC"}, 422, "invalidRequest"),
        ([1, 2], 422, "invalidRequest"),
        ({"type": "fileSnapshot", "request": {}, "outPath": "/etc/passwd"}, 403, "refused"),
        ({"type": "metaAndAssetCtxs"}, 422, "notAvailable"),
    ],
)
async def test_info_errors_are_json_with_the_right_status(
    tmp_path: Path, mainnet: MainnetSlice, payload: Any, status: int, code: str
) -> None:
    async with (
        replay_server(tmp_path, mainnet) as (handle, node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        served = node.snapshots_served
        response = await post(client, payload)
        assert response.status_code == status
        body = response.json()
        assert body["code"] == code
        assert body["msg"]
        assert node.snapshots_served == served  # nothing reached the node's fileSnapshot


async def test_l2book_of_a_coin_with_no_book_is_null_unless_the_filter_left_it_out(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    """Hyperliquid answers ``null`` for a market that does not exist (the TS SDK types
    ``L2BookResponse | null`` and tests it on the live API); a coin that --coins leaves out
    is not said not to exist."""
    async with (
        replay_server(tmp_path, mainnet, coins=frozenset({"BTC", "NOPE"})) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
        open_websocket_url(handle.url) as ws,
    ):
        missing = await post(client, {"type": "l2Book", "coin": "NOPE"})
        assert (missing.status_code, missing.text) == (200, "null")
        payload = {"type": "l2Book", "coin": "NOPE"}
        await send(ws, {"method": "post", "id": 1, "request": {"type": "info", "payload": payload}})
        answer = (await receive_until(ws, lambda m: m.get("channel") == "post"))[-1]
        assert answer["data"]["response"] == {
            "type": "info",
            "payload": {"type": "l2Book", "data": None},
        }
        left_out = await post(client, {"type": "l2Book", "coin": "ETH"})
        assert left_out.status_code == 422
        assert left_out.json() == {
            "code": "notServed",
            "msg": "l2Book: 'ETH' is left out by --coins/--markets",
        }
        assert (await post(client, {"type": "l2Book", "coin": "BTC"})).json()["coin"] == "BTC"


async def test_http_errors(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with (
        replay_server(tmp_path, mainnet) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        bad = await client.post("/info", content=b"{not json")
        assert (bad.status_code, bad.json()["code"]) == (400, "badJson")
        missing = await client.get("/nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "notFound")
        wrong = await client.get("/info")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
        plain_ws = await client.get("/ws")
        assert plain_ws.status_code == 426
        big = await client.post("/info", content=b"[" + b"1," * 40_000 + b"1]")
        assert big.status_code == 413
        preflight = await client.options("/info")
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["access-control-allow-methods"]
        # After all of that the same server still answers.
        assert (await client.get("/health")).status_code == 200


async def test_a_bug_answering_a_client_is_counted_logged_and_harms_nobody(
    tmp_path: Path, mainnet: MainnetSlice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hlbook_client_errors_total (health's client_errors) counts every request that met a
    bug, over HTTP and over a WebSocket post, as the README says."""
    from hlbook.info.l2book import L2BookInfo

    async def broken(self: L2BookInfo, request: dict[str, Any], body: bytes) -> bytes:
        raise OverflowError("a bug in the handler")  # stands for a real bug: none is known

    async with (
        replay_server(tmp_path, mainnet) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
        open_websocket_url(handle.url) as ws,
    ):
        assert handle.health()["connections"]["client_errors"] == 0
        monkeypatch.setattr(L2BookInfo, "answer", broken)
        answer = await post(client, {"type": "l2Book", "coin": "BTC"})
        assert (answer.status_code, answer.json()["code"]) == (500, "internalError")
        post_l2 = {"type": "l2Book", "coin": "BTC"}
        await send(ws, {"method": "post", "id": 7, "request": {"type": "info", "payload": post_l2}})
        error = (await receive_until(ws, lambda m: m.get("channel") == "post"))[-1]
        assert error["data"]["id"] == 7
        assert error["data"]["response"]["type"] == "error"
        assert handle.health()["connections"]["client_errors"] == 2
        monkeypatch.undo()
        assert (await post(client, {"type": "l2Book", "coin": "BTC"})).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert "hlbook_client_errors_total 2.0" in metrics


async def test_node_types_are_passed_on_unchanged(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with (
        replay_server(tmp_path, mainnet) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        # The recorded node's info server answers only fileSnapshot: its own 422 (plain
        # text, as a node's server writes it) comes back unchanged.
        response = await post(client, {"type": "clearinghouseState", "user": "0x" + "1" * 40})
        assert response.status_code == 422
        assert response.text.startswith("Failed to deserialize the JSON body")


async def test_a_node_that_is_down_or_slow_gets_502_or_504(
    tmp_path: Path, mainnet: MainnetSlice, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = tmp_path / "snapshot-file.json"
    snapshot.write_bytes(mainnet.snapshot)
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    slow_port = listener.getsockname()[1]  # accepts connections, never answers
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens here
    cases = ((dead_port, 502, "upstreamUnavailable"), (slow_port, 504, "upstreamTimeout"))
    for port, status, code in cases:
        url = f"http://127.0.0.1:{port}/info"
        settings: dict[str, Any] = {
            "info_url": url,
            "snapshot_file": snapshot,
            "info_timeout": 0.5,
        }
        async with (
            replay_server(tmp_path / str(port), mainnet, **settings) as (handle, _node),
            httpx.AsyncClient(base_url=handle.http_url) as client,
        ):
            response = await post(client, {"type": "meta"})
            assert response.status_code == status
            assert response.json()["code"] == code
            # Remote clients are not shown where the node is; the operator's log is.
            assert str(port) not in response.json()["msg"]
            assert any(url in r.getMessage() for r in caplog.records)
            assert (await client.get("/health")).status_code == 200
    listener.close()


async def test_keep_alive_reuses_one_connection(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with (
        replay_server(tmp_path, mainnet) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        before = handle.health()["connections"]["accepted"]
        for _ in range(20):
            assert (await post(client, {"type": "l2Book", "coin": "BTC"})).status_code == 200
        assert handle.health()["connections"]["accepted"] == before + 1
        assert handle.health()["connections"]["http_requests"] >= 20


async def test_pipelined_requests_are_answered_in_order(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with replay_server(tmp_path, mainnet) as (handle, _node):
        body = b'{"type":"l2Book","coin":"BTC","nLevels":1}'
        one = b"POST /info HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        last = b"GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        received = await raw_exchange(handle.port, one + one + last)
        assert received.count(b"HTTP/1.1 200 OK") == 2
        assert received.index(b"HTTP/1.1 404") > received.rindex(b"HTTP/1.1 200 OK")


async def test_hostile_http_clients_get_a_bounded_answer_or_close(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with (
        replay_server(tmp_path, mainnet, handshake_timeout=0.5) as (handle, node),
        open_websocket_url(handle.url, max_message_size=BIG) as ws,
    ):
        await send(ws, subscribe("BTC", "l4Book"))
        await receive_until(ws, lambda m: m["channel"] == "l4Book")
        async with trio.open_nursery() as nursery:
            results: dict[str, bytes] = {}

            async def attack(name: str, data: bytes) -> None:
                results[name] = await raw_exchange(handle.port, data, limit=3.0)

            nursery.start_soon(attack, "garbage", b"\x16\x03\x01 hello garbage\r\n\r\n")
            nursery.start_soon(attack, "endless head", b"GET / HTTP/1.1\r\nx-a: " + b"a" * 100)
            nursery.start_soon(attack, "huge head", b"GET / HTTP/1.1\r\nx-a: " + b"a" * 40_000)
            # All of it in one read: h11's bound covers only a head still incomplete.
            one_read = b"GET /health HTTP/1.1\r\nhost: x\r\nx-a: " + b"a" * 60_000 + b"\r\n\r\n"
            nursery.start_soon(attack, "huge head in one read", one_read)
            big = b"POST /info HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n"
            nursery.start_soon(attack, "huge body", big)
            nursery.start_soon(attack, "silent", b"")
            upgrade = (
                b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n"
            )
            not_ascii = upgrade + b"sec-websocket-extensions: permessage-deflate\xff\r\n\r\n"
            nursery.start_soon(attack, "non-ASCII upgrade header", not_ascii)
            # Meanwhile every block reaches the WebSocket client.
            nursery.start_soon(node.replay)
            heights = await updates_until(ws, last_height(mainnet))
            assert heights == btc_heights(mainnet)
        assert results["garbage"].startswith(b"HTTP/1.1 400")
        assert results["huge head"].startswith(b"HTTP/1.1 431") or results["huge head"].startswith(
            b"HTTP/1.1 400"
        )
        assert results["huge body"].startswith(b"HTTP/1.1 413")
        assert results["huge head in one read"].startswith(b"HTTP/1.1 431")
        assert results["endless head"].startswith(b"HTTP/1.1 408")  # closed after the timeout
        assert results["silent"] == b""  # a half-open socket is simply closed
        assert results["non-ASCII upgrade header"].startswith(b"HTTP/1.1 400")


async def test_idle_keep_alive_connections_make_room_and_websockets_keep_flowing(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with (
        replay_server(tmp_path, mainnet, max_connections=200) as (handle, node),
        open_websocket_url(handle.url, max_message_size=BIG) as ws,
    ):
        await send(ws, subscribe("BTC", "l4Book"))
        await receive_until(ws, lambda m: m["channel"] == "l4Book")
        request = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
        idle = []
        for _ in range(199):  # fill every slot with idle keep-alive connections
            stream = await trio.open_tcp_stream("127.0.0.1", handle.port)
            await stream.send_all(request)
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
            idle.append(stream)
        # Full: a new client still gets in (the longest-idle connection makes room).
        async with httpx.AsyncClient(base_url=handle.http_url) as client:
            assert (await client.get("/health")).status_code == 200
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.replay)
            assert await updates_until(ws, last_height(mainnet)) == btc_heights(mainnet)
        evicted = 0
        for stream in idle:
            with trio.move_on_after(0.01):
                if await stream.receive_some(10) == b"":
                    evicted += 1
            await stream.aclose()
        assert evicted >= 1


async def test_half_open_floods_cannot_hold_every_slot(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with replay_server(tmp_path, mainnet, max_half_open=20) as (handle, _node):
        silent = [await trio.open_tcp_stream("127.0.0.1", handle.port) for _ in range(100)]
        await trio.sleep(0.2)
        async with httpx.AsyncClient(base_url=handle.http_url) as client:
            assert (await client.get("/health")).status_code == 200
        assert handle._server.slots.evicted_half_open >= 80
        for stream in silent:
            await stream.aclose()


async def test_over_capacity_is_503(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with (
        replay_server(tmp_path, mainnet, max_connections=2) as (handle, _node),
        open_websocket_url(handle.url),
        open_websocket_url(handle.url),
    ):
        received = await raw_exchange(handle.port, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert received.startswith(b"HTTP/1.1 503")
        assert b'"overCapacity"' in received


async def test_hlbook_coins_lists_every_book_by_market(tmp_path: Path) -> None:
    async with (
        sim_and_server(tmp_path) as (handle, node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        answer = (await post(client, {"type": "hlbookCoins"})).json()
        assert sorted(entry["coin"] for entry in answer) == sorted(node.coins())
        markets = [entry["market"] for entry in answer]
        assert markets == sorted(markets, key=["perp", "spot", "hip3"].index)
        assert {"coin": "xyz:XYZ100", "market": "hip3"} in answer
        assert {"coin": "PURR/USDC", "market": "spot"} in answer
