"""Publisher and consumer against a real nats-server: order, de-duplication, faults, gaps."""

from pathlib import Path

import pytest
import trio
import trio.testing
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats_support import (
    Drained,
    consumer_of,
    drain_until,
    mainnet_blocks,
    nats_server,
    options,
    same_block,
    small_blocks,
    snapshot_bytes,
    stream_messages,
    until,
)

from hlbook.model import Block
from hlbook.relay import (
    BlockMessage,
    Bootstrap,
    DiffsMessage,
    Gap,
    NatsServer,
    Publisher,
    StreamSettings,
    open_nats,
    open_publisher,
)
from hlbook.stages import Stage

pytestmark = pytest.mark.slow

FIRST = 1_000_000


async def test_published_blocks_are_consumed_in_order_equal_to_the_originals(
    tmp_path: Path,
) -> None:
    originals = list(mainnet_blocks())
    base = originals[0].height - 1
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=base) as publisher,
    ):
        publisher.put_snapshot(base, snapshot_bytes(base))
        for item in originals[:25]:
            publisher.offer(item)
        got = Drained()
        async with consumer_of(server) as consumer, trio.open_nursery() as nursery:

            async def later() -> None:
                await until(lambda: len(got.blocks) >= 5)
                for item in originals[25:]:  # while the consumer is caught up
                    publisher.offer(item)

            nursery.start_soon(later)
            with trio.fail_after(60):
                await drain_until(consumer, got, originals[-1].height)
        stats = publisher.stats
    assert [b.height for b in got.bootstraps] == [base]
    assert got.bootstraps[0].snapshot == snapshot_bytes(base)
    assert not got.gaps
    assert len(got.blocks) == len(originals)
    assert all(same_block(a, b) for a, b in zip(got.blocks, originals, strict=True))
    assert (stats.published, stats.dropped, stats.duplicates) == (len(originals), 0, 0)


async def test_the_publisher_is_a_block_sink_publishing_early_diffs_then_whole_blocks(
    tmp_path: Path,
) -> None:
    originals = list(mainnet_blocks())[:6]
    base = originals[0].height - 1
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=base) as publisher,
    ):
        with trio.fail_after(30):
            await publisher.ready()
        publisher.put_snapshot(base, snapshot_bytes(base))
        # The diffs stage of the next block before the statuses of this one, as a lagging node.
        publisher.publish(Stage.DIFFS, originals[0], None, {})  # type: ignore[arg-type]
        for item, following in zip(originals, [*originals[1:], None], strict=True):
            if following is not None:
                publisher.publish(Stage.DIFFS, following, None, {})  # type: ignore[arg-type]
            for stage in (Stage.STATUSES, Stage.FILLS, Stage.BLOCK):
                publisher.publish(stage, item, None, {})  # type: ignore[arg-type]
        with trio.fail_after(30):
            await publisher.flush()
        stats = publisher.stats
        assert (stats.published, stats.diffs_published, stats.diffs_dropped) == (6, 6, 0)
        async with open_nats(options(server)) as connection:
            assert await stream_messages(connection) == 12
        early = Drained()
        async with consumer_of(server, diffs=True) as consumer:
            with trio.fail_after(60):
                await drain_until(consumer, early, originals[-1].height)
        plain = Drained()
        async with consumer_of(server) as consumer:
            with trio.fail_after(60):
                await drain_until(consumer, plain, originals[-1].height)
    heights = [h.height for h in originals]
    kinds = [
        (type(e).__name__, e.block.height)
        for e in early.events
        if isinstance(e, BlockMessage | DiffsMessage)
    ]
    # Each block's diffs come ahead of it (not in the blocks' order: they skip the buffer).
    assert sorted(kinds) == sorted(
        [("DiffsMessage", h) for h in heights] + [("BlockMessage", h) for h in heights]
    )
    assert all(kinds.index(("DiffsMessage", h)) < kinds.index(("BlockMessage", h)) for h in heights)
    diffs = sorted(
        (e for e in early.events if isinstance(e, DiffsMessage)), key=lambda d: d.block.height
    )
    assert [d.prev for d in diffs] == [base, *heights[:-1]]
    assert all(
        d.block.diffs == o.diffs and not d.block.statuses
        for d, o in zip(diffs, originals, strict=True)
    )
    assert all(same_block(a, b) for a, b in zip(early.blocks, originals, strict=True))
    # Without diffs=True a consumer passes over them: the same blocks, nothing else.
    assert [type(e).__name__ for e in plain.events] == ["Bootstrap"] + ["BlockMessage"] * 6
    assert all(same_block(a, b) for a, b in zip(plain.blocks, originals, strict=True))


