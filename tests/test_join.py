"""The sans-I/O block joiner, in both layouts, with explicit ``now`` values."""

import itertools
from typing import Any

import pytest
from fixtures import BASE_MS, fill, line, new, status
from hypothesis import given
from hypothesis import strategies as st

from hlbook.model import Block
from hlbook.node.formats import AnyLine, Layout, Stream, decode_line
from hlbook.node.join import MAX_HEIGHT_JUMP, BlockJoiner, Gap, LateLine
from hlbook.source import Output, Part

S, D, F = Stream.STATUSES, Stream.DIFFS, Stream.FILLS


def event(stream: Stream, tag: int) -> Any:
    """One event of ``stream`` identified by ``tag`` (oid or tid)."""
    if stream is S:
        return status(tag, "badAloPxRejected")
    if stream is D:
        return new(tag)
    return fill("0xabc", tag, side="B", crossed=True)


def ln(stream: Stream, height: int, *tags: int) -> AnyLine:
    return decode_line(stream, line(height, [event(stream, t) for t in tags]))


def tags(block: Output) -> tuple[list[int], list[int], list[int]]:
    """The tags of a block's statuses, diffs and fills."""
    assert isinstance(block, Block), block
    return (
        [e.parsed_order().oid for e in block.statuses],
        [e.oid for e in block.diffs],
        [f.tid for _, f in block.fills],
    )


def heights(out: list[Output]) -> list[int | str]:
    return [f"gap {o.after}-{o.before}" if isinstance(o, Gap) else o.height for o in out]


def by_block_lines(height: int) -> list[tuple[Stream, AnyLine]]:
    """One line per stream for ``height``, tagged ``height * 10 + k``."""
    return [(s, ln(s, height, height * 10 + k)) for k, s in enumerate((S, D, F))]


def feed_all(
    joiner: BlockJoiner, lines: list[tuple[Stream, AnyLine]], now: float = 0.0
) -> list[Output]:
    out: list[Output] = []
    for stream, item in lines:
        out += joiner.feed(stream, item, now)
    return out


# -- by-block ------------------------------------------------------------------


def test_by_block_emits_when_every_stream_delivered() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    assert joiner.release(0) == []
    assert joiner.feed(S, ln(S, 1, 10)) == []
    assert joiner.feed(F, ln(F, 1)) == []  # empty blocks are lines too
    (block,) = joiner.feed(D, ln(D, 1, 11, 12))
    assert isinstance(block, Block)
    assert block.height == 1
    assert tags(block) == ([10], [11, 12], [])
    assert block.time == BASE_MS + 70
    assert joiner.emitted == 1
    assert joiner.next_deadline() is None


def test_by_block_empty_blocks_are_emitted() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(0)
    out = feed_all(joiner, [(s, ln(s, h)) for h in (1, 2) for s in Stream])
    assert heights(out) == [1, 2]
    assert all(isinstance(b, Block) and b.is_empty() for b in out)


def test_by_block_stream_skipping_a_height_is_a_gap() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(0)
    out = feed_all(joiner, by_block_lines(1))
    out += feed_all(joiner, [(D, ln(D, 2)), (F, ln(F, 2))])
    out += feed_all(joiner, by_block_lines(3))  # statuses jump from 1 to 3
    assert heights(out) == [1, "gap 1-3", 3]
    gap = out[1]
    assert isinstance(gap, Gap)
    assert "order_statuses" in gap.reason
    assert "gap after block 1 (before 3)" in str(gap)
    assert joiner.stats().gaps == 1


def test_by_block_height_missing_everywhere_is_a_gap() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(0)
    out = feed_all(joiner, by_block_lines(1) + by_block_lines(4))
    assert heights(out) == [1, "gap 1-4", 4]


def test_by_block_same_height_twice_keeps_the_first() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(0)
    out = joiner.feed(S, ln(S, 1, 10))
    out += joiner.feed(S, ln(S, 1, 99))
    out += joiner.feed(D, ln(D, 1)) + joiner.feed(F, ln(F, 1))
    (block,) = out
    assert isinstance(block, Block)
    assert tags(block)[0] == [10]
    assert joiner.stats().late_lines == 1
    # a line for a block already out is late, not a second block
    assert joiner.feed(D, ln(D, 1, 5)) == []
    assert joiner.stats().late_lines == 2


def test_by_block_start_in_the_middle() -> None:
    # Each stream's first line is a whole block, but the others' lines for the
    # blocks before the latest first line were written before reading began.
    joiner = BlockJoiner(Layout.BY_BLOCK)
    lines = [(S, ln(S, 5, 50)), (D, ln(D, 3, 31)), (D, ln(D, 4, 41)), (D, ln(D, 5, 51))]
    lines += [(F, ln(F, 4)), (F, ln(F, 5)), *by_block_lines(6)]
    out = feed_all(joiner, lines)
    assert out == []  # holding until release
    out = joiner.release(4)
    assert heights(out) == [5, 6]
    assert tags(out[0]) == ([50], [51], [])


def test_by_block_stream_subset() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK, (S, D))
    joiner.release(0)
    out = feed_all(joiner, [(S, ln(S, 1)), (D, ln(D, 1))])
    assert heights(out) == [1]
    with pytest.raises(ValueError, match="not joined"):
        joiner.feed(F, ln(F, 2))
    with pytest.raises(ValueError, match="diff stream is required"):
        BlockJoiner(Layout.BY_BLOCK, (S, F))


@st.composite
def interleavings(
    draw: st.DrawFn, per_stream: dict[Stream, list[AnyLine]]
) -> list[tuple[Stream, AnyLine]]:
    """A random merge of the streams' lines that keeps each stream's own order."""
    queues = {s: list(lines) for s, lines in per_stream.items() if lines}
    out: list[tuple[Stream, AnyLine]] = []
    while queues:
        stream = draw(st.sampled_from(sorted(queues, key=lambda s: s.value)))
        out.append((stream, queues[stream].pop(0)))
        if not queues[stream]:
            del queues[stream]
    return out


