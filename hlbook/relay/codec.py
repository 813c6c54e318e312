"""The relay wire format: one block, or one book snapshot, as compact compressed bytes.

No Trio and no NATS here: bytes in, values out.

A **frame** is a 12-byte header and a compressed body::

    offset size
         0    2  magic: b"HB" (a block), b"HD" (a block's diffs, sent early)
                 or b"HS" (a snapshot)
         2    1  format version: 1
         3    1  codec of the body: 1 zstd, 2 zlib, 0 none
         4    8  big-endian unsigned: a block's (or diffs') ``prev`` height
                 (0 = unknown), a snapshot's height
        12    …  the compressed body

A block's body is the node's own by-block lines for that height, statuses,
diffs and fills in that order, joined by ``\\n`` (compact JSON never contains a
raw newline): exactly what ``decode_line`` reads, so a relay decodes and
validates a block with the same code as a primary reads the node's files, and
the decoded events equal the originals. ``block_time`` is written with
millisecond precision from :attr:`Block.time`; ``local_time`` is left empty
(the node's wall clock is not part of a block).

A **diffs frame** carries one block's diff line alone: the publisher sends it
as soon as the block's diffs are applied, before the block's statuses (5–10x
larger, and often later) are even read, so a relay can publish ``l2Book`` and
``bbo`` without waiting for them. The whole block follows as usual and is
self-sufficient: a relay that missed or skipped the early diffs loses nothing.
Its ``prev`` is the height of the diffs frame offered before it.

``prev`` chains the blocks a publisher offered: the height of the block offered
before this one (or of the books the publisher started from). In the node's
streaming layout heights skip empty blocks, so "height == last + 1" cannot tell
a gap from an empty block; "prev == last" can.

A snapshot's body is the node's ``fileSnapshot`` output with the height
(``[height, [[coin, [bids, asks]], …]]``); the header repeats the height so a
reader can check it without parsing 100+ MB.

Compression: zstd level 1 by default (``benchmarks/relay_codec.py`` measured it
against zlib 1–9 and lzma: on the mainnet slice ~25x smaller than the node's
files at ~0.4 ms per block, where zlib 6 is ~17x at ~3.8 ms). zstd comes from
the standard library's ``compression.zstd`` on Python 3.14+ and from its
backport ``backports.zstd`` before. Decompression is bounded
(:data:`MAX_BLOCK_BYTES`, :data:`MAX_SNAPSHOT_BYTES`), so a hostile frame cannot
exhaust memory.
"""

import enum
import re
import struct
import sys
import zlib
from datetime import UTC, datetime

import attrs

from hlbook.errors import HlbookError, NodeFormatError, SnapshotError
from hlbook.model import Block
from hlbook.node.formats import (
    DiffLine,
    FillLine,
    StatusLine,
    Stream,
    decode_line,
    encode,
    time_ms,
)

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = [
    "DEFAULT_LEVELS",
    "MAX_BLOCK_BYTES",
    "MAX_SNAPSHOT_BYTES",
    "BlockFrame",
    "Codec",
    "FrameError",
    "FrameKind",
    "SnapshotFrame",
    "decode_block",
    "decode_diffs",
    "decode_snapshot_frame",
    "encode_block",
    "encode_diffs",
    "encode_snapshot_frame",
    "frame_kind",
    "frame_prev",
]

MAX_BLOCK_BYTES = 64 * 1024 * 1024
"""Largest decompressed block body accepted (mainnet blocks are ~0.4 MB)."""

MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024 * 1024
"""Largest decompressed snapshot accepted (a mainnet snapshot is ~150 MB)."""

_HEADER = struct.Struct(">2sBBQ")
_BLOCK_MAGIC = b"HB"
_DIFFS_MAGIC = b"HD"
_SNAPSHOT_MAGIC = b"HS"
_VERSION = 1
_STREAM_ORDER = (Stream.STATUSES, Stream.DIFFS, Stream.FILLS)


class FrameError(HlbookError):
    """Bytes that are not a valid relay frame (wrong magic, version, codec, or body).

    Bad input: the frame is refused whole, nothing of it is applied.
    """