async def test_early_diffs_can_be_turned_off(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 3)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), early_diffs=False) as publisher,
    ):
        for item in blocks:
            for stage in Stage:
                publisher.publish(stage, item, None, {})  # type: ignore[arg-type]
        with trio.fail_after(30):
            await publisher.flush()
        assert (publisher.stats.published, publisher.stats.diffs_published) == (3, 0)
        async with open_nats(options(server)) as connection:
            assert await stream_messages(connection) == 3


async def test_a_stream_the_publisher_creates_has_the_retention_asked_for(
    tmp_path: Path,
) -> None:
    settings = StreamSettings(max_age=600.0, max_bytes=10**8, duplicate_window=120.0)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), settings=settings) as publisher,
    ):
        with trio.fail_after(30):
            await publisher.ready()

        async def config(_nc: Client, js: JetStreamContext) -> tuple[object, ...]:
            c = (await js.stream_info("HLBOOK_BLOCKS")).config
            return c.max_age, c.max_bytes, c.duplicate_window, c.num_replicas

        assert await publisher.connection.call(config) == (600.0, 10**8, 120.0, 1)


async def test_two_publishers_of_the_same_heights_store_each_block_once(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 120)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=FIRST - 1) as one,
        open_publisher(options(server), start_height=FIRST - 1) as two,
    ):
        one.put_snapshot(FIRST - 1, snapshot_bytes(FIRST - 1))
        for item in blocks:  # interleaved, as two primaries on two nodes would
            one.offer(item)
            two.offer(item)
        with trio.fail_after(60):
            await one.flush()
            await two.flush()
        async with open_nats(options(server)) as connection:
            assert await stream_messages(connection) == len(blocks)
        assert one.stats.duplicates + two.stats.duplicates == len(blocks)
        got = Drained()
        async with consumer_of(server) as consumer:
            with trio.fail_after(60):
                await drain_until(consumer, got, blocks[-1].height)
    assert got.heights == [b.height for b in blocks]
    assert consumer.stats.skipped == 0  # the server dropped the copies: none reached us


async def test_a_second_primary_takes_over_the_chain(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 60)
    async with nats_server(tmp_path) as server:
        async with open_publisher(options(server), start_height=FIRST - 1) as first:
            first.put_snapshot(FIRST - 1, snapshot_bytes(FIRST - 1))
            for item in blocks[:40]:
                first.offer(item)
            with trio.fail_after(30):
                await first.flush()
        # The first primary is gone; the second started from an older snapshot of its node
        # and republishes 31-40 (duplicates) before carrying on.
        async with open_publisher(options(server), start_height=blocks[29].height) as second:
            for item in blocks[30:]:
                second.offer(item)
            with trio.fail_after(30):
                await second.flush()
            assert second.stats.duplicates == 10
        got = Drained()
        async with consumer_of(server) as consumer:
            with trio.fail_after(60):
                await drain_until(consumer, got, blocks[-1].height)
    assert got.heights == [b.height for b in blocks]
    assert not got.gaps


async def test_a_late_consumer_bootstraps_from_the_newest_snapshot(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 50)
    settings = StreamSettings(keep_snapshots=2, memory=True)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=FIRST - 1, settings=settings) as publisher,
    ):
        for index, item in enumerate(blocks):
            publisher.offer(item)
            if index % 10 == 9:  # snapshots after heights +9, +19, +29, +39
                publisher.put_snapshot(item.height, snapshot_bytes(item.height))
                with trio.fail_after(30):
                    await publisher.flush_snapshots()
        with trio.fail_after(30):
            await publisher.flush()
        got = Drained()
        async with consumer_of(server) as consumer:
            with trio.fail_after(60):
                await drain_until(consumer, got, blocks[-1].height)
        assert publisher.stats.snapshots == 5

        async def names(_nc: Client, js: JetStreamContext) -> list[str]:
            store = await js.object_store("HLBOOK_SNAPSHOTS")
            return sorted(i.name for i in await store.list(ignore_deletes=True))

        assert await publisher.connection.call(names) == [
            f"snapshot-{FIRST + 39}",
            f"snapshot-{FIRST + 49}",
        ]
    assert [b.height for b in got.bootstraps] == [FIRST + 49]
    assert got.heights == []
    assert got.bootstraps[0].seq == 50  # the stream sequence of the block at its height