@given(st.data(), st.integers(1, 8), st.integers(0, 3))
def test_by_block_any_interleaving(data: st.DataObject, count: int, start: int) -> None:
    per_stream: dict[Stream, list[AnyLine]] = {s: [] for s in Stream}
    expected: list[tuple[int, tuple[list[int], list[int], list[int]]]] = []
    for height in range(start + 1, start + count + 1):
        sizes = [data.draw(st.integers(0, 2)) for _ in Stream]
        s_tags, d_tags, f_tags = (
            [height * 100 + k * 10 + i for i in range(n)] for k, n in enumerate(sizes)
        )
        for stream, stream_tags in zip(Stream, (s_tags, d_tags, f_tags), strict=True):
            per_stream[stream].append(ln(stream, height, *stream_tags))
        expected.append((height, (s_tags, d_tags, f_tags)))
    order = data.draw(interleavings(per_stream))
    release_at = data.draw(st.integers(0, len(order)))
    joiner = BlockJoiner(Layout.BY_BLOCK)
    out = feed_all(joiner, order[:release_at])
    out += joiner.release(start)
    out += feed_all(joiner, order[release_at:])
    assert all(isinstance(o, Block) for o in out)
    assert [(b.height, tags(b)) for b in out if isinstance(b, Block)] == expected
    assert joiner.stats().pending == 0


# -- streaming -----------------------------------------------------------------


def test_streaming_heights_skip_for_empty_blocks() -> None:
    joiner = BlockJoiner(Layout.STREAMING)
    out = feed_all(joiner, [(D, ln(D, 190, 1)), (S, ln(S, 190, 2))])  # first block: maybe partial
    joiner.release(190)
    out += feed_all(joiner, [(D, ln(D, 192, 3)), (S, ln(S, 192, 4)), (S, ln(S, 192, 5))])
    out += feed_all(joiner, [(D, ln(D, 194, 6)), (S, ln(S, 194, 7)), (F, ln(F, 194, 8))])
    out += feed_all(joiner, [(D, ln(D, 195, 9)), (S, ln(S, 195, 10)), (F, ln(F, 195, 11))])
    assert heights(out) == [192, 194]
    assert tags(out[0]) == ([4, 5], [3], [])
    assert tags(out[1]) == ([7], [6], [8])
    assert joiner.stats().gaps == 0


def test_streaming_quiet_stream_holds_others_back_at_most_quiet_after() -> None:
    joiner = BlockJoiner(Layout.STREAMING, quiet_after=0.3)
    feed_all(joiner, [(D, ln(D, 9)), (S, ln(S, 9))], now=0.0)
    joiner.release(9)
    assert feed_all(joiner, [(D, ln(D, 10, 1)), (S, ln(S, 10, 2))], now=0.0) == []
    joiner.caught_up(F, 0.0)  # the fill reader found nothing to read
    # both busy streams moved past 10; the fill stream has said nothing at all
    assert feed_all(joiner, [(D, ln(D, 11, 3)), (S, ln(S, 11, 4))], now=0.1) == []
    assert joiner.caught_up(D, 0.1) == []
    assert joiner.caught_up(S, 0.1) == []
    assert joiner.next_deadline() == pytest.approx(0.3)
    assert joiner.poll(0.29) == []
    assert heights(joiner.poll(0.3)) == [10]
    # 11: nobody has moved past it; complete once every stream has been quiet
    assert joiner.next_deadline() == pytest.approx(0.4)
    assert joiner.poll(0.39) == []
    (block,) = joiner.poll(0.4)
    assert isinstance(block, Block)
    assert (block.height, tags(block)) == (11, ([4], [3], []))
    assert joiner.next_deadline() is None


def test_streaming_quiet_fill_stream_that_spoke_recently() -> None:
    joiner = BlockJoiner(Layout.STREAMING, quiet_after=0.3)
    feed_all(joiner, [(D, ln(D, 1)), (S, ln(S, 1))], now=0.0)
    joiner.release(1)
    feed_all(joiner, [(D, ln(D, 2, 1)), (S, ln(S, 2, 2)), (F, ln(F, 2, 3))], now=1.0)
    joiner.caught_up(F, 1.0)
    out = feed_all(joiner, [(D, ln(D, 3, 4)), (S, ln(S, 3, 5))], now=1.05)
    # the fill stream spoke at 1.0 and may still add to 2: wait until 1.3 at most
    assert out == []
    assert joiner.next_deadline() == pytest.approx(1.3)
    assert heights(joiner.poll(1.3)) == [2]
    # the fill stream speaks about 3; statuses and diffs move past 3
    assert joiner.feed(F, ln(F, 3, 6), now=1.31) == []
    assert feed_all(joiner, [(D, ln(D, 4)), (S, ln(S, 4))], now=1.32) == []
    # a fill line past 3 completes 3 at once
    assert heights(joiner.feed(F, ln(F, 4, 7), now=1.33)) == [3]


def test_streaming_late_diff_is_a_gap_late_status_is_counted() -> None:
    joiner = BlockJoiner(Layout.STREAMING)
    feed_all(joiner, [(D, ln(D, 1)), (S, ln(S, 1))])
    joiner.release(1)
    out = feed_all(joiner, [(D, ln(D, 2, 1)), (S, ln(S, 2, 2)), (D, ln(D, 3)), (S, ln(S, 3))])
    for stream in Stream:
        out += joiner.caught_up(stream, 0.0)
    out += joiner.poll(100.0)
    assert heights(out) == [2, 3]
    assert joiner.feed(S, ln(S, 2, 7), 100.0) == []
    assert joiner.stats().late_lines == 1
    assert (joiner.late_events, joiner.last_late) == (1, LateLine(S, 2, 1))  # for the log
    assert joiner.feed(F, ln(F, 3, 9, 10), 100.0) == []  # its trades and fills are lost
    assert (joiner.late_events, joiner.last_late) == (3, LateLine(F, 3, 2))
    assert joiner.feed(D, ln(D, 3), 100.0) == []  # an empty late line changes nothing
    out = joiner.feed(D, ln(D, 2, 8), 100.0)
    assert heights(out) == ["gap 1-3"]
    assert isinstance(out[0], Gap)
    assert "diffs arrived after" in out[0].reason
    stats = joiner.stats()
    assert (stats.gaps, stats.late_lines, stats.late_events) == (1, 4, 3)  # diffs: the gap


