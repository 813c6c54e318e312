"""The relay wire format: blocks and snapshots round-trip exactly; bad frames are refused."""

import struct
import zlib
from typing import Any

import orjson
import pytest
from fixtures import USER, MainnetSlice, block, fill, new, remove, status, update
from hypothesis import given
from hypothesis import strategies as st
from nats_support import mainnet_blocks, same_block, small_block

from hlbook.errors import NodeFormatError, SnapshotError
from hlbook.model import Block
from hlbook.relay.codec import (
    Codec,
    FrameError,
    FrameKind,
    decode_block,
    decode_diffs,
    decode_snapshot_frame,
    encode_block,
    encode_diffs,
    encode_snapshot_frame,
    frame_kind,
    frame_prev,
)

CODECS = list(Codec)

# -- strategies: node events as the node writes them ------------------------------------

coins = st.sampled_from(["BTC", "ETH", "@107", "PURR/USDC", "xyz:TSLA", "kPEPE"])
numbers = st.builds(
    lambda whole, frac: f"{whole}.{frac}" if frac is not None else str(whole),
    st.integers(0, 10**9),
    st.one_of(st.none(), st.integers(0, 99999999).map(str)),
)
sides = st.sampled_from(["A", "B", "Ask", "Bid"])
oids = st.integers(1, 2**53)
texts = st.text(max_size=12)  # quotes, backslashes, newlines, non-ASCII: JSON escapes them
users = st.sampled_from([USER, "0x" + "ab" * 20])


@st.composite
def status_events(draw: st.DrawFn) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["cloid"] = "0x" + draw(st.binary(min_size=16, max_size=16)).hex()
    if draw(st.booleans()):
        extra["tif"] = draw(st.sampled_from(["Alo", "Gtc", "Ioc", None]))
    if draw(st.booleans()):
        extra["isTrigger"] = True
        extra["triggerPx"] = draw(numbers)
        extra["triggerCondition"] = draw(texts)
    event = status(
        draw(oids),
        draw(st.sampled_from(["open", "filled", "canceled", "triggered", "badAloPxRejected"])),
        user=draw(users),
        time_ms=draw(st.integers(0, 2**41)),
        coin=draw(coins),
        side=draw(sides),
        px=draw(numbers),
        sz=draw(numbers),
        **extra,
    )
    if draw(st.booleans()):
        event["hash"] = "0x" + draw(st.binary(min_size=32, max_size=32)).hex()
    if draw(st.booleans()):
        event["builder"] = {"b": draw(users), "f": draw(st.integers(0, 100))}
    return event


@st.composite
def diff_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["new", "update", "remove"]))
    side = draw(st.one_of(st.none(), sides))
    common: dict[str, Any] = {"coin": draw(coins), "side": side, "px": draw(numbers)}
    common["user"] = draw(users)
    if kind == "new":
        before = draw(st.one_of(st.none(), oids))
        return new(draw(oids), sz=draw(numbers), before=before, **common)
    if kind == "update":
        return update(draw(oids), draw(numbers), draw(numbers), **common)
    return remove(draw(oids), **common)


@st.composite
def fill_events(draw: st.DrawFn) -> list[Any]:
    extra: dict[str, Any] = {"dir": draw(texts)}
    if draw(st.booleans()):
        extra["cloid"] = "0x" + draw(st.binary(min_size=16, max_size=16)).hex()
    if draw(st.booleans()):
        extra["liquidation"] = {"liquidatedUser": draw(users), "markPx": draw(numbers)}
    if draw(st.booleans()):
        extra["builderFee"] = draw(numbers)
    if draw(st.booleans()):
        extra["twapId"] = draw(st.one_of(st.none(), st.integers(0, 2**40)))
    return fill(
        draw(users),
        draw(st.integers(0, 2**60)),
        side=draw(sides),
        crossed=draw(st.booleans()),
        coin=draw(coins),
        px=draw(numbers),
        sz=draw(numbers),
        oid=draw(oids),
        **extra,
    )


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    height = draw(st.integers(1, 2**40))
    built = block(
        height,
        statuses=draw(st.lists(status_events(), max_size=6)),
        diffs=draw(st.lists(diff_events(), max_size=6)),
        fills=draw(st.lists(fill_events(), max_size=6)),
    )
    built.time = draw(st.integers(0, 2**42))
    return built


