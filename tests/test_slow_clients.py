"""Slow and stalled clients see the documented close — 1008 with a reason — after whole frames,
never a frame cut off mid-way (which their library would report as 1006)."""

import json
import socket
import struct
from pathlib import Path

import pytest
import trio
from server_support import sim_and_server

pytestmark = pytest.mark.slow


class FrameReader:
    """Reads a server's frames off a raw socket and checks that each one is whole."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.frames = 0

    def _next(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        size, offset = data[1] & 0x7F, 2
        if size == 126:
            if len(data) < 4:
                return None
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                return None
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + size:
            return None
        first = data[0]
        assert first & 0x30 == 0, f"frame {self.frames}: reserved bits set: {first:#x}"
        self.buffer = data[offset + size :]
        self.frames += 1
        return first & 0x0F, data[offset : offset + size]

    async def until_close(self, rate: float | None, limit: float) -> tuple[int, str]:
        """Read (at ``rate`` bytes/s, or as fast as possible) until a close frame."""
        with trio.fail_after(limit):
            while True:
                while (frame := self._next()) is not None:
                    opcode, payload = frame
                    if opcode == 0x8:
                        return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
                chunk = await self.stream.receive_some(4096)
                assert chunk, f"EOF after {self.frames} frames, {len(self.buffer)} bytes of one"
                self.buffer += chunk
                if rate is not None:
                    await trio.sleep(len(chunk) / rate)


async def connect(port: int, coins: list[str]) -> trio.SocketStream:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101")
    for coin in coins:
        for kind in ("trades", "l4Book"):
            message = json.dumps(
                {"method": "subscribe", "subscription": {"type": kind, "coin": coin}}
            )
            payload = message.encode()  # short: one length byte, and a mask of zeros
            await stream.send_all(bytes((0x81, 0x80 | len(payload))) + b"\0" * 4 + payload)
    return stream


async def test_a_slow_and_a_stalled_client_get_close_1008_after_whole_frames(
    tmp_path: Path,
) -> None:
    async with sim_and_server(tmp_path, sim={"scale": 0.3}, client_queue_messages=20) as (
        handle,
        node,
    ):
        coins = node.coins()
        slow = await connect(handle.port, coins)
        stalled = await connect(handle.port, coins)
        results: dict[str, tuple[int, str]] = {}

        async def read_slowly() -> None:
            results["slow"] = await FrameReader(slow).until_close(32_000, limit=90)

        async def stall_then_read() -> None:
            await trio.sleep(4.0)  # reads nothing meanwhile: the server's writes back up
            results["stalled"] = await FrameReader(stalled).until_close(None, limit=30)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_slowly)
            nursery.start_soon(stall_then_read)
        for name in ("slow", "stalled"):
            code, reason = results[name]
            assert code == 1008, (name, code, reason)
            assert reason.startswith("client too slow"), (name, reason)
        assert handle.health()["fanout"]["disconnected_for_lag"] >= 2
        await slow.aclose()
        await stalled.aclose()