def test_streaming_start_in_the_middle() -> None:
    # The first height of each busy stream may have started before reading did.
    joiner = BlockJoiner(Layout.STREAMING)
    lines = [(D, ln(D, 10, 1)), (D, ln(D, 11, 2)), (F, ln(F, 11, 3)), (D, ln(D, 12, 4))]
    lines += [(S, ln(S, 11, 5)), (S, ln(S, 12, 6)), (D, ln(D, 13, 7)), (S, ln(S, 13, 8))]
    lines += [(F, ln(F, 14, 9))]
    feed_all(joiner, lines)
    out = joiner.release(11)
    assert heights(out) == [12]
    assert tags(out[0]) == ([6], [4], [])
    for stream in Stream:
        assert joiner.caught_up(stream, 0.0) == []
    assert heights(joiner.poll(10.0)) == [13, 14]
    assert joiner.feed(D, ln(D, 11, 2)) == []
    assert joiner.stats().dropped_lines == 1


def test_streaming_busy_stream_silent_at_start() -> None:
    # No status line at all: the joiner starts once the status stream has been quiet.
    joiner = BlockJoiner(Layout.STREAMING, (S, D))
    joiner.release(0)
    assert joiner.caught_up(S, 0.0) == []
    assert feed_all(joiner, [(D, ln(D, 5, 1)), (D, ln(D, 6, 2))], now=0.0) == []
    assert joiner.caught_up(D, 0.0) == []
    out = joiner.poll(1.0)
    assert heights(out) == ["gap 0-6", 6]


@st.composite
def streaming_case(
    draw: st.DrawFn,
) -> tuple[dict[Stream, list[AnyLine]], list[tuple[int, tuple[list[int], list[int], list[int]]]]]:
    """Random streaming lines; the expected blocks after the (possibly partial) first one."""
    per_stream: dict[Stream, list[AnyLine]] = {s: [] for s in Stream}
    expected: list[tuple[int, tuple[list[int], list[int], list[int]]]] = []
    height = 100
    for index in range(draw(st.integers(2, 8))):
        height += draw(st.integers(1, 3))
        block_tags: list[list[int]] = []
        for k, stream in enumerate(Stream):
            n = draw(st.integers(1 if index == 0 and stream is not F else 0, 3))
            stream_tags = [height * 100 + k * 10 + i for i in range(n)]
            block_tags.append(stream_tags)
            # split the block's events over one or more lines
            cut = sorted(draw(st.lists(st.integers(0, n), max_size=2)))
            bounds = [0, *cut, n]
            for a, b in itertools.pairwise(bounds):
                if b > a:
                    per_stream[stream].append(ln(stream, height, *stream_tags[a:b]))
        if index and any(block_tags):
            expected.append((height, (block_tags[0], block_tags[1], block_tags[2])))
    return per_stream, expected


@given(st.data(), streaming_case())
def test_streaming_any_interleaving(
    data: st.DataObject,
    case: tuple[
        dict[Stream, list[AnyLine]], list[tuple[int, tuple[list[int], list[int], list[int]]]]
    ],
) -> None:
    per_stream, expected = case
    order = data.draw(interleavings(per_stream))
    joiner = BlockJoiner(Layout.STREAMING)
    out = feed_all(joiner, order)  # nothing is quiet until its reader says it is caught up
    for stream in Stream:
        out += joiner.caught_up(stream, 0.0)
    out += joiner.poll(10.0)
    first = per_stream[D][0].block_number
    out += joiner.release(first)
    assert all(isinstance(o, Block) for o in out), heights(out)
    assert [(b.height, tags(b)) for b in out if isinstance(b, Block)] == expected


# -- hold / release ------------------------------------------------------------


def test_holds_until_release_then_drops_blocks_at_or_below_the_snapshot() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    assert joiner.holding
    assert feed_all(joiner, [x for h in range(1, 6) for x in by_block_lines(h)]) == []
    assert joiner.stats().held == 5
    out = joiner.release(2)
    assert heights(out) == [3, 4, 5]
    assert not joiner.holding
    assert heights(feed_all(joiner, by_block_lines(6))) == [6]


def test_release_beyond_everything_read() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, by_block_lines(1) + by_block_lines(2) + [(S, ln(S, 3))])
    assert joiner.release(7) == []
    assert joiner.stats().pending == 0
    # lines up to the snapshot are dropped, later ones flow
    out = feed_all(joiner, [(D, ln(D, 3)), (F, ln(F, 3))])
    out += feed_all(joiner, [x for h in range(4, 9) for x in by_block_lines(h)])
    assert heights(out) == [8]
    assert joiner.stats().dropped_lines > 0


def test_snapshot_older_than_the_held_blocks_is_a_gap() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, [x for h in range(10, 13) for x in by_block_lines(h)])
    out = joiner.release(5)
    assert heights(out) == ["gap 5-10", 10, 11, 12]
    assert isinstance(out[0], Gap)
    assert "older" in out[0].reason


def test_snapshot_exactly_one_before_the_held_blocks() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, [x for h in range(10, 13) for x in by_block_lines(h)])
    assert heights(joiner.release(9)) == [10, 11, 12]


def test_hold_again_takes_back_unapplied_blocks() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(0)
    out = feed_all(joiner, [x for h in range(1, 4) for x in by_block_lines(h)])
    assert heights(out) == [1, 2, 3]
    # the caller applied 1 and hit a divergence in 2: re-bootstrap
    joiner.hold([b for b in out[1:] if isinstance(b, Block)])
    assert joiner.holding
    assert feed_all(joiner, by_block_lines(4)) == []
    assert heights(joiner.release(2)) == [3, 4]
    assert heights(feed_all(joiner, by_block_lines(5))) == [5]


def test_hold_then_a_snapshot_that_is_too_old() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(0)
    feed_all(joiner, [x for h in range(1, 5) for x in by_block_lines(h)])
    joiner.hold()  # everything handed out was applied
    feed_all(joiner, by_block_lines(5))
    assert heights(joiner.release(2)) == ["gap 2-5", 5]


def test_hold_with_a_held_gap() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, by_block_lines(1) + by_block_lines(2) + by_block_lines(4))
    assert heights(joiner.release(0)) == [1, 2, "gap 2-4", 4]
    joiner2 = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner2, by_block_lines(1) + by_block_lines(2) + by_block_lines(4))
    # a snapshot past the gap makes it harmless
    assert heights(joiner2.release(3)) == [4]


def test_released_before_reading_began_later_start_is_a_gap() -> None:
    # Regression: release() before any line, then the streams start above the
    # snapshot height. The blocks in between were never read: that must be a
    # Gap, not a silent jump (the books would skip them).
    joiner = BlockJoiner(Layout.BY_BLOCK)
    assert joiner.release(100) == []
    out = feed_all(joiner, [x for h in (104, 105) for x in by_block_lines(h)])
    assert heights(out) == ["gap 100-104", 104, 105]