# -- round trips ------------------------------------------------------------------------


@given(blocks(), st.one_of(st.none(), st.integers(1, 2**40)), st.sampled_from(CODECS))
def test_any_block_round_trips_exactly(original: Block, prev: int | None, codec: Codec) -> None:
    frame = decode_block(encode_block(original, prev=prev, codec=codec))
    assert same_block(frame.block, original)
    assert frame.prev == prev
    assert frame_prev(encode_block(original, prev=prev, codec=codec)) == prev


@pytest.mark.parametrize("codec", CODECS)
def test_mainnet_blocks_round_trip_exactly(codec: Codec) -> None:
    for original in mainnet_blocks():
        frame = decode_block(encode_block(original, prev=original.height - 1, codec=codec))
        assert same_block(frame.block, original)
        assert frame.prev == original.height - 1


def test_mainnet_frames_are_much_smaller_than_the_node_files(mainnet: MainnetSlice) -> None:
    node_bytes = sum(len(line) + 1 for lines in mainnet.lines.values() for line in lines)
    frames = sum(len(encode_block(b)) for b in mainnet_blocks())
    # zstd level 1 measured ~25x on this slice (benchmarks/relay_codec.py): 10x is a floor.
    assert frames * 10 < node_bytes


@pytest.mark.parametrize("codec", CODECS)
def test_early_diffs_carry_a_blocks_diffs_alone(codec: Codec) -> None:
    for original in mainnet_blocks():
        data = encode_diffs(original, prev=original.height - 1, codec=codec)
        assert frame_kind(data) is FrameKind.DIFFS
        assert frame_prev(data) == original.height - 1
        frame = decode_diffs(data)
        expected = Block(original.height, original.time, [], original.diffs, [])
        assert same_block(frame.block, expected)
        assert frame.prev == original.height - 1
        # A block's early diffs are much smaller than the block.
        assert len(data) < len(encode_block(original, codec=codec))


def test_a_diffs_frame_is_no_block_and_a_block_no_diffs_frame() -> None:
    item = small_block(5)
    assert frame_kind(encode_block(item)) is FrameKind.BLOCK
    with pytest.raises(FrameError, match="not a relay block frame"):
        decode_block(encode_diffs(item))
    with pytest.raises(FrameError, match="not a relay diffs frame"):
        decode_diffs(encode_block(item))
    with pytest.raises(FrameError, match="not a relay frame"):
        frame_kind(b"XX" + encode_block(item)[2:])
    with pytest.raises(FrameError, match="no prev"):
        frame_prev(encode_snapshot_frame(3, b"[3,[]]"))
    with pytest.raises(FrameError, match="diffs body"):
        decode_diffs(_frame(b"HD", 1, Codec.NONE, 0, b'{"block_number": "x"}'))
    good = encode_diffs(item)
    with pytest.raises(FrameError, match="corrupt"):
        decode_diffs(good[:12] + bytes(b ^ 0x5A for b in good[12:]))


def test_an_empty_block_round_trips() -> None:
    empty = Block(7, 1_700_000_000_123)
    assert same_block(decode_block(encode_block(empty)).block, empty)


@pytest.mark.parametrize("codec", CODECS)
def test_snapshot_round_trips(mainnet: MainnetSlice, codec: Codec) -> None:
    frame = encode_snapshot_frame(mainnet.height, mainnet.snapshot, codec=codec)
    decoded = decode_snapshot_frame(frame)
    assert decoded.height == mainnet.height
    assert decoded.data == mainnet.snapshot
    if codec is not Codec.NONE:
        assert len(frame) * 4 < len(mainnet.snapshot)


