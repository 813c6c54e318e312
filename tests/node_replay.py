"""Replaying a node directory through hlbook's book engine (a test reference reader).

:class:`NodeReplay` is a small, synchronous, deliberately naive reader: it
follows each stream's hourly files (newest last, draining the old file before
moving on, keeping a partial last line until it is complete), decodes lines
with :func:`hlbook.node.formats.decode_line`, joins them into blocks with
:class:`hlbook.node.join.BlockJoiner` and applies them to
:class:`hlbook.book.books.Books`. It is not hlbook's production tailer (that
one reads in the server's own way); it is the simplest thing that lets a test
check the simulator's files against the simulator's books, or a server's
output against a reference.
"""

from collections.abc import Callable
from pathlib import Path

import attrs

from hlbook.book.books import Applied, Books
from hlbook.errors import DivergenceError, NodeFormatError
from hlbook.model import Block
from hlbook.node.files import hourly_files
from hlbook.node.formats import AnyLine, Layout, Stream, decode_line, decode_snapshot
from hlbook.node.join import BlockJoiner, Gap
from hlbook.node.lines import LineSplitter

AfterEach = Callable[[Books], object]
"""Called with the books after each block :class:`NodeReplay` applies."""

_FEED_ORDER = {Stream.DIFFS: 0, Stream.STATUSES: 1, Stream.FILLS: 2}


class FileFollower:
    """Complete lines appended to one stream's hourly files since the last call."""

    def __init__(self, stream_dir: Path) -> None:
        self.stream_dir = stream_dir
        self.path: Path | None = None
        self.offset = 0
        self._splitter = LineSplitter()

    @property
    def partial(self) -> bool:
        """True while a line has been read only in part (it is kept until complete)."""
        return self._splitter.pending > 0

    def read_lines(self) -> list[bytes]:
        """Every complete line written since the last call, in order."""
        lines: list[bytes] = []
        while True:
            files = hourly_files(self.stream_dir)
            if self.path is None:
                if not files:
                    return lines
                self.path = files[0]
            with self.path.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
            self.offset += len(data)
            lines.extend(self._splitter.feed(data))
            newer = [path for path in files if _key(path) > _key(self.path)]
            if not newer:
                return lines
            # The node has moved on to a newer file; this one is complete. (Reading
            # it once more after seeing the newer file catches its last bytes.)
            if not data:
                self.path, self.offset = newer[0], 0
                self._splitter.reset()


def _key(path: Path) -> tuple[int, int]:
    return int(path.parent.name), int(path.name)


@attrs.define
class NodeReplay:
    """Follow a node directory and keep :class:`Books` up to date from it.

    Call :meth:`bootstrap` with a snapshot, and :meth:`poll` whenever files may
    have grown. A gap or a divergence stops applying (``stalled``) until the
    next :meth:`bootstrap`.
    """

    node_data: Path = attrs.field(converter=Path)
    layout: Layout
    quiet_after: float = 0.3
    books: Books | None = None
    applied: list[int] = attrs.field(factory=list)
    """Heights applied, in order."""
    gaps: list[Gap] = attrs.field(factory=list)
    divergences: list[DivergenceError] = attrs.field(factory=list)
    malformed: list[NodeFormatError] = attrs.field(factory=list)
    stalled: bool = False
    joiner: BlockJoiner = attrs.field(init=False)
    followers: dict[Stream, FileFollower] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.joiner = BlockJoiner(self.layout, quiet_after=self.quiet_after)
        self.followers = {
            stream: FileFollower(self.node_data / stream.dirname(self.layout)) for stream in Stream
        }

    @property
    def height(self) -> int | None:
        """The books' height, or ``None`` before the first bootstrap."""
        return None if self.books is None else self.books.height

    def bootstrap(self, snapshot: bytes, after_each: AfterEach | None = None) -> list[Applied]:
        """Load books from a ``fileSnapshot`` output (with height) and apply held blocks."""
        height, coins = decode_snapshot(snapshot)
        self.books = Books.from_snapshot(height, coins)
        self.stalled = False
        return self._apply(self.joiner.release(height), after_each)

    def poll(self, now: float, after_each: AfterEach | None = None) -> list[Applied]:
        """Read what the files gained, and apply every block that became complete.

        ``after_each(books)`` is called after each block is applied.
        """
        batch: list[tuple[int, int, AnyLine]] = []
        for rank, (stream, follower) in enumerate(self.followers.items()):
            for line in follower.read_lines():
                try:
                    batch.append((rank, len(batch), decode_line(stream, line)))
                except NodeFormatError as exc:
                    self.malformed.append(exc)
        # Feed what was read in height order across streams, as it was written. Fed
        # stream after stream, a stream whose backlog comes last would look quiet
        # (nothing fed for a while) and the joiner could call a block complete before
        # that stream's lines of it, read in this very batch, were fed.
        streams = list(self.followers)
        batch.sort(key=lambda item: (item[2].block_number, _FEED_ORDER[streams[item[0]]], item[1]))
        outputs: list[Block | Gap] = []
        for rank, _position, decoded in batch:
            outputs.extend(self.joiner.feed(streams[rank], decoded, now))
        for stream, follower in self.followers.items():
            if not follower.partial:  # read everything the file holds now
                outputs.extend(self.joiner.caught_up(stream, now))
        outputs.extend(self.joiner.poll(now))
        return self._apply(outputs, after_each)

    def _apply(self, outputs: list[Block | Gap], after_each: AfterEach | None) -> list[Applied]:
        done: list[Applied] = []
        for position, item in enumerate(outputs):
            if self.stalled or self.books is None:
                break
            if isinstance(item, Gap):
                self.gaps.append(item)
            else:
                try:
                    done.append(self.books.apply(item))
                    self.applied.append(item.height)
                    if after_each is not None:
                        after_each(self.books)
                    continue
                except DivergenceError as exc:
                    self.divergences.append(exc)
            self.stalled = True
            later = [block for block in outputs[position + 1 :] if isinstance(block, Block)]
            self.joiner.hold(later)
        return done
