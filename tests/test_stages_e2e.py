"""Each view as soon as its stream is complete, against the real race between the streams.

The recorded mainnet slice is written to real files in three orders — each
block's diffs before its statuses, its statuses before its diffs, and the
statuses 500 ms behind the diffs — in both layouts, while real WebSocket
clients follow ``l2Book``, ``bbo``, ``trades`` and ``l4Book``. Every message
must be exactly the engine's book at its block; ``l4Book`` updates must
rebuild the book; an ``l4Book`` snapshot asked for while the statuses lag
must carry every order's details. With the statuses late, the writer holds
each status line back until the server has applied that block's diffs: if
``l2Book`` waited for the statuses, this would never happen.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from fixtures import MainnetSlice
from recorded_node import RecordedNode, streaming_lines
from server_support import (
    engine_books,
    order_keys,
    replay_server,
    send,
    slice_block,
    subscribe,
)
from test_server_replay import expected_trades
from trio_websocket import open_websocket_url

import hlbook
from hlbook.book.books import Books
from hlbook.book.l2 import bbo, l2_levels
from hlbook.book.l4 import ASK, BID
from hlbook.node.formats import Layout, Stream, decode_snapshot, time_ms

pytestmark = pytest.mark.slow

D, S, F = Stream.DIFFS, Stream.STATUSES, Stream.FILLS
ORDERS = ["diffs-first", "statuses-first", "statuses-late"]
LATE = 0.5


def by_height(node: RecordedNode) -> list[tuple[int, dict[Stream, list[bytes]]]]:
    """The slice's lines per block and stream, in the node's layout."""
    mainnet = node.mainnet
    if node.layout is Layout.BY_BLOCK:
        return [
            (height, {s: [mainnet.lines[s][index]] for s in Stream})
            for index, height in enumerate(mainnet.heights)
        ]
    grouped: dict[int, dict[Stream, list[bytes]]] = {}
    for stream, line, height in streaming_lines(mainnet):
        grouped.setdefault(height, {s: [] for s in Stream})[stream].append(line)
    return sorted(grouped.items())


class Writer:
    """Writes the slice block by block in one of :data:`ORDERS` (real files)."""

    def __init__(self, node: RecordedNode, handle: hlbook.ServerHandle, order: str) -> None:
        self.node = node
        self.handle = handle
        self.order = order
        self.gated = 0  # status lines written only once the server had that block's diffs
        self._diff_heights: list[int] = []

    def _write(self, stream: Stream, lines: list[bytes]) -> None:
        for line in lines:
            self.node._append(stream, line + b"\n", split=True)

    async def run(self) -> None:
        send, receive = trio.open_memory_channel[tuple[int, list[bytes], float]](1000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._late_statuses, receive)
            async with send:
                for height, lines in by_height(self.node):
                    if self.order == "statuses-first":
                        self._write(S, lines[S])
                        self._write(F, lines[F])
                        await trio.sleep(0.02)
                        self._write(D, lines[D])
                    else:
                        self._write(D, lines[D])
                        if lines[D]:
                            self._diff_heights.append(height)
                        self._write(F, lines[F])
                        if self.order == "diffs-first":
                            self._write(S, lines[S])
                        else:
                            send.send_nowait((height, lines[S], trio.current_time() + LATE))
                    self.node.height = height
                    await trio.sleep(0.02)

    async def _late_statuses(
        self, receive: trio.MemoryReceiveChannel[tuple[int, list[bytes], float]]
    ) -> None:
        async for height, lines, due in receive:
            await trio.sleep_until(due)
            # The diff stream is complete up to the last height before its newest line.
            done = [h for h in self._diff_heights[:-1] if h <= height]
            if self.node.layout is Layout.BY_BLOCK:
                done = [height]
            if done:
                with trio.fail_after(20):
                    await self.handle.wait_for_height(done[-1])  # without these statuses
                books = self.handle.books
                assert books is not None
                assert books.details_height < height  # they are not written yet
                self.gated += 1
            self._write(S, lines)


def reference_views(mainnet: MainnetSlice) -> Iterator[tuple[int, int, Books]]:
    """``(height, block time, books)`` at the snapshot (time 0: unknown) and after each
    block of the slice (the same Books)."""
    height, coins = decode_snapshot(mainnet.snapshot)
    books = Books.from_snapshot(height, coins)
    yield height, 0, books
    for index in range(len(mainnet.heights)):
        block = slice_block(mainnet, index)
        books.apply(block)
        yield block.height, block.time, books


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "layout", [Layout.BY_BLOCK, Layout.STREAMING], ids=["by-block", "streaming"]
)
async def test_each_view_is_right_whichever_stream_comes_first(
    tmp_path: Path, mainnet: MainnetSlice, layout: Layout, order: str
) -> None:
    from l4_mirror import Checker

    # What every view must be at every height (and the block time -> height map).
    l2_at: dict[int, Any] = {}
    bbo_at: dict[int, Any] = {}
    height_of: dict[int, int] = {mainnet.height: mainnet.height}
    for height, block_time, books in reference_views(mainnet):
        book = books.book("BTC")
        assert book is not None
        l2_at[height] = [list(l2_levels(book, side, 20)) for side in (BID, ASK)]
        bbo_at[height] = bbo(book)
        height_of[block_time] = height
    last = mainnet.heights[-1]
    # Streaming has no end-of-block marker: a stream that says nothing for quiet_after
    # counts as having nothing more. A status stream that starts LATE behind the diffs
    # must be given longer than that (the --stream-quiet-after knob).
    # (0.3: the default; much lower and a loaded machine makes the 20 ms between the streams
    # of a block look like silence.) The node writing here runs in this process: while
    # the late l4Book subscriber's 51k-order snapshot is built and parsed, it writes
    # nothing, and on a loaded machine that pause has outlasted 0.3 s between a block's
    # statuses and its diffs (a real node would have been silent that long): give it 1 s.
    quiet = 4 * LATE if order == "statuses-late" else 1.0
    async with replay_server(
        tmp_path, mainnet, layout, stream_quiet_after=quiet, stale_after=30.0
    ) as (handle, node):
        loaded = handle.books
        assert loaded is not None
        height_of[loaded.time] = mainnet.height
        checker = Checker(20)
        received: list[tuple[str, Any, int]] = []  # channel, data, server details height
        writer = Writer(node, handle, order)
        late_snapshot: dict[str, Any] = {}
        async with (
            open_websocket_url(handle.url, max_message_size=1 << 28) as ws,
            trio.open_nursery() as nursery,
        ):
            for kind in ("l4Book", "l2Book", "bbo", "trades"):
                await send(ws, subscribe("BTC", kind))
            started = False
            with trio.fail_after(60):
                while checker.mirror.height < last:
                    if not started and checker.mirror.height >= 0:
                        # Only now: rebuilding the 51k-order snapshot stalls this process,
                        # node included, longer than a streaming quiet period.
                        started = True
                        nursery.start_soon(writer.run)
                        nursery.start_soon(_late_l4_subscriber, handle, node, late_snapshot)
                    message = json.loads(await ws.get_message())
                    channel, data = message["channel"], message.get("data")
                    now_books = handle.books
                    assert now_books is not None
                    received.append((channel, data, now_books.details_height))
                    if channel == "l4Book":
                        checker.on_l4(data)
                    elif channel == "l2Book":
                        checker.on_l2(data)
                    elif channel == "error":
                        raise AssertionError(data)
            with trio.fail_after(20):
                while not late_snapshot:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    # The books, the client's own L4 mirror and every l2Book/bbo message are the engine's.
    reference = engine_books(mainnet)
    final = handle.books
    assert final is not None
    assert order_keys(final, "BTC") == order_keys(reference, "BTC")
    assert checker.mismatches == 0
    assert checker.checked > 0
    l2_seen = bbo_seen = 0
    early = 0  # l2Book/bbo/trades of a block sent before its statuses were attached
    tids: list[int] = []
    for channel, data, details_height in received:
        if channel == "l2Book":
            height = height_of[data["time"]]
            levels = [[(x["px"], x["sz"], x["n"]) for x in side] for side in data["levels"]]
            assert levels == l2_at[height], height
            l2_seen += 1
            early += details_height < height
        elif channel == "bbo":
            height = height_of[data["time"]]
            want = [_level(view) for view in bbo_at[height]]
            assert data["bbo"] == want, height
            bbo_seen += 1
            early += details_height < height
        elif channel == "trades":
            tids += [trade["tid"] for trade in data]
            height = height_of.get(data[0]["time"], 0)
            early += details_height < height
    assert sorted(tids) == sorted(expected_trades(mainnet))  # every trade exactly once
    assert l2_seen > 0
    assert bbo_seen > 0
    if order == "statuses-late":
        assert writer.gated > 0  # diffs were applied while their statuses were unwritten
        assert early > 0  # and clients had those blocks' l2Book before the statuses
    # The late l4Book subscriber's snapshot had every order's details (never a block whose
    # statuses were missing): the engine's orders at that height, field by field.
    snapshot = late_snapshot.get("Snapshot")
    assert snapshot is not None
    at = snapshot["height"]
    expected = engine_books(mainnet, at - mainnet.height)
    bids, asks = expected.coin_orders("BTC")
    orders = [[msgspec.json.decode(msgspec.json.encode(o)) for o in side] for side in (bids, asks)]
    assert snapshot["levels"] == orders


async def _late_l4_subscriber(
    handle: hlbook.ServerHandle, node: RecordedNode, into: dict[str, Any]
) -> None:
    """Subscribes to l4Book BTC in the middle of the stream (statuses lagging, maybe)."""
    while node.height < node.mainnet.height + 20:
        await trio.sleep(0.01)
    async with open_websocket_url(handle.url, max_message_size=1 << 28) as ws:
        await send(ws, subscribe("BTC", "l4Book"))
        with trio.fail_after(20):
            while True:
                message = json.loads(await ws.get_message())
                if message["channel"] == "l4Book" and "Snapshot" in message["data"]:
                    into.update(message["data"])
                    return


def test_block_times_are_distinct_in_the_slice(mainnet: MainnetSlice) -> None:
    times = [time_ms(json.loads(line)["block_time"]) for line in mainnet.lines[Stream.DIFFS]]
    assert len(set(times)) == len(times)  # the time -> height map above is one to one


def _level(view: Any) -> dict[str, Any] | None:
    return None if view is None else {"px": view[0], "sz": view[1], "n": view[2]}
