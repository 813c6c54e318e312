"""Finding and following the node's hourly files (Trio).

Layout: ``<node_data>/<stream dir>/hourly/YYYYMMDD/H`` (UTC, hour not zero
padded). The tailer follows the newest file, reading large chunks with
``os.read`` and splitting them in :class:`~hlbook.node.lines.LineSplitter`.
When a newer file appears it drains the old one — until it has stopped
growing for ``settle`` seconds with no partial line pending — and then
switches. A partial last line is kept until its newline arrives; a file or
directory that does not exist yet is waited for.

The node may also rewrite the file being read: truncated and written again
from the start (a node restarting within the hour), or deleted and created
anew at the same path. Whenever the reader is at the end of the file it
checks (one ``fstat`` and one ``stat``): a file shorter than what was read is
reported as a loss (bytes the node wrote before truncating may never have
been read) and read again from its start; a file with another inode at the
same path is read from its start once the old one is drained. A directory
that cannot be listed for a while (permissions) is logged and looked at
again; the file being followed keeps being read meanwhile.

Reads of the page cache are fast, so they run on the Trio thread: one
thread hop per small line (``trio.open_file``) would cost far more than the
read itself.
"""

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from hlbook.node.formats import Layout, Stream
from hlbook.node.lines import DEFAULT_MAX_LINE, LineSplitter, LineTooLongError
from hlbook.node.watch import ChangeWatcher

__all__ = [
    "StartPoint",
    "StreamTailer",
    "TailStats",
    "detect_layout",
    "hourly_files",
    "newest_file",
    "stream_dir",
]

log = logging.getLogger(__name__)

Deliver = Callable[[list[bytes], str], Awaitable[None]]
"""Receives complete lines and a location (file and byte offset) for error messages."""

OnStart = Callable[["StartPoint"], Awaitable[None]]
"""Told once where reading began (see :class:`StartPoint`)."""

OnIdle = Callable[[float], Awaitable[None]]
"""Told (with ``trio.current_time()``) when everything the node wrote so far was read."""

OnLoss = Callable[[str], Awaitable[None]]
"""Told why bytes of the node's output were skipped (a line too long, a line never finished)."""

_MAX_LOOKBACK = 64 * 1024 * 1024
_TAIL = 32  # bytes of what was read last, checked when more comes


@attrs.frozen
class StartPoint:
    """Where a tailer began reading a stream.

    ``previous_line`` is the last complete line before that point (``None``
    at the start of the node's output or when reading from the beginning);
    ``skipped_partial`` is true if the line the node was writing was skipped.
    Blocks after ``previous_line``'s are complete on this stream — except the
    skipped line's block. ``known`` is false when the previous line could not
    be found (longer than the look-back).
    """

    previous_line: bytes | None
    skipped_partial: bool
    known: bool = True


def stream_dir(node_data: Path, stream: Stream, layout: Layout) -> Path:
    """``<node_data>/node_<stream>_<layout>``."""
    return node_data / stream.dirname(layout)


_unlistable: set[Path] = set()


def _numbered(path: Path) -> list[tuple[int, str]]:
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        # E.g. a directory unreadable for a while: nothing can be seen there now.
        if path not in _unlistable:
            _unlistable.add(path)
            log.warning("cannot list %s (%s); looking again later", path, exc.strerror or exc)
        return []
    if _unlistable and path in _unlistable:
        _unlistable.discard(path)
        log.info("%s can be listed again", path)
    # isdigit() alone admits "2026²" and other Unicode digits, which int() refuses.
    return sorted((int(name), name) for name in names if name.isascii() and name.isdigit())


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # not ours to see right now (permissions): as if absent
        return False


def hourly_files(directory: Path) -> list[Path]:
    """Every hourly file of a stream directory, oldest first."""
    hourly = directory / "hourly"
    found: list[Path] = []
    for _, date in _numbered(hourly):
        found.extend(hourly / date / hour for _, hour in _numbered(hourly / date))
    return [path for path in found if _is_file(path)]


def newest_file(directory: Path) -> Path | None:
    """The newest hourly file of a stream directory, or ``None``."""
    hourly = directory / "hourly"
    for _, date in reversed(_numbered(hourly)):
        for _, hour in reversed(_numbered(hourly / date)):
            path = hourly / date / hour
            if _is_file(path):
                return path
    return None


def _file_key(path: Path) -> tuple[int, int]:
    return int(path.parent.name), int(path.name)


