"""The in-process feed: per-block updates for Trio programs embedding hlbook."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from server_support import settle, sim_and_server

import hlbook
from hlbook import BookUpdate, FeedOverflowError
from hlbook.node.formats import Stream

pytestmark = pytest.mark.slow


async def test_feed_yields_every_applied_block_with_its_books(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, _node):
        heights: list[int] = []
        trades = exact = 0
        async with handle.feed() as updates:
            async for update in updates:
                assert not update.resync
                assert update.block is not None
                assert update.books is handle.books
                # Live books: exact as of this update unless the consumer lags (Trio may
                # run the book task twice before this task when blocks queue up).
                assert update.books.height >= update.height
                exact += update.books.height == update.height
                heights.append(update.height)
                # Touched coins are exactly the coins with diffs in the block.
                assert update.touched == {d.coin for d in update.block.diffs}
                trades += sum(len(t) for t in update.trades.values())
                if len(heights) == 20:
                    break
        assert heights == list(range(heights[0], heights[0] + 20))  # by-block: every height
        assert exact > 0
        assert trades > 0
        assert not handle.hub.stats.disconnected_for_lag


async def test_a_slow_feed_consumer_gets_an_error_not_a_gap(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, node), handle.feed(max_buffer=3) as updates:
        await node.wait_for_height(node.height + 8)
        await settle(handle, node)
        got: list[int] = []
        with pytest.raises(FeedOverflowError, match="more than 3 updates behind"):
            await _drain(updates, got)
        assert got == list(range(got[0], got[0] + 3))  # what was buffered, then the error


async def test_feed_announces_a_resync(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, node), handle.feed() as updates:
        await node.wait_for_height(node.height + 2)
        node.skip_block(Stream.DIFFS)
        with trio.fail_after(20):
            async for update in updates:
                if update.resync:
                    break
        assert update.block is None
        assert update.touched == set(update.books.coins())
        assert handle.health()["pipeline"]["gaps"] >= 1


async def _drain(updates: AsyncIterator[BookUpdate], into: list[int]) -> None:
    async for update in updates:
        into.append(update.height)


async def test_a_feed_ends_when_the_server_stops(tmp_path: Path) -> None:
    """A consumer in another scope is not left waiting on a server that is gone."""
    got: list[int] = []
    ended = trio.Event()
    with trio.fail_after(30):
        # The consumer runs in ``outer``; the server closes first, then ``outer`` waits
        # for consume() to finish.
        async with (
            trio.open_nursery() as outer,
            sim_and_server(tmp_path) as (handle, _node),
        ):
            updates = handle.feed()

            async def consume() -> None:
                async for update in updates:
                    got.append(update.height)
                ended.set()

            outer.start_soon(consume)
            while len(got) < 3:
                await trio.sleep(0.01)
    assert ended.is_set()
    assert len(got) >= 3


async def test_after_the_server_stops_the_handle_says_so(tmp_path: Path) -> None:
    """Waits on a stopped server raise instead of hanging; new feeds end at once."""
    outcomes: list[str] = []

    async def wait_far(handle: hlbook.ServerHandle) -> None:
        books = handle.books
        assert books is not None
        try:
            await handle.wait_for_height(books.height + 10**6)
        except trio.ClosedResourceError as exc:
            outcomes.append(str(exc))

    with trio.fail_after(30):
        async with (
            trio.open_nursery() as outer,
            sim_and_server(tmp_path) as (handle, _node),
        ):
            await handle.wait_ready()
            assert handle.health()["status"] == "live"
            outer.start_soon(wait_far, handle)
            await trio.sleep(0.1)
    assert outcomes == ["hlbook has stopped: the books move no more"]
    assert handle.stopped
    health = handle.health()
    assert health["status"] == "stopped"
    assert health["live"] is False
    with pytest.raises(trio.ClosedResourceError):
        await handle.wait_for_details(10**12)
    await handle.wait_for_height(0)  # a height already reached still returns
    async with handle.feed() as late:
        assert [update async for update in late] == []


@pytest.mark.parametrize("size", [0, -1])
def test_a_feed_needs_room_for_one_update(size: int) -> None:
    with pytest.raises(ValueError, match="max_buffer must be at least 1"):
        hlbook.Feed(set(), size)