async def test_a_consumer_resumes_mid_stream_from_the_snapshot_sequence(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 40)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=FIRST - 1) as publisher,
    ):
        for item in blocks[:20]:
            publisher.offer(item)
        publisher.put_snapshot(blocks[19].height, snapshot_bytes(blocks[19].height))
        for item in blocks[20:]:
            publisher.offer(item)
        with trio.fail_after(30):
            await publisher.flush()
            await publisher.flush_snapshots()
        await _resumes_right_after(server, blocks, 19)


async def _resumes_right_after(server: NatsServer, blocks: list[Block], last: int) -> None:
    """A late consumer bootstraps from the snapshot at ``blocks[last]`` (the stream's
    ``last + 1``-th message) and reads exactly the blocks after it, skipping none."""
    got = Drained()
    async with consumer_of(server) as consumer:
        with trio.fail_after(60):
            await drain_until(consumer, got, blocks[-1].height)
    assert [(b.height, b.seq) for b in got.bootstraps] == [(blocks[last].height, last + 1)]
    assert got.heights == [b.height for b in blocks[last + 1 :]]
    assert consumer.stats.skipped == 0  # started right after the snapshot's block


async def test_a_restarted_primarys_first_snapshot_stands_where_its_blocks_start(
    tmp_path: Path,
) -> None:
    # A primary that starts on a stream holding an older chain has had no block acknowledged:
    # its first snapshot must still point after that chain, not at sequence 0 (from where
    # every relay bootstrapping from it would read the whole stream again).
    blocks = small_blocks(FIRST, 40)
    async with nats_server(tmp_path) as server:
        async with open_publisher(options(server), start_height=FIRST - 1) as before:
            for item in blocks[:20]:
                before.offer(item)
            with trio.fail_after(30):
                await before.flush()
        async with open_publisher(options(server), start_height=blocks[19].height) as after:
            with trio.fail_after(30):
                await after.ready()
            after.put_snapshot(blocks[19].height, snapshot_bytes(blocks[19].height))
            for item in blocks[20:]:
                after.offer(item)
            with trio.fail_after(30):
                await after.flush()
                await after.flush_snapshots()
        await _resumes_right_after(server, blocks, 19)  # nothing of the older chain again


async def _publish_slowly(publisher: Publisher, blocks: list[Block], every: int) -> None:
    for index, item in enumerate(blocks):
        publisher.offer(item)
        if index % every == every - 1:
            publisher.put_snapshot(item.height, snapshot_bytes(item.height))
        await trio.sleep(0.005)


@pytest.mark.parametrize("sync_always", [True, False])
async def test_nats_killed_and_restarted_while_blocks_flow(
    tmp_path: Path, sync_always: bool
) -> None:
    """Nothing is lost and nothing doubled; if the server loses acknowledged writes
    (possible without ``sync_always``), the consumer reports the gap and re-bootstraps."""
    blocks = small_blocks(FIRST, 400)
    async with (
        nats_server(tmp_path, sync_always=sync_always) as server,
        open_publisher(options(server), start_height=FIRST - 1) as publisher,
    ):
        publisher.put_snapshot(FIRST - 1, snapshot_bytes(FIRST - 1))
        got = Drained()
        async with consumer_of(server) as consumer, trio.open_nursery() as nursery:
            nursery.start_soon(_publish_slowly, publisher, blocks, 50)

            async def fault() -> None:
                await until(lambda: len(got.blocks) >= 100)
                server.kill()
                await server.wait()
                await trio.sleep(0.3)  # blocks keep coming while it is down
                await server.start()

            nursery.start_soon(fault)
            with trio.fail_after(120):
                await drain_until(consumer, got, blocks[-1].height)
        stats = publisher.stats
    assert server.starts == 2
    assert stats.dropped == 0
    heights = got.heights
    assert heights == sorted(set(heights))  # in order, no duplicates
    if sync_always or not got.gaps:
        assert not got.gaps
        assert heights == [b.height for b in blocks]
    else:
        # Every height missing from the delivered ones lies inside a reported gap,
        # repaired by the bootstrap that follows it.
        for gap in got.gaps:
            after = got.events[got.events.index(gap) + 1]
            assert isinstance(after, Bootstrap)
            assert after.height >= gap.info.need
        delivered = set(heights)
        for item in blocks:
            if item.height not in delivered:
                assert any(
                    gap.info.after < item.height
                    and any(b.height >= item.height for b in got.bootstraps)
                    for gap in got.gaps
                )


