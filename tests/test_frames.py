"""Outgoing frames: RFC 6455 framing, fragmentation, permessage-deflate built once per window."""

import random
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hlbook.server.frames import (
    FRAGMENT,
    Deflater,
    Message,
    close_frame,
    compress,
    frames,
    pong_frame,
)


def parse_frames(data: bytes) -> list[tuple[int, bool, bool, bytes]]:
    """``(opcode, fin, rsv1, payload)`` of each unmasked frame in ``data``."""
    out = []
    while data:
        first, second = data[0], data[1]
        assert not second & 0x80  # a server never masks
        size, offset = second & 0x7F, 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        out.append(
            (first & 0x0F, bool(first & 0x80), bool(first & 0x40), data[offset : offset + size])
        )
        data = data[offset + size :]
    return out


def inflate(payload: bytes, window_bits: int = 15) -> bytes:
    return zlib.decompressobj(-window_bits).decompress(payload + b"\x00\x00\xff\xff")


@pytest.mark.parametrize(
    ("size", "header"), [(5, b"\x81\x05"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e")]
)
def test_frames_follow_rfc6455_lengths(size: int, header: bytes) -> None:
    assert frames(b"x" * size) == (header + b"x" * size,)


def test_the_64_bit_length_form() -> None:
    [frame] = frames("é".encode() * 30_000)  # 60,000 bytes: the 16-bit form still
    assert frame[:4] == b"\x81\x7e" + struct.pack("!H", 60_000)


def test_large_messages_are_fragmented_so_a_close_can_follow_any_fragment() -> None:
    payload = bytes(range(256)) * (3 * FRAGMENT // 256 + 10)
    parts = frames(payload)
    assert len(parts) == 4
    parsed = [parse_frames(part)[0] for part in parts]
    assert [p[0] for p in parsed] == [1, 0, 0, 0]  # text, then continuations
    assert [p[1] for p in parsed] == [False, False, False, True]
    assert b"".join(p[3] for p in parsed) == payload


def test_a_message_builds_each_encoding_once() -> None:
    message = Message(b'{"channel":"l2Book","data":' + b'"x"' * 500 + b"}")
    deflater = Deflater(1)
    assert message.plain() is message.plain()
    assert not message.deflated_ready(deflater)
    built = message.deflated(deflater)
    assert message.deflated_ready(deflater)
    assert message.deflated(Deflater(1)) is built  # another client, same window: same bytes
    assert message.deflated(Deflater(1, window_bits=10)) is not built
    [(opcode, fin, rsv1, payload)] = parse_frames(built[0])
    assert (opcode, fin, rsv1) == (1, True, True)
    assert inflate(payload) == message.payload


def test_small_messages_stay_plain() -> None:
    message = Message(b'{"channel":"pong"}')
    assert message.deflated(Deflater(1)) is message.plain()


def test_a_compressed_large_message_sets_rsv1_on_its_first_fragment_only() -> None:
    payload = random.Random(1).randbytes(300_000)  # incompressible: several fragments
    parts = Message(payload).deflated(Deflater(1))
    parsed = [parse_frames(part)[0] for part in parts]
    assert len(parsed) > 1
    assert [p[2] for p in parsed] == [True] + [False] * (len(parsed) - 1)
    assert inflate(b"".join(p[3] for p in parsed)) == payload


@given(
    st.lists(st.binary(max_size=3000), min_size=1, max_size=20),
    st.integers(9, 15),
    st.integers(1, 9),
)
def test_every_compressed_message_inflates_to_itself_with_or_without_context(
    payloads: list[bytes], window_bits: int, level: int
) -> None:
    # Each message is compressed without context: a client that keeps its
    # inflater across messages (context takeover on its side) and one that
    # starts afresh for each must both get the original bytes.
    kept = zlib.decompressobj(-window_bits)
    for payload in payloads:
        data = compress(payload, level, window_bits)
        assert inflate(data, window_bits) == payload
        assert kept.decompress(data + b"\x00\x00\xff\xff") == payload


def test_control_frames() -> None:
    assert parse_frames(pong_frame(b"hi")) == [(0xA, True, False, b"hi")]
    [(opcode, fin, _, payload)] = parse_frames(close_frame(1008, "client too slow: é" * 20))
    assert (opcode, fin) == (8, True)
    assert struct.unpack("!H", payload[:2])[0] == 1008
    assert len(payload) <= 125
    payload[2:].decode()  # cut on a character boundary
