"""permessage-deflate: negotiation, inflating client messages, compressed frames on real sockets."""

import asyncio
import json
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
import trio
import websockets
from fixtures import MainnetSlice
from hypothesis import given, settings
from hypothesis import strategies as st
from server_support import replay_server, subscribe
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate as ClientDeflate

from hlbook.server.deflate import PerMessageDeflate, parse_offer

# -- negotiation (sans I/O) ---------------------------------------------------------------


def accept(*offers: str, level: int = 1) -> tuple[PerMessageDeflate, list[str | None]]:
    extension = PerMessageDeflate(level, 65536)
    return extension, [_as_str(extension.accept(offer)) for offer in offers]


def _as_str(value: bool | str | None) -> str | None:
    return value if isinstance(value, str) or value is None else str(value)


def test_the_answer_always_has_server_no_context_takeover() -> None:
    extension, [answer] = accept("permessage-deflate")
    assert answer == "server_no_context_takeover"
    assert extension.deflater is not None
    assert extension.deflater.window_bits == 15
    assert extension.deflater.level == 1


def test_server_max_window_bits_is_honoured() -> None:
    extension, [answer] = accept("permessage-deflate; server_max_window_bits=10")
    assert answer == "server_no_context_takeover; server_max_window_bits=10"
    assert extension.deflater is not None
    assert extension.deflater.window_bits == 10


def test_a_window_of_8_is_declined_and_the_next_offer_taken() -> None:
    extension, answers = accept(
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate",
    )
    assert answers == [None, "server_no_context_takeover; client_no_context_takeover", None]
    assert extension.client_no_context_takeover


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; bogus",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=x",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=" + "1" * 5000,  # int() refuses 4300+
        "permessage-deflate; client_max_window_bits=\u0661\u0665",  # Arabic-Indic 15
    ],
)
def test_invalid_offers_are_declined(offer: str) -> None:
    assert parse_offer(offer) is None
    extension, [answer] = accept(offer)
    assert answer is None
    assert extension.deflater is None


def test_browser_and_websockets_offers() -> None:
    assert parse_offer("permessage-deflate; client_max_window_bits") == {
        "client_max_window_bits": None
    }
    _, [answer] = accept("permessage-deflate; client_max_window_bits=15; server_max_window_bits=12")
    assert answer == "server_no_context_takeover; server_max_window_bits=12"


# -- inflating client messages (sans I/O: a wsproto client talks to the server side) --------


def pair(
    client_extension: ClientDeflate, limit: int = 1 << 20
) -> tuple[WSConnection, WSConnection]:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/ws", extensions=[client_extension])))
    request = next(server.events())
    assert isinstance(request, Request)
    ours = PerMessageDeflate(1, limit)
    client.receive_data(server.send(AcceptConnection(extensions=[ours])))
    assert isinstance(next(client.events()), AcceptConnection)
    assert ours.deflater is not None
    return client, server


def received(server: WSConnection) -> list[Any]:
    out: list[Any] = []
    text = ""
    for event in server.events():
        if isinstance(event, TextMessage):
            text += event.data
            if event.message_finished:
                out.append(text)
                text = ""
        else:
            out.append(event)
    return out


@settings(max_examples=40)
@given(
    st.lists(st.text(max_size=2000), min_size=1, max_size=15),
    st.booleans(),
    st.integers(9, 15),
)
def test_client_messages_inflate_with_any_negotiated_parameters(
    messages: list[str], no_context_takeover: bool, window_bits: int
) -> None:
    client, server = pair(
        ClientDeflate(
            client_no_context_takeover=no_context_takeover, client_max_window_bits=window_bits
        )
    )
    for message in messages:
        server.receive_data(client.send(Message(data=message)))
    assert received(server) == messages