def test_released_before_reading_began_streaming() -> None:
    joiner = BlockJoiner(Layout.STREAMING)
    joiner.release(100)
    out = feed_all(
        joiner, [(D, ln(D, 101, 1)), (S, ln(S, 101, 2)), (D, ln(D, 102, 3)), (S, ln(S, 102, 4))]
    )
    for stream in Stream:
        out += joiner.caught_up(stream, 0.0)
    out += joiner.poll(10.0)
    # 101 may have begun before reading did: it cannot be trusted
    assert heights(out) == ["gap 100-102", 102]


def test_released_before_reading_began_streaming_lines_at_the_snapshot() -> None:
    # A line at or below the snapshot height proves the reader saw the start of 101.
    joiner = BlockJoiner(Layout.STREAMING)
    joiner.release(100)
    lines = [(D, ln(D, 100, 9)), (S, ln(S, 100, 9)), (D, ln(D, 101, 1)), (S, ln(S, 101, 2))]
    out = feed_all(joiner, lines)
    for stream in Stream:
        out += joiner.caught_up(stream, 0.0)
    out += joiner.poll(10.0)
    assert heights(out) == [101]
    assert joiner.stats().dropped_lines == 2


def test_released_before_reading_began_no_gap_when_contiguous() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(100)
    out = feed_all(joiner, by_block_lines(101) + by_block_lines(102))
    assert heights(out) == [101, 102]


# -- backpressure --------------------------------------------------------------


def test_paused_while_the_held_buffer_is_full() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK, max_held=3)
    for h in range(1, 4):
        assert not any(joiner.paused(s) for s in Stream)
        feed_all(joiner, by_block_lines(h))
    assert all(joiner.paused(s) for s in Stream)
    assert heights(joiner.release(1)) == [2, 3]
    assert not any(joiner.paused(s) for s in Stream)


def test_paused_when_one_stream_runs_ahead() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK, max_pending=3)
    joiner.release(0)
    for h in range(1, 5):
        joiner.feed(D, ln(D, h))
        joiner.feed(F, ln(F, h))
    assert joiner.stats().pending == 4
    assert joiner.paused(D)
    assert joiner.paused(F)
    assert not joiner.paused(S)  # the slow stream must keep going
    out = feed_all(joiner, [(S, ln(S, h)) for h in range(1, 5)])
    assert heights(out) == [1, 2, 3, 4]
    assert not any(joiner.paused(s) for s in Stream)


@pytest.mark.parametrize("parts", [False, True])
def test_paused_when_waiting_blocks_hold_too_many_events(parts: bool) -> None:
    # The status file gone while the diffs go on: few blocks, but each holds many
    # decoded events (a mainnet status line is ~0.6 MB decoded). The bound is on events.
    joiner = BlockJoiner(Layout.BY_BLOCK, max_pending_events=10, parts=parts)
    joiner.release(0)
    for h in range(1, 4):
        assert not joiner.paused(D)
        joiner.feed(D, ln(D, h, *range(4)))
        joiner.feed(F, ln(F, h))
    assert joiner.stats().pending == 3  # far below max_pending
    assert joiner.stats().pending_events == 12
    assert joiner.paused(D)
    assert joiner.paused(F)
    assert not joiner.paused(S)  # the stream they wait for must keep going
    out = feed_all(joiner, [(S, ln(S, h, h)) for h in range(1, 4)])
    assert [o.height for o in out if isinstance(o, Block)] == [1, 2, 3]
    assert joiner.stats().pending_events == 0
    assert not any(joiner.paused(s) for s in Stream)


def test_pending_events_forgotten_with_their_blocks() -> None:
    # Blocks dropped by a release or turned into a gap no longer count.
    joiner = BlockJoiner(Layout.BY_BLOCK, max_pending_events=5)
    joiner.feed(D, ln(D, 1, 1, 2, 3))
    joiner.feed(D, ln(D, 2, 4, 5, 6))
    assert joiner.stats().pending_events == 6
    joiner.release(1)
    assert joiner.stats().pending_events == 3
    joiner.feed(S, ln(S, 3))  # block 2 skipped on statuses: a gap
    joiner.feed(F, ln(F, 3))
    assert joiner.stats().pending_events == 0


def test_stats() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, [*by_block_lines(1), (D, ln(D, 2))])
    stats = joiner.stats()
    assert (stats.held, stats.pending, stats.emitted) == (1, 1, 1)
    assert stats.watermarks == {"order_statuses": 1, "raw_book_diffs": 2, "fills": 1}


# -- quiet is about the file, not about feeding order --------------------------------


def test_a_reader_draining_one_backlog_first_does_not_make_others_quiet() -> None:
    """A stalled reader catches up stream by stream: no block completes without its diffs."""
    joiner = BlockJoiner(Layout.STREAMING, (S, D), quiet_after=0.3)
    for height, now in ((11, 0.0), (12, 0.1)):
        feed_all(joiner, [(D, ln(D, height, height)), (S, ln(S, height, height))], now=now)
    joiner.release(11)
    # Statuses for 13 and 14 arrive long after the last diff line was fed...
    out = feed_all(joiner, [(S, ln(S, 13, 13)), (S, ln(S, 14, 14))], now=1.1)
    out += joiner.poll(1.2)
    # ...but the diff reader never said it had read everything: nothing completes.
    assert out == []
    out = feed_all(joiner, [(D, ln(D, 13, 13)), (D, ln(D, 14, 14))], now=1.2)
    assert heights(out) == [12, 13]
    assert tags(out[1]) == ([13], [13], [])
    assert joiner.stats().gaps == 0


def test_declared_start_makes_the_first_streaming_block_complete() -> None:
    joiner = BlockJoiner(Layout.STREAMING)
    # Each reader began right after a line of block 100 (or, for fills, block 97).
    joiner.start_after(S, 100)
    joiner.start_after(D, 100)
    joiner.start_after(F, 97)
    feed_all(joiner, [(D, ln(D, 101, 1)), (S, ln(S, 101, 2)), (D, ln(D, 102, 3)), (S, ln(S, 102))])
    joiner.caught_up(F, 0.0)
    out = joiner.release(100) + joiner.poll(1.0)
    assert heights(out) == [101]  # not dropped as "maybe partial"
    assert tags(out[0]) == ([2], [1], [])


