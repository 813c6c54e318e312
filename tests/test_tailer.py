"""Following the node's hourly files: real files that grow, rotate and appear late."""

import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import trio

from hlbook.node.files import StreamTailer, detect_layout, hourly_files, newest_file
from hlbook.node.formats import Layout, Stream
from hlbook.shell.tail import Gate, Lines, SourceEvent, read_stream
from hlbook.supervisor import SupervisorStats


class Collector:
    """A ``deliver`` callback that records lines."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.wheres: list[str] = []
        self.losses: list[str] = []

    async def __call__(self, lines: list[bytes], where: str) -> None:
        self.lines.extend(lines)
        self.wheres.append(where)

    async def lost(self, why: str) -> None:
        """An ``on_loss`` callback."""
        self.losses.append(why)


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(0.005)


def hour_file(root: Path, date: str, hour: int) -> Path:
    path = root / "hourly" / date / str(hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def test_discovery_sorts_hours_numerically(tmp_path: Path) -> None:
    for date, hour in [("20260505", 9), ("20260505", 10), ("20260505", 2), ("20260506", 0)]:
        hour_file(tmp_path, date, hour).touch()
    # Names that are digits to str.isdigit() but not to int() are not the node's: ignored.
    (tmp_path / "2026²").mkdir()
    hour_file(tmp_path, "20260505", 0).with_name("1²").touch()
    names = [f"{p.parent.name}/{p.name}" for p in hourly_files(tmp_path)]
    assert names == ["20260505/2", "20260505/9", "20260505/10", "20260506/0"]
    newest = newest_file(tmp_path)
    assert newest is not None
    assert newest.name == "0"
    assert newest_file(tmp_path / "missing") is None


def test_detect_layout_prefers_the_layout_being_written(tmp_path: Path) -> None:
    assert detect_layout(tmp_path) is None
    old = hour_file(tmp_path / "node_raw_book_diffs_by_block", "20260505", 1)
    old.touch()
    os.utime(old, (1_000, 1_000))
    assert detect_layout(tmp_path) is Layout.BY_BLOCK
    hour_file(tmp_path / "node_raw_book_diffs_streaming", "20260505", 2).touch()
    assert detect_layout(tmp_path) is Layout.STREAMING


async def test_starts_at_the_end_after_the_line_being_written(tmp_path: Path) -> None:
    path = hour_file(tmp_path, "20260505", 17)
    path.write_bytes(b'{"old":1}\n{"old":2}\n{"half":')
    got = Collector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(StreamTailer(tmp_path).run, got)
        await trio.sleep(0.05)
        append(path, b'written before we came"}\n{"new":1}\n')
        await wait_until(lambda: len(got.lines) >= 1)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"new":1}']


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
async def test_partial_writes_are_joined_exactly_once(tmp_path: Path, inotify: bool) -> None:
    path = hour_file(tmp_path, "20260505", 17)
    path.write_bytes(b"")
    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 37 % 500)) for i in range(200)]
    data = b"".join(line + b"\n" for line in lines)
    got = Collector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(StreamTailer(tmp_path, use_inotify=inotify).run, got)
        await trio.sleep(0.05)
        position = 0
        for step in range(1, 10_000):
            if position >= len(data):
                break
            size = (step * 7919) % 3000 + 1  # cuts fall inside lines
            append(path, data[position : position + size])
            position += size
            if step % 5 == 0:
                await trio.sleep(0.001)
        await wait_until(lambda: len(got.lines) >= len(lines))
        nursery.cancel_scope.cancel()
    assert got.lines == lines


async def test_rotation_drains_the_old_file_then_follows_the_new(tmp_path: Path) -> None:
    old = hour_file(tmp_path, "20260505", 23)
    old.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path, settle=0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got)
        await trio.sleep(0.05)
        append(old, b'{"h":1}\n{"h":2,')
        # The node starts the next hour (and the next day) while finishing the old file.
        new = hour_file(tmp_path, "20260506", 0)
        append(new, b'{"h":4}\n')
        await trio.sleep(0.1)
        append(old, b'"rest":true}\n{"h":3}\n')
        await wait_until(lambda: len(got.lines) >= 4)
        append(new, b'{"h":5}\n')
        await wait_until(lambda: len(got.lines) >= 5)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"h":1}', b'{"h":2,"rest":true}', b'{"h":3}', b'{"h":4}', b'{"h":5}']
    assert tailer.stats.files_opened == 2
    assert tailer.stats.partial_dropped == 0


async def test_an_abandoned_partial_line_is_dropped_after_the_timeout(tmp_path: Path) -> None:
    old = hour_file(tmp_path, "20260505", 1)
    old.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path, settle=0.02, rotation_timeout=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got, None, None, got.lost)
        await trio.sleep(0.05)
        append(old, b'{"a":1}\n{"never finished"')
        append(hour_file(tmp_path, "20260505", 2), b'{"b":2}\n')
        await wait_until(lambda: len(got.lines) >= 2)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"a":1}', b'{"b":2}']
    assert tailer.stats.partial_dropped == 1
    assert len(got.losses) == 1
    assert "unfinished line" in got.losses[0]


async def test_a_line_too_long_is_skipped_and_reported(tmp_path: Path) -> None:
    path = hour_file(tmp_path, "20260505", 1)
    path.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path, max_line=64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got, None, None, got.lost)
        await trio.sleep(0.05)
        # Unfinished lines are what the limit bounds (a complete line is read whole).
        append(path, b'{"a":1}\n{"pad":"' + b"x" * 200)
        await wait_until(lambda: tailer.stats.long_lines == 1)
        append(path, b'"}\n{"b":2}\n')
        await wait_until(lambda: len(got.lines) >= 2)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"a":1}', b'{"b":2}']
    assert tailer.stats.long_lines == 1
    assert len(got.losses) == 1
    assert "longer than 64 bytes" in got.losses[0]


async def test_waits_for_directories_that_appear_late(tmp_path: Path) -> None:
    stream = tmp_path / "node_raw_book_diffs_by_block"
    got = Collector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(StreamTailer(stream).run, got)
        await trio.sleep(0.1)
        path = hour_file(stream, "20260505", 3)
        path.write_bytes(b"")  # the file appears empty first: everything after is read
        await trio.sleep(0.1)
        append(path, b'{"first":1}\n')
        await wait_until(lambda: len(got.lines) >= 1)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"first":1}']


async def test_from_start_reads_every_file_oldest_first(tmp_path: Path) -> None:
    hour_file(tmp_path, "20260505", 9).write_bytes(b'{"a":1}\n{"a":2}\n')
    hour_file(tmp_path, "20260505", 10).write_bytes(b'{"a":3}\n')
    got = Collector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(StreamTailer(tmp_path, from_start=True, settle=0.01).run, got)
        await wait_until(lambda: len(got.lines) >= 3)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"a":1}', b'{"a":2}', b'{"a":3}']
    assert "20260505/9 from byte 0" in got.wheres[0]


@pytest.mark.parametrize("chunk_size", [4096, 4 * 1024 * 1024])
async def test_large_lines_across_many_chunks(tmp_path: Path, chunk_size: int) -> None:
    big = b'{"big":"' + b"y" * 300_000 + b'"}'
    hour_file(tmp_path, "20260505", 1).write_bytes(big + b"\n" + b'{"small":1}\n')
    got = Collector()
    tailer = StreamTailer(tmp_path, from_start=True, chunk_size=chunk_size)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got)
        await wait_until(lambda: len(got.lines) >= 2)
        nursery.cancel_scope.cancel()
    assert got.lines == [big, b'{"small":1}']


async def test_grown_since_tells_a_file_written_past_a_mark(tmp_path: Path) -> None:
    path = hour_file(tmp_path, "20260505", 1)
    path.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got)
        await trio.sleep(0.05)
        append(path, b'{"a":1}\n')
        await wait_until(lambda: len(got.lines) == 1)
        mark = (tailer.stats.files_opened, tailer.position)
        assert not tailer.grown_since(*mark)
        append(path, b'{"b":2}\n')  # before or after the reader runs: grown either way
        assert tailer.grown_since(*mark)
        await wait_until(lambda: len(got.lines) == 2)
        assert tailer.grown_since(*mark)
        assert not tailer.grown_since(tailer.stats.files_opened, tailer.position)
        append(hour_file(tmp_path, "20260505", 2), b'{"c":3}\n')
        await wait_until(lambda: len(got.lines) == 3)
        assert tailer.grown_since(*mark)  # it moved on to a new file
        nursery.cancel_scope.cancel()


async def test_a_line_appended_to_the_old_file_after_the_switch_is_still_read(
    tmp_path: Path,
) -> None:
    old = hour_file(tmp_path, "20260505", 17)
    old.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path, settle=0.02, rotation_timeout=1.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got)
        await trio.sleep(0.05)
        append(old, b'{"h":1}\n')
        append(hour_file(tmp_path, "20260505", 18), b'{"h":3}\n')
        await wait_until(lambda: len(got.lines) == 2)
        assert tailer.stats.files_opened == 2
        await trio.sleep(0.2)  # well after the switch...
        append(old, b'{"h":2}\n')  # ...the node finishes the old file
        await wait_until(lambda: len(got.lines) == 3)
        assert got.wheres[-1].endswith("(after the node moved on)")
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"h":1}', b'{"h":3}', b'{"h":2}']  # late, but not lost
    assert tailer.stats.late_lines == 1


# -- the node rewriting the file being read ----------------------------------------------


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
async def test_a_file_truncated_and_rewritten_is_read_again_and_reported(
    tmp_path: Path, inotify: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = hour_file(tmp_path, "20260505", 17)
    path.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path, use_inotify=inotify)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got, None, None, got.lost)
        await trio.sleep(0.05)
        append(path, b'{"h":1}\n{"h":2}\n{"h":3}\n')
        await wait_until(lambda: len(got.lines) == 3)
        # The node restarts within the hour: it truncates the file and writes it anew.
        with path.open("r+b") as file:
            file.truncate(0)
        append(path, b'{"h":2}\n')  # shorter than what was read: noticed
        await wait_until(lambda: len(got.lines) == 4)
        append(path, b'{"h":3,"x":1}\n')
        await wait_until(lambda: len(got.lines) == 5)
        nursery.cancel_scope.cancel()
    assert got.lines[3:] == [b'{"h":2}', b'{"h":3,"x":1}']
    assert tailer.stats.truncations == 1
    assert len(got.losses) == 1
    assert "truncated" in got.losses[0]
    assert "was truncated from 24 to" in caplog.text


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
async def test_a_file_deleted_and_created_again_at_the_same_path_is_followed(
    tmp_path: Path, inotify: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = hour_file(tmp_path, "20260505", 17)
    path.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path, use_inotify=inotify)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got, None, None, got.lost)
        await trio.sleep(0.05)
        append(path, b'{"h":1}\n')
        await wait_until(lambda: len(got.lines) == 1)
        old = path.stat().st_ino
        path.unlink()
        await trio.sleep(0.05)  # deleted for a moment: nothing to do yet
        append(path, b'{"h":2}\n{"h":3}\n')  # a new file (another inode) at the same path
        assert path.stat().st_ino != old
        await wait_until(lambda: len(got.lines) == 3)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"h":1}', b'{"h":2}', b'{"h":3}']
    assert tailer.stats.replacements == 1
    assert tailer.stats.files_opened == 2
    assert got.losses == []  # the old file was read to its end: nothing lost
    assert "replaced by a new file at the same path" in caplog.text


async def test_a_replaced_file_that_ended_mid_line_is_a_loss(tmp_path: Path) -> None:
    path = hour_file(tmp_path, "20260505", 17)
    path.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got, None, None, got.lost)
        await trio.sleep(0.05)
        append(path, b'{"h":1}\n{"h":2,')
        await wait_until(lambda: tailer.stats.bytes_read == 15)
        path.unlink()
        append(path, b'{"h":3}\n')
        await wait_until(lambda: len(got.lines) == 2)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"h":1}', b'{"h":3}']
    assert len(got.losses) == 1
    assert "unfinished line" in got.losses[0]


def test_an_unreadable_node_directory_is_seen_as_empty_and_logged(tmp_path: Path) -> None:
    """Layout detection and listing never raise on permissions (they used to take the
    server down). Run in a child without the capability that lets root read anything."""
    import shutil
    import subprocess
    import sys

    hour_file(tmp_path / "node_raw_book_diffs_by_block", "20260505", 1).write_bytes(b"{}\n")
    tmp_path.chmod(0)
    script = (
        "import logging, sys; from pathlib import Path\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from hlbook.node.files import detect_layout, hourly_files\n"
        "from hlbook.node.formats import Layout, Stream\n"
        "from hlbook.shell.tail import find_layout, stream_present\n"
        f"root = Path({str(tmp_path)!r})\n"
        "print('detect', detect_layout(root)); print('find', find_layout(root))\n"
        "print('present', stream_present(root, Stream.DIFFS, Layout.BY_BLOCK))\n"
        "print('files', hourly_files(root / 'node_raw_book_diffs_by_block'))\n"
    )
    argv = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions cannot be taken away")
        argv = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    finally:
        tmp_path.chmod(0o755)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "detect None" in out
    assert "find None" in out
    assert "present False" in out
    assert "files []" in out
    assert "Permission denied" in out  # said, not silent


async def test_a_file_rewritten_past_the_readers_position_is_noticed(tmp_path: Path) -> None:
    """The node truncates and writes more than was read before the reader looks: the
    bytes at the reader's position are not a continuation, and it says so."""
    path = hour_file(tmp_path, "20260505", 17)
    path.write_bytes(b"")
    got = Collector()
    tailer = StreamTailer(tmp_path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tailer.run, got, None, None, got.lost)
        await trio.sleep(0.05)
        append(path, b'{"h":1}\n')
        await wait_until(lambda: len(got.lines) == 1)
        # One write: truncated and rewritten longer than before, in one go.
        path.write_bytes(b'{"h":1,"again":true}\n{"h":2}\n')
        await wait_until(lambda: len(got.lines) == 3)
        nursery.cancel_scope.cancel()
    assert got.lines == [b'{"h":1}', b'{"h":1,"again":true}', b'{"h":2}']
    assert tailer.stats.truncations == 1
    assert len(got.losses) == 1
    assert "rewritten" in got.losses[0]