async def test_publisher_with_nats_down_never_blocks_and_stays_bounded(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 2100)
    async with nats_server(tmp_path) as server:
        server.kill()
        await server.wait()
        async with open_publisher(
            options(server), start_height=FIRST - 1, max_blocks=100, max_bytes=10**9
        ) as publisher:
            # offer() is synchronous: 1000 calls in a row, no await, NATS down.
            accepted = [publisher.offer(item) for item in blocks[:1000]]
            assert sum(accepted) == 100
            for item in blocks[1000:2000]:  # with the publisher's tasks running in between
                assert not publisher.offer(item)
                await trio.sleep(0)
            # Early diffs that do not fit are dropped too, but they are no gap: the
            # blocks carry their diffs.
            assert not publisher.offer_diffs(blocks[1999])
            stats = publisher.stats
            assert (stats.buffered, stats.published, stats.dropped) == (100, 0, 1900)
            assert stats.gaps == 1
            assert (stats.diffs_dropped, stats.diffs_published) == (1, 0)
            assert publisher.wants_snapshot
            # NATS comes back: the buffer drains, then new blocks flow; the gap is repaired
            # by the snapshot the publisher asks for.
            await server.start()
            with trio.fail_after(60):
                await publisher.flush()
            assert publisher.stats.published == 100
            # The gap is open until a block is buffered again: no early diffs before it.
            # Then, with no await in between, at most max_diffs_in_flight go out.
            sent = [(publisher.offer_diffs(item), publisher.offer(item)) for item in blocks[2000:]]
            assert [diffs for diffs, _block in sent] == [False] + [True] * 16 + [False] * 83
            assert all(offered for _diffs, offered in sent)
            last = blocks[-1].height
            publisher.put_snapshot(last, snapshot_bytes(last))
            with trio.fail_after(60):
                await publisher.flush()
                await publisher.flush_snapshots()
            assert not publisher.wants_snapshot
            got = Drained()
            async with consumer_of(server) as consumer:
                with trio.fail_after(60):
                    await drain_until(consumer, got, last)
    assert (publisher.stats.published, publisher.stats.diffs_published) == (200, 16)
    assert publisher.stats.diffs_dropped == 1 + 84
    assert publisher.stats.gaps == 1
    assert [b.height for b in got.bootstraps] == [last]  # the newest snapshot: nothing after it
    assert not got.gaps


async def test_a_relay_behind_a_publisher_gap_re_bootstraps(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 60)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=FIRST - 1, max_blocks=10) as publisher,
    ):
        publisher.put_snapshot(FIRST - 1, snapshot_bytes(FIRST - 1))
        with trio.fail_after(30):
            await publisher.flush_snapshots()
        for item in blocks[:30]:  # 10 fit, 20 are dropped
            publisher.offer(item)
        with trio.fail_after(30):
            await publisher.flush()
        assert publisher.stats.dropped == 20
        got = Drained()
        async with consumer_of(server) as consumer, trio.open_nursery() as nursery:

            async def primary() -> None:
                for item in blocks[30:40]:
                    assert publisher.offer(item)
                    await publisher.flush()
                await until(lambda: bool(got.gaps))
                assert publisher.wants_snapshot
                publisher.put_snapshot(blocks[39].height, snapshot_bytes(blocks[39].height))
                for item in blocks[40:]:
                    assert publisher.offer(item)
                    await publisher.flush()

            nursery.start_soon(primary)
            with trio.fail_after(60):
                await drain_until(consumer, got, blocks[-1].height)
    assert got.heights == [b.height for b in blocks[:10]] + [b.height for b in blocks[40:]]
    [gap] = got.gaps
    assert (gap.info.after, gap.info.height, gap.info.prev) == (
        blocks[9].height,
        blocks[30].height,
        blocks[29].height,
    )
    assert [b.height for b in got.bootstraps] == [FIRST - 1, blocks[39].height]


