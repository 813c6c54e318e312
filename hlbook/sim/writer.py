"""Appending node lines to the node's hourly files, the way the node does.

Files are ``<node_data>/node_<stream>_<layout>/hourly/YYYYMMDD/H``, opened in
append mode and switched when a line's hour changes (each stream on its own,
so around the hour streams switch at slightly different moments). With
``partial_writes`` each write is cut at random points that are not line ends,
with a pause between the pieces, so that a reader sees half-written lines.

Appends are plain ``os.write`` calls made from the Trio thread: they go to
the page cache and take microseconds, while a thread hop per write would cost
more and would let other tasks observe a block half-applied between hops.
"""

import os
import random
from pathlib import Path

import trio

from hlbook.node.formats import Layout, Stream
from hlbook.sim.render import Segment

__all__ = ["BlockWriter", "NodeFiles"]


class NodeFiles:
    """The node's three output directories and the file each stream appends to."""

    def __init__(self, root: Path, layout: Layout) -> None:
        self.root = root
        self.layout = layout
        self._open: dict[Stream, tuple[str, int]] = {}  # stream -> (hour path, fd)
        self.bytes_written = 0

    def stream_dir(self, stream: Stream) -> Path:
        """``<root>/node_<stream>_<layout>``."""
        return self.root / stream.dirname(self.layout)

    def prepare(self) -> None:
        """Create every stream's ``hourly`` directory."""
        for stream in Stream:
            (self.stream_dir(stream) / "hourly").mkdir(parents=True, exist_ok=True)

    def has_files(self) -> bool:
        """True if any stream directory already holds an hourly file."""
        return any(
            path.is_file()
            for stream in Stream
            for path in (self.stream_dir(stream) / "hourly").glob("*/*")
        )

    def current(self, stream: Stream) -> Path | None:
        """The file ``stream`` appends to now, if it wrote anything yet."""
        found = self._open.get(stream)
        return None if found is None else self.stream_dir(stream) / "hourly" / found[0]

    def append(self, stream: Stream, hour: str, data: bytes) -> None:
        """Append ``data`` to ``stream``'s file for ``hour`` (``"YYYYMMDD/H"``)."""
        fd = self._fd(stream, hour)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self.bytes_written += len(data)

    def close(self) -> None:
        """Close every open file."""
        for _hour, fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def _fd(self, stream: Stream, hour: str) -> int:
        found = self._open.get(stream)
        if found is not None:
            if found[0] == hour:
                return found[1]
            # The hour changed: the node moves to the new file and never looks back.
            os.close(found[1])
            del self._open[stream]
        path = self.stream_dir(stream) / "hourly" / hour
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._open[stream] = (hour, fd)
        return fd


class BlockWriter:
    """Writes segments to :class:`NodeFiles`, whole or in mid-line pieces.

    ``pause`` is how long to wait between the pieces of a partial write.
    """

    def __init__(
        self, files: NodeFiles, *, partial_writes: bool, rng: random.Random, pause: float
    ) -> None:
        self.files = files
        self.partial_writes = partial_writes
        self.rng = rng
        self.pause = pause
        self.corrupt: set[Stream] = set()
        self.replace: set[Stream] = set()
        """Of ``corrupt``: streams whose next line is garbled in place (its events lost)."""
        self.corrupted = 0

    async def write(self, stream: Stream, segments: list[Segment]) -> None:
        """Append ``segments`` to ``stream``; awaits only between partial pieces."""
        for hour, data in segments:
            if stream in self.corrupt:
                self.corrupt.discard(stream)
                self.corrupted += 1
                self.files.append(stream, hour, _malformed(data))
                if stream in self.replace:
                    self.replace.discard(stream)
                    data = data.split(b"\n", 1)[1]  # the garbled line stands in for it
            if not self.partial_writes:
                self.files.append(stream, hour, data)
                continue
            for piece in self._pieces(data):
                if piece is None:
                    await trio.sleep(self.pause)
                else:
                    self.files.append(stream, hour, piece)

    def _pieces(self, data: bytes) -> list[bytes | None]:
        """``data`` cut at one or two random points that are not line ends (``None`` = pause)."""
        rng = self.rng
        cuts = sorted(
            {1 + int(rng.random() * (len(data) - 1)) for _ in range(1 + (rng.random() < 0.3))}
        )
        cuts = [cut for cut in cuts if data[cut - 1] != 0x0A]  # 0x0A: b"\n"
        pieces: list[bytes | None] = []
        start = 0
        for cut in cuts:
            pieces.extend((data[start:cut], None))
            start = cut
        pieces.append(data[start:])
        return pieces


def _malformed(data: bytes) -> bytes:
    """A line the node would never write: the first half of the next one."""
    line = data.split(b"\n", 1)[0]
    return line[: max(1, len(line) // 2)] + b"\n"
