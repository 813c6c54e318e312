"""The relay's decisions without I/O: following a chain of block messages, the publish buffer."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hlbook.relay.chain import ChainFollower, OutBuffer, Outgoing, Verdict


def test_consecutive_heights_are_delivered_and_duplicates_skipped() -> None:
    follower = ChainFollower(height=10, seq=3)
    assert follower.check(4, 11, None) is Verdict.DELIVER
    assert follower.check(5, 11, 10) is Verdict.SKIP  # a second primary's copy
    assert follower.check(6, 9, 8) is Verdict.SKIP  # a late republish of an old height
    assert follower.check(5, 12, 11) is Verdict.SKIP  # a sequence already passed
    assert (follower.height, follower.seq) == (11, 6)
    assert follower.check(7, 12, 11) is Verdict.DELIVER


def test_prev_links_across_empty_blocks_of_the_streaming_layout() -> None:
    follower = ChainFollower(height=10, seq=3)
    assert follower.check(4, 15, 10) is Verdict.DELIVER  # 11-14 were empty
    assert follower.check(5, 20, 17) is Verdict.GAP  # 16-17 went missing
    gap = follower.gap(5, 20, 17)
    assert (gap.after, gap.height, gap.prev, gap.need) == (15, 20, 17, 17)
    assert (follower.height, follower.seq) == (15, 4)  # a gap does not advance


def test_a_gap_without_prev_needs_a_snapshot_at_its_height() -> None:
    follower = ChainFollower(height=10, seq=3)
    assert follower.check(4, 13, None) is Verdict.GAP
    assert follower.gap(4, 13, None).need == 13


def test_resume_after_the_server_lost_acknowledged_messages() -> None:
    follower = ChainFollower(height=100, seq=50)
    assert follower.resume_from(None) == 51
    assert follower.resume_from(80) == 51
    assert follower.resume_from(47) == 48  # the server rewound: its new 48 may be our next height


@given(
    st.lists(st.tuples(st.integers(0, 40), st.one_of(st.none(), st.integers(0, 40))), max_size=60)
)
def test_follower_delivers_a_gapless_increasing_chain(
    messages: list[tuple[int, int | None]],
) -> None:
    """Whatever arrives, delivered heights increase and each links to the one before."""
    follower = ChainFollower(height=0, seq=0)
    delivered = [0]
    for seq, (height, prev) in enumerate(messages, start=1):
        verdict = follower.check(seq, height, prev)
        if verdict is Verdict.DELIVER:
            assert height > delivered[-1]
            assert height == delivered[-1] + 1 or prev == delivered[-1]
            delivered.append(height)
        elif verdict is Verdict.SKIP:
            assert height <= delivered[-1]
        else:
            assert height > delivered[-1] + 1
            assert prev != delivered[-1]
        assert follower.height == delivered[-1]


def _item(index: int, size: int) -> Outgoing:
    return Outgoing(index, 100 + index, 99 + index, b"x" * size)


def test_out_buffer_bounds_count_and_bytes_and_counts_gaps() -> None:
    buffer = OutBuffer(max_blocks=3, max_bytes=100)
    assert buffer.push(_item(0, 40))
    assert buffer.push(_item(1, 40))
    assert not buffer.push(_item(2, 40))  # over the bytes
    assert not buffer.push(_item(3, 30))  # still over: the same gap
    assert (buffer.dropped, buffer.gaps, buffer.dropping) == (2, 1, True)
    assert buffer.push(_item(4, 10))  # fits: the gap closes
    assert not buffer.dropping
    assert not buffer.push(_item(5, 1))  # over the count: a second gap
    assert (buffer.dropped, buffer.gaps) == (3, 2)
    assert buffer.pop().index == 0
    assert (len(buffer), buffer.bytes) == (2, 50)


def test_one_block_always_fits_an_empty_buffer() -> None:
    buffer = OutBuffer(max_blocks=2, max_bytes=10)
    assert buffer.push(_item(0, 50))
    assert not buffer.push(_item(1, 1))
    with pytest.raises(ValueError, match="at least one block"):
        OutBuffer(max_blocks=0, max_bytes=10)


@given(st.lists(st.one_of(st.integers(1, 60), st.none()), max_size=80))
def test_out_buffer_never_exceeds_its_bounds(ops: list[int | None]) -> None:
    buffer = OutBuffer(max_blocks=4, max_bytes=100)
    accepted = dropped = 0
    for index, op in enumerate(ops):
        if op is None:
            if len(buffer):
                buffer.pop()
        elif buffer.push(_item(index, op)):
            accepted += 1
        else:
            dropped += 1
        assert len(buffer) <= 4
        assert buffer.bytes <= 100 or len(buffer) == 1
    assert buffer.dropped == dropped
    assert buffer.gaps <= dropped
