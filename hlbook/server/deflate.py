"""permessage-deflate (RFC 7692) for hlbook's server connections, as a wsproto extension.

Negotiation: the first acceptable offer wins. hlbook always answers with
``server_no_context_takeover`` — every outgoing message is compressed on its
own, once, and the same bytes go to every client (see
:mod:`hlbook.server.frames`) — and honours the client's
``server_max_window_bits`` (9–15; an offer asking for 8 is declined, since
zlib cannot produce raw deflate with a 256-byte window, and the next offer,
or no compression, is used). ``client_max_window_bits`` and
``client_no_context_takeover`` are accepted as offered: client messages are
inflated with a 15-bit window, which reads any smaller one, and the inflater
is dropped between messages when the client promised not to reuse context.

Outgoing data never goes through wsproto (hlbook writes pre-built frames);
this extension only inflates what clients send, bounded: a message that
inflates beyond ``max_message_size`` is refused (1009) before it is built,
so a small "zip bomb" costs nothing. Bad compressed data closes that
connection with 1007.
"""

import zlib

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from hlbook.server.frames import Deflater

__all__ = ["PerMessageDeflate", "parse_offer"]

_KNOWN = {
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
}


def parse_offer(offer: str) -> dict[str, str | None] | None:
    """The parameters of one ``permessage-deflate`` offer, or ``None`` if it is invalid.

    Unknown or repeated parameters and bad window sizes make an offer invalid
    (RFC 7692 §7.1: the server must decline it).
    """
    parts = [part.strip() for part in offer.split(";")]
    if parts[0] != "permessage-deflate":
        return None
    params: dict[str, str | None] = {}
    for part in parts[1:]:
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = name.strip(), value.strip().strip('"')
        if name not in _KNOWN or name in params:
            return None
        if name.endswith("_no_context_takeover"):
            if value:
                return None
            params[name] = None
            continue
        if not value:
            if name == "server_max_window_bits":
                return None  # must have a value in an offer
            params[name] = None
            continue
        if (
            not (value.isascii() and value.isdigit() and len(value) <= 2)
            or not 8 <= int(value) <= 15
        ):
            return None
        params[name] = value
    return params


class PerMessageDeflate(Extension):
    """One connection's permessage-deflate state (give wsproto a fresh one per connection)."""

    name = "permessage-deflate"

    def __init__(self, level: int, max_message_size: int) -> None:
        self.level = level
        self.max_message_size = max_message_size
        self.deflater: Deflater | None = None
        """The negotiated outgoing compression, once accepted."""
        self.client_no_context_takeover = False
        self._inflater: zlib._Decompress | None = None
        self._compressed: bool | None = None  # the message being received
        self._inflated = 0

    def enabled(self) -> bool:
        return self.deflater is not None

    def offer(self) -> bool | str:
        return False  # server side only: hlbook never offers

    def accept(self, offer: str) -> bool | str | None:
        if self.deflater is not None:
            return None  # an earlier offer was accepted: keep it
        params = parse_offer(offer)
        if params is None:
            return None
        window = params.get("server_max_window_bits")
        bits = 15 if window is None else int(window)
        if bits < 9:
            return None
        self.deflater = Deflater(self.level, bits)
        self.client_no_context_takeover = "client_no_context_takeover" in params
        answer = ["server_no_context_takeover"]
        if window is not None:
            answer.append(f"server_max_window_bits={bits}")
        if self.client_no_context_takeover:
            answer.append("client_no_context_takeover")
        return "; ".join(answer)

    # -- inbound ------------------------------------------------------------------

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if rsv.rsv1 and (opcode.iscontrol() or opcode is Opcode.CONTINUATION):
            return CloseReason.PROTOCOL_ERROR
        if opcode.iscontrol():
            return RsvBits(False, False, False)
        if self._compressed is None:  # the first frame of a message says
            self._compressed = rsv.rsv1
            self._inflated = 0
            if rsv.rsv1 and self._inflater is None:
                self._inflater = zlib.decompressobj(-15)
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._compressed:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin or self._compressed is None:
            return None
        compressed, self._compressed = self._compressed, None
        if not compressed:
            return None
        tail = self._inflate(b"\x00\x00\xff\xff")
        if self.client_no_context_takeover or (self._inflater and self._inflater.eof):
            # A message that ended its deflate stream (BFINAL, as a Z_FINISH flush
            # writes: RFC 7692 7.2.3.4) leaves nothing to take over: the next starts anew.
            self._inflater = None
        return tail

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        inflater = self._inflater
        assert inflater is not None
        room = self.max_message_size - self._inflated
        try:
            out = inflater.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.max_message_size or inflater.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        # Only control frames go through wsproto; data frames are hlbook's own.
        return (rsv, data)