def _frame(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """A masked client frame (mask of zeros keeps the payload readable)."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    if len(payload) < 126:
        header = bytes((first, 0x80 | len(payload)))
    elif len(payload) < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, len(payload))
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, len(payload))
    return header + b"\x00\x00\x00\x00" + payload


def test_messages_that_end_their_deflate_stream_are_all_read() -> None:
    # A client may end each message's stream (BFINAL: a Z_FINISH flush, RFC 7692 7.2.3.4);
    # the next message then starts a new one, even with context takeover negotiated.
    _client, server = pair(ClientDeflate())
    texts = ['{"method":"ping"}', '{"method":"ping","n":2}', '{"method":"ping","n":3}']
    for text in texts:
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        server.receive_data(
            _frame(0x1, deflater.compress(text.encode()) + deflater.flush(), rsv1=True)
        )
    assert received(server) == texts


def test_bad_compressed_data_closes_with_1007() -> None:
    _client, server = pair(ClientDeflate())
    server.receive_data(_frame(0x1, b"\xff\xff\xff\xff garbage", rsv1=True))
    [event] = received(server)
    assert isinstance(event, CloseConnection)
    assert event.code == 1007


def test_a_small_message_inflating_beyond_the_limit_is_1009() -> None:
    _client, server = pair(ClientDeflate(), limit=64 * 1024)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(b"[" + b"0," * 5_000_000 + b"0]") + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(data) < 20_000  # 10 MB in a few KB
    server.receive_data(_frame(0x1, data[:-4], rsv1=True))
    [event] = received(server)
    assert isinstance(event, CloseConnection)
    assert event.code == 1009


def test_rsv1_without_compression_is_a_protocol_error() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/ws")))
    next(server.events())
    client.receive_data(server.send(AcceptConnection(extensions=[PerMessageDeflate(1, 65536)])))
    server.receive_data(_frame(0x1, b"{}", rsv1=True))
    [event] = received(server)
    assert isinstance(event, CloseConnection)
    assert event.code == 1002


# -- real clients over loopback -------------------------------------------------------------


async def _collect(
    url: str, compression: str | None, count: int, ready: threading.Event | None = None
) -> list[Any]:
    """Subscribe to the lossless channels and return the first ``count`` data messages
    (after the negotiated extensions); ``ready`` is set once subscribed.

    The websockets client runs on asyncio in a thread (it is an independent client).
    """

    async def client() -> list[Any]:
        out = []
        async with websockets.connect(url, compression=compression, max_size=None) as ws:
            assert ws.response is not None
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            out.append({"extensions": extensions})
            for kind in ("trades", "l4Book"):
                await ws.send(json.dumps(subscribe("BTC", kind)))
            responses = 0
            while len(out) < count + 1:
                message = json.loads(await ws.recv())
                if message["channel"] == "subscriptionResponse":
                    responses += 1
                    if responses == 2 and ready is not None:
                        ready.set()
                if message["channel"] in ("trades", "l4Book"):
                    out.append(message)
        return out

    def run() -> list[Any]:
        return asyncio.run(asyncio.wait_for(client(), 60))

    return await trio.to_thread.run_sync(run, abandon_on_cancel=True)


@pytest.mark.slow
async def test_compressed_and_plain_clients_get_the_same_messages(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with replay_server(tmp_path, mainnet) as (handle, node):
        results: dict[str, list[Any]] = {}

        ready = {"deflate": threading.Event(), "plain": threading.Event()}

        async def run(name: str, compression: str | None) -> None:
            results[name] = await _collect(handle.url, compression, 40, ready[name])

        stats: dict[bool, dict[str, Any]] = {}

        async def watch() -> None:
            while True:
                for client in handle.client_stats():
                    stats[client["compressed"]] = client
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "deflate", "deflate")
            nursery.start_soon(run, "plain", None)
            with trio.fail_after(30):  # both subscribed before the blocks come
                while not all(event.is_set() for event in ready.values()):
                    await trio.sleep(0.02)
            nursery.start_soon(watch)
            await node.replay()
            with trio.fail_after(20):
                while len(results) < 2:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        deflate, plain = results["deflate"], results["plain"]
        assert "permessage-deflate" in deflate[0]["extensions"]
        assert "server_no_context_takeover" in deflate[0]["extensions"]
        assert plain[0]["extensions"] is None
        assert deflate[1:] == plain[1:]
        assert stats[True]["compressed_messages"] > 0
        assert stats[True]["bytes_sent"] < stats[False]["bytes_sent"] / 2


@pytest.mark.slow
async def test_compression_level_0_negotiates_nothing(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    async with replay_server(tmp_path, mainnet, compression_level=0) as (handle, _node):
        [hello] = await _collect(handle.url, "deflate", 0)
        assert hello["extensions"] is None


async def _raw_client(port: int, *, deflate: bool) -> tuple[trio.SocketStream, bytes]:
    """A WebSocket handshake by hand; returns the stream and the response head."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    extension = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    await stream.send_all(
        (
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    return stream, head


async def _close_code(stream: trio.SocketStream) -> int:
    data = b""
    with trio.fail_after(5):
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise AssertionError("closed without a close frame")
            data += chunk
            while len(data) >= 2:
                size = data[1] & 0x7F
                offset = 2 + (2 if size == 126 else 8 if size == 127 else 0)
                if size >= 126:
                    size = int.from_bytes(data[2:offset], "big")
                if len(data) < offset + size:
                    break
                if data[0] & 0x0F == 0x8:
                    return int(struct.unpack("!H", data[offset : offset + 2])[0])
                data = data[offset + size :]


@pytest.mark.slow
async def test_bad_frames_close_only_their_client(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with replay_server(tmp_path, mainnet) as (handle, node):
        bystander, _ = await _raw_client(handle.port, deflate=True)
        await bystander.send_all(_frame(0x1, json.dumps(subscribe("BTC", "trades")).encode()))
        cases = [
            (True, _frame(0x1, b"\xff\x00garbage", rsv1=True), 1007),  # bad deflate data
            (False, _frame(0x1, b'{"method":"ping","x":"\xff\xfe"}'), 1007),  # invalid UTF-8
            (False, _frame(0x1, b"{}", rsv1=True), 1002),  # compressed, not negotiated
            (False, _frame(0x1, b"a" * 70_000), 1009),  # 70 KB > 64 KiB
        ]
        for deflate, frame, code in cases:
            victim, head = await _raw_client(handle.port, deflate=deflate)
            assert head.startswith(b"HTTP/1.1 101")
            await victim.send_all(frame)
            assert await _close_code(victim) == code
            await victim.aclose()
        # The bystander noticed nothing: it is subscribed and answers pings.
        await bystander.send_all(_frame(0x1, b'{"method":"ping"}'))
        data = b""
        with trio.fail_after(5):
            while b'{"channel":"pong"}' not in data:
                data += await bystander.receive_some(65536)
        await bystander.aclose()
        del node


@pytest.mark.slow
async def test_binary_frames_are_read_as_json_text(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with replay_server(tmp_path, mainnet) as (handle, _node):
        stream, _ = await _raw_client(handle.port, deflate=False)
        await stream.send_all(_frame(0x2, b'{"method":"ping"}'))
        data = b""
        with trio.fail_after(5):
            while b'{"channel":"pong"}' not in data:
                data += await stream.receive_some(65536)
        await stream.aclose()
