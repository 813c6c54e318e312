"""WebSocket text frames built once per message and shared by every subscriber.

trio-websocket frames and UTF-8-encodes each ``send_message`` call on its
own, once per client, and writes each frame with its own ``send_all``. For a
message offered to hundreds of subscribers that is the dominant cost. A
server's frames are not masked (RFC 6455 §5.1), so one message's frame is the
same bytes for everyone: :class:`Text` carries it, built on first use, and a
client's writer sends everything it has queued in one write.
"""

import struct
from typing import Any

__all__ = ["Text", "frame_of", "text_frame"]

_TEXT_FIN = 0x81  # FIN bit + opcode 1 (text)


def text_frame(text: str) -> bytes:
    """One complete, unmasked WebSocket text frame carrying ``text``."""
    data = text.encode()
    size = len(data)
    if size < 126:
        header = bytes((_TEXT_FIN, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _TEXT_FIN, 126, size)
    else:
        header = struct.pack("!BBQ", _TEXT_FIN, 127, size)
    return header + data


class Text(str):
    """A message's text that remembers its frame (a ``str`` everywhere else)."""

    _frame: bytes | None = None

    def frame(self) -> bytes:
        """The frame, built once for all subscribers."""
        frame = self._frame
        if frame is None:
            frame = self._frame = text_frame(self)
        return frame


def frame_of(payload: Any) -> bytes:
    """The frame of a queued payload: shared for :class:`Text`, built for a plain ``str``."""
    if isinstance(payload, Text):
        return payload.frame()
    return text_frame(payload)
