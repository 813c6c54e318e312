"""Client writes: direct writes cut short, backlogs, pongs in between — frames stay whole."""

import json
import socket
from pathlib import Path

import pytest
import trio
from server_support import send, sim_and_server, subscribe
from trio_websocket import open_websocket_url, wrap_client_stream

from hlbook.shell.writer import Waker

pytestmark = pytest.mark.slow


async def test_waker_wakes_once_and_remembers_an_early_set() -> None:
    waker = Waker()
    waker.set()
    await waker.wait()  # returns at once: set() came first
    woken = []

    async def sleeper() -> None:
        await waker.wait()
        woken.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []
        waker.set()
    assert woken == [True]


async def test_a_slow_reader_gets_whole_frames_and_its_pongs(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path, sim={"scale": 0.3}) as (handle, node):
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        await sock.connect(("127.0.0.1", handle.port))
        stream = trio.SocketStream(sock)
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/ws")
            for coin in node.coins():
                await send(ws, subscribe(coin, "l4Book"))
            pongs = 0
            heights: dict[str, int] = {}

            async def pinger() -> None:
                # WebSocket-level pings make trio-websocket write pongs while our writer
                # is mid-backlog: they must never land inside a frame.
                nonlocal pongs
                while True:
                    await ws.ping()
                    pongs += 1
                    await trio.sleep(0.02)

            nursery.start_soon(pinger)
            # Read for a few seconds, and on until a dozen pongs came back through the backlog
            # (a loaded machine drains it slower).
            with trio.move_on_after(30):
                started = trio.current_time()
                while pongs <= 10 or trio.current_time() - started < 4:
                    message = json.loads(await ws.get_message())  # a cut frame would fail here
                    if message["channel"] == "l4Book" and "Updates" in message["data"]:
                        updates = message["data"]["Updates"]
                        coin = (
                            updates["book_diffs"][0]["coin"]
                            if updates["book_diffs"]
                            else updates["order_statuses"][0]["order"]["coin"]
                        )
                        assert updates["height"] > heights.get(coin, 0)
                        heights[coin] = updates["height"]
                    await trio.sleep(0.002)  # read slowly: the server's writes back up
            assert pongs > 10
            assert heights
            [stats] = [c for c in handle.client_stats() if c["subscriptions"]]
            assert stats["backlogged_writes"] > 0  # the hand-over path was exercised
            nursery.cancel_scope.cancel()


async def test_a_prompt_reader_is_written_directly(tmp_path: Path) -> None:
    async with (
        sim_and_server(tmp_path) as (handle, _node),
        open_websocket_url(handle.url) as ws,
    ):
        await send(ws, subscribe("BTC", "l2Book"))
        for _ in range(30):
            json.loads(await ws.get_message())
        [stats] = handle.client_stats()
        assert stats["direct_writes"] > 0  # no task switch: the flusher wrote it all
