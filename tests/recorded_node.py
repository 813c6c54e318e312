"""A stand-in node that replays the recorded mainnet slice into real files.

It writes the slice's lines to ``<root>/node_*_{by_block|streaming}/hourly/...``
at a chosen pace (optionally flushing mid-line), and answers ``fileSnapshot``
on a real HTTP port (hlbook's simulator info server) with the recorded
snapshot — the node's state before the first replayed block.
"""

from pathlib import Path
from typing import BinaryIO

import msgspec
import orjson
import trio
from fixtures import MainnetSlice

from hlbook.node.formats import Layout, Stream
from hlbook.sim.info_server import serve_info

HOUR = Path("hourly/20260505/17")


def streaming_lines(mainnet: MainnetSlice) -> list[tuple[Stream, bytes, int]]:
    """The slice in the streaming layout: one event per line, empty blocks dropped,
    diff lines before status lines of the same block. Returns ``(stream, line, height)``."""
    out: list[tuple[Stream, bytes, int]] = []
    for index in range(len(mainnet.lines[Stream.DIFFS])):
        for stream in (Stream.DIFFS, Stream.STATUSES, Stream.FILLS):
            wrapper = orjson.loads(mainnet.lines[stream][index])
            for event in wrapper["events"]:
                line = dict(wrapper, events=[event])
                out.append((stream, orjson.dumps(line), wrapper["block_number"]))
    return out


class RecordedNode:
    """Replays :class:`MainnetSlice` under ``root`` in ``layout``."""

    def __init__(self, root: Path, mainnet: MainnetSlice, layout: Layout) -> None:
        self.root = root
        self.mainnet = mainnet
        self.layout = layout
        self.height = mainnet.height
        self.snapshots_served = 0
        self.paths = {s: root / s.dirname(layout) / HOUR for s in Stream}
        self._files: dict[Stream, BinaryIO] = {}
        for path in self.paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    async def _write_snapshot(self, out_path: Path, include_height: bool) -> int:
        data = self.mainnet.snapshot
        if not include_height:
            _height, coins = msgspec.json.decode(data)
            data = msgspec.json.encode(coins)
        out_path.write_bytes(data)
        self.snapshots_served += 1
        return self.mainnet.height

    async def serve_info(
        self, port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The info server (on ``port``, default any free one); reports its port."""
        await serve_info(self._write_snapshot, "127.0.0.1", port, task_status=task_status)

    def _append(self, stream: Stream, data: bytes, split: bool) -> None:
        file = self._files.get(stream)
        if file is None:
            file = self._files[stream] = self.paths[stream].open("ab", buffering=0)
        if split and len(data) > 2:
            # Flush mid-line, as a node does when a write spans its buffer.
            file.write(data[: len(data) // 2])
            data = data[len(data) // 2 :]
        file.write(data)

    def close(self) -> None:
        """Close the files being written."""
        for file in self._files.values():
            file.close()
        self._files.clear()

    async def replay(
        self,
        *,
        interval: float = 0.02,
        blocks: int | None = None,
        split: bool = True,
        start: int = 0,
    ) -> None:
        """Write the slice's blocks (all, or the first ``blocks``), ``interval`` apart
        (by-block: from block ``start`` of the slice)."""
        count = len(self.mainnet.lines[Stream.DIFFS]) if blocks is None else blocks
        if self.layout is Layout.BY_BLOCK:
            for index in range(start, count):
                for stream in (Stream.DIFFS, Stream.STATUSES, Stream.FILLS):
                    self._append(stream, self.mainnet.lines[stream][index] + b"\n", split)
                self.height = self.mainnet.height + index + 1
                await trio.sleep(interval)
            return
        last = self.mainnet.height + count
        current = None
        for stream, line, height in streaming_lines(self.mainnet):
            if height > last:
                break
            if current is not None and height != current:
                self.height = current
                await trio.sleep(interval)
            current = height
            self._append(stream, line + b"\n", split)
        self.height = last