async def test_a_diff_line_of_a_new_height_is_sent_before_the_rest_of_its_chunk(
    tmp_path: Path,
) -> None:
    # Streaming layout (one event per line): the first diff line of a block completes the
    # block before it, so it goes to the book task at once, without waiting for the rest
    # of the chunk to be decoded; every line still arrives once, in file order.
    def line(height: int, oid: int) -> bytes:
        event = {"user": "0x1", "oid": oid, "coin": "BTC", "side": "B", "px": "100.0"}
        wrapper = {
            "local_time": "2026-05-05T17:00:00.1",
            "block_time": "2026-05-05T17:00:00.0",
            "block_number": height,
            "events": [dict(event, raw_book_diff="remove")],
        }
        return orjson.dumps(wrapper) + b"\n"

    heights = [10, 10, 11, 11, 12]
    path = hour_file(tmp_path, "20260505", 17)
    append(path, b"".join(line(h, oid) for oid, h in enumerate(heights)))
    tailer = StreamTailer(tmp_path, from_start=True)
    send, receive = trio.open_memory_channel[SourceEvent](10)
    batches: list[list[int]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_stream, Stream.DIFFS, tailer, send, Gate(), SupervisorStats())
        with trio.fail_after(10):
            while sum(map(len, batches)) < len(heights):
                event = await receive.receive()
                if isinstance(event, Lines):
                    batches.append([decoded.block_number for decoded in event.lines])
        nursery.cancel_scope.cancel()
    assert batches == [[10], [10, 11], [11, 12]]