def test_declared_start_in_by_block_layout() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    for stream in Stream:
        joiner.start_after(stream, 49)  # a partial line of block 50 was skipped on every stream
    out = feed_all(joiner, by_block_lines(50)[1:] + by_block_lines(51))
    out += joiner.release(49)
    assert heights(out) == ["gap 49-51", 51]


def test_release_remembers_the_snapshot_blocks_time() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, by_block_lines(7) + by_block_lines(8) + by_block_lines(9))
    out = joiner.release(8)
    assert heights(out) == [9]
    assert joiner.snapshot_time == BASE_MS + 70 * 8
    joiner.hold()
    joiner.release(20)
    assert joiner.snapshot_time is None


# -- unreadable lines -------------------------------------------------------------


def test_a_lost_line_of_known_height_makes_its_block_a_gap() -> None:
    joiner = BlockJoiner(Layout.STREAMING, quiet_after=0.3)
    feed_all(joiner, [(D, ln(D, 100, 1)), (S, ln(S, 100, 2)), (F, ln(F, 100, 3))])
    joiner.release(100)
    out = feed_all(joiner, [(D, ln(D, 101, 4))])
    out += joiner.lost(S, 101)  # the status line of 101 was garbage
    out += feed_all(joiner, [(D, ln(D, 102, 5)), (S, ln(S, 102, 6)), (F, ln(F, 102, 7))])
    out += feed_all(joiner, [(D, ln(D, 103, 8)), (S, ln(S, 103, 9)), (F, ln(F, 103, 10))])
    assert heights(out) == ["gap 100-102", 102]


def test_a_lost_line_of_unknown_height_spans_until_the_streams_next_line() -> None:
    joiner = BlockJoiner(Layout.STREAMING, quiet_after=0.3)
    feed_all(joiner, [(D, ln(D, 100, 1)), (S, ln(S, 100, 2)), (F, ln(F, 100, 3))])
    joiner.release(100)
    out = joiner.lost(S, None)  # garbage after the status line of 100
    out += feed_all(joiner, [(D, ln(D, 101, 4)), (F, ln(F, 101, 5))])
    out += feed_all(joiner, [(D, ln(D, 102, 6)), (S, ln(S, 102, 7)), (F, ln(F, 102, 8))])
    out += feed_all(joiner, [(D, ln(D, 103, 9)), (S, ln(S, 103, 10)), (F, ln(F, 103, 11))])
    # The garbage may have been 101's or 102's status line: neither is handed out.
    assert heights(out) == ["gap 100-102", "gap 101-103"]
    out = feed_all(joiner, [(D, ln(D, 104, 12)), (S, ln(S, 104, 13)), (F, ln(F, 104, 14))])
    assert heights(out) == [103]


@pytest.mark.parametrize("layout", [Layout.BY_BLOCK, Layout.STREAMING])
def test_a_height_far_past_everything_known_is_an_unreadable_line(layout: Layout) -> None:
    # A corrupted block_number (valid JSON, +1e9) must not become a stream's newest
    # height: that held every block up to it back, for good. Nor may a garbage line's
    # height, or every block up to it would be a gap.
    far = 101 + MAX_HEIGHT_JUMP + 1  # past the newest line (101) by more than the bound
    joiner = BlockJoiner(layout, quiet_after=0.3)
    feed_all(joiner, by_block_lines(100))
    joiner.release(100)
    out = feed_all(joiner, by_block_lines(101))
    out += feed_all(joiner, [(D, ln(D, far, 99))])  # believed, it would hold 102 back
    out += joiner.lost(S, far)  # believed, every block up to it would be a gap
    for height in (102, 103, 104, 105, 106):  # streaming: 106's lines complete 105
        out += feed_all(joiner, by_block_lines(height))
    assert joiner.implausible_lines == 2
    assert joiner.stats().implausible_lines == 2
    # Each counts as a line of unknown height: the blocks around it are gaps, and then
    # blocks flow again, whatever the layout.
    assert all(isinstance(item, Gap) for item in out if not isinstance(item, Block))
    assert {104, 105} <= {item.height for item in out if isinstance(item, Block)}
    assert joiner.stats().watermarks[D.value] == 106


def test_a_lost_line_while_holding_needs_a_snapshot_at_or_past_it() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(0)
    assert heights(feed_all(joiner, by_block_lines(1) + by_block_lines(2))) == [1, 2]
    joiner.hold()  # e.g. the pipeline re-bootstraps because of the bad line below
    assert joiner.lost(S, 3) == []
    assert feed_all(joiner, [(D, ln(D, 3, 31)), (F, ln(F, 3, 32))]) == []
    assert feed_all(joiner, by_block_lines(4)) == []
    released = joiner.release(2)
    assert heights(released) == ["gap 2-4", 4]  # too old: 3 lost its status line
    joiner.hold([b for b in released if isinstance(b, Block)])  # as the pipeline does
    assert heights(joiner.release(3)) == [4]
    assert heights(feed_all(joiner, by_block_lines(5))) == [5]


def test_a_stream_that_lost_a_line_is_not_quiet_until_its_next_line() -> None:
    joiner = BlockJoiner(Layout.STREAMING, quiet_after=0.3)
    feed_all(joiner, [(D, ln(D, 100, 1)), (S, ln(S, 100, 2)), (F, ln(F, 100, 3))])
    joiner.release(100)
    joiner.caught_up(D, 0.0)  # the diff reader had read to the end...
    joiner.hold()  # ...then a garbled diff line (block 101's) made the pipeline re-bootstrap
    assert joiner.lost(D, None) == []
    out = feed_all(joiner, [(S, ln(S, 101, 4)), (F, ln(F, 101, 5))], now=0.1)
    out += joiner.caught_up(D, 0.1)
    out += joiner.poll(0.3)  # D would count as quiet by now: 101 must still not complete
    out += joiner.release(100)
    assert out == []
    # D's next line comes within quiet_after of its reader catching up (0.1 + 0.3).
    out = feed_all(joiner, [(D, ln(D, 103, 8)), (S, ln(S, 103, 9)), (F, ln(F, 103, 10))], 0.35)
    out += feed_all(joiner, [(D, ln(D, 104, 11)), (S, ln(S, 104, 12)), (F, ln(F, 104, 13))], 6)
    for stream in (D, S, F):
        out += joiner.caught_up(stream, 6)
    out += joiner.poll(7)
    # 101 (and 103, which the lost line might have belonged to) are gaps; 104 is whole.
    assert heights(out) == ["gap 100-102", "gap 102-104", 104]