def _next_file(directory: Path, current: Path) -> Path | None:
    """The first hourly file after ``current``. Called often while idle, so it only
    lists the current date and later ones, never the node's whole history."""
    day, hour = _file_key(current)
    hourly = directory / "hourly"
    for number, date in _numbered(hourly):
        if number < day:
            continue
        for later, name in _numbered(hourly / date):
            path = hourly / date / name
            if (number, later) > (day, hour) and _is_file(path):
                return path
    return None


def detect_layout(node_data: Path) -> Layout | None:
    """The layout the node is writing: the one whose diff stream has the newest file."""
    best: tuple[float, Layout] | None = None
    for layout in Layout:
        newest = newest_file(stream_dir(node_data, Stream.DIFFS, layout))
        if newest is None:
            continue
        try:
            mtime = newest.stat().st_mtime
        except OSError:  # pruned by the node a moment ago
            continue
        if best is None or mtime > best[0]:
            best = (mtime, layout)
    return None if best is None else best[1]


@attrs.define(eq=False)
class _Draining:
    """A file the node has moved away from, still read for a while: the node may
    finish it after starting the next one."""

    fd: int
    path: Path
    splitter: LineSplitter
    until: float


@attrs.define
class TailStats:
    """What a tailer has done so far."""

    file: str | None = None
    offset: int = 0
    bytes_read: int = 0
    lines: int = 0
    files_opened: int = 0
    long_lines: int = 0
    partial_dropped: int = 0
    late_lines: int = 0
    """Lines the node appended to a file after moving on to the next one."""
    truncations: int = 0
    """Times the file being read got shorter (the node rewrote it): read again."""
    replacements: int = 0
    """Times the file being read was replaced by another at the same path."""