class Codec(enum.IntEnum):
    """How a frame's body is compressed (the header's codec byte)."""

    NONE = 0
    ZSTD = 1
    ZLIB = 2


class FrameKind(enum.Enum):
    """What a message's frame holds (its magic)."""

    BLOCK = _BLOCK_MAGIC
    DIFFS = _DIFFS_MAGIC
    SNAPSHOT = _SNAPSHOT_MAGIC


DEFAULT_LEVELS = {Codec.NONE: 0, Codec.ZSTD: 1, Codec.ZLIB: 6}


@attrs.frozen
class BlockFrame:
    """A decoded block frame: the block and the publisher's ``prev`` (``None`` = unknown)."""

    block: Block
    prev: int | None


@attrs.frozen
class SnapshotFrame:
    """A decoded snapshot frame: its height and the ``fileSnapshot`` bytes (with height)."""

    height: int
    data: bytes


def _compress(body: bytes, codec: Codec, level: int | None) -> bytes:
    level = DEFAULT_LEVELS[codec] if level is None else level
    if codec is Codec.ZSTD:
        return zstd.compress(body, level=level)
    if codec is Codec.ZLIB:
        return zlib.compress(body, level)
    return body


def _decompress(data: bytes, codec: int, limit: int) -> bytes:
    try:
        if codec == Codec.ZSTD:
            zd = zstd.ZstdDecompressor()
            out = zd.decompress(data, max_length=limit)
            if not zd.eof:
                more = "larger than the limit" if len(out) >= limit else "truncated"
                raise FrameError(f"zstd body {more} ({limit} bytes)")
            if zd.unused_data:
                raise FrameError("trailing bytes after the zstd body")
            return out
        if codec == Codec.ZLIB:
            zo = zlib.decompressobj()
            out = zo.decompress(data, limit)
            if not zo.eof:
                more = "larger than the limit" if zo.unconsumed_tail else "truncated"
                raise FrameError(f"zlib body {more} ({limit} bytes)")
            if zo.unused_data:
                raise FrameError("trailing bytes after the zlib body")
            return out
    except (zstd.ZstdError, zlib.error) as exc:
        raise FrameError(f"corrupt body: {exc}") from None
    if codec == Codec.NONE:
        if len(data) > limit:
            raise FrameError(f"body larger than the limit ({limit} bytes)")
        return data
    raise FrameError(f"unknown codec {codec}")


def _header(data: bytes, magic: bytes) -> tuple[int, int]:
    if len(data) < _HEADER.size:
        raise FrameError(f"frame of {len(data)} bytes is shorter than its header")
    found, version, codec, value = _HEADER.unpack_from(data)
    if found != magic:
        raise FrameError(f"not a relay {FrameKind(magic).name.lower()} frame")
    if version != _VERSION:
        raise FrameError(f"frame format version {version} (this hlbook reads {_VERSION})")
    return codec, value


def _node_time(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}"


def encode_block(
    block: Block, *, prev: int | None = None, codec: Codec = Codec.ZSTD, level: int | None = None
) -> bytes:
    """One block as a frame (see the module docstring). ``prev`` ``None`` is written as 0."""
    when = _node_time(block.time)
    body = b"\n".join(
        (
            encode(StatusLine(block_time=when, block_number=block.height, events=block.statuses)),
            encode(DiffLine(block_time=when, block_number=block.height, events=block.diffs)),
            encode(FillLine(block_time=when, block_number=block.height, events=block.fills)),
        )
    )
    header = _HEADER.pack(_BLOCK_MAGIC, _VERSION, codec, prev or 0)
    return header + _compress(body, codec, level)


def encode_diffs(
    block: Block, *, prev: int | None = None, codec: Codec = Codec.ZSTD, level: int | None = None
) -> bytes:
    """A block's diffs alone as a diffs frame (see the module docstring)."""
    line = DiffLine(
        block_time=_node_time(block.time), block_number=block.height, events=block.diffs
    )
    header = _HEADER.pack(_DIFFS_MAGIC, _VERSION, codec, prev or 0)
    return header + _compress(encode(line), codec, level)