def test_a_stream_that_lost_a_line_and_goes_quiet_releases_the_others() -> None:
    """Fills lose a line and then have nothing to say (no trades): after quiet_after
    the possible range is given up as a gap and later blocks flow; no busy polling."""
    joiner = BlockJoiner(Layout.STREAMING, quiet_after=0.3, max_pending=50)
    feed_all(joiner, [(s, ln(s, 100, 1)) for s in (D, S, F)])
    joiner.release(100)
    joiner.lost(F, None)
    out = feed_all(joiner, [(D, ln(D, 101, 2)), (S, ln(S, 101, 3))], 0.0)
    for stream in (D, S, F):
        out += joiner.caught_up(stream, 0.0)
    assert out == []
    assert joiner.next_deadline() == 0.3
    out = joiner.poll(0.3)
    assert heights(out) == ["gap 100-102"]
    assert joiner.next_deadline() is None  # nothing left to wait for: no spinning
    out = []
    for height in range(102, 160):
        out += feed_all(joiner, [(D, ln(D, height, height)), (S, ln(S, height, -height))], 1)
        out += joiner.caught_up(D, 1) + joiner.caught_up(S, 1)
        out += joiner.poll(2)
    assert heights(out) == list(range(102, 160))
    assert not joiner.paused(D)


def test_a_stream_written_to_since_it_caught_up_is_not_quiet() -> None:
    joiner = BlockJoiner(Layout.STREAMING, quiet_after=0.3)
    feed_all(joiner, [(s, ln(s, 100, 1)) for s in (D, S, F)])
    joiner.release(100)
    for stream in (D, S, F):
        joiner.caught_up(stream, 0.0)
    out = feed_all(joiner, [(S, ln(S, 101, 2)), (F, ln(F, 101, 3))], 1.0)
    out += joiner.caught_up(S, 1.0) + joiner.caught_up(F, 1.0)
    joiner.reading(D)  # the caller saw D's file grow; its reader has not delivered yet
    out += joiner.poll(2.0)
    assert out == []
    out = feed_all(joiner, [(D, ln(D, 101, 4))], 2.1) + joiner.caught_up(D, 2.1)
    out += joiner.poll(2.5)
    assert heights(out) == [101]
    assert tags(out[0]) == ([2], [4], [3])


# -- announcing each stream as soon as it is complete (parts=True) -------------------


def split(out: list[Any]) -> tuple[list[Output], list[Part]]:
    """Whole blocks and gaps, and parts, of a parts-mode output."""
    return [o for o in out if not isinstance(o, Part)], [o for o in out if isinstance(o, Part)]


def announced(out: list[Any]) -> list[tuple[str, int]]:
    return [(p.stream.value[:1], p.height) for p in out if isinstance(p, Part)]


def check_parts(out: list[Any]) -> None:
    """Per stream, parts come in height order, before their whole block, at most once,
    with the event list the whole block ends with."""
    seen: dict[Stream, list[int]] = {s: [] for s in Stream}
    parts: dict[tuple[Stream, int], Part] = {}
    for item in out:
        if isinstance(item, Part):
            heights_ = seen[item.stream]
            assert not heights_ or heights_[-1] < item.height, (item.stream, heights_, item)
            heights_.append(item.height)
            parts[(item.stream, item.height)] = item
            events = {S: item.block.statuses, D: item.block.diffs, F: item.block.fills}
            assert events[item.stream] is not None
        elif isinstance(item, Block):
            for stream in Stream:
                part = parts.get((stream, item.height))
                if part is not None:
                    assert part.block is item  # the same block, now whole
    for (stream, height), part in parts.items():
        whole = {S: part.block.statuses, D: part.block.diffs, F: part.block.fills}
        assert whole[stream] is not None, (stream, height)


def by_block_parts_joiner() -> BlockJoiner:
    """Released at 0, with every reader having said it began at the start."""
    joiner = BlockJoiner(Layout.BY_BLOCK, parts=True)
    for stream in Stream:
        joiner.start_after(stream, 0)
    joiner.release(0)
    return joiner


def test_parts_by_block_each_stream_as_its_line_is_read() -> None:
    joiner = by_block_parts_joiner()
    out = joiner.feed(D, ln(D, 1, 11))
    assert announced(out) == [("r", 1)]
    (part,) = out
    assert isinstance(part, Part)
    assert [e.oid for e in part.block.diffs] == [11]
    assert part.block.statuses == []  # not announced yet: not final
    assert announced(joiner.feed(F, ln(F, 1))) == [("f", 1)]
    out = joiner.feed(S, ln(S, 1, 10))
    (block,) = out  # the last stream completes the whole block: no separate part
    assert isinstance(block, Block)
    assert block is part.block
    assert tags(block) == ([10], [11], [])


def test_parts_by_block_diffs_run_ahead_of_statuses() -> None:
    joiner = by_block_parts_joiner()
    out = feed_all(joiner, [(D, ln(D, h, h)) for h in (1, 2, 3)] + [(F, ln(F, 1))])
    assert announced(out) == [("r", 1), ("r", 2), ("r", 3), ("f", 1)]
    out = feed_all(joiner, [(S, ln(S, 1)), (S, ln(S, 2))])
    wholes, parts = split(out)
    assert heights(wholes) == [1]
    assert announced(parts) == [("o", 2)]  # 2 waits for its fills, 3 for more
    assert joiner.stats().pending == 2


def test_parts_statuses_before_diffs() -> None:
    joiner = by_block_parts_joiner()
    out = feed_all(joiner, [(S, ln(S, 1, 10)), (S, ln(S, 2, 20)), (F, ln(F, 1)), (F, ln(F, 2))])
    assert announced(out) == [("o", 1), ("o", 2), ("f", 1), ("f", 2)]
    out = feed_all(joiner, [(D, ln(D, 1, 11)), (D, ln(D, 2, 21))])
    assert heights(out) == [1, 2]


