"""Files -> events: one Trio task per stream of the node's output.

:func:`read_stream` follows one stream with a
:class:`~hlbook.node.files.StreamTailer`, decodes complete lines and sends
them on the book task's channel, one batch per chunk. When the channel is
full the send waits and the file is the buffer; when the joiner says the
stream is too far ahead, :class:`Gate` makes the task wait. Also here: the
checks of the node's output shape that must never take the server down
(a directory that is unreadable for a while is only logged).
"""

import logging
import time
from pathlib import Path

import attrs
import trio

from hlbook.errors import NodeFormatError
from hlbook.node.files import StartPoint, StreamTailer, detect_layout, stream_dir
from hlbook.node.formats import AnyLine, Layout, Stream, decode_line, line_height, line_time
from hlbook.supervisor import SupervisorStats

__all__ = [
    "CaughtUp",
    "Gate",
    "LineLost",
    "Lines",
    "ReadFailed",
    "StartedAt",
    "find_layout",
    "read_stream",
    "stream_present",
]

log = logging.getLogger("hlbook.ingest")


@attrs.frozen
class Lines:
    """Decoded lines of one stream, in file order."""

    stream: Stream
    lines: list[AnyLine]


@attrs.frozen
class LineLost:
    """A line of ``stream`` could not be read (malformed, too long, never finished)."""

    stream: Stream
    error: NodeFormatError


@attrs.frozen
class ReadFailed:
    """Reading failed (the tailer restarts after a pause); what was not read is lost."""

    reason: str


@attrs.frozen
class StartedAt:
    """The reader of ``stream`` began where every block above ``floor`` is complete
    (``block_time``: of the last line before, when there was one)."""

    stream: Stream
    floor: int
    block_time: int | None = None


@attrs.frozen
class CaughtUp:
    """The reader of ``stream`` read everything its file held at ``at``."""

    stream: Stream
    at: float
    file_number: int  # where the reader was: see StreamTailer.grown_since
    position: int


SourceEvent = Lines | LineLost | ReadFailed | StartedAt | CaughtUp


class Gate:
    """Open unless the joiner says the stream should wait."""

    def __init__(self) -> None:
        self._open = trio.Event()
        self._open.set()

    def set(self, open_: bool) -> None:
        """Open or close the gate."""
        if open_ and not self._open.is_set():
            self._open.set()
        elif not open_ and self._open.is_set():
            self._open = trio.Event()

    async def wait(self) -> None:
        """Return once the gate is open."""
        await self._open.wait()


async def read_stream(
    stream: Stream,
    tailer: StreamTailer,
    send: trio.MemorySendChannel[SourceEvent],
    gate: Gate,
    stats: SupervisorStats,
) -> None:
    """Tail ``stream`` forever, sending :data:`SourceEvent` items on ``send``."""

    height = -1  # of the last line decoded

    async def deliver(raw_lines: list[bytes], where: str) -> None:
        if stream is not Stream.DIFFS:
            # Let the diff reader (woken by the same write), the book task applying its
            # lines and the flusher writing their l2Book/bbo go first: those views need
            # only the diffs, and a status line is 5-10x larger to decode. Trio runs each
            # batch of ready tasks in a random order: one yield per step ahead.
            for _ in range(3):
                await trio.lowlevel.checkpoint()
        nonlocal height
        decoded: list[AnyLine] = []
        started = time.perf_counter()
        last = len(raw_lines) - 1
        for index, raw in enumerate(raw_lines):
            try:
                line = decode_line(stream, raw, where=where)
            except NodeFormatError as exc:
                stats.decode_seconds += time.perf_counter() - started
                if decoded:
                    await send.send(Lines(stream, decoded))
                    decoded = []
                await send.send(LineLost(stream, exc))
                started = time.perf_counter()
                continue
            decoded.append(line)
            if line.block_number != height:
                height = line.block_number
                if stream is Stream.DIFFS and index < last:
                    # A diff line of a new height completes the block before it (streaming:
                    # the diff stream is past it): its l2Book/bbo need nothing of the rest
                    # of this chunk (the next block's ~400 lines, ~2 ms to decode).
                    stats.decode_seconds += time.perf_counter() - started
                    await send.send(Lines(stream, decoded))
                    decoded = []
                    started = time.perf_counter()
        stats.decode_seconds += time.perf_counter() - started
        if decoded:
            await send.send(Lines(stream, decoded))
        await gate.wait()

    async def on_start(point: StartPoint) -> None:
        if not point.known:
            return  # the joiner falls back to treating the first block as partial
        floor = -1
        block_time = None
        if point.previous_line is not None:
            height = line_height(point.previous_line)
            if height is None:
                return
            floor = height + 1 if point.skipped_partial else height
            block_time = line_time(point.previous_line)
        await send.send(StartedAt(stream, floor, block_time))

    async def on_idle(now: float) -> None:
        await send.send(CaughtUp(stream, now, tailer.stats.files_opened, tailer.position))

    async def on_loss(why: str) -> None:
        # Skipped bytes are a line of unknown height lost: the same as a malformed one.
        await send.send(LineLost(stream, NodeFormatError(stream.value, why)))

    async with send:
        while True:
            try:
                await tailer.run(deliver, on_start, on_idle, on_loss)
            except OSError as exc:
                # The files are the truth; lost bytes mean a re-bootstrap.
                await send.send(ReadFailed(f"reading {stream.value} failed: {exc}"))
                await trio.sleep(1.0)
                tailer.from_start = False


_unreadable: set[str] = set()


def _said(where: Path, exc: OSError | None) -> None:
    """Log an unreadable node directory once, and once more when it is readable again."""
    key = str(where)
    if exc is not None:
        if key not in _unreadable:
            _unreadable.add(key)
            log.warning(
                "cannot read %s (%s); hlbook keeps running and looks again",
                where,
                exc.strerror or exc,
            )
    elif key in _unreadable:
        _unreadable.discard(key)
        log.info("%s is readable again", where)


def find_layout(node_data: Path) -> Layout | None:
    """The layout the node writes (see :func:`~hlbook.node.files.detect_layout`);
    ``None`` if none can be seen, including when the directory is unreadable."""
    try:
        found = detect_layout(node_data)
    except OSError as exc:
        _said(node_data, exc)
        return None
    _said(node_data, None)
    return found


def stream_present(node_data: Path, stream: Stream, layout: Layout) -> bool:
    """True if the node has a directory for ``stream`` in ``layout`` (False if unreadable)."""
    path = stream_dir(node_data, stream, layout)
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        _said(path, exc)
        return False
    _said(path, None)
    return True