async def test_retention_expiring_needed_blocks_is_a_gap_then_a_bootstrap(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 60)
    settings = StreamSettings(max_msgs=10, memory=True)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=FIRST - 1, settings=settings) as publisher,
    ):
        publisher.put_snapshot(FIRST - 1, snapshot_bytes(FIRST - 1))
        for item in blocks[:40]:
            publisher.offer(item)
        with trio.fail_after(30):
            await publisher.flush()
            await publisher.flush_snapshots()
        got = Drained()
        async with consumer_of(server) as consumer, trio.open_nursery() as nursery:

            async def repair() -> None:
                await until(lambda: bool(got.gaps))
                for item in blocks[40:50]:
                    publisher.offer(item)
                publisher.put_snapshot(blocks[49].height, snapshot_bytes(blocks[49].height))
                for item in blocks[50:]:
                    publisher.offer(item)

            nursery.start_soon(repair)
            with trio.fail_after(60):
                await drain_until(consumer, got, blocks[-1].height)
    # The stream kept only 31-40: the consumer, at the snapshot at FIRST - 1, needed 1-30.
    assert isinstance(got.events[0], Bootstrap)
    gap = got.events[1]
    assert isinstance(gap, Gap)
    assert (gap.info.after, gap.info.height) == (FIRST - 1, FIRST + 30)
    assert isinstance(got.events[2], Bootstrap)
    assert got.events[2].height == blocks[49].height
    assert got.heights == [b.height for b in blocks[50:]]


async def test_a_corrupt_block_message_is_a_gap_not_a_crash(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 10)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=FIRST - 1) as publisher,
    ):
        publisher.put_snapshot(FIRST - 1, snapshot_bytes(FIRST - 1))
        for item in blocks[:5]:
            publisher.offer(item)
        with trio.fail_after(30):
            await publisher.flush()

        async def garbage(_nc: Client, js: JetStreamContext) -> None:
            await js.publish(
                "hlbook.blocks", b"HB\x01\x01garbage", headers={"Nats-Msg-Id": "1000005"}
            )

        await publisher.connection.call(garbage)
        got = Drained()
        async with consumer_of(server) as consumer, trio.open_nursery() as nursery:

            async def repair() -> None:
                await until(lambda: bool(got.gaps))
                for item in blocks[6:]:
                    publisher.offer(item)
                publisher.put_snapshot(blocks[-1].height, snapshot_bytes(blocks[-1].height))

            nursery.start_soon(repair)
            with trio.fail_after(60):
                await drain_until(consumer, got, blocks[-1].height)
    assert got.heights == [b.height for b in blocks[:5]]
    assert len(got.gaps) == 1
    assert "undecodable" in got.gaps[0].reason
    assert got.bootstraps[-1].height == blocks[-1].height


async def test_corrupt_early_diffs_are_ignored_not_a_gap(tmp_path: Path) -> None:
    blocks = small_blocks(FIRST, 6)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=FIRST - 1) as publisher,
    ):
        with trio.fail_after(30):
            await publisher.ready()
        publisher.put_snapshot(FIRST - 1, snapshot_bytes(FIRST - 1))

        async def garbage(_nc: Client, js: JetStreamContext) -> None:
            await js.publish(
                "hlbook.blocks", b"HD\x01\x01garbage", headers={"Nats-Msg-Id": f"{FIRST}.diffs"}
            )

        await publisher.connection.call(garbage)
        for item in blocks:
            publisher.offer_diffs(item)  # the first is a duplicate of the garbage: dropped
            publisher.offer(item)
        with trio.fail_after(30):
            await publisher.flush()
        got = Drained()
        async with consumer_of(server, diffs=True) as consumer:
            with trio.fail_after(60):
                await drain_until(consumer, got, blocks[-1].height)
    assert got.heights == [b.height for b in blocks]
    assert not got.gaps
    assert consumer.stats.diffs_refused == 1
    early = [e.block.height for e in got.events if isinstance(e, DiffsMessage)]
    # The first early diffs had the garbage's id: JetStream kept the garbage only.
    assert early == [b.height for b in blocks[1:]]