def test_parts_a_skipped_height_stops_that_stream_and_becomes_a_gap() -> None:
    joiner = by_block_parts_joiner()
    out = feed_all(joiner, by_block_lines(1))
    out += feed_all(joiner, [(D, ln(D, 2)), (F, ln(F, 2)), (D, ln(D, 3)), (F, ln(F, 3))])
    out += joiner.feed(S, ln(S, 3))  # statuses skipped 2
    wholes, parts = split(out)
    assert heights(wholes) == [1, "gap 1-3", 3]
    assert announced(parts)[2:] == [("r", 2), ("f", 2), ("r", 3), ("f", 3)]
    check_parts(out)


def test_parts_no_part_for_a_height_missing_everywhere() -> None:
    joiner = by_block_parts_joiner()
    out = feed_all(joiner, [*by_block_lines(1), (D, ln(D, 3))])
    # 2 is missing everywhere: 3's diffs are announced only after the gap.
    assert [announced([o]) or heights([o]) for o in out][2:] == [[1], ["gap 1-3"], [("r", 3)]]
    out = feed_all(joiner, [(S, ln(S, 3)), (F, ln(F, 3))])
    assert heights(split(out)[0]) == [3]


def test_parts_streaming_diffs_complete_when_the_diff_stream_moves_on() -> None:
    joiner = BlockJoiner(Layout.STREAMING, parts=True, quiet_after=0.3)
    feed_all(joiner, [(D, ln(D, 100)), (S, ln(S, 100))])
    joiner.release(100)
    out = feed_all(joiner, [(D, ln(D, 101, 1)), (S, ln(S, 101, 2)), (D, ln(D, 102, 3))], 0.0)
    assert announced(out) == [("r", 101)]
    out = joiner.feed(S, ln(S, 102, 4), 0.0)
    assert announced(out) == [("o", 101)]
    out = joiner.caught_up(F, 0.0) + joiner.poll(0.3)  # fills quiet
    wholes, parts = split(out)
    assert heights(wholes) == [101]
    assert tags(wholes[0]) == ([2], [1], [])
    # Quiet fills are done with 102 only once the diff stream is (as the whole block is).
    assert announced(parts) == []
    out = joiner.feed(D, ln(D, 103, 5), 0.4)
    assert announced(out) == [("r", 102), ("f", 102)]


def test_parts_streaming_a_height_first_seen_after_a_stream_passed_it() -> None:
    joiner = BlockJoiner(Layout.STREAMING, parts=True, quiet_after=0.3)
    feed_all(joiner, [(s, ln(s, 100)) for s in (D, S, F)])
    joiner.release(100)
    out = feed_all(joiner, [(D, ln(D, 102, 1)), (F, ln(F, 102, 2)), (D, ln(D, 103, 3))])
    out += joiner.feed(F, ln(F, 103, 4))
    assert announced(out) == [("r", 102), ("f", 102)]
    # 101 had only statuses: the diff and fill streams are past it, with nothing there.
    out = feed_all(joiner, [(S, ln(S, 101, 5)), (S, ln(S, 102, 6)), (S, ln(S, 103, 7))])
    wholes, parts = split(out)
    assert heights(wholes) == [101, 102]
    assert announced(parts) == []  # 101 had no part of its own on statuses: it went whole
    assert tags(wholes[0]) == ([5], [], [])
    check_parts(out)


def test_parts_streaming_a_late_diff_line_is_a_gap_and_never_announced_again() -> None:
    joiner = BlockJoiner(Layout.STREAMING, parts=True, quiet_after=0.3)
    feed_all(joiner, [(s, ln(s, 100)) for s in (D, S, F)])
    joiner.release(100)
    out = feed_all(joiner, [(D, ln(D, 101, 1)), (D, ln(D, 102, 2))])
    assert announced(out) == [("r", 101)]
    out = joiner.feed(D, ln(D, 101, 9))  # more diffs of 101: its announced diffs were short
    assert heights(out) == ["gap 100-102"]
    joiner.hold()
    out = feed_all(joiner, [(S, ln(S, 101)), (S, ln(S, 102)), (F, ln(F, 101)), (F, ln(F, 102))])
    out += joiner.release(100) + joiner.poll(0.0)
    assert announced(out) == []  # 101 is lost for good...
    out += feed_all(joiner, [(s, ln(s, 103)) for s in (D, S, F)])
    wholes, _parts = split(out)
    assert heights(wholes)[0] == "gap 100-102"  # ...a snapshot at or past it is needed


def test_parts_hold_announces_pending_blocks_again_after_release() -> None:
    joiner = by_block_parts_joiner()
    out = feed_all(joiner, [(D, ln(D, 1, 1)), (D, ln(D, 2, 2))])
    assert announced(out) == [("r", 1), ("r", 2)]
    joiner.hold()  # e.g. a divergence in 2's diffs
    assert feed_all(joiner, [(F, ln(F, 1)), (F, ln(F, 2))]) == []
    out = joiner.release(1) + joiner.poll(0.0)
    assert announced(out) == [("r", 2), ("f", 2)]
    assert heights(feed_all(joiner, [(S, ln(S, 1)), (S, ln(S, 2))])) == [2]


def test_parts_a_lost_line_keeps_its_height_unannounced() -> None:
    joiner = BlockJoiner(Layout.STREAMING, parts=True, quiet_after=0.3)
    feed_all(joiner, [(s, ln(s, 100)) for s in (D, S, F)])
    joiner.release(100)
    out = joiner.lost(S, 101)
    out += feed_all(joiner, [(D, ln(D, 101, 1)), (D, ln(D, 102, 2)), (D, ln(D, 103, 3))])
    assert announced(out) == []  # 101 will be a gap; nothing after it goes first
    out = feed_all(joiner, [(S, ln(S, 102)), (S, ln(S, 103)), (F, ln(F, 102)), (F, ln(F, 103))])
    wholes, parts = split(out)
    assert heights(wholes) == ["gap 100-102", 102]
    assert announced(parts) == [("o", 102), ("r", 102)]  # once 101 is out of the way


