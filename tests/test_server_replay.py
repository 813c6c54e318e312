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