async def test_connection_state_and_failed_connects_are_reported(tmp_path: Path) -> None:
    async with nats_server(tmp_path) as server:
        server.kill()
        await server.wait()
        async with open_nats(options(server)) as connection:
            with trio.fail_after(30):
                await until(lambda: connection.stats.failed_connects >= 2)
            assert not connection.connected
            await server.start()
            with trio.fail_after(30):
                await connection.wait_connected()
            assert connection.stats.connects == 1
            server.kill()
            await server.wait()
            with trio.fail_after(30):
                await until(lambda: not connection.connected)
            await server.start()
            with trio.fail_after(30):
                await connection.wait_connected()
            assert connection.stats.disconnects >= 1


async def test_heights_that_skip_empty_blocks_follow_the_chain(tmp_path: Path) -> None:
    """The streaming layout skips heights of empty blocks: ``prev`` links across them."""
    heights = [FIRST, FIRST + 3, FIRST + 4, FIRST + 10, FIRST + 11]
    blocks = [small_blocks(h, 1)[0] for h in heights]
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), start_height=FIRST - 1) as publisher,
    ):
        publisher.put_snapshot(FIRST - 1, snapshot_bytes(FIRST - 1))
        for item in blocks:
            publisher.offer(item)
        got = Drained()
        async with consumer_of(server) as consumer:
            with trio.fail_after(60):
                await drain_until(consumer, got, heights[-1])
    assert got.heights == heights
    assert not got.gaps
    assert [e.prev for e in got.events if isinstance(e, BlockMessage)] == [FIRST - 1, *heights[:-1]]


async def test_a_block_over_max_payload_is_a_counted_gap(tmp_path: Path) -> None:
    big = mainnet_blocks()[0]  # an ~18 KB frame
    smalls = small_blocks(big.height + 1, 3)
    async with (
        nats_server(tmp_path, max_payload=8192) as server,
        open_publisher(options(server), start_height=big.height - 1) as publisher,
    ):
        publisher.offer(big)
        for item in smalls:
            publisher.offer(item)
        with trio.fail_after(30):
            await publisher.flush()
        stats = publisher.stats
    assert (stats.too_large, stats.dropped, stats.gaps, stats.published) == (1, 1, 1, 3)
    assert publisher.wants_snapshot


async def test_no_snapshot_is_captured_inside_an_open_gap(tmp_path: Path) -> None:
    # NATS gone and the buffer full: blocks are dropped. A snapshot taken now could not
    # repair the gap (relays need one past it) and would stall the book task for nothing.
    from hlbook.book.books import Books
    from hlbook.shell.publish import PublishSink

    blocks = small_blocks(FIRST, 12)
    books = Books(FIRST - 1)
    async with (
        nats_server(tmp_path) as server,
        open_publisher(options(server), max_blocks=3) as publisher,
    ):
        sink = PublishSink(publisher, every=3600.0)

        def publish(block: Block) -> None:
            books.height = books.details_height = block.height
            sink.publish(Stage.BLOCK, block, books, {})

        with trio.fail_after(30):
            await publisher.ready()
        publish(blocks[0])  # and the start-up snapshot at its height
        publisher.snapshot_data(blocks[0].height, snapshot_bytes(blocks[0].height))
        with trio.fail_after(30):
            await publisher.flush()
            await publisher.flush_snapshots()
        server.kill()
        await server.wait()
        for block in blocks[1:]:
            publish(block)
        assert publisher.dropping
        assert publisher.wants_snapshot
        assert not publisher.snapshot_pending  # none captured inside the gap