class StreamTailer:
    """Follows one stream's hourly files and hands complete lines to ``deliver``.

    ``from_start`` reads every existing file from the oldest; otherwise
    reading starts at the current end of the newest file (after the line the
    node is writing, if any).
    """

    def __init__(
        self,
        directory: Path,
        *,
        from_start: bool = False,
        chunk_size: int = 1024 * 1024,
        settle: float = 0.1,
        rotation_timeout: float = 30.0,
        dir_check_interval: float = 0.1,
        use_inotify: bool = True,
        max_line: int = DEFAULT_MAX_LINE,
        defer: int = 0,
    ) -> None:
        self.directory = directory
        self.defer = defer
        """Checkpoints after each wake-up before reading: a stream that need not be first
        lets the tasks woken by the same write (another stream's reader) go ahead."""
        self.max_line = max_line
        self.from_start = from_start
        self.chunk_size = chunk_size
        self.settle = settle
        self.rotation_timeout = rotation_timeout
        self.dir_check_interval = dir_check_interval
        self.use_inotify = use_inotify
        self.stats = TailStats()
        self._on_start: OnStart | None = None
        self._on_idle: OnIdle | None = None
        self._on_loss: OnLoss | None = None
        self._fd: int | None = None  # the file being followed
        self._draining: list[_Draining] = []
        self.position = 0
        """How far into the file being followed this tailer has read."""

    async def run(
        self,
        deliver: Deliver,
        on_start: OnStart | None = None,
        on_idle: OnIdle | None = None,
        on_loss: OnLoss | None = None,
    ) -> None:
        """Tail forever (until cancelled).

        ``on_start`` learns where reading began; ``on_idle`` is called each time
        the tailer has read everything in the newest file (after new data);
        ``on_loss`` whenever bytes had to be skipped, so that nothing is lost
        silently.
        """
        with ChangeWatcher(use_inotify=self.use_inotify) as watcher:
            self._on_idle = on_idle
            self._on_loss = on_loss
            path, at_end = await self._first_file(watcher)
            self._on_start = on_start
            try:
                while True:
                    path = await self._follow(path, at_end, deliver, watcher)
                    at_end = False
            finally:
                for old in self._draining:
                    os.close(old.fd)
                self._draining.clear()

    async def _first_file(self, watcher: ChangeWatcher) -> tuple[Path, bool]:
        said = False
        while True:
            if self.from_start:
                files = hourly_files(self.directory)
                if files:
                    return files[0], False
            else:
                newest = newest_file(self.directory)
                if newest is not None:
                    return newest, True
            if not said:
                log.info("waiting for node files in %s", self.directory)
                said = True
            watcher.watch(self.directory.parent)
            watcher.watch(self.directory)
            watcher.watch(self.directory / "hourly")
            await watcher.wait(0.5)

    async def _follow(
        self, path: Path, at_end: bool, deliver: Deliver, watcher: ChangeWatcher
    ) -> Path:
        """Read ``path`` until the node has moved on to a newer file; return that file."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            splitter = LineSplitter(self.max_line)
            start = 0
            skipped = False
            if at_end:
                start = os.fstat(fd).st_size
                if start > 0 and os.pread(fd, 1, start - 1) != b"\n":
                    # The node is mid-line: its start was written before we came.
                    splitter.skip_line()
                    skipped = True
                os.lseek(fd, start, os.SEEK_SET)
            if self._on_start is not None:
                on_start, self._on_start = self._on_start, None
                if at_end:
                    known, previous = self._previous_line(fd, start, path)
                    await on_start(StartPoint(previous, skipped, known))
                else:
                    await on_start(StartPoint(None, False))
            self.stats.file = str(path)
            self.stats.files_opened += 1
            log.info("following %s from byte %d", path, start)
            watcher.watch(path)
            watcher.watch(path.parent)
            watcher.watch(path.parent.parent)
            self._fd, self.position = fd, start
            try:
                return await self._read_until_rotated(fd, path, start, splitter, deliver, watcher)
            finally:
                watcher.unwatch(path)
        finally:
            self._fd = None
            os.close(fd)

    def grown_since(self, file_number: int, position: int) -> bool:
        """True if the node wrote past ``position`` of file ``file_number`` (a count of
        files opened, :attr:`TailStats.files_opened`) or moved on to another file.

        A stream whose reader said it was caught up may have been written to
        since, with its reader not yet run or its lines not yet used (a busy or
        stalled event loop): its silence is then not quiet (see
        :meth:`~hlbook.node.join.BlockJoiner.reading`). One ``fstat``.
        """
        fd = self._fd
        if fd is None or file_number != self.stats.files_opened:
            return True
        try:
            return os.fstat(fd).st_size > position
        except OSError:
            return True

    def _previous_line(self, fd: int, end: int, path: Path) -> tuple[bool, bytes | None]:
        """``(known, line)``: the last complete line before byte ``end``, or in the
        previous hourly file when this one is empty; ``(True, None)`` if there is none."""
        if end > 0:
            found = _last_line(fd, end)
            return found is not None, found
        older = [p for p in hourly_files(self.directory) if _file_key(p) < _file_key(path)]
        if not older:
            return True, None
        with older[-1].open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            found = _last_line(file.fileno(), size)
        return found is not None or size == 0, found

    async def _read_until_rotated(
        self,
        fd: int,
        path: Path,
        start: int,
        splitter: LineSplitter,
        deliver: Deliver,
        watcher: ChangeWatcher,
    ) -> Path:
        stats = self.stats
        newer: Path | None = None
        next_dir_check = 0.0
        idle_since: float | None = None
        told_idle = False
        # The last bytes read: still there, unchanged, when more data comes? (A file the
        # node rewrote past this point would otherwise be read on from the middle.)
        tail = os.pread(fd, min(_TAIL, start), start - min(_TAIL, start))
        while True:
            data = os.read(fd, self.chunk_size)
            if data:
                if tail and os.pread(fd, len(tail), self.position - len(tail)) != tail:
                    await self._truncated(path, splitter, "was rewritten from its start")
                    return path  # read it again from its start
                tail = (tail + data)[-_TAIL:] if len(data) < _TAIL else data[-_TAIL:]
                self.position += len(data)
                idle_since = None
                told_idle = False
                stats.bytes_read += len(data)
                offset = start + splitter.consumed
                lost: LineTooLongError | None = None
                try:
                    lines = splitter.feed(data)
                except LineTooLongError as exc:
                    stats.long_lines += 1
                    log.error("%s: %s; skipping it", path, exc)
                    lost, lines = exc, exc.lines
                stats.offset = start + splitter.consumed
                if lines:
                    stats.lines += len(lines)
                    await deliver(lines, f"{path} from byte {offset}")
                else:
                    await trio.lowlevel.checkpoint()
                if lost is not None:  # after the good lines before it: the order matters
                    await self._lost(f"{path} from byte {offset}: {lost}")
                continue
            now = trio.current_time()
            if self._draining and await self._drain_old(deliver, now):
                told_idle = False
                continue
            if newer is None and (now >= next_dir_check or not told_idle):
                next_dir_check = now + self.dir_check_interval
                if await self._rewritten(fd, path, splitter):
                    return path  # read it again from its start
                newer = _next_file(self.directory, path)
            if newer is None:
                if not told_idle and self._on_idle is not None and splitter.pending == 0:
                    # Everything the node wrote is read (checked: no newer file).
                    told_idle = True
                    await self._on_idle(now)
                    continue  # the node may have written meanwhile
                await watcher.wait()
                for _ in range(self.defer):
                    await trio.lowlevel.checkpoint()
                continue
            # The node has started a newer file; this one may still be finishing.
            if idle_since is None:
                idle_since = now
            idle = now - idle_since
            if idle >= self.settle and splitter.pending == 0:
                # Keep an eye on it for a while: lines appended late are still delivered
                # (late; the block joiner decides what they mean) rather than never read.
                until = now + self.rotation_timeout
                self._draining.append(
                    _Draining(os.dup(fd), path, LineSplitter(self.max_line), until)
                )
                return newer
            if idle >= self.rotation_timeout:
                stats.partial_dropped += 1
                log.error(
                    "%s: the node moved to %s %.0f s ago leaving %d bytes of an unfinished "
                    "line; dropping them",
                    path,
                    newer,
                    idle,
                    splitter.pending,
                )
                splitter.reset()
                await self._lost(f"{path}: an unfinished line was abandoned by the node")
                return newer
            await watcher.wait(self.settle / 2)

    async def _rewritten(self, fd: int, path: Path, splitter: LineSplitter) -> bool:
        """True if the file at ``path`` is no longer what this reader has read (at its end).

        Truncated: a loss (what the node wrote before truncating may be unread);
        replaced by another file: the old one is drained like after a rotation.
        """
        try:
            mine = os.fstat(fd)
        except OSError:
            return False
        if mine.st_size < self.position:
            why = f"was truncated from {self.position} to {mine.st_size} bytes"
            await self._truncated(path, splitter, why)
            return True
        try:
            there = os.stat(path)
        except OSError:
            return False  # deleted (a new one may come) or not ours to see right now
        if (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev):
            return False
        self.stats.replacements += 1
        log.warning(
            "%s was replaced by a new file at the same path; reading the new one from the start",
            path,
        )
        if splitter.pending:
            splitter.reset()
            await self._lost(f"{path}: the replaced file ended with an unfinished line")
        # The node may still hold the old file open: keep reading it for a while.
        until = trio.current_time() + self.rotation_timeout
        self._draining.append(_Draining(os.dup(fd), path, LineSplitter(self.max_line), until))
        return True

    async def _truncated(self, path: Path, splitter: LineSplitter, why: str) -> None:
        """The file was rewritten under the reader: what it had not read may be gone."""
        self.stats.truncations += 1
        log.error("%s %s (the node rewrote it); reading it again from the start", path, why)
        splitter.reset()
        await self._lost(f"{path}: the file {why} and is read again from its start")

    async def _lost(self, why: str) -> None:
        if self._on_loss is not None:
            await self._on_loss(why)

    async def _drain_old(self, deliver: Deliver, now: float) -> bool:
        """Deliver lines appended to files the node moved away from; True if any came."""
        got = False
        for old in list(self._draining):
            while data := os.read(old.fd, self.chunk_size):
                try:
                    lines = old.splitter.feed(data)
                except LineTooLongError as exc:
                    lines = exc.lines
                    await self._lost(f"{old.path}: {exc}")
                if lines:
                    got = True
                    self.stats.late_lines += len(lines)
                    log.warning(
                        "%s: %d line(s) appended after the node moved on", old.path, len(lines)
                    )
                    await deliver(lines, f"{old.path} (after the node moved on)")
            if now >= old.until:
                if old.splitter.pending:
                    await self._lost(f"{old.path}: an unfinished line was abandoned by the node")
                os.close(old.fd)
                self._draining.remove(old)
        return got


def _last_line(fd: int, end: int) -> bytes | None:
    """The last complete (newline-terminated) line before byte ``end`` of ``fd``."""
    position = end
    tail = b""
    newlines: list[int] = []  # absolute offsets of the last two newlines seen
    while position > 0 and len(newlines) < 2 and end - position < _MAX_LOOKBACK:
        size = min(1024 * 1024, position)
        position -= size
        chunk = os.pread(fd, size, position)
        tail = chunk + tail
        index = len(chunk)
        while len(newlines) < 2:
            index = chunk.rfind(b"\n", 0, index)
            if index < 0:
                break
            newlines.append(position + index)
    if not newlines:
        return None
    stop = newlines[0]
    begin = newlines[1] + 1 if len(newlines) > 1 else (0 if position == 0 else -1)
    if begin < 0:
        return None  # longer than the lookback
    return tail[begin - position : stop - position] or None