@given(st.data(), st.integers(1, 8), st.integers(0, 3))
def test_parts_by_block_same_wholes_as_without(data: st.DataObject, count: int, start: int) -> None:
    per_stream: dict[Stream, list[AnyLine]] = {s: [] for s in Stream}
    for height in range(start + 1, start + count + 1):
        for k, stream in enumerate(Stream):
            n = data.draw(st.integers(0, 2))
            per_stream[stream].append(
                ln(stream, height, *(height * 100 + k * 10 + i for i in range(n)))
            )
    order = data.draw(interleavings(per_stream))
    release_at = data.draw(st.integers(0, len(order)))
    outs = []
    for parts in (False, True):
        joiner = BlockJoiner(Layout.BY_BLOCK, parts=parts)
        out = feed_all(joiner, order[:release_at])
        out += joiner.release(start)
        out += feed_all(joiner, order[release_at:])
        outs.append(out)
    plain, with_parts = outs
    wholes, parts_ = split(with_parts)
    blocks = [b for b in wholes if isinstance(b, Block)]
    plain_blocks = [b for b in plain if isinstance(b, Block)]
    assert (len(blocks), len(plain_blocks)) == (len(wholes), len(plain))  # no gap here
    assert [(b.height, tags(b)) for b in blocks] == [(b.height, tags(b)) for b in plain_blocks]
    check_parts(with_parts)
    # Every stream of every block is announced, as a part or with its whole block.
    for part in parts_:
        assert part.block in wholes


@given(st.data(), streaming_case())
def test_parts_streaming_same_wholes_as_without(
    data: st.DataObject,
    case: tuple[
        dict[Stream, list[AnyLine]], list[tuple[int, tuple[list[int], list[int], list[int]]]]
    ],
) -> None:
    per_stream, expected = case
    order = data.draw(interleavings(per_stream))
    joiner = BlockJoiner(Layout.STREAMING, parts=True)
    out = feed_all(joiner, order)
    for stream in Stream:
        out += joiner.caught_up(stream, 0.0)
    out += joiner.poll(10.0)
    first = per_stream[D][0].block_number
    out += joiner.release(first)
    wholes, _ = split(out)
    assert [(b.height, tags(b)) for b in wholes if isinstance(b, Block)] == expected
    check_parts(out)


def test_release_time_is_the_nearest_block_when_the_snapshots_is_unread() -> None:
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, by_block_lines(7) + by_block_lines(8))
    joiner.release(8)
    assert joiner.release_time == joiner.snapshot_time == BASE_MS + 70 * 8
    # Replaying files that start after the snapshot: the first block read after it.
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, by_block_lines(10) + by_block_lines(11))
    joiner.release(9)
    assert joiner.snapshot_time is None
    assert joiner.release_time == BASE_MS + 70 * 10
    # A live node a little ahead of its files: the last block read before it.
    joiner = BlockJoiner(Layout.BY_BLOCK)
    feed_all(joiner, by_block_lines(3))
    joiner.release(5)
    assert joiner.release_time == BASE_MS + 70 * 3
    assert BlockJoiner(Layout.BY_BLOCK).release(5) == []


def test_release_time_from_the_line_before_reading_began() -> None:
    joiner = BlockJoiner(Layout.STREAMING)
    joiner.start_after(D, 99, BASE_MS + 5)  # the tailer found this line before its start
    assert joiner.release(99) == []
    assert joiner.snapshot_time is None
    assert joiner.release_time == BASE_MS + 5


def test_parts_a_stream_quiet_before_a_block_began_still_gets_quiet_after_for_it() -> None:
    joiner = BlockJoiner(Layout.STREAMING, parts=True, quiet_after=0.3)
    feed_all(joiner, [(s, ln(s, 100)) for s in (D, S, F)])
    joiner.release(100)
    for stream in (D, S, F):
        joiner.caught_up(stream, 0.0)
    # Long after the diff reader caught up, the statuses of 101 arrive first...
    out = joiner.feed(S, ln(S, 101, 1), 5.0) + joiner.feed(S, ln(S, 102, 2), 5.0)
    assert announced(out) == [("o", 101)]
    # ...the other streams were silent before 101 began: they get until 5.3 to speak.
    assert joiner.next_deadline() == pytest.approx(5.3)
    assert joiner.poll(5.29) == []
    out = joiner.feed(D, ln(D, 101, 3), 5.1)
    assert announced(out) == []
    out = joiner.feed(D, ln(D, 102, 4), 5.2)
    assert announced(out) == [("r", 101)]
    part = out[0]
    assert isinstance(part, Part)
    assert [e.oid for e in part.block.diffs] == [3]
    # The fill stream says nothing about 101: complete by quiet, 0.3 s after 101 began.
    assert joiner.next_deadline() == pytest.approx(5.3)
    out = joiner.poll(5.31)
    wholes, _ = split(out)
    assert heights(wholes) == [101]
    assert tags(wholes[0]) == ([1], [3], [])


def test_a_stream_silent_before_a_block_began_does_not_complete_it_at_once() -> None:
    """Whole blocks too: statuses written first and past the block do not complete it
    while the diff stream, quiet until then, may still write its part."""
    joiner = BlockJoiner(Layout.STREAMING, quiet_after=0.3)
    feed_all(joiner, [(s, ln(s, 100)) for s in (D, S, F)])
    joiner.release(100)
    for stream in (D, S, F):
        joiner.caught_up(stream, 0.0)
    out = joiner.feed(S, ln(S, 101, 1), 5.0) + joiner.feed(S, ln(S, 102, 2), 5.0)
    assert out == []
    out = joiner.feed(D, ln(D, 101, 3), 5.1) + joiner.feed(D, ln(D, 102), 5.12)
    out += joiner.feed(F, ln(F, 102, 4), 5.15)
    assert heights(out) == [101]
    assert tags(out[0]) == ([1], [3], [])


def test_late_lines_are_logged_at_most_once_a_minute_naming_what_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hlbook.shell.ingest import _describe_late, _log_late
    from hlbook.throttle import Throttle

    throttle = Throttle(60.0)
    late = _describe_late(LateLine(F, 7, 2))
    _log_late(throttle.occurred(0.0, late, 2), 0.3)
    _log_late(throttle.occurred(1.0, _describe_late(LateLine(S, 8, 1))), 0.3)
    _log_late(throttle.tick(61.0), 0.3)
    first, summary = (r.getMessage() for r in caplog.records)
    assert first == (
        "dropped 2 event(s) read after their block was complete, the latest 2 fills event(s) of"
        " block 7 (its trades and fills were sent and recorded without them): the node paused"
        " between writing its streams for longer than --stream-quiet-after (0.3 s); raise it"
        " if this recurs"
    )
    assert summary.startswith("dropped 1 event(s) in the last 61 s read after their block")
    assert "(its order statuses were sent and recorded without them)" in summary