def frame_kind(data: bytes) -> FrameKind:
    """What ``data`` is, from its magic alone. Raises :class:`FrameError` for neither."""
    try:
        return FrameKind(data[:2])
    except ValueError:
        raise FrameError(f"not a relay frame (magic {data[:2]!r})") from None


def frame_prev(data: bytes) -> int | None:
    """A block or diffs frame's ``prev`` from its header alone (no decompression)."""
    kind = frame_kind(data)
    if kind is FrameKind.SNAPSHOT:
        raise FrameError("a snapshot frame has no prev")
    _codec, prev = _header(data, kind.value)
    return prev or None


def decode_block(data: bytes, *, limit: int = MAX_BLOCK_BYTES) -> BlockFrame:
    """Decode and validate a block frame.

    Raises :class:`FrameError` for a bad frame, including events that
    ``decode_line`` refuses (the :class:`NodeFormatError` is its cause).
    """
    codec, prev = _header(data, _BLOCK_MAGIC)
    body = _decompress(data[_HEADER.size :], codec, limit)
    parts = body.split(b"\n")
    if len(parts) != len(_STREAM_ORDER):
        raise FrameError(f"block body has {len(parts)} lines, expected {len(_STREAM_ORDER)}")
    try:
        lines = [
            decode_line(stream, part) for stream, part in zip(_STREAM_ORDER, parts, strict=True)
        ]
    except NodeFormatError as exc:
        raise FrameError(f"block body: {exc}") from exc
    statuses, diffs, fills = lines
    assert isinstance(statuses, StatusLine)
    assert isinstance(diffs, DiffLine)
    assert isinstance(fills, FillLine)
    height = statuses.block_number
    if diffs.block_number != height or fills.block_number != height:
        raise FrameError(
            f"block body mixes heights {height}, {diffs.block_number}, {fills.block_number}"
        )
    block = Block(height, time_ms(statuses.block_time), statuses.events, diffs.events, fills.events)
    return BlockFrame(block, prev or None)


def decode_diffs(data: bytes, *, limit: int = MAX_BLOCK_BYTES) -> BlockFrame:
    """Decode and validate a diffs frame: a block whose only final events are its diffs.

    Raises :class:`FrameError` for a bad frame.
    """
    codec, prev = _header(data, _DIFFS_MAGIC)
    body = _decompress(data[_HEADER.size :], codec, limit)
    try:
        line = decode_line(Stream.DIFFS, body)
    except NodeFormatError as exc:
        raise FrameError(f"diffs body: {exc}") from exc
    assert isinstance(line, DiffLine)
    block = Block(line.block_number, time_ms(line.block_time), [], line.events, [])
    return BlockFrame(block, prev or None)


def encode_snapshot_frame(
    height: int, data: bytes, *, codec: Codec = Codec.ZSTD, level: int | None = None
) -> bytes:
    """A ``fileSnapshot`` output with its height as a frame (CPU-heavy: use a thread).

    Raises :class:`SnapshotError` if ``data`` does not start with ``[height,``.
    """
    _check_snapshot_height(data, height)
    return _HEADER.pack(_SNAPSHOT_MAGIC, _VERSION, codec, height) + _compress(data, codec, level)


def decode_snapshot_frame(data: bytes, *, limit: int = MAX_SNAPSHOT_BYTES) -> SnapshotFrame:
    """Decompress a snapshot frame (CPU-heavy: use a thread). Raises :class:`FrameError`."""
    codec, height = _header(data, _SNAPSHOT_MAGIC)
    body = _decompress(data[_HEADER.size :], codec, limit)
    try:
        _check_snapshot_height(body, height)
    except SnapshotError as exc:
        raise FrameError(str(exc)) from None
    return SnapshotFrame(height, body)


_SNAPSHOT_HEIGHT = re.compile(rb"\s*\[\s*([0-9]+)\s*,")


def _check_snapshot_height(data: bytes, height: int) -> None:
    found = _SNAPSHOT_HEIGHT.match(data[:64])
    if found is None or int(found.group(1)) != height:
        raise SnapshotError(f"snapshot bytes do not start with its height {height}: {data[:30]!r}")
