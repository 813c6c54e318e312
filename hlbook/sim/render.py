"""From a block's events to the exact bytes the node appends to each stream.

Times are written the node's way (naive UTC with nanoseconds). Each line's
``local_time`` is when the node wrote it: a few hundred milliseconds after the
block time, fills first, then diffs, then statuses, and line after line in
streaming layout. The hourly file a line goes to follows its ``local_time``,
so around the hour one stream may already write the new file while another
still finishes the old one.
"""

import random
from datetime import UTC, datetime
from typing import Any, TypeAlias

from hlbook.node.formats import DiffLine, FillLine, Layout, StatusLine, Stream, encode
from hlbook.sim.exchange import BlockEvents

__all__ = ["LineRenderer", "Segment", "hour_path", "node_time"]

Segment: TypeAlias = tuple[str, bytes]
"""``(hourly path "YYYYMMDD/H", bytes of whole lines)`` to append to one file."""

_second_cache: dict[int, tuple[str, str]] = {}

_LAG_NS = 300_000_000  # block time → local time, plus up to _LAG_JITTER_NS
_LAG_JITTER_NS = 100_000_000
_STREAM_OFFSET_NS = {Stream.FILLS: 0, Stream.DIFFS: 80_000, Stream.STATUSES: 400_000}
_LINE_NS = 3_000  # between two lines of one stream in streaming layout


def _second(seconds: int) -> tuple[str, str]:
    """``("2026-05-05T17:39:13", "20260505/17")`` for a whole second since the epoch."""
    found = _second_cache.get(seconds)
    if found is None:
        moment = datetime.fromtimestamp(seconds, UTC)
        found = (moment.strftime("%Y-%m-%dT%H:%M:%S"), f"{moment:%Y%m%d}/{moment.hour}")
        if len(_second_cache) > 4096:
            _second_cache.clear()
        _second_cache[seconds] = found
    return found


def node_time(ns: int) -> str:
    """Nanoseconds since the epoch → ``"2026-05-05T17:39:13.024084407"``."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)[0]}.{fraction:09d}"


def hour_path(ns: int) -> str:
    """The hourly file of a moment: ``"YYYYMMDD/H"`` with the hour not zero-padded."""
    return _second(ns // 1_000_000_000)[1]


_LINE_TYPES = {Stream.STATUSES: StatusLine, Stream.DIFFS: DiffLine, Stream.FILLS: FillLine}


class LineRenderer:
    """Turns blocks into per-stream segments of node lines, for one layout.

    Its own random source decides write lags and how streaming lines group
    events, so the layout never changes what traders do.
    """

    def __init__(self, layout: Layout, rng: random.Random) -> None:
        self.layout = layout
        self.rng = rng

    def render(self, block: BlockEvents) -> dict[Stream, list[Segment]]:
        """Every stream's segments for ``block`` (empty lists where nothing is written)."""
        local = block.time_ns + _LAG_NS + int(self.rng.random() * _LAG_JITTER_NS)
        events: dict[Stream, list[Any]] = {
            Stream.STATUSES: block.statuses,
            Stream.DIFFS: block.diffs,
            Stream.FILLS: block.fills,
        }
        out: dict[Stream, list[Segment]] = {}
        for stream, items in events.items():
            start = local + _STREAM_OFFSET_NS[stream]
            if self.layout is Layout.BY_BLOCK:
                out[stream] = [(hour_path(start), self._line(stream, block, start, items))]
            else:
                out[stream] = self._streaming(stream, block, start, items)
        return out

    def _line(self, stream: Stream, block: BlockEvents, local_ns: int, items: list[Any]) -> bytes:
        line = _LINE_TYPES[stream](
            local_time=node_time(local_ns),
            block_time=block.time,
            block_number=block.height,
            events=items,
        )
        return encode(line) + b"\n"

    def _streaming(
        self, stream: Stream, block: BlockEvents, local_ns: int, items: list[Any]
    ) -> list[Segment]:
        """Lines of one event mostly, sometimes a handful; no line for no events."""
        segments: list[Segment] = []
        parts: list[bytes] = []
        current = ""
        rng = self.rng
        start = 0
        total = len(items)
        while start < total:
            count = 1 if rng.random() < 0.7 else 2 + int(rng.random() * 7)
            chunk = items[start : start + count]
            start += count
            hour = hour_path(local_ns)
            if hour != current and parts:
                segments.append((current, b"".join(parts)))
                parts = []
            current = hour
            parts.append(self._line(stream, block, local_ns, chunk))
            local_ns += _LINE_NS
        if parts:
            segments.append((current, b"".join(parts)))
        return segments
