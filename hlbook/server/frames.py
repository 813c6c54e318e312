"""Outgoing WebSocket messages as bytes, framed once per encoding and shared by every client.

A server's frames are not masked (RFC 6455 §5.1), so one message's frame is
the same bytes for every subscriber. A :class:`Message` holds the UTF-8 JSON
payload built once per (channel, coin, parameters) and, on first use, its
frames: plain, and compressed once per negotiated window size
(permessage-deflate with ``server_no_context_takeover``, RFC 7692 — each
message is compressed on its own, so the same compressed bytes are valid
for every client that negotiated the same window). Nothing is serialised,
compressed or framed per client.

Large messages are split into fragments of at most :data:`FRAGMENT` payload
bytes: a close frame may be sent between fragments (RFC 6455 §5.4), so a
slow client being disconnected gets its close code after at most one
fragment rather than after the rest of a multi-megabyte ``l4Book`` snapshot.
"""

import struct
import zlib

__all__ = [
    "FRAGMENT",
    "Deflater",
    "Frames",
    "Message",
    "close_frame",
    "compress",
    "control_frame",
    "frames",
]

FRAGMENT = 64 * 1024
"""Payload bytes per frame; larger messages are fragmented."""

Frames = tuple[bytes, ...]
"""A message's frames, in order (one for all but large messages)."""

_TEXT = 0x1
_CONTINUATION = 0x0
_CLOSE = 0x8
_PONG = 0xA
_FIN = 0x80
_RSV1 = 0x40


def _header(first: int, size: int) -> bytes:
    if size < 126:
        return bytes((first, size))
    if size < 1 << 16:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def frames(payload: bytes, *, compressed: bool = False) -> Frames:
    """The text frames carrying ``payload`` (RSV1 set on the first when ``compressed``)."""
    rsv = _RSV1 if compressed else 0
    if len(payload) <= FRAGMENT:
        return (_header(_FIN | rsv | _TEXT, len(payload)) + payload,)
    view = memoryview(payload)
    out = []
    for start in range(0, len(payload), FRAGMENT):
        chunk = view[start : start + FRAGMENT]
        last = start + FRAGMENT >= len(payload)
        opcode = (rsv | _TEXT) if start == 0 else _CONTINUATION
        out.append(_header((_FIN if last else 0) | opcode, len(chunk)) + chunk)
    return tuple(out)


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked control frame (payload at most 125 bytes)."""
    return _header(_FIN | opcode, len(payload)) + payload[:125]


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to fit, on a character boundary)."""
    data = reason.encode()[:123]
    data = data.decode("utf-8", "ignore").encode()
    return control_frame(_CLOSE, struct.pack("!H", code) + data)


def pong_frame(payload: bytes) -> bytes:
    """The answer to a ping frame."""
    return control_frame(_PONG, payload)


def compress(payload: bytes, level: int, window_bits: int) -> bytes:
    """``payload`` deflated as one permessage-deflate message without context (RFC 7692 §7.2.1)."""
    deflater = zlib.compressobj(level, zlib.DEFLATED, -window_bits)
    data = deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH)
    # The sync flush ends with an empty stored block, 00 00 ff ff, which the receiver adds back.
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


class Deflater:
    """A client's negotiated compression: window size, level, and the size worth compressing."""

    __slots__ = ("level", "threshold", "window_bits")

    def __init__(self, level: int, window_bits: int = 15, threshold: int = 256) -> None:
        if not 1 <= level <= 9:
            raise ValueError("compression level must be 1..9")
        if not 9 <= window_bits <= 15:
            raise ValueError("window bits must be 9..15")
        self.level = level
        self.window_bits = window_bits
        self.threshold = threshold

    def __repr__(self) -> str:
        return f"Deflater(level={self.level}, window_bits={self.window_bits})"


class Message:
    """One outgoing message: its payload and the frames built from it, once each.

    ``shared`` is how many clients it was offered to (set by the fan-out): a
    message for a single client is compressed at that client's cost (see
    :class:`~hlbook.shell.writer.Writer`), a shared one is compressed once.
    """

    __slots__ = ("_deflated", "_plain", "payload", "shared")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.shared = 1
        self._plain: Frames | None = None
        self._deflated: dict[int, Frames] | None = None

    def __len__(self) -> int:
        return len(self.payload)

    def __repr__(self) -> str:
        text = self.payload[:60].decode("utf-8", "replace")
        return f"Message({text!r}{'…' if len(self.payload) > 60 else ''})"

    def plain(self) -> Frames:
        """The uncompressed frames."""
        built = self._plain
        if built is None:
            built = self._plain = frames(self.payload)
        return built

    def deflated_ready(self, deflater: Deflater) -> bool:
        """True if the compressed frames for ``deflater`` exist already (they cost nothing)."""
        return self._deflated is not None and deflater.window_bits in self._deflated

    def deflated(self, deflater: Deflater) -> Frames:
        """The compressed frames for ``deflater``'s window (plain if the message is small)."""
        if len(self.payload) < deflater.threshold:
            return self.plain()
        cache = self._deflated
        if cache is None:
            cache = self._deflated = {}
        built = cache.get(deflater.window_bits)
        if built is None:
            data = compress(self.payload, deflater.level, deflater.window_bits)
            built = cache[deflater.window_bits] = frames(data, compressed=True)
        return built
