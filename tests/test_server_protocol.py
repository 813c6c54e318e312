"""The WebSocket API over real sockets: replies, official errors, limits, other client libraries."""

import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from fixtures import MainnetSlice
from recorded_node import RecordedNode
from server_support import (
    receive_until,
    replay_server,
    request,
    send,
    server_config,
    subscribe,
)
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

import hlbook
from hlbook.node.formats import Layout

pytestmark = pytest.mark.slow


async def test_replies_and_official_errors(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with (
        replay_server(tmp_path, mainnet, max_subscriptions=3) as (handle, _node),
        open_websocket_url(handle.url) as ws,
    ):
        assert await request(ws, {"method": "ping"}) == {"channel": "pong"}
        reply = await request(ws, subscribe("BTC", "trades") | {"id": 1})
        assert reply == {
            "channel": "subscriptionResponse",
            "data": {"method": "subscribe", "subscription": {"type": "trades", "coin": "BTC"}},
        }
        assert await request(ws, subscribe("BTC", "trades")) == {
            "channel": "error",
            "data": 'Already subscribed: {"type":"trades","coin":"BTC"}',
        }
        unknown = await request(ws, subscribe("NOPE", "l2Book"))
        assert unknown["data"] == (
            'Invalid subscription: {"type":"l2Book","coin":"NOPE","nSigFigs":null,"mantissa":null}'
        )
        garbage = await request(ws, "{not json")
        assert garbage == {
            "channel": "error",
            "data": "Error parsing JSON into valid websocket request: {not json",
        }
        # The connection survives errors: subscribing still works.
        assert (await request(ws, subscribe("BTC", "bbo")))["channel"] == "subscriptionResponse"
        assert json.loads(await ws.get_message())["channel"] == "bbo"  # immediate snapshot
        assert (await request(ws, subscribe("BTC", "l2Book", nSigFigs=2)))["data"] == {
            "method": "subscribe",
            "subscription": {"type": "l2Book", "coin": "BTC", "nSigFigs": 2, "mantissa": None},
        }
        assert json.loads(await ws.get_message())["channel"] == "l2Book"  # immediate snapshot
        limit = await request(ws, subscribe("BTC", "l4Book"))
        assert limit == {
            "channel": "error",
            "data": "Cannot subscribe to more than 3 channels.",
        }
        off = {"method": "unsubscribe", "subscription": {"type": "trades", "coin": "BTC"}}
        assert (await request(ws, off))["data"]["method"] == "unsubscribe"
        assert (await request(ws, off))[
            "data"
        ] == 'Already unsubscribed: {"type":"trades","coin":"BTC"}'
        health = await request(ws, {"method": "health"})
        assert health["channel"] == "health"
        assert health["data"]["status"] == "live"
        assert health["data"]["height"] == mainnet.height
        assert health["data"]["clients"] == 1


async def test_root_path_is_served_and_others_are_refused(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with replay_server(tmp_path, mainnet) as (handle, _node):
        root = handle.url.removesuffix("/ws") + "/"
        async with open_websocket_url(root) as ws:
            assert await request(ws, {"method": "ping"}) == {"channel": "pong"}
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(handle.url.removesuffix("/ws") + "/other"):
                pass
        assert refused.value.status_code == 404


async def test_oversized_message_closes_with_1009_others_unaffected(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with (
        replay_server(tmp_path, mainnet, max_message_size=1024) as (handle, _node),
        open_websocket_url(handle.url) as bystander,
    ):
        async with open_websocket_url(handle.url) as ws:
            await ws.send_message(json.dumps({"method": "ping", "pad": "x" * 5000}))
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1009
        assert await request(bystander, {"method": "ping"}) == {"channel": "pong"}


async def test_idle_clients_are_closed(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with replay_server(tmp_path, mainnet, idle_timeout=0.3) as (handle, _node):
        async with open_websocket_url(handle.url) as ws:
            await ws.send_message('{"method":"ping"}')
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
                await _read_forever(ws)
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1000
            assert "idle" in (closed.value.reason.reason or "")
        assert handle.health()["connections"]["closed_idle"] == 1


async def test_connection_limit_refuses_with_503(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with (
        replay_server(tmp_path, mainnet, max_connections=2) as (handle, _node),
        open_websocket_url(handle.url),
        open_websocket_url(handle.url) as second,
    ):
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(handle.url):
                pass
        assert refused.value.status_code == 503
        assert await request(second, {"method": "ping"}) == {"channel": "pong"}


async def test_simultaneous_connects_never_exceed_the_limit(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    accepted: list[WebSocketConnection] = []
    refused: list[int] = []
    release = trio.Event()

    async def connect(url: str) -> None:
        try:
            async with open_websocket_url(url) as ws:
                accepted.append(ws)
                await release.wait()
        except ConnectionRejected as exc:
            refused.append(exc.status_code)

    async with (
        replay_server(tmp_path, mainnet, max_connections=2) as (handle, _node),
        trio.open_nursery() as nursery,
    ):
        for _ in range(8):
            nursery.start_soon(connect, handle.url)
        with trio.fail_after(10):
            while len(accepted) + len(refused) < 8:
                await trio.sleep(0.01)
        assert (len(accepted), refused) == (2, [503] * 6)
        assert handle.health()["clients"] == 2
        release.set()


async def test_a_client_resetting_mid_handshake_does_not_stop_the_server(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    handshake = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    async with replay_server(tmp_path, mainnet) as (handle, _node):
        for _ in range(20):
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", handle.port))
            await sock.send(handshake)
            # SO_LINGER 0: close with a reset, as a crashing client does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        await trio.sleep(0.3)
        async with open_websocket_url(handle.url) as ws:
            assert await request(ws, {"method": "ping"}) == {"channel": "pong"}


async def test_websocket_pings_count_as_activity(tmp_path: Path, mainnet: MainnetSlice) -> None:
    """A client library's keepalive (WebSocket ping frames) keeps an idle connection open."""
    async with (
        replay_server(tmp_path, mainnet, idle_timeout=0.5) as (handle, _node),
        open_websocket_url(handle.url) as ws,
    ):
        for _ in range(10):  # 2 s, four times the idle timeout
            await ws.ping()
            await trio.sleep(0.2)
        assert await request(ws, {"method": "ping"}) == {"channel": "pong"}
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
            await _read_forever(ws)
        assert closed.value.reason is not None
        assert "idle" in (closed.value.reason.reason or "")


async def test_subscribing_before_the_books_load_keeps_the_connection_responsive(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    """Subscriptions wait for the first snapshot; pings are answered meanwhile, in order after."""
    with socket.socket() as probe:  # a port the info server will take later
        probe.bind(("127.0.0.1", 0))
        info_port = probe.getsockname()[1]
    node = RecordedNode(tmp_path / "data", mainnet, Layout.BY_BLOCK)
    info_url = f"http://127.0.0.1:{info_port}/info"
    config = server_config(tmp_path, info_url, retry_max=0.2, idle_timeout=0.5)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(hlbook.serve, config)
        async with open_websocket_url(handle.url) as ws:
            await send(ws, subscribe("BTC", "bbo"))
            await send(
                ws, {"method": "unsubscribe", "subscription": {"type": "bbo", "coin": "BTC"}}
            )
            await send(ws, subscribe("BTC", "trades"))
            assert await request(ws, {"method": "ping"}) == {"channel": "pong"}
            await trio.sleep(1.5)  # silent, but waiting for replies: not idle
            assert ws.closed is None
            assert handle.health()["status"] != "live"
            await nursery.start(node.serve_info, info_port)
            replies = await receive_until(
                ws,
                lambda m: (
                    m["data"].get("method") == "subscribe"
                    and m["data"]["subscription"]["type"] == "trades"
                ),
                limit=30,
            )
            assert [(m["channel"], m["data"].get("method")) for m in replies] == [
                ("subscriptionResponse", "subscribe"),
                ("bbo", None),
                ("subscriptionResponse", "unsubscribe"),
                ("subscriptionResponse", "subscribe"),
            ]
            assert handle.health()["status"] == "live"
            # Answered: from now on silence counts again.
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
                await _read_forever(ws)
            assert closed.value.reason is not None
            assert "idle" in (closed.value.reason.reason or "")
        node.close()
        nursery.cancel_scope.cancel()


async def test_websockets_library_client(tmp_path: Path, mainnet: MainnetSlice) -> None:
    """The ``websockets`` package (sync client, in a thread) speaks to hlbook."""
    from websockets.sync.client import connect

    async with replay_server(tmp_path, mainnet) as (handle, _node):

        def client() -> list[Any]:
            got = []
            with connect(handle.url) as ws:
                ws.send(json.dumps({"method": "ping"}))
                got.append(json.loads(ws.recv(timeout=5)))
                ws.send(json.dumps(subscribe("BTC", "l2Book", nLevels=5)))
                got.append(json.loads(ws.recv(timeout=5)))
                got.append(json.loads(ws.recv(timeout=5)))
            return got

        pong, response, snapshot = await trio.to_thread.run_sync(client)
        assert pong == {"channel": "pong"}
        assert response["channel"] == "subscriptionResponse"
        assert snapshot["channel"] == "l2Book"
        assert len(snapshot["data"]["levels"][0]) == 5


async def test_official_python_sdk_websocket_manager(tmp_path: Path, mainnet: MainnetSlice) -> None:
    """hyperliquid-python-sdk's WebsocketManager: callbacks fire and its ping gets a pong."""
    from hyperliquid.websocket_manager import WebsocketManager

    class FastPing(WebsocketManager):  # type: ignore[misc]
        """The SDK pings every 50 s; wait 0.2 s instead so the test can see the pong."""

        def send_ping(self) -> None:
            while not self.stop_event.wait(0.2):
                if not self.ws.keep_running:
                    break
                self.ws.send(json.dumps({"method": "ping"}))

    raw: list[str] = []
    async with replay_server(tmp_path, mainnet) as (handle, node):
        base_url = f"http://127.0.0.1:{handle.port}"
        received: dict[str, list[Any]] = {"l2Book": [], "trades": [], "bbo": []}
        lock = threading.Lock()

        def callback(kind: str) -> Any:
            def on_message(message: Any) -> None:
                with lock:
                    received[kind].append(message)

            return on_message

        manager = FastPing(base_url)
        original = manager.on_message

        def on_message(ws: Any, message: str) -> None:
            with lock:
                raw.append(message)
            original(ws, message)

        manager.ws.on_message = on_message
        manager.start()
        try:
            for kind in received:
                manager.subscribe({"type": kind, "coin": "BTC"}, callback(kind))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node.replay)
                with trio.fail_after(20):
                    while True:
                        with lock:
                            if all(received.values()) and '{"channel":"pong"}' in raw:
                                break
                        await trio.sleep(0.05)
        finally:
            await trio.to_thread.run_sync(manager.stop)
            await trio.to_thread.run_sync(manager.join, 5)
    assert received["l2Book"][0]["data"]["coin"] == "BTC"
    assert received["trades"][0]["data"][0]["coin"] == "BTC"
    assert received["bbo"][0]["channel"] == "bbo"


async def _read_forever(ws: WebSocketConnection) -> None:
    while True:
        await ws.get_message()
