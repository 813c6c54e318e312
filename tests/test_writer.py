"""Client writes: direct writes cut short, backlogs, pongs in between — frames stay whole."""

import json
import socket
from pathlib import Path

import pytest
import trio
from server_support import send, sim_and_server, subscribe
from trio_websocket import open_websocket_url, wrap_client_stream

from hlbook.book.books import Books
from hlbook.model import Block
from hlbook.server.fanout import ClientQueue
from hlbook.server.frames import Message, frames, pong_frame
from hlbook.shell.writer import CompressionBudget, Flusher, FlushSink, Waker, Writer
from hlbook.stages import Stage

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


def _writer_on(sock: socket.socket) -> tuple[Writer, ClientQueue, trio.SocketStream]:
    """A client's writer on one end of a real socket pair."""
    client = ClientQueue()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock.dup()))
    writer = Writer(
        stream,
        client,
        fd=sock.fileno(),
        budget=CompressionBudget(1e6, 1e6),
        on_sent=lambda messages, size: None,
    )
    return writer, client, stream


async def test_the_flush_sink_writes_queued_messages_in_the_publishing_step() -> None:
    # A real socket pair: what the fan-out queued is on the wire as soon as the sink is
    # told (no task ran in between), one message's frame as is, two in one write.
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        right.settimeout(5)
        flusher = Flusher()
        writer, client, stream = _writer_on(left)
        client.wake = lambda: flusher.mark(writer)
        sink = FlushSink(flusher)
        books = Books()
        one = Message(b'{"channel":"l2Book","data":1}')
        client.put_latest("l2", one)
        sink.publish(Stage.DIFFS, Block(1, 0), books, {})
        assert right.recv(65536) == frames(one.payload)[0]
        two, three = Message(b'{"channel":"bbo"}'), Message(b'{"channel":"trades"}')
        client.put_latest("bbo", two)
        assert client.put(three)
        sink.publish(Stage.FILLS, Block(1, 0), books, {})
        assert right.recv(65536) == frames(two.payload)[0] + frames(three.payload)[0]
        assert client.stats.messages_sent == 3
        assert client.stats.direct_writes == 2
        sink.resync(books)  # nothing queued: nothing written, nothing fails
        sink.notify("stale")
        await stream.aclose()


async def test_a_ping_flood_leaves_one_pong_waiting() -> None:
    # A client that sends pings and never reads: each pong replaces the one waiting,
    # so the server's memory does not grow with the flood; the newest goes out.
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        right.settimeout(5)
        writer, _client, stream = _writer_on(left)
        for n in range(10_000):
            writer.send_pong(pong_frame(n.to_bytes(4, "big")))
        writer.write_now()
        assert right.recv(65536) == pong_frame((9_999).to_bytes(4, "big"))
        await stream.aclose()


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