# -- bad input ---------------------------------------------------------------------------


def _frame(magic: bytes, version: int, codec: int, value: int, body: bytes) -> bytes:
    return struct.pack(">2sBBQ", magic, version, codec, value) + body


def test_bad_headers_are_refused() -> None:
    good = encode_block(small_block(5), prev=4)
    with pytest.raises(FrameError, match="shorter than its header"):
        decode_block(good[:5])
    with pytest.raises(FrameError, match="not a relay block frame"):
        decode_block(b"XX" + good[2:])
    with pytest.raises(FrameError, match="not a relay block frame"):
        decode_block(encode_snapshot_frame(3, b"[3,[]]"))
    with pytest.raises(FrameError, match="version 2"):
        decode_block(good[:2] + b"\x02" + good[3:])
    with pytest.raises(FrameError, match="unknown codec 9"):
        decode_block(good[:3] + b"\x09" + good[4:])


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.ZLIB])
def test_corrupt_bodies_are_refused(codec: Codec) -> None:
    good = encode_block(small_block(5), codec=codec)
    with pytest.raises(FrameError, match=r"truncated|corrupt"):
        decode_block(good[:-8])
    with pytest.raises(FrameError, match=r"trailing|corrupt"):
        decode_block(good + b"junk")
    with pytest.raises(FrameError, match="corrupt"):
        decode_block(good[:12] + bytes(b ^ 0x5A for b in good[12:]))


@pytest.mark.parametrize("codec", CODECS)
def test_decompression_is_bounded(codec: Codec) -> None:
    frame = encode_block(small_block(5), codec=codec)
    with pytest.raises(FrameError, match="larger than the limit"):
        decode_block(frame, limit=100)
    bomb = _frame(b"HB", 1, Codec.ZLIB, 0, zlib.compress(b"\n" * 10_000_000))
    with pytest.raises(FrameError, match="larger than the limit"):
        decode_block(bomb, limit=1_000_000)


def _body_frame(lines: list[bytes]) -> bytes:
    return _frame(b"HB", 1, Codec.NONE, 0, b"\n".join(lines))


def _line(height: int, events: list[Any]) -> bytes:
    return orjson.dumps(
        {"block_time": "2026-05-05T17:39:13.024", "block_number": height, "events": events}
    )


def test_bodies_that_are_not_one_block_are_refused() -> None:
    with pytest.raises(FrameError, match="2 lines, expected 3"):
        decode_block(_body_frame([_line(1, []), _line(1, [])]))
    with pytest.raises(FrameError, match="mixes heights"):
        decode_block(_body_frame([_line(1, []), _line(2, []), _line(1, [])]))
    bad_diff = {"user": USER, "oid": 1, "coin": "BTC", "px": "1.0", "raw_book_diff": {"x": 1}}
    with pytest.raises(FrameError, match="raw_book_diffs") as caught:
        decode_block(_body_frame([_line(1, []), _line(1, [bad_diff]), _line(1, [])]))
    assert isinstance(caught.value.__cause__, NodeFormatError)


def test_snapshot_frames_check_their_height(mainnet: MainnetSlice) -> None:
    with pytest.raises(SnapshotError, match="height 5"):
        encode_snapshot_frame(5, mainnet.snapshot)
    lying = _frame(b"HS", 1, Codec.NONE, 5, b"[6,[]]")
    with pytest.raises(FrameError, match="height 5"):
        decode_snapshot_frame(lying)
    with pytest.raises(FrameError, match="not a relay snapshot frame"):
        decode_snapshot_frame(encode_block(small_block(5)))
    spaced = decode_snapshot_frame(_frame(b"HS", 1, Codec.NONE, 6, b" [ 6 , []]"))
    assert spaced.height == 6
